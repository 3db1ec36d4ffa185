"""The report of benchmarks/reproduce.py: the factorial (dev) and verdict (val) tables, the targets, verdict.json
and the two charts. Every figure is computed from the finished rows' own files."""

from __future__ import annotations

import json
import os
import statistics
from pathlib import Path
from typing import Any

from simdistill.evaluation.results_chart import PAPER_NUSCENES_VAL, plot_results

BASELINE = "baseline"
ARCH_ONLY = "two-branch, GT only"
FULL = "full"
RELEASED = "released code's student (LiDAR at test: NOT camera-only)"
TARGETS = {"P1": {"NDS": 0.04, "rel_mAP": 0.14}, "P2": {"NDS": 0.02, "rel_mAP": 0.07}}
SEEDS_WANTED = 5
PAPER = ("Paper (real nuScenes val; the paper's numbers, not ours): BEVFusion teacher 68.5 mAP / 71.4 NDS; "
         "BEVFusion-C 35.5 / 41.2; SimDistill 40.4 / 45.3 (+14 % relative mAP, +4.1 NDS). The released SimDistill "
         "student builds its view transform from the teacher's DepthLSSTransform and feeds it LiDAR points at "
         "training and at test, so that number may include LiDAR input.")
TERMS = ("gt", "depth", "imd", "cmd", "mmd_f", "mmd_p")


def _pick(records: list[dict[str, Any]], *, row: str | None = None, protocol: str | None = None,
          split: str | None = None, seed: int | None = None) -> list[dict[str, Any]]:
    return [r for r in records if (row is None or r["row"] == row) and (protocol is None or r["protocol"] == protocol)
            and (split is None or r["split"] == split) and (seed is None or r["seed"] == seed)]


def _log(r: dict[str, Any], workdir: Path) -> list[dict[str, Any]]:
    path = workdir / r["run_dir"] / "train_log.jsonl"
    return [json.loads(x) for x in path.read_text().splitlines()] if path.exists() else []


def curve(r: dict[str, Any], workdir: Path, key: str) -> tuple[list[int], list[float]]:
    """(steps, values) of the run's learning curve (`val_<key>`, on the run's eval split), ending with its final
    evaluation."""
    points = {x["step"]: x[f"val_{key}"] for x in _log(r, workdir) if f"val_{key}" in x}
    points[r["steps"]] = r[key]
    steps = sorted(points)
    return steps, [points[s] for s in steps]


def last_quarter_change(r: dict[str, Any], workdir: Path, key: str = "mAP") -> float | None:
    """|final − value at the first evaluation in the last quarter| / final: how much the run still moved."""
    steps, vals = curve(r, workdir, key)
    start = next((v for s, v in zip(steps, vals) if s >= 0.75 * r["steps"] and s < r["steps"]), None)
    if start is None or not vals[-1]:
        return None
    return abs(vals[-1] - start) / vals[-1]


def _stats(vals: list[float]) -> dict[str, float]:
    return {"mean": statistics.fmean(vals) if vals else float("nan"),
            "std": statistics.stdev(vals) if len(vals) > 1 else 0.0, "n": len(vals)}


def verdict_figures(records: list[dict[str, Any]], protocol: str) -> dict[str, Any]:
    """Means, stds and same-seed differences of baseline and full on val under one protocol."""
    base = _pick(records, row=BASELINE, protocol=protocol, split="val")
    full = _pick(records, row=FULL, protocol=protocol, split="val")
    fig: dict[str, Any] = {}
    for key in ("NDS", "mAP"):
        b, f = _stats([r[key] for r in base]), _stats([r[key] for r in full])
        seeds = sorted({r["seed"] for r in base} & {r["seed"] for r in full})
        diffs = {s: _pick(full, seed=s)[0][key] - _pick(base, seed=s)[0][key] for s in seeds}
        fig[key] = {"baseline": b, "full": f, "gain": f["mean"] - b["mean"], "paired": diffs,
                    "larger_std": max(b["std"], f["std"])}
    b_map = fig["mAP"]["baseline"]["mean"]
    fig["mAP"]["relative_gain"] = fig["mAP"]["gain"] / b_map if b_map else float("nan")
    return fig


