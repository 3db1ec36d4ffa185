"""Matplotlib (Agg) figures: BEV boxes (prediction vs ground truth) and training loss curves."""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.patches import Polygon  # noqa: E402

from simdistill.config import DISTILL_LOSSES  # noqa: E402
from simdistill.errors import DataError  # noqa: E402
from simdistill.pipeline.geometry import box_corners  # noqa: E402

GT_COLOUR = "tab:green"
PRED_COLOUR = "tab:red"
NON_LOSS_KEYS = frozenset({"step", "epoch", "lr", "time", "elapsed", "wall_s", "samples_per_s", "grad_norm",
                           "step_seconds"})


def save_figure(fig: plt.Figure, out_png: str | Path) -> Path:
    """Write a figure as PNG (making its folder) and release it."""
    out = Path(out_png)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out)
    plt.close(fig)
    return out


def _draw_boxes(ax: plt.Axes, boxes: np.ndarray, *, colour: str, label: str, dashed: bool) -> None:
    boxes = np.asarray(boxes, dtype=np.float64)
    if boxes.size == 0:
        return
    for k, corners in enumerate(box_corners(boxes)[:, :4, :2]):  # bottom face [4, 2]
        ax.add_patch(
            Polygon(corners, closed=True, fill=False, edgecolor=colour, linewidth=1.0,
                    linestyle="--" if dashed else "-", label=label if k == 0 else None)
        )  # fmt: skip
        front = (corners[0] + corners[3]) / 2  # heading tick: centre -> front face
        centre = corners.mean(axis=0)
        ax.plot([centre[0], front[0]], [centre[1], front[1]], color=colour, linewidth=1.0)


def plot_bev_predictions(
    pred_boxes: np.ndarray,
    gt_boxes: np.ndarray,
    out_png: str | Path,
    *,
    title: str = "",
    xbound: Sequence[float] = (-54.0, 54.0),
    ybound: Sequence[float] = (-54.0, 54.0),
    points: np.ndarray | None = None,
) -> Path:
    """Top-down view of boxes [K, >=7] in one LiDAR frame: GT solid green, predictions dashed red, ego at 0."""
    fig, ax = plt.subplots(figsize=(6, 6), dpi=100)
    if points is not None and len(points):
        ax.scatter(points[:, 0], points[:, 1], s=0.2, c="0.7", linewidths=0)
    _draw_boxes(ax, gt_boxes, colour=GT_COLOUR, label="ground truth", dashed=False)
    _draw_boxes(ax, pred_boxes, colour=PRED_COLOUR, label="prediction", dashed=True)
    ax.plot([0.0], [0.0], marker=(3, 0, -90), markersize=10, color="black", linestyle="none", label="ego")
    ax.set_xlim(xbound[0], xbound[1])
    ax.set_ylim(ybound[0], ybound[1])
    ax.set_aspect("equal")
    ax.set_xlabel("x [m]")
    ax.set_ylabel("y [m]")
    ax.set_title(title)
    ax.legend(loc="upper right", fontsize=8)
    ax.grid(True, linewidth=0.3)
    return save_figure(fig, out_png)


def read_jsonl(path: str | Path) -> list[dict]:
    """The records of a JSON-lines log (blank lines skipped)."""
    p = Path(path)
    if not p.is_file():
        raise DataError(f"log file {p} does not exist; point at the run's train log (JSON lines)")
    records = []
    for n, line in enumerate(p.read_text().splitlines(), start=1):
        if line.strip():
            try:
                records.append(json.loads(line))
            except json.JSONDecodeError:
                raise DataError(f"{p} line {n} is not JSON; the log is corrupt or not a JSON-lines file") from None
    return records


def _smooth(values: np.ndarray, weight: float) -> np.ndarray:
    """Exponential moving average with bias correction (TensorBoard-style)."""
    out = np.empty_like(values)
    avg, norm = 0.0, 0.0
    for i, v in enumerate(values):
        avg = weight * avg + (1 - weight) * v
        norm = weight * norm + (1 - weight)
        out[i] = avg / norm
    return out


