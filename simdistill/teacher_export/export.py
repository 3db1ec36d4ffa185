"""`export-teacher`: plan the views, run one Dask task per shard of views, resume what is unfinished.

Tasks own disjoint view ranges (whole chunks / shards), so no two writers touch one file. The coordinator
holds the store's export lock for the whole run; a crash leaves `done` false for unfinished views, and
re-running the same command writes only those.
"""

from __future__ import annotations

import contextlib
import functools
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from distributed import as_completed

from simdistill.cluster import connect, local_cluster, quiet_task, task_result
from simdistill.config import Config, config_to_dict
from simdistill.feature_store import (
    StoreAttrs,
    StoreLayout,
    channel_stats,
    create_or_resume_store,
    open_store,
    read_channel_stats,
    write_channel_stats,
)
from simdistill.feature_store.storage import local_root, probe_remote, store_url
from simdistill.pipeline.augment import AugParams, ViewBuilder
from simdistill.pipeline.sources import DataSource, check_data_files, open_data_source
from simdistill.pipeline.view_plan import ViewPlan, plan_views
from simdistill.teacher.loader import describe_teacher, with_teacher_factory
from simdistill.teacher_export.task import run_export_task
from simdistill.training.progress import TrainProgress


@dataclass
class ExportReport:
    store: str
    n_views: int
    exported: int
    skipped: int
    wall_seconds: float
    forward_seconds: float
    write_seconds: float
    bytes_written: int
    tasks: list[dict[str, float]] = field(default_factory=list)  # per-task TaskStats (views, seconds, bytes)

    @property
    def views_per_second(self) -> float:
        return self.exported / self.wall_seconds if self.wall_seconds > 0 else 0.0

    def to_text(self) -> str:
        mb = self.bytes_written / 1e6
        return (
            f"store: {self.store}\n"
            f"views: {self.exported} exported, {self.skipped} already done, {self.n_views} total\n"
            f"wall: {self.wall_seconds:.1f} s ({self.views_per_second:.2f} views/s); teacher forward "
            f"(summed over tasks): {self.forward_seconds:.1f} s; writes: {self.write_seconds:.1f} s\n"
            f"written: {mb:.1f} MB ({mb / max(self.wall_seconds, 1e-9):.2f} MB/s)"
        )


def worker_log_dir(cfg: Config, out: str) -> Path:
    """Where local Dask workers log: export.log_dir, else STORE.logs beside a local store, else ./simdistill-logs."""
    if cfg.export.log_dir:
        return Path(cfg.export.log_dir)
    root = local_root(out)
    return root.parent / f"{root.name}.logs" if root is not None else Path("simdistill-logs")


def _store_attrs(cfg: Config, teacher: dict[str, Any], source: DataSource, builder: ViewBuilder,
                 views_per_sample: int) -> StoreAttrs:
    return StoreAttrs(
        teacher=teacher,
        dataset={"dataroot": str(Path(cfg.data.dataroot).resolve()), "version": cfg.data.version,
                 "split": source.split, "sample_tokens": list(source.tokens),
                 "infos": str(getattr(source, "info_path", ""))},
        augmentation=config_to_dict(cfg.augment),
        views_per_sample=views_per_sample,
        aug_layout=AugParams.names(n_cams=builder.n_cams, n_sweeps=cfg.data.sweeps),
        config=config_to_dict(cfg),
    )


