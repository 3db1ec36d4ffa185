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

from simdistill.config import resolve_config

REPO = Path(__file__).resolve().parent.parent
DEMO_CONFIG = resolve_config("demo")  # the shipped configs (simdistill/configs/)
TINY_CONFIG = resolve_config("tiny")  # --smoke: the test suite's sizes
PAPER_CONFIG = resolve_config("nuscenes_swint")
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
                             "the demo config says 4, which makes the export 4x longer)")
    add_smoke_arg(parser)


def add_smoke_arg(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--smoke", action="store_true",
                        help="run at the tiny config's sizes on a tiny world made here, in seconds: checks that the "
                             "script works end to end (the test suite runs it); its figures mean nothing")


def smoke_inputs(workdir: Path) -> tuple[Path, Path]:
    """(dataroot, teacher checkpoint) of --smoke: a tiny world and a teacher trained one epoch on it, made under
    workdir/smoke (reused when there)."""
    from simdistill.config import load_config
    from simdistill.pipeline.synthetic import make_demo_data
    from simdistill.teacher.trainer import train_teacher

    root = workdir / "smoke"
    dataroot, teacher_dir = root / "world", root / "teacher"
    cfg = load_config(TINY_CONFIG, [f"data.dataroot={dataroot}"])
    if not (dataroot / cfg.world.version).is_dir():
        log("smoke: writing a tiny world")
        make_demo_data(dataroot, cfg.world, progress=False)
    if not (teacher_dir / "teacher.pt").is_file():
        log("smoke: training a tiny teacher")
        train_teacher(cfg, out_dir=teacher_dir, progress=False)
    return dataroot, teacher_dir / "teacher.pt"


def resolve_inputs(args: argparse.Namespace) -> None:
    """--smoke makes its own tiny inputs; otherwise the demo's must exist (exit 2 naming how to make them)."""
    if args.smoke:
        args.dataroot, args.teacher = smoke_inputs(args.workdir)
    else:
        require_inputs(args.dataroot, args.teacher)


def require_inputs(dataroot: Path, teacher: Path | None) -> None:
    """Exit 2 with a one-line message naming the command that makes a missing input."""
    if not (dataroot / "v1.0-mini").is_dir():
        fail(f"no demo world at {dataroot}; run `python -m simdistill demo --workdir demo_work` first, or "
             f"`python -m simdistill make-demo-data {dataroot} --config demo`")
    if teacher is not None and not teacher.is_file():
        fail(f"no trained demo teacher at {teacher}; make it with `python -m simdistill train-teacher --config "
             f"demo --set data.dataroot={dataroot} --out {teacher.parent}` (~3 min)")


def fail(msg: str) -> None:
    print(f"error: {msg}", file=sys.stderr)
    raise SystemExit(2)


def demo_config(args: argparse.Namespace, overrides: Sequence[str] = ()) -> Any:
    """The demo config (what the demo teacher was trained with; the tiny config with --smoke) on --dataroot,
    with --views-per-sample."""
    from simdistill.config import load_config

    return load_config(TINY_CONFIG if args.smoke else DEMO_CONFIG,
                       [f"data.dataroot={args.dataroot}", f"export.views_per_sample={args.views_per_sample}",
                        *overrides])


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
    """An export task without the writes: the package's own task context and view loop
    (`simdistill.teacher_export.task.export_context` / `teacher_views`), its output dropped."""
    import torch

    from simdistill.teacher_export.task import TaskStats, export_context, teacher_views

    t_start = time.perf_counter()
    ctx = export_context(cfg_dict, split_name, checkpoint)
    torch.set_num_threads(max(1, ctx.cfg.export.threads_per_worker))
    stats = TaskStats()
    for _ in teacher_views(ctx, params=params, sample_index=sample_index, view_index=np.zeros(len(views), np.int16),
                           stats=stats):
        pass
    return {"views": stats.views, "build_seconds": stats.build_seconds, "forward_seconds": stats.forward_seconds,
            "wall_seconds": time.perf_counter() - t_start, "worker_pid": os.getpid()}
