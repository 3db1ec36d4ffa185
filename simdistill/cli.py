"""`simdistill` command line: thin Typer commands that parse, validate and call one function each.

Every user error (`SimDistillError`) becomes a one-line message on stderr and exit code 2. The store's
subcommands (`simdistill store info|verify|show|stats`) live in `simdistill.cli_store`. Each command imports its
stage inside the command, so that `simdistill --help` and a mistyped option answer without loading torch, zarr or
Dask.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated, Any, Optional

import typer

from simdistill.cli_common import (
    ConfigOpt,
    EvaluateOpt,
    ResumeOpt,
    RunOut,
    SchedulerOpt,
    SetOpt,
    config_default,
    load_cli_config,
    user_errors,
)
from simdistill.cli_config import config_app
from simdistill.cli_store import store_app
from simdistill.config import validate
from simdistill.errors import DataError

app = typer.Typer(
    name="simdistill",
    help=(
        "Offline SimDistill: run a LiDAR-camera BEV teacher once, cache its BEV features and predictions in a "
        "Zarr store, and distill a camera-only student from the cache.\n\n"
        "Typical flow: make-demo-data → train-teacher → export-teacher → train-student → evaluate "
        "(or `simdistill demo`, which runs all of them on a synthetic nuScenes world)."
    ),
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
app.add_typer(store_app, name="store")
app.add_typer(config_app, name="config")


def _revalidate(cfg: Any) -> None:
    """Options that set config fields are checked like the config itself."""
    validate(cfg)


def _finish_run(result: Any, cfg: Any, out: Path, evaluate: bool) -> None:
    """Print the run's summary and, once it has finished every step, its devkit metrics on val."""
    typer.echo(result.to_text())
    if evaluate and result.finished and result.rank == 0:
        from simdistill.evaluation.run import evaluate_run

        metrics = evaluate_run(result.model, cfg, out)
        typer.echo(f"{metrics['split']} mAP: {metrics['mAP']:.4f}  NDS: {metrics['NDS']:.4f}  "
                   f"(metrics: {out / 'metrics.json'})")


@app.command("make-demo-data")
@user_errors
def make_demo_data_cmd(
    out_dir: Annotated[Path, typer.Argument(help="Folder to write the synthetic nuScenes dataroot into.")],
    seed: Annotated[
        Optional[int], typer.Option(help="World seed (same seed → identical files). " + config_default("world.seed"))
    ] = None,
    scenes: Annotated[
        Optional[int], typer.Option(help="Number of scenes (v1.0-mini: at most 10). " + config_default("world.scenes"))
    ] = None,
    samples_per_scene: Annotated[
        Optional[int],
        typer.Option(help="Key frames per scene, 0.5 s apart. " + config_default("world.samples_per_scene")),
    ] = None,
    version: Annotated[
        Optional[str], typer.Option(help="v1.0-mini (devkit mini scene names) or v1.0-trainval (train/val names). "
                                     + config_default("world.version"))
    ] = None,
    config: ConfigOpt = None,
    set_: SetOpt = None,
    mmdet3d_infos: Annotated[
        bool,
        typer.Option("--mmdet3d-infos", help="Also write mmdet3d v1.x info files (nuscenes_infos_train.pkl / _val.pkl) "
                     "into the dataroot; use them with --set data.infos_train=... data.infos_val=..."),
    ] = False,
) -> None:
    """Write a synthetic world in the real nuScenes v1.0 layout (loadable and scored by nuscenes-devkit)."""
    from simdistill.pipeline.synthetic import make_demo_data

    blocker = next((p for p in out_dir.absolute().parents if p.exists() and not p.is_dir()), None)
    if blocker is not None:
        raise DataError(f"cannot create {out_dir}: {blocker} is a file, not a folder; choose a path under a folder")
    world = load_cli_config(config, set_).world
    for key, value in (("seed", seed), ("scenes", scenes), ("samples_per_scene", samples_per_scene),
                       ("version", version)):
        if value is not None:
            setattr(world, key, value)
    typer.echo(make_demo_data(out_dir, world, progress=True).to_text())
    if mmdet3d_infos:
        from simdistill.pipeline.mmdet3d_infos_write import write_mmdet3d_infos

        for split, path in write_mmdet3d_infos(out_dir, world.version, out_dir).items():
            typer.echo(f"mmdet3d infos ({split}): {path}")


