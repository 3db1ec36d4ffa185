"""The report of benchmarks/reproduce.py: the table, the seed statistics, the targets, and the two charts."""

from __future__ import annotations

import json
import os
import statistics
from pathlib import Path
from typing import Any

BASELINE = "baseline (GT only)"
FULL = "full SimDistill (cached)"
CHAIN = ("+IMD", "+IMD+CMD", "+IMD+CMD+MMD-F")  # each adds one term, between the baseline and the full model
PILOT_GO = {"mAP": 0.08, "car_AP": 0.25}  # the pilot's go/no-go on the baseline (the bar)


def _stats(records: list[dict[str, Any]], key: str) -> dict[str, float]:
    vals = [r["metrics"][key] for r in records]
    if not vals:
        return {"mean": float("nan"), "std": float("nan"), "spread": float("nan"), "n": 0}
    return {"mean": statistics.fmean(vals), "std": statistics.stdev(vals) if len(vals) > 1 else 0.0,
            "spread": max(vals) - min(vals), "n": len(vals)}


def _pick(records: list[dict[str, Any]], label: str, seed: int | None = None) -> list[dict[str, Any]]:
    return [r for r in records if r["label"] == label and (seed is None or r["seed"] == seed)]


def _car_ap(r: dict[str, Any]) -> float:
    return float(r["metrics"].get("class_ap", {}).get("car") or 0.0)


def seed_figures(records: list[dict[str, Any]]) -> dict[str, Any]:
    """Means, spreads and same-seed differences of baseline and full SimDistill."""
    base, full = _pick(records, BASELINE), _pick(records, FULL)
    fig: dict[str, Any] = {}
    for key in ("NDS", "mAP"):
        b, f = _stats(base, key), _stats(full, key)
        fig[key] = {"baseline": b, "full": f, "gain": f["mean"] - b["mean"],
                    "largest_spread": max(b["spread"], f["spread"])}
        seeds = sorted({r["seed"] for r in base} & {r["seed"] for r in full})
        fig[key]["same_seed_diffs"] = {s: _pick(full, FULL, s)[0]["metrics"][key] - _pick(base, BASELINE, s)[0][
            "metrics"][key] for s in seeds}
    fig["mAP"]["relative_gain"] = fig["mAP"]["gain"] / fig["mAP"]["baseline"]["mean"] \
        if fig["mAP"]["baseline"]["mean"] else float("nan")
    return fig


def targets(records: list[dict[str, Any]], fig: dict[str, Any]) -> list[tuple[str, str, bool | None]]:
    """(target, measured, met) rows; None = not measurable from the rows run so far."""
    nds, mp = fig["NDS"], fig["mAP"]
    diffs = list(nds["same_seed_diffs"].values()) + list(mp["same_seed_diffs"].values())
    out: list[tuple[str, str, bool | None]] = []
    multi = nds["baseline"]["n"] > 1 and nds["full"]["n"] > 1
    out.append(("mean(full) - mean(baseline) >= +4 NDS points", f"{100 * nds['gain']:+.2f}", nds["gain"] >= 0.04))
    out.append(("... and > 2 x the largest NDS seed spread", f"spread {100 * nds['largest_spread']:.2f}",
                nds["gain"] > 2 * nds["largest_spread"] if multi else None))
    out.append(("relative mAP gain >= +14 %", f"{100 * mp['relative_gain']:+.1f} %", mp["relative_gain"] >= 0.14))
    out.append(("... and the mAP gain > 2 x the largest mAP seed spread",
                f"gain {mp['gain']:+.4f}, spread {mp['largest_spread']:.4f}",
                mp["gain"] > 2 * mp["largest_spread"] if multi else None))
    out.append(("every same-seed difference (NDS and mAP) positive",
                ", ".join(f"{d:+.4f}" for d in diffs) or "-", all(d > 0 for d in diffs) if diffs else None))
    base0 = _pick(records, BASELINE, records[0]["seed"] if records else 0)
    chain = base0 + [r for label in CHAIN for r in _pick(records, label)] + _pick(records, FULL,
                                                                                   base0[0]["seed"] if base0 else 0)
    if len(chain) == len(CHAIN) + 2:
        steps = [b["metrics"]["NDS"] - a["metrics"]["NDS"] for a, b in zip(chain, chain[1:])]
        worst = min(steps)
        out.append(("each added term not harmful beyond the NDS seed spread",
                    ", ".join(f"{100 * s:+.2f}" for s in steps), worst >= -nds["largest_spread"]))
    online, no_gcm = _pick(records, "full, online teacher"), _pick(records, "full without GCM")
    if online and _pick(records, FULL, online[0]["seed"]):
        gap = _pick(records, FULL, online[0]["seed"])[0]["metrics"]["NDS"] - online[0]["metrics"]["NDS"]
        out.append((r"\|cached − online\| NDS < the NDS seed spread", f"{100 * gap:+.2f}",
                    abs(gap) < nds["largest_spread"] if multi else None))
    if no_gcm and _pick(records, FULL, no_gcm[0]["seed"]):
        gcm = _pick(records, FULL, no_gcm[0]["seed"])[0]["metrics"]["NDS"] - no_gcm[0]["metrics"]["NDS"]
        out.append(("GCM on - off (reported)", f"{100 * gcm:+.2f} NDS", None))
    return out