def _series(records: list[dict]) -> dict[str, tuple[list[float], list[float]]]:
    """key -> (steps, values) of every finite number in the records (booleans and NON_LOSS_KEYS left out)."""
    series: dict[str, tuple[list[float], list[float]]] = {}
    for i, rec in enumerate(records):
        step = float(rec.get("step", i))
        for key, value in rec.items():
            if key in NON_LOSS_KEYS or isinstance(value, bool) or not isinstance(value, (int, float)):
                continue
            if math.isfinite(value):
                steps, vals = series.setdefault(key, ([], []))
                steps.append(step)
                vals.append(float(value))
    return series


def _colour(key: str) -> str:
    """One colour per term in every panel (a term's loss and its gradient norm match)."""
    order = ("loss", "gt", "gt_heatmap", "gt_bbox", "depth", *DISTILL_LOSSES, "NDS", "mAP")
    return f"C{order.index(key) % 10}" if key in order else "0.4"


def _panel(ax: plt.Axes, series: dict[str, tuple[list[float], list[float]]], *, ylabel: str, smoothing: float,
           bold: str = "", log: bool = True) -> None:
    positive = log
    for key in sorted(series, key=lambda k: (k != bold, k)):
        steps, vals = series[key]
        arr = np.asarray(vals)
        positive &= bool((arr > 0).all())
        smooth = _smooth(arr, smoothing) if smoothing else arr
        (line,) = ax.plot(steps, smooth, label=key, linewidth=2.0 if key == bold else 1.2, color=_colour(key),
                          marker="o" if len(arr) < 30 else None, markersize=3)
        if smoothing:
            ax.plot(steps, arr, color=line.get_color(), alpha=0.2, linewidth=0.8)  # raw values, faint
    if positive:
        ax.set_yscale("log")
    ax.set_xlabel("step")
    ax.set_ylabel(ylabel)
    ax.legend(fontsize=7)
    ax.grid(True, linewidth=0.3)


def plot_loss_curves(jsonl_path: str | Path, out_png: str | Path, *, smoothing: float = 0.6) -> Path:
    """The training log as pictures: the total and GT loss terms (smoothed); the distillation terms on a panel of
    their own; if logged, each term's gradient norm on the shared image/lift parameters (`grad_norm/<term>`); and
    the val learning curve (`val_mAP`, `val_NDS`). Panels whose values are all positive use a log axis."""
    series = _series(read_jsonl(jsonl_path))
    grads = {k.removeprefix("grad_norm/"): v for k, v in series.items() if k.startswith("grad_norm/")}
    curve = {k.removeprefix("val_"): v for k, v in series.items() if k.startswith("val_")}
    losses = {k: v for k, v in series.items() if not k.startswith(("grad_norm/", "val_"))}
    if not losses:
        raise DataError(f"{jsonl_path} has no numeric loss values; expected lines like {{\"step\": 1, \"loss\": 0.5}}")
    # The distillation terms are one to two orders below the GT loss: on their own axis they can be read.
    distill = {k: losses.pop(k) for k in DISTILL_LOSSES if k in losses}
    panels = [("loss (total and GT terms)", losses, smoothing)] \
        + [("distillation terms (weighted)", distill, smoothing)] * bool(distill) \
        + [("gradient norm, shared params", grads, smoothing)] * bool(grads) \
        + [("val (devkit)", curve, 0.0)] * bool(curve)
    cols = min(len(panels), 2)
    rows = -(-len(panels) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(7 * cols, 4 * rows), dpi=100, squeeze=False)
    for ax in axes.flat[len(panels):]:
        ax.set_visible(False)
    for ax, (label, data, smooth) in zip(axes.flat, panels):
        _panel(ax, data, ylabel=label, smoothing=smooth, bold="loss", log=data is not curve)
    axes[0][0].set_title(Path(jsonl_path).name)
    fig.tight_layout()
    return save_figure(fig, out_png)