@app.command("pretrain-backbone")
@user_errors
def pretrain_backbone_cmd(out: RunOut, config: ConfigOpt = None, set_: SetOpt = None,
                          resume: ResumeOpt = True) -> None:
    """Pretrain the image backbone on 2D detection of the train split's camera images (projected 3D boxes).

    Writes OUT/backbone.pt; point the teacher and students at it with --set model.backbone.pretrained=OUT/backbone.pt
    (the analogue of the nuImages-pretrained backbone BEVFusion-C and SimDistill start from)."""
    from simdistill.models.pretrained import BACKBONE_FILE
    from simdistill.training.backbone_pretrain import pretrain_backbone

    cfg = load_cli_config(config, set_)
    result = pretrain_backbone(cfg, out_dir=out, resume=resume)
    typer.echo(result.to_text())
    if result.finished:
        typer.echo(f"backbone: {out / BACKBONE_FILE}  (use: --set model.backbone.pretrained={out / BACKBONE_FILE})")


@app.command("train-teacher")
@user_errors
def train_teacher_cmd(out: RunOut, config: ConfigOpt = None, set_: SetOpt = None, resume: ResumeOpt = True,
                      evaluate: EvaluateOpt = True) -> None:
    """Train the BEVFusion-style LiDAR-camera teacher on the train split, then evaluate it on val."""
    from simdistill.evaluation.run import curve_hooks
    from simdistill.teacher.trainer import train_teacher

    cfg = load_cli_config(config, set_)
    result = train_teacher(cfg, out_dir=out, resume=resume, hooks=curve_hooks(cfg, cfg.teacher_train, out))
    _finish_run(result, cfg, out, evaluate)


# The options that choose the teacher of export-teacher (docs/mmdet3d.md, docs/own-teacher.md).
TeacherOpt = Annotated[
    Optional[str],
    typer.Option(help="simdistill (a train-teacher checkpoint), mmdet3d (an mmdetection3d detector, tapped; needs "
                 "the mmdet3d extra, see docs/mmdet3d.md) or python (any torch module your --teacher-factory builds, "
                 "see docs/own-teacher.md). " + config_default("export.teacher")),
]
TeacherFactoryOpt = Annotated[
    Optional[str],
    typer.Option(help="With --teacher python: MODULE:FUNCTION or FILE.py:FUNCTION, called as "
                 "FUNCTION(model_cfg, checkpoint_path); it returns the teacher module."),
]
TeacherConfigOpt = Annotated[
    Optional[Path], typer.Option(help="With --teacher mmdet3d: the detector's mmdet3d model config (.py).")
]
TapFamilyOpt = Annotated[
    Optional[str], typer.Option(help="With --teacher mmdet3d: the detector's module layout, bevfusion (a CenterHead) "
                                "or bevfusion-transfusion (a TransFusionHead). " + config_default("export.tap_family"))
]
TapOpt = Annotated[
    Optional[list[str]],
    typer.Option(help="With --teacher mmdet3d, repeatable: tap a map at another module, NAME=module.path "
                 "(NAME: cam_bev, lidar_bev, fused_bev, head)."),
]


@app.command("export-teacher")
@user_errors
def export_teacher_cmd(
    checkpoint: Annotated[
        Path, typer.Option("--checkpoint", "-t", help="Teacher checkpoint: from train-teacher, an mmdet3d .pth, or "
                           "the file a --teacher-factory reads.")
    ],
    out: Annotated[str, typer.Option("--out", "-o", help="Store path or fsspec URL (file://…, s3://…).")],
    config: ConfigOpt = None,
    set_: SetOpt = None,
    views_per_sample: Annotated[
        Optional[int], typer.Option(help="Augmented views drawn per sample (1 = the test-time view). "
                                     + config_default("export.views_per_sample"))
    ] = None,
    workers: Annotated[
        Optional[int], typer.Option(help="Local Dask worker processes. " + config_default("export.workers"))
    ] = None,
    scheduler: SchedulerOpt = None,
    split: Annotated[
        Optional[str], typer.Option(help="Which split to export: train or val. " + config_default("export.split"))
    ] = None,
    overwrite: Annotated[bool, typer.Option(help="Replace a store written with another config/teacher.")] = False,
    teacher: TeacherOpt = None,
    teacher_factory: TeacherFactoryOpt = None,
    teacher_config: TeacherConfigOpt = None,
    tap_family: TapFamilyOpt = None,
    tap: TapOpt = None,
) -> None:
    """Run the teacher once over the dataset and write its BEV features and predictions to a Zarr store.

    Re-running the same command resumes: finished views are skipped. With --teacher mmdet3d, an
    mmdetection3d BEVFusion-layout detector (with a CenterHead, or a TransFusionHead with --tap-family
    bevfusion-transfusion) fills the same store: its camera, LiDAR and fused BEV maps and head outputs are read by
    forward hooks on the modules of its family, and must have the shapes the simdistill config describes
    (model.channels, model.bev, model.head.tasks). With --teacher python, any torch module does, built by your
    --teacher-factory and returning those maps.
    """
    from simdistill.teacher_export.export import export_teacher

    cfg = load_cli_config(config, set_)
    chosen = {"teacher": teacher, "teacher_config": None if teacher_config is None else str(teacher_config),
              "teacher_factory": teacher_factory, "tap_family": tap_family, "taps": tuple(tap) if tap else None,
              "views_per_sample": views_per_sample, "workers": workers, "split": split}
    for key, value in chosen.items():
        if value is not None:
            setattr(cfg.export, key, value)
    _revalidate(cfg)
    report = export_teacher(cfg, checkpoint=checkpoint, out=out, scheduler=scheduler, overwrite=overwrite)
    typer.echo(report.to_text())


