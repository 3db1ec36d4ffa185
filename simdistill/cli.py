"""`simdistill` command line: thin Typer commands that parse, validate and call one function each.

Every user error (`SimDistillError`) becomes a one-line message on stderr and exit code 2.
"""

from __future__ import annotations

import errno
import functools
import sys
from pathlib import Path
from typing import Annotated, Any, Callable, Optional, TypeVar

import typer

from simdistill.errors import SimDistillError

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
store_app = typer.Typer(help="Inspect and check a teacher feature store (info, verify, show).", no_args_is_help=True)
app.add_typer(store_app, name="store")

F = TypeVar("F", bound=Callable[..., Any])
USER_OS_ERRORS = frozenset({errno.ENOTDIR, errno.EISDIR, errno.EEXIST, errno.EACCES, errno.EPERM, errno.EROFS,
                            errno.ENOSPC, errno.EDQUOT, errno.ENAMETOOLONG})

ConfigOpt = Annotated[
    Optional[Path],
    typer.Option("--config", "-c", help="YAML config (e.g. configs/demo.yaml). Default: configs/demo.yaml."),
]
SetOpt = Annotated[
    Optional[list[str]],
    typer.Option("--set", help="Dotted config override, repeatable: --set model.channels.cam=32"),
]

DEFAULT_CONFIG = Path(__file__).resolve().parent.parent / "configs" / "demo.yaml"


