"""Shared helpers of `store_io.py` and `step_time.py`: inputs, configs, timing summaries, tables, JSON.

Also the two functions those benchmarks hand to Dask workers (`forward_only_task`, `recording_export_task`).
Workers start with spawn, which passes this process's `sys.path` on, so they import this module by name
exactly as the script did (the scripts live in `benchmarks/`, which is `sys.path[0]` when run as files).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parent.parent
DEMO_CONFIG = REPO / "configs" / "demo.yaml"
PAPER_CONFIG = REPO / "configs" / "nuscenes_swint.yaml"
# Defaults: what `python -m simdistill demo --workdir demo_work` leaves behind.
DEFAULT_DATAROOT = REPO / "demo_work" / "data"
DEFAULT_TEACHER = REPO / "demo_work" / "teacher" / "teacher.pt"
DEFAULT_WORKDIR = REPO / "bench_work"
LOSS_TERMS = ("imd", "cmd", "mmd_f", "mmd_p")

_T0 = time.perf_counter()


def log(msg: str) -> None:
    """Progress on stderr (stdout carries the table and, last, the JSON line)."""
    print(f"[{time.perf_counter() - _T0:6.1f} s] {msg}", file=sys.stderr, flush=True)


def add_input_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--dataroot", type=Path, default=DEFAULT_DATAROOT,
                        help=f"demo world (default {DEFAULT_DATAROOT})")
    parser.add_argument("--teacher", type=Path, default=DEFAULT_TEACHER,
                        help=f"trained demo teacher checkpoint (default {DEFAULT_TEACHER})")
    parser.add_argument("--workdir", type=Path, default=DEFAULT_WORKDIR,
                        help=f"where stores and runs are written (default {DEFAULT_WORKDIR})")
    parser.add_argument("--views-per-sample", type=int, default=1,
                        help="export.views_per_sample of the demo store (default 1, the test-time view; "
                             "configs/demo.yaml says 4, which makes the export 4x longer)")


def require_inputs(dataroot: Path, teacher: Path | None) -> None:
    """Exit 2 with a one-line message naming the command that makes a missing input."""
    if not (dataroot / "v1.0-mini").is_dir():
        fail(f"no demo world at {dataroot}; run `python -m simdistill demo --workdir demo_work` first, or "
             f"`python -m simdistill make-demo-data {dataroot} --config configs/demo.yaml`")
    if teacher is not None and not teacher.is_file():
        fail(f"no trained demo teacher at {teacher}; make it with `python -m simdistill train-teacher --config "
             f"configs/demo.yaml --set data.dataroot={dataroot} --out {teacher.parent}` (~3 min)")


def fail(msg: str) -> None:
    print(f"error: {msg}", file=sys.stderr)
    raise SystemExit(2)


def demo_config(args: argparse.Namespace, overrides: Sequence[str] = ()) -> Any:
    """configs/demo.yaml (what the demo teacher was trained with) on --dataroot, with --views-per-sample."""
    from simdistill.config import load_config

    return load_config(DEMO_CONFIG, [f"data.dataroot={args.dataroot}",
                                     f"export.views_per_sample={args.views_per_sample}", *overrides])


# -------------------------------------------------------------------------------------------------
# Summaries and output


def summarize(xs: Sequence[float]) -> dict[str, float]:
    """median / mean / min / max / n of a list of timings (NaN when empty)."""
    if not xs:
        return {"median": math.nan, "mean": math.nan, "min": math.nan, "max": math.nan, "n": 0}
    return {"median": statistics.median(xs), "mean": statistics.fmean(xs), "min": min(xs), "max": max(xs),
            "n": len(xs)}


def ratio(a: float, b: float) -> float:
    return a / b if b else math.nan


def table(title: str, headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """A plain aligned text table (first column left-aligned, the rest right-aligned)."""

    def cell(x: Any) -> str:
        if isinstance(x, float):
            if math.isnan(x):
                return "-"
            return f"{x:.3g}" if abs(x) < 1e-2 and x != 0 else f"{x:,.3f}" if abs(x) < 100 else f"{x:,.0f}"
        return str(x)

    body = [[cell(x) for x in r] for r in rows]
    widths = [max(len(str(h)), *(len(r[i]) for r in body)) if body else len(str(h)) for i, h in enumerate(headers)]

    def line(cells: Sequence[str]) -> str:
        return "  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(cells, widths)))

    out = [f"\n{title}", line([str(h) for h in headers]), line(["-" * w for w in widths])]
    out += [line(r) for r in body]
    return "\n".join(out)


def _jsonable(x: Any) -> Any:
    if isinstance(x, dict):
        return {str(k): _jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_jsonable(v) for v in x]
    if isinstance(x, (np.floating, float)):
        x = float(x)
        return None if math.isnan(x) or math.isinf(x) else round(x, 6)
    if isinstance(x, np.integer):
        return int(x)
    return x


def emit_json(figures: dict[str, Any]) -> None:
    """The benchmark's last line: one JSON object of its figures (NaN as null)."""
    print(json.dumps(_jsonable(figures), sort_keys=False), flush=True)


