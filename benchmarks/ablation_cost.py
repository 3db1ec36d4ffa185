"""The ablation sweep, end to end: what N student runs of E epochs cost with an online teacher
against one export of K views per sample, from measured per-view costs. Arithmetic only; never run in CI.

    python benchmarks/ablation_cost.py        # the committed figures, benchmarks/results/step_time_paper.txt
    python benchmarks/ablation_cost.py --smoke    # the same (arithmetic only, so --smoke changes nothing)
    python benchmarks/ablation_cost.py --figures F.json --codecs benchmarks/results/store_paper.json --runs 6 --epochs 20

--figures: the JSON line of `step_time.py --paper` (its last stdout line; the file's last line is read; default: the
committed benchmarks/results/step_time_paper.txt). It gives,
per student lift, the median step time at batch 1 of (b) cached via the Dask loader and (d) online teacher, and
the export's warm per-view cost (teacher forward + input build + encoding + writes, the first task, which loads the
teacher, left out). For S samples (nuScenes train: 28,130):
    online   teacher forwards per sample = N·E            wall = N·E·S·t(d)
    cached   teacher forwards per sample = K (once)       wall = K·S·t(export) + N·E·S·t(b)
A cached student picks one of its sample's K views per epoch, so its step does not depend on K. Absolute hours are
those of the machine that measured the figures; the ratios are what carries over.
--codecs: the JSON line of `store_paper.py` (bytes per view of each store setting, trained paper teacher); without
it the store size uses the bytes per view of the store `step_time.py --paper` exported.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import _common as C
from _paper import NUSCENES_TRAIN_SAMPLES

STORE_K = (1, 4, 8)
COMMITTED_FIGURES = C.REPO / "benchmarks" / "results" / "step_time_paper.txt"


def last_json(path: Path) -> dict[str, Any]:
    lines = [line for line in Path(path).read_text().splitlines() if line.strip()]
    if not lines:
        C.fail(f"{path} is empty; save the stdout of the benchmark there")
    return json.loads(lines[-1])


def sweep(paper: dict[str, Any], *, runs: int, epochs: int, views_per_sample: int, samples: int) -> dict[str, Any]:
    """Teacher forwards per sample and wall hours, online vs cached, per student lift."""
    export_s = paper["export"]["seconds_per_view_warm"]
    out: dict[str, Any] = {"runs": runs, "epochs": epochs, "views_per_sample": views_per_sample, "samples": samples,
                           "export_seconds_per_view": export_s, "lifts": {}}
    for lift, modes in paper["lifts"].items():
        t_b, t_d = modes["b"]["step_median_s"], modes["d"]["step_median_s"]
        student_steps = runs * epochs * samples  # batch 1: one view per step
        online = student_steps * t_d
        export = views_per_sample * samples * export_s
        cached = export + student_steps * t_b
        out["lifts"][lift] = {
            "online_forwards_per_sample": runs * epochs, "cached_forwards_per_sample": views_per_sample,
            "online_hours": online / 3600, "cached_hours": cached / 3600, "export_hours": export / 3600,
            "cached_over_online": C.ratio(cached, online),
            "break_even_student_epochs": C.ratio(views_per_sample * export_s, t_d - t_b),  # N·E where cached wins
        }
    return out


def store_sizes(paper: dict[str, Any], codecs: dict[str, Any] | None, *, samples: int) -> dict[str, dict[str, float]]:
    """GB of a full export at K = 1, 4, 8 views per sample, per store setting."""
    per_view = {"this run's store": paper["export"]["bytes_per_view"]}
    if codecs is not None:
        per_view = {name: s["bytes_per_view"] for name, s in codecs["settings"].items()}
    return {name: {f"K={k}": b * samples * k / 1e9 for k in STORE_K} | {"MB_per_view": b / 1e6}
            for name, b in per_view.items()}


def report(paper: dict[str, Any], codecs: dict[str, Any] | None, *, runs: int, epochs: int, views_per_sample: int,
           samples: int) -> dict[str, Any]:
    """Print both tables; return their figures."""
    figures = {"sweep": sweep(paper, runs=runs, epochs=epochs, views_per_sample=views_per_sample, samples=samples),
               "store_GB": store_sizes(paper, codecs, samples=samples)}
    s = figures["sweep"]
    rows = []
    for lift, r in s["lifts"].items():
        rows.append([f"online teacher, {lift} lifts", r["online_forwards_per_sample"], r["online_hours"], 1.0, "-"])
        rows.append([f"cached (K={views_per_sample}), {lift} lifts", r["cached_forwards_per_sample"],
                     r["cached_hours"], r["cached_over_online"], r["break_even_student_epochs"]])
    print(C.table(f"Ablation sweep: {runs} student runs x {epochs} epochs over {samples:,} samples (batch 1; export "
                  f"{s['export_seconds_per_view']:.2f} s/view, step times of step_time.py --paper)",
                  ["setting", "teacher forwards / sample", "wall h (this machine)", "x online",
                   "break-even run-epochs"], rows))
    rows = [[name] + [g[f"K={k}"] for k in STORE_K] + [g["MB_per_view"]] for name, g in figures["store_GB"].items()]
    print(C.table(f"Store for nuScenes train ({samples:,} samples), GB", ["store setting"]
                  + [f"K={k}" for k in STORE_K] + ["MB/view"], rows))
    return figures


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--figures", type=Path, default=COMMITTED_FIGURES,
                   help="a file whose last line is step_time.py --paper's JSON (default: the committed CPU figures)")
    p.add_argument("--codecs", type=Path, help="a file whose last line is store_paper.py's JSON (optional)")
    p.add_argument("--runs", type=int, default=6, help="student runs in the sweep (the paper's ablation: 6)")
    p.add_argument("--epochs", type=int, default=20, help="epochs per student run (the paper: 20)")
    p.add_argument("--views-per-sample", type=int, help="K exported views per sample (default: the figures' config)")
    p.add_argument("--samples", type=int, default=NUSCENES_TRAIN_SAMPLES, help="train samples (nuScenes: 28,130)")
    C.add_smoke_arg(p)
    args = p.parse_args()
    paper = last_json(args.figures)
    codecs = last_json(args.codecs) if args.codecs else None
    k = args.views_per_sample or int(paper.get("views_per_sample", 1))
    figures = report(paper, codecs, runs=args.runs, epochs=args.epochs, views_per_sample=k, samples=args.samples)
    C.emit_json({"figures_from": str(args.figures), "codecs_from": str(args.codecs) if args.codecs else None,
                 **figures})


if __name__ == "__main__":
    main()
