"""`export-teacher`: plan the views, run one Dask task per shard of views, resume what is unfinished.

Tasks own disjoint view ranges (whole chunks / shards), so no two writers touch one file. The coordinator
holds the store's export lock for the whole run; a crash leaves `done` false for unfinished views, and
re-running the same command writes only those.
"""

from __future__ import annotations

import contextlib
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

from simdistill.config import Config, config_to_dict
from simdistill.errors import SimDistillError
from simdistill.feature_store import StoreAttrs, create_or_resume_store
from simdistill.pipeline.augment import AugParams, ViewBuilder
from simdistill.pipeline.sources import open_data_source
from simdistill.teacher_export.plan import pending_tasks, plan_views
from simdistill.teacher_export.task import run_export_task
from simdistill.teacher_export.teacher_loader import describe_teacher
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


@contextlib.contextmanager
def dask_client(scheduler: str | None, workers: int) -> Iterator[Any]:
    """An existing cluster at `scheduler`, or a LocalCluster of `workers` spawned processes."""
    from distributed import Client, LocalCluster

    if scheduler:
        try:
            client = Client(scheduler, timeout="10s")
        except (OSError, TimeoutError) as exc:
            raise SimDistillError(f"cannot reach the Dask scheduler at {scheduler} ({exc}); start it "
                                  "(dask scheduler) or drop --scheduler to use local workers") from None
        try:
            yield client
        finally:
            client.close()
        return
    saved_env = dict(os.environ)  # distributed sets OMP_NUM_THREADS & co. in this process for its workers
    try:
        with LocalCluster(n_workers=max(1, workers), threads_per_worker=1, processes=True,
                          dashboard_address=None, silence_logs=40) as cluster, Client(cluster) as client:
            yield client
    finally:
        os.environ.clear()
        os.environ.update(saved_env)


def export_teacher(cfg: Config, *, checkpoint: Path, out: str, scheduler: str | None = None,
                   overwrite: bool = False, progress: bool = True) -> ExportReport:
    from distributed import as_completed

    checkpoint = Path(checkpoint)
    teacher = describe_teacher(cfg, checkpoint)
    source = open_data_source(cfg.data, cfg.export.split)
    split_name = source.split  # the devkit split name ('train' -> data.train_split)
    builder = ViewBuilder.for_config(source, cfg, train=True)
    plan = plan_views(cfg, builder)
    attrs = StoreAttrs(
        teacher=teacher,
        dataset={"dataroot": str(Path(cfg.data.dataroot).resolve()), "version": cfg.data.version,
                 "split": split_name, "sample_tokens": list(source.tokens),
                 "infos": str(getattr(source, "info_path", ""))},
        augmentation=config_to_dict(cfg.augment),
        views_per_sample=plan.views_per_sample,
        aug_layout=AugParams.names(n_cams=builder.n_cams, n_sweeps=cfg.data.sweeps),
    )
    writer = create_or_resume_store(out, cfg=cfg, n_views=plan.n_views, aug_dim=plan.params.shape[1], attrs=attrs,
                                    overwrite=overwrite)
    t0 = time.perf_counter()
    stats: list[dict[str, float]] = []
    with writer.lock():
        done = writer.done_views()
        tasks = pending_tasks(writer.task_ranges(cfg.export.views_per_task), done)
        todo = sum(len(t) for t in tasks)
        skipped = plan.n_views - todo
        if tasks:
            cfg_dict = config_to_dict(cfg)
            with dask_client(scheduler, cfg.export.workers) as client, TrainProgress(
                "export", total=plan.n_views, start=skipped, enabled=progress, unit="view"
            ) as bar:
                futures = [
                    client.submit(
                        run_export_task, store_url=str(out), cfg_dict=cfg_dict, split_name=split_name,
                        checkpoint=str(checkpoint.resolve()), views=views, params=plan.params[views],
                        sample_index=plan.sample_index[views], view_index=plan.view_index[views],
                        pure=False, key=f"export-{views[0]}-{views[-1]}",
                    )
                    for views in tasks
                ]
                finished = skipped
                written = 0
                for fut in as_completed(futures):
                    result = fut.result()
                    stats.append(result)
                    finished += int(result["views"])
                    written += int(result["bytes_written"])
                    elapsed = time.perf_counter() - t0
                    bar.update(finished, {"views/s": (finished - skipped) / elapsed, "MB": written / 1e6})
    wall = time.perf_counter() - t0
    return ExportReport(
        store=str(out), n_views=plan.n_views, exported=sum(int(s["views"]) for s in stats), skipped=skipped,
        wall_seconds=wall, forward_seconds=sum(s["forward_seconds"] for s in stats),
        write_seconds=sum(s["write_seconds"] for s in stats), bytes_written=sum(int(s["bytes_written"]) for s in stats),
        tasks=stats,
    )
