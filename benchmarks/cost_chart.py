"""The cost chart: what caching the teacher saves, drawn from committed measurements only.

    python benchmarks/cost_chart.py            # writes benchmarks/results/cost.png
    python benchmarks/cost_chart.py --smoke    # the same figures, drawn to bench_work/cost_smoke.png

Three panels, all from `benchmarks/results/step_time_paper.txt` (the JSON line of `step_time.py --paper`, paper
sizes on a 2-core CPU, batch 1, one torch thread):
1. the student's step time per target mode, separate and shared lifts: (a) no targets, (b) cached through the
   Dask loader, (e) cached targets already in RAM, (d) online teacher, (t) the online teacher's forward alone;
2. the ablation sweep (6 runs x 20 epochs of nuScenes train, `ablation_cost.py`'s arithmetic): online against
   cached, the export included;
3. the store for nuScenes train at K = 1, 4, 8 views per sample, from the export's measured bytes per view.
Demo-size step times have no committed artifact, so they are not drawn. Only figures with a committed file behind
them go into this chart; the file and its command are named on it.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import _common as C
from ablation_cost import COMMITTED_FIGURES, STORE_K, last_json, store_sizes, sweep
from _paper import NUSCENES_TRAIN_SAMPLES

MODES = (("a", "(a) no targets"), ("b", "(b) cached, Dask loader"), ("e", "(e) cached, in RAM"),
         ("d", "(d) online teacher"), ("t", "(t) teacher alone"))
HEAVIER_LOAD = ("a", "b")
"""Separate lifts' (a) and (b) ran under a heavier load than the rest of their set; a rerun of (a), (b), (e) under one
load (benchmarks/results/step_time_paper_separate_rerun.log) gave (b) = 1.00 x (e), so the sweep uses (e) for (b)."""
SOURCE_COMMAND = ("python benchmarks/step_time.py --paper --paper-teacher T.pt --steps 3 --warmup 1 --rounds 1 "
                  "--threads 1 --paper-scenes 2 --paper-samples 6")


def _steps_panel(ax: Any, paper: dict[str, Any]) -> None:
    lifts = list(paper["lifts"])
    width = 0.8 / len(lifts)
    for j, lift in enumerate(lifts):
        modes = paper["lifts"][lift]
        xs = [i + (j - (len(lifts) - 1) / 2) * width for i, (m, _) in enumerate(MODES) if m in modes]
        ys = [modes[m]["step_median_s"] for m, _ in MODES if m in modes]
        loaded = [lift == "separate" and m in HEAVIER_LOAD for m, _ in MODES if m in modes]
        bars = ax.bar(xs, ys, width=width, color=f"C{j}")
        for bar, heavy in zip(bars, loaded):
            if heavy:
                bar.set_alpha(0.35)
                bar.set_hatch("//")
        ax.bar_label(bars, fmt="%.0f", fontsize=7)
    ax.set_xticks(range(len(MODES)), [label for _, label in MODES], rotation=20, ha="right", fontsize=8)
    from matplotlib.patches import Patch

    ax.legend(handles=[Patch(color=f"C{j}", label=f"{lift} lifts") for j, lift in enumerate(lifts)], fontsize=8)
    ax.set_ylabel("median seconds per step (batch 1)")
    ax.set_title("student step, paper size, CPU\n(hatched: measured under a heavier load, left out of the ratios)",
                 fontsize=9)
    ax.grid(True, axis="y", linewidth=0.3)


def _sweep_panel(ax: Any, figures: dict[str, Any]) -> None:
    lifts = list(figures["lifts"])
    for j, lift in enumerate(lifts):
        r = figures["lifts"][lift]
        online, export, cached = r["online_hours"], r["export_hours"], r["cached_hours"]
        ax.bar(j - 0.2, online, width=0.4, color="C3", label="online teacher" if j == 0 else None)
        ax.bar(j + 0.2, export, width=0.4, color="C7", label="cached: the export" if j == 0 else None)
        ax.bar(j + 0.2, cached - export, bottom=export, width=0.4, color="C2",
               label="cached: the student runs" if j == 0 else None)
        ax.annotate(f"{r['cached_over_online']:.2f}x", (j + 0.2, cached), xytext=(0, 3), textcoords="offset points",
                    ha="center", fontsize=8)
    ax.set_xticks(range(len(lifts)), [f"{lift} lifts" + ("\n(b) taken as (e)" if lift == "separate" else "")
                                      for lift in lifts], fontsize=8)
    ax.set_ylim(top=ax.get_ylim()[1] * 1.35)
    ax.set_ylabel("CPU hours on this machine (ratios carry over)")
    ax.set_title(f"ablation sweep: {figures['runs']} runs x {figures['epochs']} epochs, "
                 f"{figures['samples']:,} samples\n(K = {figures['views_per_sample']} view per sample)", fontsize=9)
    ax.legend(fontsize=8)
    ax.grid(True, axis="y", linewidth=0.3)


def _store_panel(ax: Any, sizes: dict[str, dict[str, float]]) -> None:
    (name, gb), = sizes.items()
    bars = ax.bar([f"K={k}" for k in STORE_K], [gb[f"K={k}"] for k in STORE_K], color="C4")
    ax.bar_label(bars, fmt="%.0f GB", fontsize=8)
    ax.set_xlabel("augmented views stored per sample")
    ax.set_ylabel("GB for nuScenes train")
    ax.set_title(f"store size, lossless, trained paper-size teacher\n({gb['MB_per_view']:.2f} MB per view "
                 "measured)", fontsize=9)
    ax.grid(True, axis="y", linewidth=0.3)


def draw(figures_path: Path, out_png: Path) -> dict[str, Any]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    paper = last_json(figures_path)
    fair = json.loads(json.dumps(paper))
    fair["lifts"]["separate"]["b"] = fair["lifts"]["separate"]["e"]
    cost = sweep(fair, runs=6, epochs=20, views_per_sample=int(paper.get("views_per_sample", 1)),
                 samples=NUSCENES_TRAIN_SAMPLES)
    sizes = store_sizes(paper, None, samples=NUSCENES_TRAIN_SAMPLES)
    fig, axes = plt.subplots(1, 3, figsize=(16, 5.2), gridspec_kw={"width_ratios": [5, 3, 3]})
    _steps_panel(axes[0], paper)
    _sweep_panel(axes[1], cost)
    _store_panel(axes[2], sizes)
    fig.suptitle("What caching the teacher costs and saves (paper sizes, 2-core CPU; no GPU figures yet)")
    fig.text(0.01, 0.01, f"from {figures_path.relative_to(C.REPO) if figures_path.is_relative_to(C.REPO) else figures_path}"
             f" ({SOURCE_COMMAND}); drawn by benchmarks/cost_chart.py", fontsize=7, color="0.35")
    fig.tight_layout(rect=(0, 0.03, 1, 1))
    out_png.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out_png, dpi=110)
    plt.close(fig)
    return {"figures_from": str(figures_path), "png": str(out_png), "sweep": cost, "store_GB": sizes}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--figures", type=Path, default=COMMITTED_FIGURES, help="step_time.py --paper's output")
    p.add_argument("--out", type=Path, default=C.REPO / "benchmarks" / "results" / "cost.png")
    C.add_smoke_arg(p)
    args = p.parse_args()
    if args.smoke:
        args.out = C.DEFAULT_WORKDIR / "cost_smoke.png"
    C.emit_json(draw(args.figures, args.out))


if __name__ == "__main__":
    main()