def targets(fig: dict[str, Any], protocol: str) -> list[tuple[str, str, bool | None]]:
    """(target, measured, met) rows; None = not measurable yet (fewer than SEEDS_WANTED paired seeds)."""
    want = TARGETS[protocol]
    nds, mp = fig["NDS"], fig["mAP"]
    n = min(len(nds["paired"]), nds["baseline"]["n"], nds["full"]["n"])
    enough = n >= SEEDS_WANTED
    diffs = list(nds["paired"].values()) + list(mp["paired"].values())
    return [
        (f"mean(full) − mean(baseline) ≥ +{100 * want['NDS']:.0f} NDS points", f"{100 * nds['gain']:+.2f} (n={n})",
         nds["gain"] >= want["NDS"] if enough else None),
        ("... and > 2 × the larger NDS seed std", f"std {100 * nds['larger_std']:.2f}",
         nds["gain"] > 2 * nds["larger_std"] if enough else None),
        (f"relative mAP gain ≥ +{100 * want['rel_mAP']:.0f} %", f"{100 * mp['relative_gain']:+.1f} %",
         mp["relative_gain"] >= want["rel_mAP"] if enough else None),
        ("... and the mAP gain > 2 × the larger mAP seed std", f"gain {mp['gain']:+.4f}, std {mp['larger_std']:.4f}",
         mp["gain"] > 2 * mp["larger_std"] if enough else None),
        (f"all {SEEDS_WANTED} same-seed differences (NDS and mAP) positive",
         ", ".join(f"{d:+.4f}" for d in diffs) or "-", all(d > 0 for d in diffs) if enough else None),
    ]


def _met(ok: bool | None) -> str:
    return f"not measurable yet (< {SEEDS_WANTED} seeds)" if ok is None else "met" if ok else "NOT met"


def _metric_row(r: dict[str, Any], workdir: Path, ref: dict[str, dict[str, Any]]) -> str:
    m = r["metrics"]
    deltas = " | ".join(f"{100 * (r['NDS'] - ref[k]['NDS']):+.2f}" if k in ref else "-" for k in (BASELINE, FULL))
    moved = last_quarter_change(r, workdir)
    return (f"| {r['row']} | {r['mAP']:.4f} | {r['NDS']:.4f} | {deltas} | {m['mATE']:.3f} | {m['mAOE']:.3f} | "
            f"{m['mAVE']:.3f} | {r['steps']} | {'-' if moved is None else f'{100 * moved:.0f} %'} | "
            f"{r['wall_seconds'] / 60:.1f} |")