TERMS = ("gt", "depth", "imd", "cmd", "mmd_f", "mmd_p")


def _log(r: dict[str, Any]) -> list[dict[str, Any]]:
    path = Path(r["run_dir"]) / "train_log.jsonl"
    return [json.loads(x) for x in path.read_text().splitlines()] if path.exists() else []


def diagnostics(records: list[dict[str, Any]]) -> list[str]:
    """Train-time diagnostics of baseline and full SimDistill (never val): each term's gradient norm on the
    shared image/lift parameters and each loss term, averaged over the first, middle and last fifth of a run."""
    lines = ["", "Train-time diagnostics (from train_log.jsonl; gradient norms of each term alone on the "
             "backbone + lift parameters, logged every `grad_norms_every` steps; mean per fifth of the run):", "",
             "| row | seed | steps | " + " | ".join(f"‖∇{t}‖" for t in TERMS) + " | "
             + " | ".join(TERMS) + " |", "|---|---:|---|" + "---:|" * (2 * len(TERMS))]
    for r in sorted(_pick(records, BASELINE) + _pick(records, FULL), key=lambda r: (r["label"], r["seed"])):
        log = _log(r)
        if not log:
            continue
        n = len(log)
        for name, part in (("first 1/5", log[: n // 5]), ("middle 1/5", log[2 * n // 5: 3 * n // 5]),
                           ("last 1/5", log[4 * n // 5:])):
            def mean(key: str) -> str:
                vals = [x[key] for x in part if key in x]
                return f"{statistics.fmean(vals):.3g}" if vals and any(vals) else "-"
            lines.append(f"| {r['label']} | {r['seed']} | {name} | "
                         + " | ".join(mean(f"grad_norm/{t}") for t in TERMS) + " | "
                         + " | ".join(mean(t) for t in TERMS) + " |")
    return lines


def _table(records: list[dict[str, Any]], teacher: dict[str, Any]) -> list[str]:
    lines = ["| row | seed | mAP | NDS | car AP | mATE | mAOE | mAVE | steps | wall [min] | peak RSS [MB] |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
             f"| teacher (LiDAR+camera) | - | {teacher['mAP']:.4f} | {teacher['NDS']:.4f} | "
             f"{float(teacher.get('class_ap', {}).get('car') or 0):.3f} | {teacher['mATE']:.3f} | "
             f"{teacher['mAOE']:.3f} | {teacher['mAVE']:.3f} | - | - | - |"]
    order = {BASELINE: 0, FULL: 1, **{label: 2 + i for i, label in enumerate(CHAIN)}}
    for r in sorted(records, key=lambda r: (order.get(r["label"], 9), r["label"], r["seed"])):
        m = r["metrics"]
        lines.append(f"| {r['label']} | {r['seed']} | {m['mAP']:.4f} | {m['NDS']:.4f} | {_car_ap(r):.3f} | "
                     f"{m['mATE']:.3f} | {m['mAOE']:.3f} | {m['mAVE']:.3f} | {r['steps']} | "
                     f"{r['wall_seconds'] / 60:.1f} | {r['peak_rss_mb']:.0f} |")
    return lines


def write(records: list[dict[str, Any]], teacher: dict[str, Any], *, command: str, commit: str, config: Path,
          repo: Path, depth_default: bool) -> tuple[str, dict[str, Any]]:
    """The Markdown report and the JSON figures."""
    fig = seed_figures(records)
    rows = targets(records, fig)
    cfg_name = config.relative_to(repo) if config.is_relative_to(repo) else config
    lines = ["# SimDistill on the synthetic benchmark", "",
             f"Last command: `{command}`  ", f"Commit: `{commit}`  ",
             f"Config: `{cfg_name}` (depth supervision {'on' if depth_default else 'off'} unless a row says "
             f"otherwise); CPU, {os.cpu_count()} cores. Metrics: nuScenes devkit (detection_cvpr_2019) on the "
             "synthetic val split. Wall time of each training subprocess, its periodic val evaluations included.",
             "", *_table(records, teacher), ""]
    nds, mp = fig["NDS"], fig["mAP"]
    for key, f in (("NDS", nds), ("mAP", mp)):
        lines.append(f"{key}: baseline {f['baseline']['mean']:.4f} ± {f['baseline']['std']:.4f} "
                     f"(n={f['baseline']['n']}, spread {f['baseline']['spread']:.4f}); full "
                     f"{f['full']['mean']:.4f} ± {f['full']['std']:.4f} (n={f['full']['n']}, spread "
                     f"{f['full']['spread']:.4f}); same-seed full − baseline: "
                     + (", ".join(f"seed {s} {d:+.4f}" for s, d in f["same_seed_diffs"].items()) or "-") + "  ")
    base0 = _pick(records, BASELINE)
    if base0:
        b = base0[0]
        go = b["metrics"]["mAP"] >= PILOT_GO["mAP"] and _car_ap(b) >= PILOT_GO["car_AP"]
        lines.append(f"Pilot go/no-go (baseline seed {b['seed']}: mAP ≥ {PILOT_GO['mAP']}, car AP ≥ "
                     f"{PILOT_GO['car_AP']}): mAP {b['metrics']['mAP']:.4f}, car AP {_car_ap(b):.3f} → "
                     f"{'GO' if go else 'NO-GO'}")
        fig["pilot_go"] = go
    lines += ["", "| target | measured | met |", "|---|---|---|"]
    lines += [f"| {t} | {m} | {'-' if ok is None else 'yes' if ok else 'no'} |" for t, m, ok in rows]
    lines += diagnostics(records)
    lines += ["", "Paper (real nuScenes val, for orientation only — not our numbers): teacher BEVFusion 68.5 mAP / "
              "71.4 NDS; BEVFusion-C 35.5 / 41.2; SimDistill 40.4 / 45.3 (+14 % relative mAP, +4.1 NDS)."]
    fig["targets"] = [{"target": t, "measured": m, "met": ok} for t, m, ok in rows]
    fig["teacher"] = {k: teacher[k] for k in ("mAP", "NDS")}
    fig["rows"] = [{"label": r["label"], "seed": r["seed"], "mAP": r["metrics"]["mAP"], "NDS": r["metrics"]["NDS"],
                    "wall_seconds": r["wall_seconds"]} for r in records]
    return "\n".join(lines), fig


def plot_bars(records: list[dict[str, Any]], teacher: dict[str, Any], out_png: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels = ["teacher"] + [f"{r['label']} s{r['seed']}" for r in records]
    nds = [teacher["NDS"]] + [r["metrics"]["NDS"] for r in records]
    maps = [teacher["mAP"]] + [r["metrics"]["mAP"] for r in records]
    fig, ax = plt.subplots(figsize=(max(8, 0.8 * len(labels)), 4.2))
    x = range(len(labels))
    ax.bar([i - 0.2 for i in x], maps, width=0.4, label="mAP")
    ax.bar([i + 0.2 for i in x], nds, width=0.4, label="NDS")
    ax.set_xticks(list(x), labels, rotation=30, ha="right", fontsize=8)
    ax.set_ylabel("devkit score, synthetic val")
    ax.set_title("SimDistill on the synthetic benchmark (cached teacher unless noted)")
    ax.legend()
    fig.tight_layout()
    fig.savefig(out_png, dpi=120)
    plt.close(fig)


def _curve(r: dict[str, Any], key: str) -> tuple[list[int], list[float]]:
    """(steps, values) of `val_<key>` in a run's log, ending with the final evaluation."""
    log = Path(r["run_dir"]) / "train_log.jsonl"
    points = [(rec["step"], rec[f"val_{key}"]) for rec in map(json.loads, log.read_text().splitlines())
              if f"val_{key}" in rec] if log.exists() else []
    points.append((r["steps"], r["metrics"][key]))
    steps, vals = zip(*sorted(dict(points).items()))
    return list(steps), list(vals)


def plot_learning_curves(records: list[dict[str, Any]], out_png: Path) -> None:
    """Val NDS and mAP against the training step, baseline vs full SimDistill, every seed."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(12, 4.2))
    for ax, key in zip(axes, ("NDS", "mAP")):
        for label, colour in ((BASELINE, "tab:blue"), (FULL, "tab:red")):
            for i, r in enumerate(sorted(_pick(records, label), key=lambda r: r["seed"])):
                steps, vals = _curve(r, key)
                ax.plot(steps, vals, color=colour, marker="o", markersize=3, alpha=0.85,
                        linestyle=("-", "--", ":")[i % 3], label=f"{label} s{r['seed']}")
        ax.set_xlabel("step")
        ax.set_ylabel(f"val {key} (devkit)")
        ax.grid(True, linewidth=0.3)
        ax.legend(fontsize=7)
    fig.suptitle("Learning curves on the synthetic val split")
    fig.tight_layout()
    fig.savefig(out_png, dpi=120)
    plt.close(fig)