def machine() -> dict[str, Any]:
    """What the numbers were measured on (the lead re-runs them; the machine may be shared)."""
    import platform

    import torch

    return {"cpus": os.cpu_count(), "load_avg_1min_at_start": round(os.getloadavg()[0], 2),
            "torch_threads": torch.get_num_threads(), "torch": torch.__version__, "python": platform.python_version()}


def peak_rss_mb() -> float:
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # Linux: KiB


# -------------------------------------------------------------------------------------------------
# Dask tasks (run inside spawned worker processes)


def forward_only_task(*, cfg_dict: dict[str, Any], split_name: str, checkpoint: str, views: list[int],
                      params: np.ndarray, sample_index: np.ndarray) -> dict[str, float]:
    """An export task without the writes: the same building blocks, threads and per-process caches as
    `simdistill.teacher_export.task.run_export_task` (build inputs, teacher forward, target encoding)."""
    import torch

    from simdistill.config import config_from_dict
    from simdistill.pipeline.augment import AugParams
    from simdistill.pipeline.sample import collate
    from simdistill.teacher_export.view_arrays import teacher_view_arrays
    from simdistill.teacher_export.task import _builder, _teacher

    t_start = time.perf_counter()
    cfg = config_from_dict(cfg_dict)
    torch.set_num_threads(max(1, cfg.export.threads_per_worker))
    teacher = _teacher(str(checkpoint), cfg.device)
    builder = _builder(json.dumps(cfg_dict, sort_keys=True), split_name)
    build_s = forward_s = 0.0
    for j in range(len(views)):
        t0 = time.perf_counter()
        aug = AugParams.from_vector(params[j], n_cams=builder.n_cams, n_sweeps=cfg.data.sweeps)
        batch = collate([builder.build(int(sample_index[j]), aug)]).to(cfg.device)
        t1 = time.perf_counter()
        with torch.inference_mode():
            out = teacher(batch)
            arrays = teacher_view_arrays(teacher, out, batch)[0]
        forward_s += time.perf_counter() - t1
        build_s += t1 - t0
        arrays.to_teacher_view(aug=params[j], sample_index=int(sample_index[j]), view=0)
    return {"views": len(views), "build_seconds": build_s, "forward_seconds": forward_s,
            "wall_seconds": time.perf_counter() - t_start, "pid": os.getpid()}


def recording_export_task(*, stats_path: str, **kwargs: Any) -> dict[str, float]:
    """`run_export_task` unchanged, plus one JSON line of its TaskStats (and worker pid) appended to
    `stats_path`: `export_teacher` sums the stats and drops the per-task ones, which the overlap figure needs."""
    from simdistill.teacher_export.task import run_export_task

    result = run_export_task(**kwargs)
    line = json.dumps({**result, "pid": os.getpid(), "first_view": int(kwargs["views"][0])}) + "\n"
    with open(stats_path, "a") as fh:  # one short O_APPEND write per task: atomic between workers
        fh.write(line)
    return result
