"""The results chart: every seed of every arm, their mean ± std, the paired same-seed differences against the
baseline, and the paper's figures marked as the paper's.

`plot_results(records, "results.png")` takes run records `{protocol, row, split, seed, mAP, NDS}` (one per
trained and evaluated run) and draws, for each (protocol, split) and each metric, two panels:
- left: each arm's seeds as dots, its mean as a bar and ± one standard deviation as a whisker (n under the arm);
- right: for each arm, the same-seed differences arm − baseline (only seeds both have), their mean ± std, and
  the paper's difference where the paper reports both arms.
"""

from __future__ import annotations

import statistics
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from simdistill.errors import DataError  # noqa: E402
from simdistill.evaluation.plots import save_figure  # noqa: E402

PAPER_NUSCENES_VAL: dict[str, dict[str, float]] = {
    "teacher": {"mAP": 0.685, "NDS": 0.714},  # BEVFusion (LiDAR + camera)
    "baseline": {"mAP": 0.355, "NDS": 0.412},  # BEVFusion-C, camera only
    "simdistill": {"mAP": 0.404, "NDS": 0.453},  # SimDistill
}
"""What the SimDistill paper reports on real nuScenes val (its main table), as fractions: a reference for the
size of the gain, not a score our synthetic benchmark can be compared with."""

REQUIRED_KEYS = ("protocol", "row", "split", "seed")


def _check(records: Sequence[Mapping[str, Any]], metrics: Sequence[str]) -> None:
    if not records:
        raise DataError("no run records to chart; pass dicts with protocol, row, split, seed and the metrics")
    for i, r in enumerate(records):
        missing = [k for k in (*REQUIRED_KEYS, *metrics) if k not in r]
        if missing:
            raise DataError(f"run record {i} lacks {', '.join(missing)}: {dict(r)}")


def _mean_std(values: Sequence[float]) -> tuple[float, float]:
    return statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else 0.0


def _arms(records: Sequence[Mapping[str, Any]], baseline: str, unpaired: Sequence[str]) -> list[str]:
    """Row names: the baseline first, then the arms in the order they first appear, the unpaired rows last."""
    rows = list(dict.fromkeys(str(r["row"]) for r in records))
    return sorted(rows, key=lambda r: (r != baseline, r in unpaired))


def _dots(ax: plt.Axes, x: float, values: Sequence[float], colour: str) -> None:
    """Seeds as dots with the mean as a bar and ± std as a whisker."""
    mean, std = _mean_std(values)
    ax.bar(x, mean, width=0.6, color=colour, alpha=0.25)
    ax.errorbar(x, mean, yerr=std, color=colour, capsize=6, linewidth=1.5)
    offsets = [0.0] if len(values) == 1 else [-0.15 + 0.3 * i / (len(values) - 1) for i in range(len(values))]
    ax.scatter([x + o for o in offsets], values, color=colour, zorder=3, s=22, edgecolor="white", linewidth=0.5)


def _seed_panel(ax: plt.Axes, group: list[Mapping[str, Any]], arms: list[str], metric: str,
                paper: Mapping[str, Mapping[str, float]]) -> None:
    for i, arm in enumerate(arms):
        values = [float(r[metric]) for r in group if r["row"] == arm]
        if values:
            _dots(ax, i, values, f"C{i}")
            ax.annotate(f"n={len(values)}", (i, 0), xytext=(0, 3), textcoords="offset points", ha="center",
                        fontsize=7, color="0.3")
        if metric in paper.get(arm, {}):
            ax.scatter([i + 0.38], [paper[arm][metric]], marker="D", facecolor="none", edgecolor="0.35", s=36,
                       label="paper, real nuScenes val (not ours)" if not ax.get_legend_handles_labels()[0] else None)
    ax.set_xticks(range(len(arms)), arms, rotation=20, ha="right", fontsize=8)
    ax.set_ylabel(f"{metric} (dots: seeds; bar ± whisker: mean ± std)", fontsize=8)
    ax.set_ylim(bottom=0)
    ax.grid(True, axis="y", linewidth=0.3)
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=7, loc="upper left")


def _paired_panel(ax: plt.Axes, group: list[Mapping[str, Any]], arms: list[str], metric: str, baseline: str,
                  paper: Mapping[str, Mapping[str, float]], unpaired: Sequence[str]) -> None:
    base = {r["seed"]: float(r[metric]) for r in group if r["row"] == baseline}
    others = [a for a in arms if a != baseline and a not in unpaired]
    for i, arm in enumerate(others):
        diffs = [float(r[metric]) - base[r["seed"]] for r in group if r["row"] == arm and r["seed"] in base]
        if diffs:
            _dots(ax, i, diffs, f"C{arms.index(arm)}")
            ax.annotate(f"{len(diffs)} paired seed(s)", (i, 0.01), xycoords=("data", "axes fraction"),
                        ha="center", fontsize=7, color="0.3")
        if metric in paper.get(arm, {}) and metric in paper.get(baseline, {}):
            gain = paper[arm][metric] - paper[baseline][metric]
            ax.scatter([i + 0.38], [gain], marker="D", facecolor="none", edgecolor="0.35", s=36,
                       label="paper's difference (real nuScenes)" if not ax.get_legend_handles_labels()[0] else None)
    ax.axhline(0.0, color="black", linewidth=0.8)
    ax.set_xticks(range(len(others)), [f"{a}\n− {baseline}" for a in others], fontsize=8)
    ax.set_ylabel(f"{metric}: arm − {baseline}, same seed", fontsize=8)
    ax.grid(True, axis="y", linewidth=0.3)
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=7, loc="best")


def plot_results(records: Sequence[Mapping[str, Any]], out_png: str | Path, *, baseline: str = "baseline",
                 metrics: Sequence[str] = ("NDS", "mAP"),
                 paper: Mapping[str, Mapping[str, float]] | None = None, unpaired: Sequence[str] = ("teacher",),
                 title: str = "") -> Path:
    """Draw the results chart (see the module docstring); `paper` maps a row name to the paper's {metric: value}
    for it (e.g. PAPER_NUSCENES_VAL when rows are named teacher / baseline / simdistill); `unpaired` rows are
    drawn per seed but not differenced against the baseline (the teacher is another model, not an arm)."""
    _check(records, metrics)
    paper = paper or {}
    groups: dict[tuple[str, str], list[Mapping[str, Any]]] = {}
    for r in records:
        groups.setdefault((str(r["protocol"]), str(r["split"])), []).append(r)
    panels = [(key, metric) for key in sorted(groups) for metric in metrics]
    fig, axes = plt.subplots(len(panels), 2, figsize=(13, 3.8 * len(panels)), squeeze=False,
                             gridspec_kw={"width_ratios": [3, 2]})
    for (left, right), ((protocol, split), metric) in zip(axes, panels):
        group = groups[(protocol, split)]
        arms = _arms(group, baseline, unpaired)
        _seed_panel(left, group, arms, metric, paper)
        left.set_title(f"{protocol}, {split}: {metric} per seed", fontsize=9)
        if baseline in arms and set(arms) - {baseline, *unpaired}:
            _paired_panel(right, group, arms, metric, baseline, paper, unpaired)
            right.set_title(f"paired differences against {baseline}", fontsize=9)
        else:
            right.set_visible(False)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return save_figure(fig, out_png)