def user_errors(fn: F) -> F:
    """Turn SimDistillError into `error: <message>` + exit 2 (no traceback for user errors)."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except SimDistillError as exc:
            typer.secho(f"error: {exc}", err=True, fg=typer.colors.RED)
            raise typer.Exit(2) from None
        except OSError as exc:  # a path the user gave cannot be written (under a file, read-only, disk full)
            if exc.errno not in USER_OS_ERRORS or not exc.filename:
                raise
            typer.secho(f"error: cannot use {exc.filename} ({exc.strerror}); choose another path, or fix the "
                        "folder's permissions or free space", err=True, fg=typer.colors.RED)
            raise typer.Exit(2) from None
        except KeyboardInterrupt:
            typer.secho("interrupted; finished work is kept (re-run the same command to resume)", err=True)
            raise typer.Exit(130) from None

    return wrapper  # type: ignore[return-value]


def _config(config: Optional[Path], overrides: Optional[list[str]]):  # noqa: ANN202 - returns Config
    from simdistill.config import load_config

    from simdistill.feature_store.storage import use_storage_options

    path = config
    if path is None:
        path = Path("configs/demo.yaml") if Path("configs/demo.yaml").is_file() else DEFAULT_CONFIG
    cfg = load_config(path, list(overrides or []))
    use_storage_options(cfg.store.storage_options)  # for every store URL this command opens
    return cfg


@app.command("make-demo-data")
@user_errors
def make_demo_data_cmd(
    out_dir: Annotated[Path, typer.Argument(help="Folder to write the synthetic nuScenes dataroot into.")],
    seed: Annotated[Optional[int], typer.Option(help="World seed (same seed → identical files).")] = None,
    scenes: Annotated[Optional[int], typer.Option(help="Number of scenes (v1.0-mini: at most 10).")] = None,
    samples_per_scene: Annotated[Optional[int], typer.Option(help="Key frames per scene, 0.5 s apart.")] = None,
    version: Annotated[
        Optional[str], typer.Option(help="v1.0-mini (devkit mini scene names) or v1.0-trainval (train/val names).")
    ] = None,
    config: ConfigOpt = None,
    set_: SetOpt = None,
    mmdet3d_infos: Annotated[
        bool,
        typer.Option(
            "--mmdet3d-infos",
            help="Also write mmdet3d v1.x info files (nuscenes_infos_train.pkl / _val.pkl) into the dataroot; "
            "use them with --set data.infos_train=... data.infos_val=...",
        ),
    ] = False,
) -> None:
    """Write a synthetic world in the real nuScenes v1.0 layout (loadable and scored by nuscenes-devkit)."""
    from simdistill.errors import DataError
    from simdistill.pipeline.synthetic import make_demo_data

    blocker = next((p for p in out_dir.absolute().parents if p.exists() and not p.is_dir()), None)
    if blocker is not None:
        raise DataError(f"cannot create {out_dir}: {blocker} is a file, not a folder; choose a path under a folder")
    cfg = _config(config, set_)
    world = cfg.world
    if seed is not None:
        world.seed = seed
    if scenes is not None:
        world.scenes = scenes
    if samples_per_scene is not None:
        world.samples_per_scene = samples_per_scene
    if version is not None:
        world.version = version
    summary = make_demo_data(out_dir, world, progress=True)
    typer.echo(summary.to_text())
    if mmdet3d_infos:
        from simdistill.pipeline.mmdet3d_infos_write import write_mmdet3d_infos

        for split, path in write_mmdet3d_infos(out_dir, world.version, out_dir).items():
            typer.echo(f"mmdet3d infos ({split}): {path}")


@app.command("train-teacher")
@user_errors
def train_teacher_cmd(
    out: Annotated[Path, typer.Option("--out", "-o", help="Run folder for checkpoints, logs and metrics.")],
    config: ConfigOpt = None,
    set_: SetOpt = None,
    resume: Annotated[bool, typer.Option(help="Continue from the last checkpoint in --out.")] = True,
    evaluate: Annotated[bool, typer.Option(help="Evaluate on the val split with the devkit at the end.")] = True,
) -> None:
    """Train the BEVFusion-style LiDAR-camera teacher on the train split, then evaluate it on val."""
    from simdistill.training.teacher import train_teacher

    cfg = _config(config, set_)
    result = train_teacher(cfg, out_dir=out, resume=resume, evaluate=evaluate)
    typer.echo(result.to_text())


@app.command("export-teacher")
@user_errors
def export_teacher_cmd(
    checkpoint: Annotated[
        Path, typer.Option("--checkpoint", "-t", help="Teacher checkpoint: from train-teacher, or an mmdet3d .pth.")
    ],
    out: Annotated[str, typer.Option("--out", "-o", help="Store path or fsspec URL (file://…, s3://…).")],
    config: ConfigOpt = None,
    set_: SetOpt = None,
    views_per_sample: Annotated[
        Optional[int], typer.Option(help="Augmented views drawn per sample (1 = the test-time view).")
    ] = None,
    workers: Annotated[Optional[int], typer.Option(help="Local Dask worker processes.")] = None,
    scheduler: Annotated[
        Optional[str], typer.Option(help="Address of an existing Dask scheduler (tcp://host:8786).")
    ] = None,
    split: Annotated[Optional[str], typer.Option(help="Which split to export: train or val.")] = None,
    overwrite: Annotated[bool, typer.Option(help="Replace a store written with another config/teacher.")] = False,
    teacher: Annotated[
        Optional[str],
        typer.Option(help="simdistill (a train-teacher checkpoint) or mmdet3d (an mmdetection3d detector, tapped; "
                     "needs the mmdet3d extra, see README)."),
    ] = None,
    teacher_config: Annotated[
        Optional[Path], typer.Option(help="With --teacher mmdet3d: the detector's mmdet3d model config (.py).")
    ] = None,
    tap_family: Annotated[
        Optional[str], typer.Option(help="With --teacher mmdet3d: the detector's module layout (bevfusion).")
    ] = None,
    tap: Annotated[
        Optional[list[str]],
        typer.Option(help="With --teacher mmdet3d, repeatable: tap a map at another module, NAME=module.path "
                     "(NAME: cam_bev, lidar_bev, fused_bev, head)."),
    ] = None,
) -> None:
    """Run the teacher once over the dataset and write its BEV features and predictions to a Zarr store.

    Re-running the same command resumes: finished views are skipped. With --teacher mmdet3d, any
    mmdetection3d BEVFusion-layout detector with a CenterHead fills the same store: its camera, LiDAR and
    fused BEV maps and head outputs are read by forward hooks on the modules of its family (--tap-family),
    and must have the shapes the simdistill config describes (model.channels, model.bev, model.head.tasks).
    """
    from simdistill.teacher_export.export import export_teacher

    cfg = _config(config, set_)
    if teacher is not None:
        cfg.export.teacher = teacher
    if teacher_config is not None:
        cfg.export.teacher_config = str(teacher_config)
    if tap_family is not None:
        cfg.export.tap_family = tap_family
    if tap:
        cfg.export.taps = tuple(tap)
    from simdistill.config import validate

    validate(cfg)  # the options above are config fields too
    if views_per_sample is not None:
        cfg.export.views_per_sample = views_per_sample
    if workers is not None:
        cfg.export.workers = workers
    if split is not None:
        cfg.export.split = split
    report = export_teacher(cfg, checkpoint=checkpoint, out=out, scheduler=scheduler, overwrite=overwrite)
    typer.echo(report.to_text())


@app.command("train-student")
@user_errors
def train_student_cmd(
    out: Annotated[Path, typer.Option("--out", "-o", help="Run folder for checkpoints, logs and metrics.")],
    config: ConfigOpt = None,
    set_: SetOpt = None,
    store: Annotated[
        Optional[str],
        typer.Option(help="Teacher feature store (from export-teacher): its views, and its targets unless "
                     "--online-teacher is given."),
    ] = None,
    losses: Annotated[
        Optional[str], typer.Option(help="Comma list of imd,cmd,mmd_f,mmd_p, or 'none' for GT only.")
    ] = None,
    variant: Annotated[Optional[str], typer.Option(help="simdistill (two branches + GCM) or baseline.")] = None,
    online_teacher: Annotated[
        Optional[Path], typer.Option(help="Compute targets live from this teacher checkpoint instead of a store.")
    ] = None,
    scheduler: Annotated[Optional[str], typer.Option(help="Dask scheduler address for reading the store.")] = None,
    no_gcm: Annotated[bool, typer.Option("--no-gcm", help="Ablation: SimDistill without the GCM.")] = False,
    resume: Annotated[bool, typer.Option(help="Continue exactly from the last checkpoint in --out.")] = True,
    evaluate: Annotated[bool, typer.Option(help="Evaluate on the val split at the end.")] = True,
) -> None:
    """Train a camera-only student from cached teacher targets (or GT only, or with an online teacher)."""
    from simdistill.student_train.trainer import train_student

    cfg = _config(config, set_)
    if variant is not None:
        cfg.student_train.variant = variant
    if no_gcm:
        cfg.model.gcm.enabled = False
    if losses is not None:
        names = [s.strip() for s in losses.split(",") if s.strip()]
        cfg.distill.losses = () if names in (["none"], []) else tuple(names)
    from simdistill.config import validate

    validate(cfg)
    if scheduler:  # an unreachable cluster is refused before the run folder is touched
        from simdistill.cluster import connect

        connect(scheduler).close()
    result = train_student(
        cfg, out_dir=out, store=store, online_teacher=online_teacher, scheduler=scheduler, resume=resume,
        evaluate=evaluate,
    )
    typer.echo(result.to_text())


@app.command("evaluate")
@user_errors
def evaluate_cmd(
    checkpoint: Annotated[Path, typer.Option("--checkpoint", "-s", help="Student or teacher checkpoint.")],
    out: Annotated[Optional[Path], typer.Option("--out", "-o", help="Output folder (default: beside it).")] = None,
    split: Annotated[str, typer.Option(help="val or train.")] = "val",
    set_: SetOpt = None,
) -> None:
    """Evaluate a checkpoint with the nuScenes devkit: metrics JSON, a table, BEV plots and loss curves."""
    from simdistill.evaluation.run import evaluate_checkpoint

    result = evaluate_checkpoint(checkpoint, out_dir=out, split=split, overrides=list(set_ or []))
    typer.echo(result.to_table())


@app.command("demo")
@user_errors
def demo_cmd(
    workdir: Annotated[Path, typer.Option(help="Folder for the world, runs, store and results.")] = Path("demo_work"),
    config: ConfigOpt = None,
    set_: SetOpt = None,
) -> None:
    """The whole pipeline on the embedded synthetic world: data → teacher → export → students → comparison."""
    from simdistill.demo import run_demo

    cfg = _config(config, set_)
    summary = run_demo(cfg, workdir=workdir)
    typer.echo(summary)


@store_app.command("info")
@user_errors
def store_info_cmd(store: Annotated[str, typer.Argument(help="Store path or URL.")]) -> None:
    """Schema, teacher, dataset, views done/total, bytes per view per array, compression ratios."""
    from simdistill.feature_store import store_info

    typer.echo(store_info(store).to_text())


@store_app.command("verify")
@user_errors
def store_verify_cmd(store: Annotated[str, typer.Argument(help="Store path or URL.")]) -> None:
    """Read every finished view: checksums, finite values, shapes. Exit 1 listing bad views."""
    from simdistill.feature_store import verify_store

    report = verify_store(store, progress=True)
    typer.echo(report.to_text())
    if not report.ok:
        raise typer.Exit(1)


@store_app.command("show")
@user_errors
def store_show_cmd(
    store: Annotated[str, typer.Argument(help="Store path or URL.")],
    view: Annotated[int, typer.Option("--view", "-v", help="View index.")] = 0,
    out: Annotated[Path, typer.Option("--out", "-o", help="PNG to write.")] = Path("view.png"),
    boxes: Annotated[bool, typer.Option(help="Draw the view's GT boxes (needs the dataset the store came from).")] = True,
) -> None:
    """Picture of one cached view: cam/LiDAR/fused BEV (channel norm), heatmap, foreground mask, GT boxes."""
    from simdistill.errors import StoreError
    from simdistill.feature_store import open_store, render_view_png
    from simdistill.teacher_export.inspect import stored_view_gt_boxes

    n_views = open_store(store).n_views
    if not 0 <= view < n_views:
        raise StoreError(f"view {view} is outside store {store}, which has views 0..{n_views - 1}; pass --view "
                         f"between 0 and {n_views - 1}")
    gt = None
    if boxes:
        try:
            gt = stored_view_gt_boxes(store, view)
        except SimDistillError as exc:
            typer.secho(f"warning: GT boxes not drawn ({exc})", err=True, fg=typer.colors.YELLOW)
    render_view_png(store, view, out, gt_boxes=gt)
    typer.echo(f"wrote {out}")


def main() -> None:
    app(prog_name="simdistill")


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
