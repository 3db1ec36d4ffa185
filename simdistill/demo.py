"""`simdistill demo`: synthetic world → teacher → export → baseline and SimDistill students → comparison.

Each stage is skipped when its output already exists and was made with the same config, so re-running the
demo is cheap and an interrupted demo continues where it stopped. The image backbone starts from the shipped
pretrained weights (`model.backbone.pretrained` in the demo config); `pretrain=True` makes them here first.
The two students train side by side in two processes with one torch thread each: on two cores that is faster
than one after the other, and a one-thread run is bit-reproducible, so the same machine prints the same table.
"""

from __future__ import annotations

import copy
import json
import multiprocessing
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any, Callable

from simdistill.config import DISTILL_LOSSES, Config, config_to_dict
from simdistill.training.checkpoint import load_checkpoint

STAGES = ("world", "pretrain", "teacher", "export", "baseline", "simdistill")
STUDENTS = (("baseline", (), "baseline (camera, GT only)"),
            ("simdistill", DISTILL_LOSSES, "SimDistill (cached teacher)"))
PROGRESS_EVERY = 40  # steps between the students' progress lines


def _log(msg: str) -> None:
    print(f"[demo] {msg}", file=sys.stderr, flush=True)


def _finished(run_dir: Path, final_name: str, cfg: Config) -> dict[str, Any] | None:
    """Metrics of a finished run made with the same config, else None."""
    final = run_dir / final_name
    metrics = run_dir / "metrics.json"
    if not (final.exists() and metrics.exists()):
        return None
    if load_checkpoint(final)["config"] != config_to_dict(cfg):
        return None
    return json.loads(metrics.read_text())


def _world(cfg: Config, root: Path) -> None:
    from simdistill.pipeline.synthetic import make_demo_data

    marker = root / "world_config.json"
    wanted = json.dumps(config_to_dict(cfg.world), sort_keys=True)
    if marker.exists() and marker.read_text() == wanted:
        _log(f"world: {root} exists, skipped")
        return
    _log("world: generating the synthetic nuScenes world")
    summary = make_demo_data(root, cfg.world, progress=True)
    marker.write_text(wanted)
    _log(summary.to_text())


def _timed(label: str, fn: Callable[[], Any], timings: dict[str, float]) -> Any:
    t0 = time.time()
    result = fn()
    timings[label] = time.time() - t0
    return result


def _pretrain(cfg: Config, out_dir: Path) -> str:
    """Pretrain the image backbone on the demo world's train images (resumes); returns its path."""
    from simdistill.models.pretrained import BACKBONE_FILE
    from simdistill.training.backbone_pretrain import pretrain_backbone

    backbone = out_dir / BACKBONE_FILE
    if backbone.exists():
        _log("pretrain: finished backbone found, skipped")
    else:
        _log("pretrain: the image backbone on 2D detection of the train images")
        pretrain_backbone(cfg, out_dir=out_dir)
    return str(backbone)


def _teacher(cfg: Config, teacher_dir: Path, timings: dict[str, float]) -> dict[str, Any]:
    from simdistill.evaluation.run import curve_hooks, evaluate_run
    from simdistill.teacher.trainer import train_teacher

    metrics = _finished(teacher_dir, "teacher.pt", cfg)
    if metrics is not None:
        _log("teacher: finished run found, skipped")
        return metrics
    _log("teacher: training the LiDAR-camera teacher")

    def run() -> dict[str, Any]:
        result = train_teacher(cfg, out_dir=teacher_dir, hooks=curve_hooks(cfg, cfg.teacher_train, teacher_dir))
        return evaluate_run(result.model, cfg, teacher_dir)

    return _timed("teacher", run, timings)


def _student_config(cfg: Config, variant: str, losses: tuple[str, ...]) -> Config:
    scfg = copy.deepcopy(cfg)
    scfg.student_train.variant = variant
    scfg.distill.losses = losses
    scfg.threads = 1  # two students side by side on two cores; one thread each is also bit-reproducible
    return scfg


def train_and_score_student(scfg: Config, run_dir: Path, store: str) -> tuple[dict[str, Any], float]:
    """Train one student from the store, then score it on val: (metrics, seconds). Runs in a child process."""
    from simdistill.evaluation.run import curve_hooks, evaluate_run
    from simdistill.student_train.trainer import train_student
    from simdistill.training.fit import StepHook

    t0 = time.time()
    variant = scfg.student_train.variant

    def progress(step: int, model: Any) -> dict[str, float]:
        _log(f"{variant}: step {step} ({time.time() - t0:.0f} s)")
        return {}

    hooks = [StepHook(every=PROGRESS_EVERY, run=progress), *curve_hooks(scfg, scfg.student_train, run_dir)]
    result = train_student(scfg, out_dir=run_dir, store=store, progress=False, hooks=hooks)
    return evaluate_run(result.model, scfg, run_dir), time.time() - t0