@app.command("train-student")
@user_errors
def train_student_cmd(
    out: RunOut,
    config: ConfigOpt = None,
    set_: SetOpt = None,
    store: Annotated[
        Optional[str],
        typer.Option(help="Teacher feature store (from export-teacher): its views, and its targets unless "
                     "--online-teacher is given."),
    ] = None,
    losses: Annotated[
        Optional[str], typer.Option(help="Comma list of imd,cmd,mmd_f,mmd_p, or 'none' for GT only. "
                                     + config_default("distill.losses"))
    ] = None,
    variant: Annotated[
        Optional[str],
        typer.Option(help="simdistill (two branches + GCM) or baseline. " + config_default("student_train.variant")),
    ] = None,
    online_teacher: Annotated[
        Optional[Path], typer.Option(help="Compute targets live from this teacher checkpoint instead of a store.")
    ] = None,
    scheduler: SchedulerOpt = None,
    no_gcm: Annotated[bool, typer.Option("--no-gcm", help="Ablation: SimDistill without the GCM.")] = False,
    resume: ResumeOpt = True,
    evaluate: EvaluateOpt = True,
) -> None:
    """Train a camera-only student from cached teacher targets (or GT only, or with an online teacher)."""
    from simdistill.evaluation.run import curve_hooks
    from simdistill.student_train.trainer import train_student

    cfg = load_cli_config(config, set_)
    if variant is not None:
        cfg.student_train.variant = variant
    if no_gcm:
        cfg.model.gcm.enabled = False
    if losses is not None:
        names = [s.strip() for s in losses.split(",") if s.strip()]
        cfg.distill.losses = () if names in (["none"], []) else tuple(names)
    _revalidate(cfg)
    if scheduler:  # an unreachable cluster is refused before the run folder is touched
        from simdistill.cluster import connect

        connect(scheduler).close()
    result = train_student(cfg, out_dir=out, store=store, online_teacher=online_teacher, scheduler=scheduler,
                           resume=resume, hooks=curve_hooks(cfg, cfg.student_train, out))
    _finish_run(result, cfg, out, evaluate)


@app.command("evaluate")
@user_errors
def evaluate_cmd(
    checkpoint: Annotated[Path, typer.Option("--checkpoint", "-s", help="Student or teacher checkpoint.")],
    out: Annotated[Optional[Path], typer.Option("--out", "-o", help="Output folder (default: beside it).")] = None,
    split: Annotated[str, typer.Option(help="val or train.")] = "val",
    set_: SetOpt = None,
) -> None:
    """Evaluate a checkpoint with the nuScenes devkit: metrics JSON, a table, BEV plots and loss curves.

    Takes no --config: the checkpoint carries the config it was trained with. --set overrides it, e.g.
    --set data.dataroot=PATH when the data has moved.
    """
    from simdistill.evaluation.run import evaluate_checkpoint

    result = evaluate_checkpoint(checkpoint, out_dir=out, split=split, overrides=list(set_ or []))
    typer.echo(result.to_table())


@app.command("demo")
@user_errors
def demo_cmd(
    workdir: Annotated[Path, typer.Option(help="Folder for the world, runs, store and results.")] = Path("demo_work"),
    config: ConfigOpt = None,
    set_: SetOpt = None,
    pretrain: Annotated[bool, typer.Option("--pretrain", help="Pretrain the image backbone on the demo world's train "
                                           "images first (a few minutes) instead of starting from the shipped "
                                           "pretrained weights.")] = False,
) -> None:
    """The whole pipeline on the embedded synthetic world: data → teacher → export → students → comparison.

    About 10 minutes on 2 CPU cores; re-running skips the stages that finished."""
    from simdistill.demo import run_demo

    typer.echo(run_demo(load_cli_config(config, set_), workdir=workdir, pretrain=pretrain))


def main() -> None:
    app(prog_name="simdistill")


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