def diagnostics(records: list[dict[str, Any]], workdir: Path) -> list[str]:
    """Train-time only: each term's gradient norm on the shared image/lift parameters and each loss term, mean over
    the first and last fifth of the run, for the dev rows."""
    lines = ["", "Train-time diagnostics (train_log.jsonl; ‖∇term‖ on the backbone + lift alone; first / last fifth "
             "of each run):", "",
             "| protocol | row | part | " + " | ".join(f"‖∇{t}‖" for t in TERMS) + " | " + " | ".join(TERMS) + " |",
             "|---|---|---|" + "---:|" * (2 * len(TERMS))]
    for r in sorted(_pick(records, split="dev"), key=lambda r: (r["protocol"], r["row"])):
        log = _log(r, workdir)
        for name, part in (("first 1/5", log[: len(log) // 5]), ("last 1/5", log[4 * len(log) // 5:])):
            def mean(key: str, part: list[dict[str, Any]] = part) -> str:
                vals = [x[key] for x in part if key in x]
                return f"{statistics.fmean(vals):.3g}" if vals and any(vals) else "-"
            lines.append(f"| {r['protocol']} | {r['row']} | {name} | "
                         + " | ".join(mean(f"grad_norm/{t}") for t in TERMS) + " | "
                         + " | ".join(mean(t) for t in TERMS) + " |")
    return lines


def _header(title: str, command: str, commit: str, config: str, split_note: str) -> list[str]:
    return [f"# {title}", "", f"Last command: `{command}`  ", f"Report written at commit: `{commit}` (each run's "
            "training commit: `trained_at_commit` in verdict.json)  ",
            f"Config: `{config}`; CPU, {os.cpu_count()} cores, one torch thread per run, two runs side by side. "
            f"Metrics: nuScenes devkit (detection_cvpr_2019) on {split_note}. Wall time per training subprocess, its "
            "learning-curve evaluations included. `moved` = how much mAP still changed over the last quarter of the "
            "run (relative; < 10 % = converged).", ""]


def factorial_report(records: list[dict[str, Any]], teacher: dict[str, Any], workdir: Path, head: list[str]) -> str:
    lines = head + [f"Teacher (LiDAR+camera, val): mAP {teacher['mAP']:.4f}, NDS {teacher['NDS']:.4f}.", ""]
    dev = _pick(records, split="dev")
    for protocol in sorted({r["protocol"] for r in dev}):
        rows = _pick(dev, protocol=protocol)
        ref = {r["row"]: r for r in rows if r["row"] in (BASELINE, FULL)}
        lines += [f"## {protocol} ({'no depth supervision' if protocol == 'P1' else 'depth supervision in both arms'})"
                  f", dev, seed {rows[0]['seed']}", "",
                  "| row | mAP | NDS | ΔNDS vs baseline | ΔNDS vs full | mATE | mAOE | mAVE | steps | moved | wall [min] |",
                  "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
        lines += [_metric_row(r, workdir, ref) for r in rows]
        arch = _pick(rows, row=ARCH_ONLY)
        if arch and len(ref) == 2:
            a, b, f = arch[0]["NDS"], ref[BASELINE]["NDS"], ref[FULL]["NDS"]
            lines += ["", f"Architecture alone (two-branch GT-only − baseline): {100 * (a - b):+.2f} NDS; distillation "
                      f"on that architecture (full − two-branch GT-only): {100 * (f - a):+.2f} NDS."]
        lines.append("")
    lines += diagnostics(records, workdir)
    return "\n".join(lines)


def verdict_report(records: list[dict[str, Any]], head: list[str]) -> tuple[str, dict[str, Any]]:
    lines, figures = list(head), {}
    for protocol in ("P1", "P2"):
        fig = verdict_figures(records, protocol)
        if not fig["NDS"]["baseline"]["n"] and not fig["NDS"]["full"]["n"]:
            continue
        rows = targets(fig, protocol)
        figures[protocol] = {**fig, "targets": [{"target": t, "measured": m, "met": ok} for t, m, ok in rows]}
        lines += [f"## {protocol} ({'the paper’s: no depth supervision' if protocol == 'P1' else 'depth supervision in both arms'}), val", ""]
        for key in ("NDS", "mAP"):
            f = fig[key]
            lines.append(f"{key}: baseline {f['baseline']['mean']:.4f} ± {f['baseline']['std']:.4f} "
                         f"(n={f['baseline']['n']}); full {f['full']['mean']:.4f} ± {f['full']['std']:.4f} "
                         f"(n={f['full']['n']}); same-seed full − baseline: "
                         + (", ".join(f"seed {s} {d:+.4f}" for s, d in f["paired"].items()) or "-") + "  ")
        lines += ["", "| target | measured | |", "|---|---|---|"]
        lines += [f"| {t} | {m} | {_met(ok)} |" for t, m, ok in rows] + [""]
    released = _pick(records, row=RELEASED)
    for r in released:
        lines.append(f"Labelled extra row, {r['protocol']}, seed {r['seed']}: {RELEASED}: mAP {r['mAP']:.4f}, "
                     f"NDS {r['NDS']:.4f}.")
    lines += ["", PAPER]
    return "\n".join(lines), figures


def write_all(records: list[dict[str, Any]], teacher: dict[str, Any], *, out_dir: Path, workdir: Path, command: str,
              commit: str, config: Path, repo: Path) -> dict[str, Any]:
    """Write factorial.md, verdict.md, verdict.json and the charts into out_dir; return the JSON figures."""
    out_dir.mkdir(parents=True, exist_ok=True)
    cfg_name = str(config.relative_to(repo) if config.is_relative_to(repo) else config)
    factorial = factorial_report(records, teacher, workdir, _header(
        "SimDistill factorial on the dev split", command, commit, cfg_name, "the dev split (held-out train scenes)"))
    (out_dir / "factorial.md").write_text(factorial + "\n")
    text, figures = verdict_report(records, _header("SimDistill verdict on val", command, commit, cfg_name,
                                                    "the synthetic val split"))
    (out_dir / "verdict.md").write_text(text + "\n")
    keep = ("protocol", "row", "split", "seed", "mAP", "NDS", "steps", "wall_seconds", "peak_rss_mb", "variant",
            "losses", "sets")
    runs = [{k: r[k] for k in keep} | {"trained_at_commit": r.get("commit", "not recorded"),"mATE": r["metrics"]["mATE"], "mAOE": r["metrics"]["mAOE"],
                                       "mAVE": r["metrics"]["mAVE"]} for r in records]
    (out_dir / "verdict.json").write_text(json.dumps({"commit": commit, "command": command, "config": cfg_name,
                                                      "teacher": {k: teacher[k] for k in ("mAP", "NDS")},
                                                      "runs": runs}, indent=2) + "\n")
    plot_learning_curves(records, workdir, out_dir / "learning_curves.png")
    if records:  # every seed per arm, mean ± std, the paired differences, the paper's values marked as the paper's
        plot_results(runs, out_dir / "results.png", baseline=BASELINE, unpaired=(RELEASED,),
                     paper={BASELINE: PAPER_NUSCENES_VAL["baseline"], FULL: PAPER_NUSCENES_VAL["simdistill"]},
                     title="SimDistill on the synthetic benchmark (the paper's real-nuScenes values: hollow diamonds)")
    return {"runs": len(records), "teacher": {k: teacher[k] for k in ("mAP", "NDS")},
            "verdict": {p: {"NDS_gain": f["NDS"]["gain"], "mAP_relative_gain": f["mAP"]["relative_gain"],
                            "targets_met": [t["met"] for t in f["targets"]]} for p, f in figures.items()}}


def plot_learning_curves(records: list[dict[str, Any]], workdir: Path, out_png: Path) -> None:
    """mAP against the step for baseline and full: one panel per (protocol, split), every seed."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = sorted({(r["protocol"], r["split"]) for r in records if r["row"] in (BASELINE, FULL, ARCH_ONLY)})
    if not panels:
        return
    fig, axes = plt.subplots(1, len(panels), figsize=(5 * len(panels), 3.8), squeeze=False)
    colours = {BASELINE: "tab:blue", FULL: "tab:red", ARCH_ONLY: "tab:gray"}
    for ax, (protocol, split) in zip(axes[0], panels):
        for label, colour in colours.items():
            for r in _pick(records, row=label, protocol=protocol, split=split):
                steps, vals = curve(r, workdir, "mAP")
                ax.plot(steps, vals, color=colour, marker="o", markersize=2, alpha=0.8, linewidth=1,
                        label=f"{label} s{r['seed']}")
        ax.set_title(f"{protocol} on {split}", fontsize=10)
        ax.set_xlabel("step")
        ax.set_ylabel(f"{split} mAP (devkit)")
        ax.grid(True, linewidth=0.3)
        ax.legend(fontsize=6)
    fig.suptitle("Learning curves (synthetic benchmark; each line one seed)", fontsize=10)
    fig.tight_layout()
    fig.savefig(out_png, dpi=110)
    plt.close(fig)