def _students(cfg: Config, workdir: Path, store: str, timings: dict[str, float]) -> dict[str, dict[str, Any]]:
    """Both students, the unfinished ones trained side by side in child processes."""
    rows: dict[str, dict[str, Any]] = {}
    todo = {}
    for variant, losses, label in STUDENTS:
        scfg = _student_config(cfg, variant, losses)
        metrics = _finished(workdir / variant, "student.pt", scfg)
        if metrics is None:
            todo[label] = (variant, scfg)
        else:
            _log(f"{variant}: finished run found, skipped")
            rows[label] = metrics
    if todo:
        _log(f"{' and '.join(v for v, _ in todo.values())}: training side by side, one thread each")
        spawn = multiprocessing.get_context("spawn")  # zarr's event loop does not survive fork
        with ProcessPoolExecutor(max_workers=len(todo), mp_context=spawn) as pool:
            jobs = {label: pool.submit(train_and_score_student, scfg, workdir / variant, store)
                    for label, (variant, scfg) in todo.items()}
            for label, job in jobs.items():
                rows[label], timings[todo[label][0]] = job.result()
    return {label: rows[label] for _, _, label in STUDENTS}


def run_demo(cfg: Config, *, workdir: Path, pretrain: bool = False) -> str:
    """Run every stage (skipping finished ones); returns the comparison table, what it means and what to try
    next."""
    from simdistill.teacher_export.export import export_teacher

    workdir = Path(workdir).resolve()
    workdir.mkdir(parents=True, exist_ok=True)
    cfg = copy.deepcopy(cfg)
    cfg.data.dataroot = str(workdir / "data")
    cfg.data.version = cfg.world.version
    timings: dict[str, float] = {}
    t_start = time.time()

    _timed("world", lambda: _world(cfg, Path(cfg.data.dataroot)), timings)
    if pretrain:
        cfg.model.backbone.pretrained = _timed("pretrain", lambda: _pretrain(cfg, workdir / "pretrain"), timings)
    teacher_dir = workdir / "teacher"
    rows: dict[str, dict[str, Any]] = {"teacher (LiDAR+camera)": _teacher(cfg, teacher_dir, timings)}

    store = str(workdir / "teacher_store.zarr")
    _log("export: caching teacher targets (resumes; finished views are skipped)")
    report = _timed("export", lambda: export_teacher(cfg, checkpoint=teacher_dir / "teacher.pt", out=store), timings)
    _log(report.to_text())
    rows.update(_students(cfg, workdir, store, timings))
    timings["total"] = time.time() - t_start

    table = comparison_table(rows)
    (workdir / "results.md").write_text(table + "\n")
    (workdir / "results.json").write_text(json.dumps({"rows": rows, "stage_seconds": timings}, indent=2))
    plot_comparison(rows, workdir / "comparison.png")
    return table + "\n\n" + explanation(workdir, store)


def explanation(workdir: Path, store: str) -> str:
    """What the numbers mean, where the files are, and the next commands to run."""
    return "\n".join([
        "mAP: mean average precision over the 10 nuScenes classes (centre-distance matching, 0.5-4 m); NDS: the",
        "nuScenes detection score, half mAP and half the five true-positive errors (translation, scale, orientation,",
        "velocity, attribute). Both from the real nuscenes-devkit on the synthetic val split; higher is better.",
        "The teacher sees LiDAR and cameras; both students see cameras only. SimDistill learned from the teacher's",
        "cached BEV features and predictions; the baseline from the ground truth alone. One seed on a small world:",
        "docs/results.md has the longer benchmark and how far its seeded verdict has got.",
        "",
        f"plots: {workdir}/comparison.png, {workdir}/*/eval/bev_*.png, {workdir}/*/eval/loss_curves.png",
        f"store: {store}   (simdistill store info {store})",
        "next: simdistill train-student --store " + store + " --losses imd,cmd --out runs/ablation   (an ablation row)",
        "      simdistill store show " + store + "   (one cached view against its GT boxes)",
    ])


def comparison_table(rows: dict[str, dict[str, Any]]) -> str:
    lines = ["| model | mAP | NDS | mATE | mAOE |", "|---|---:|---:|---:|---:|"]
    for name, m in rows.items():
        lines.append(f"| {name} | {m['mAP']:.4f} | {m['NDS']:.4f} | {m['mATE']:.3f} | {m['mAOE']:.3f} |")
    return "\n".join(lines)


def plot_comparison(rows: dict[str, dict[str, Any]], out_png: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(rows)
    fig, ax = plt.subplots(figsize=(7, 3.5))
    x = range(len(names))
    ax.bar([i - 0.2 for i in x], [rows[n]["mAP"] for n in names], width=0.4, label="mAP")
    ax.bar([i + 0.2 for i in x], [rows[n]["NDS"] for n in names], width=0.4, label="NDS")
    ax.set_xticks(list(x), names, fontsize=8)
    ax.set_ylabel("score (nuScenes devkit, synthetic val)")
    ax.legend()
    fig.tight_layout()
    fig.savefig(out_png, dpi=120)
    plt.close(fig)
