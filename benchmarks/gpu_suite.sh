#!/usr/bin/env bash
# The paper-size step table (docs/costs.md) on one CUDA GPU, in <= 8 minutes (NOT YET RUN ON A GPU: written where
# none was available, correct by construction; the CPU path runs in the test suite with --smoke).
#
#   bash benchmarks/gpu_suite.sh [WORKDIR]            # device=cuda (default WORKDIR: gpu_work)
#   bash benchmarks/gpu_suite.sh --smoke [WORKDIR]    # tiny sizes on the CPU, in minutes (tests/test_benchmarks.py)
#
# What it runs: `benchmarks/step_time.py --paper --set device=cuda` on a freshly rendered 1600x900 synthetic world
# (2 scenes x 6 key frames: 6 train views, 10 LiDAR sweeps from earlier key frames) with a random-init paper-size
# teacher (step costs do not depend on the weights): the export (its views/s), then modes (a) no targets, (b) cached
# via the Dask loader, (e) targets in memory, (d) online teacher and (t) the teacher alone, for separate and shared
# student lifts, each in its own process that resets and reads torch.cuda's peak memory
# (reset_peak_memory_stats / max_memory_allocated); the device is synchronised before every clock read (the
# training loop reads every loss term back each step). Then the loader's views/s and views per CPU-second with
# 1, 2, 4 and 8 read threads, and the ablation sweep. Tables on stdout; the last line is one JSON object.
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
PY="${PYTHON:-python}"
mode=(--set device=cuda --threads 4 --steps 6 --warmup 2 --rounds 1 --paper-scenes 2 --paper-samples 6
      --loader-threads 1,2,4,8 --loader-rounds 2 --gpu-views-per-s 3.1)
if [[ "${1:-}" == "--smoke" ]]; then
    mode=(--smoke --set device=cpu --threads 1)
    shift
else
    "$PY" -c "import sys, torch; sys.exit(0 if torch.cuda.is_available() else 'gpu_suite.sh: no CUDA device (torch.cuda.is_available() is False); on a CPU run it with --smoke')"
    "$PY" -c "import torch; print('device:', torch.cuda.get_device_name(0), '| torch', torch.__version__)" >&2
fi
WORKDIR="${1:-gpu_work}"
exec "$PY" "$HERE/step_time.py" --paper --workdir "$WORKDIR" "${mode[@]}"
