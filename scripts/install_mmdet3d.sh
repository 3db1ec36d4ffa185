#!/usr/bin/env bash
# Install the optional mmdetection3d extra, simdistill[mmdet3d], into the active Python environment.
#
# mmdet3d 1.4.0 needs mmcv >=2.0.0rc4,<2.2.0 with its compiled ops (mmcv-lite lacks the ops that
# mmdet3d.structures imports). PyPI has mmcv 2.1.0 only as source, so it is built here against the torch
# already installed (no build isolation, or pip would build it against a fresh, different torch), with a
# setuptools that still ships pkg_resources (removed in setuptools 81; torch 2.13 needs >= 77.0.3).
# CPU-only here takes about 6 minutes on 2 cores; on a machine with CUDA torch and nvcc, set FORCE_CUDA=1
# to build the CUDA ops too. pip caches the built wheel, so a second install takes seconds.
#
# Usage (from the repository root, inside the venv that has simdistill's core installed):
#   bash scripts/install_mmdet3d.sh
set -euo pipefail
cd "$(dirname "$0")/.."

python -c "import torch" 2>/dev/null || {
  echo "error: install simdistill first (python -m pip install -e .), so mmcv builds against its torch" >&2
  exit 2
}

python -m pip install --quiet 'setuptools>=77.0.3,<81' wheel ninja psutil

if python -c "import mmcv, mmcv.ops; assert mmcv.__version__.startswith('2.1.')" 2>/dev/null; then
  echo "mmcv $(python -c 'import mmcv; print(mmcv.__version__)') with ops is already installed"
else
  echo "building mmcv 2.1.0 with its ops from source (about 6 minutes on 2 CPU cores)..."
  # --no-deps: mmcv's own dependencies are resolved below together with the core's pins; on its own, pip
  # would pull numpy 2 here, which nuscenes-devkit cannot use.
  MMCV_WITH_OPS=1 FORCE_CUDA="${FORCE_CUDA:-0}" MAX_JOBS="${MAX_JOBS:-$(nproc)}" \
    python -m pip install --no-build-isolation --no-deps 'mmcv==2.1.0'
fi

# The extra itself: mmengine, mmdet, mmdet3d and mmcv's dependencies (numpy stays <2: the core pins it).
python -m pip install -e '.[mmdet3d]'

# mmengine depends on opencv-python, which needs libGL on import and shadows the headless build the
# core uses; put the headless one back so `import cv2` works on servers.
python -m pip uninstall --yes --quiet opencv-python 2>/dev/null || true
python -m pip install --quiet --force-reinstall --no-deps "opencv-python-headless==$(python -c \
  'from importlib.metadata import version; print(version("opencv-python-headless"))')"

python -c "import mmdet3d, mmcv.ops, cv2; print('mmdet3d', mmdet3d.__version__, '| mmcv ops OK | cv2', cv2.__version__)"
