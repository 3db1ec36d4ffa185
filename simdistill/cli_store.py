"""`simdistill store info|verify|show|stats`: inspect and check a teacher feature store."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from simdistill.cli_common import user_errors
from simdistill.errors import SimDistillError, StoreError

store_app = typer.Typer(help="Inspect and check a teacher feature store (info, verify, show, stats).",
                        no_args_is_help=True)
StoreArg = Annotated[str, typer.Argument(help="Store path or URL.")]


@store_app.command("info")
@user_errors
def store_info_cmd(store: StoreArg) -> None:
    """Schema, teacher, dataset, views done/total, bytes per view per array, compression ratios."""
    from simdistill.feature_store import store_info

    typer.echo(store_info(store).to_text())


@store_app.command("verify")
@user_errors
def store_verify_cmd(
    store: StoreArg,
    reset_bad: Annotated[
        bool, typer.Option("--reset-bad", help="Clear the done flag of every bad view, so that re-running the "
                           "same export-teacher command rewrites exactly those views.")
    ] = False,
) -> None:
    """Read every finished view: checksums, finite values, shapes. Exit 1 listing bad views."""
    from simdistill.feature_store import reset_bad_views, verify_store

    report = verify_store(store, progress=True)
    typer.echo(report.to_text())
    if report.ok:
        return
    if reset_bad:
        views = reset_bad_views(report)
        typer.echo(f"reset the done flag of {len(views)} view(s); re-run the same `simdistill export-teacher` "
                   "command to rewrite them")
    raise typer.Exit(1)


@store_app.command("show")
@user_errors
def store_show_cmd(
    store: StoreArg,
    view: Annotated[int, typer.Option("--view", "-v", help="View index.")] = 0,
    out: Annotated[Path, typer.Option("--out", "-o", help="PNG to write.")] = Path("view.png"),
    boxes: Annotated[bool, typer.Option(help="Draw the view's GT boxes (needs the dataset the store came from).")] = True,
) -> None:
    """Picture of one cached view: cam/LiDAR/fused BEV (channel norm), heatmap, foreground mask, GT boxes."""
    from simdistill.feature_store import open_store
    from simdistill.teacher_export.stored_view import stored_view_gt_boxes
    from simdistill.teacher_export.view_png import render_view_png

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


@store_app.command("stats")
@user_errors
def store_stats_cmd(store: StoreArg) -> None:
    """Compute the teacher's per-channel mean and std (cam/LiDAR/fused BEV) into the store's attributes, for
    distill.channel_standardization; export-teacher does it when it finishes a store, this is for older stores."""
    from simdistill.feature_store import channel_stats, write_channel_stats

    stats = channel_stats(store)
    write_channel_stats(store, stats)
    typer.echo("\n".join([f"wrote channel_stats into {store}", *stats.summary_lines()]))