def export_teacher(cfg: Config, *, checkpoint: Path, out: str, scheduler: str | None = None,
                   overwrite: bool = False, progress: bool = True,
                   teacher_factory: str | Callable[..., Any] | None = None) -> ExportReport:
    """Export the teacher into the store at `out` (see the module docstring); everything a user can get wrong
    (store location, teacher, dataroot files, scheduler) is checked before a worker starts or a chunk is written.

    `teacher_factory` exports your own torch module instead of the config's teacher: a spec string
    ("pkg.module:make_teacher", "path/to/file.py:make_teacher") or a module-level function, called as
    factory(cfg.model, checkpoint) in every worker (docs/own-teacher.md); `cfg` itself is left unchanged.
    """
    if teacher_factory is not None:
        cfg = with_teacher_factory(cfg, teacher_factory)
    location = store_url(out, cfg.storage_options)  # the store URL with its options, wherever it goes
    probe_remote(location, for_write=True)
    checkpoint = Path(checkpoint)
    teacher = describe_teacher(cfg, checkpoint)
    source = open_data_source(cfg.data, cfg.export.split)
    builder = ViewBuilder.for_config(source, cfg, train=True)
    plan = plan_views(cfg, builder)
    check_data_files(source)
    t0 = time.perf_counter()
    with contextlib.ExitStack() as stack:
        client = stack.enter_context(contextlib.closing(connect(scheduler))) if scheduler else None
        writer = create_or_resume_store(location, layout=StoreLayout.for_model(cfg.model),
                                        store_format=cfg.store_format, n_views=plan.n_views,
                                        aug_dim=plan.params.shape[1], overwrite=overwrite,
                                        attrs=_store_attrs(cfg, teacher, source, builder, plan.views_per_sample))
        stack.enter_context(writer.lock())
        tasks = pending_tasks(writer.task_ranges(cfg.export.views_per_task), writer.done_views())
        skipped = plan.n_views - sum(len(t) for t in tasks)
        log_dir = None if scheduler else worker_log_dir(cfg, out)
        if tasks and client is None:
            client = stack.enter_context(local_cluster(cfg.export.workers, log_dir=log_dir,
                                                       dashboard=cfg.export.dashboard))
        run = functools.partial(run_export_task, store=location, cfg_dict=config_to_dict(cfg),
                                split_name=source.split, checkpoint=str(checkpoint.resolve()))
        with TrainProgress("export", total=plan.n_views, start=skipped, enabled=progress and bool(tasks),
                           unit="view") as bar:
            stats = _run_tasks(client, run, plan=plan, tasks=tasks, log_dir=log_dir, bar=bar, skipped=skipped) \
                if tasks else []
    finished = open_store(location)  # every view is done here; the teacher's channel stats are kept beside them
    if stats or read_channel_stats(finished.attrs) is None:
        write_channel_stats(location, channel_stats(finished))
    wall = time.perf_counter() - t0
    return ExportReport(
        store=str(out), n_views=plan.n_views, exported=sum(int(s["views"]) for s in stats), skipped=skipped,
        wall_seconds=wall, forward_seconds=sum(s["forward_seconds"] for s in stats),
        write_seconds=sum(s["write_seconds"] for s in stats), bytes_written=sum(int(s["bytes_written"]) for s in stats),
        tasks=stats,
    )


def pending_tasks(task_ranges: list[range], done: np.ndarray) -> list[list[int]]:
    """Per task, the views it still has to write (tasks with nothing left are dropped)."""
    return [todo for r in task_ranges if (todo := [v for v in r if not bool(done[v])])]


def _run_tasks(client: Any, run: Callable[..., dict[str, float]], *, plan: ViewPlan, tasks: list[list[int]],
               log_dir: Path | None, bar: TrainProgress, skipped: int) -> list[dict[str, float]]:
    """One Dask task per view range; a task's user error or a dead worker ends the export with one line."""
    t0 = time.perf_counter()
    run_id = uuid.uuid4().hex[:8]  # task keys are global on a shared cluster: two exports must not share one
    futures = {
        client.submit(quiet_task, run, views=views, params=plan.params[views], sample_index=plan.sample_index[views],
                      view_index=plan.view_index[views], pure=False, key=f"export-{run_id}-{views[0]}-{views[-1]}"):
        views for views in tasks
    }
    stats: list[dict[str, float]] = []
    finished, written = skipped, 0
    for fut in as_completed(futures, loop=client.loop):
        views = futures[fut]
        result = task_result(fut, what=f"export views {views[0]}..{views[-1]}", log_dir=log_dir)
        stats.append(result)
        finished += int(result["views"])
        written += int(result["bytes_written"])
        bar.update(finished, {"views/s": (finished - skipped) / (time.perf_counter() - t0), "MB": written / 1e6})
    return stats
