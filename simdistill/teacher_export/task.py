"""One export task: load the teacher once, run it on its views, write them through a background writer.

This module runs inside Dask worker processes (started with spawn), so it opens everything itself from
plain arguments (paths, a config dict, numpy params) and caches the teacher per process. The coordinator
submits it through `cluster.quiet_task`, so a user error here reaches the client as one line.
"""

from __future__ import annotations

import json
import queue
import threading
import time
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np
import torch

from simdistill.config import Config, config_from_dict
from simdistill.pipeline.augment import AugParams, ViewBuilder
from simdistill.pipeline.sample import collate
from simdistill.pipeline.sources import open_data_source
from simdistill.teacher_export.targets import teacher_view_arrays
from simdistill.teacher_export.teacher import load_teacher


@dataclass
class TaskStats:
    views: int
    forward_seconds: float  # teacher forward (incl. target encoding) only
    build_seconds: float  # reading + augmenting inputs
    write_seconds: float  # time the writer thread spent writing
    wall_seconds: float
    bytes_written: int

    def to_dict(self) -> dict[str, float]:
        return dict(self.__dict__)


@lru_cache(maxsize=2)
def _teacher(checkpoint: str, device: str, cfg_json: str) -> torch.nn.Module:
    """The export's teacher, loaded once per worker process."""
    return load_teacher(config_from_dict(json.loads(cfg_json)), Path(checkpoint), device=device)


@lru_cache(maxsize=2)
def _builder(cfg_json: str, split: str) -> ViewBuilder:
    cfg = config_from_dict(json.loads(cfg_json))
    source = open_data_source(cfg.data, split)
    return ViewBuilder(source, cfg.augment, train=True)


def run_export_task(
    *,
    store_url: str,
    cfg_dict: dict[str, Any],
    split_name: str,
    checkpoint: str,
    views: list[int],
    params: np.ndarray,  # [len(views), P]
    sample_index: np.ndarray,  # [len(views)]
    view_index: np.ndarray,  # [len(views)]
) -> dict[str, float]:
    """Export `views` (all owned by this task) and return TaskStats as a dict."""
    from simdistill.feature_store import open_for_write
    from simdistill.feature_store.storage import remote_errors, use_storage_options

    t_start = time.perf_counter()
    cfg: Config = config_from_dict(cfg_dict)
    use_storage_options(cfg.store.storage_options)  # this worker may be on another host than the coordinator
    torch.set_num_threads(max(1, cfg.export.threads_per_worker))
    device = cfg.device
    cfg_json = json.dumps(cfg_dict, sort_keys=True)
    teacher = _teacher(str(checkpoint), device, cfg_json)
    builder = _builder(cfg_json, split_name)
    writer = open_for_write(store_url)

    q: queue.Queue = queue.Queue(maxsize=max(1, cfg.export.write_queue))
    write_state = {"seconds": 0.0, "bytes": 0, "error": None}

    def write_loop() -> None:
        """Write views as they come; on a sharded store, buffer and write whole shards."""
        pending: list = []  # (v, TeacherView) of the shard being filled
        while True:
            item = q.get()
            if item is None:
                return
            if write_state["error"] is not None:
                continue  # drain after a failure; the error is raised in the task
            pending.append(item)
            v = item[0]
            if (v + 1) % writer.views_per_shard and v + 1 != writer.n_views:
                continue
            t0 = time.perf_counter()
            try:
                with remote_errors(store_url):  # a lost storage server is a one-line StoreError
                    write_state["bytes"] += writer.write_views(pending[0][0], [tv for _, tv in pending])
            except BaseException as exc:  # noqa: BLE001 - re-raised below
                write_state["error"] = exc
            pending = []
            write_state["seconds"] += time.perf_counter() - t0

    thread = threading.Thread(target=write_loop, daemon=True)
    thread.start()
    forward_s = build_s = 0.0
    try:
        for j, v in enumerate(views):
            if write_state["error"] is not None:
                break
            t0 = time.perf_counter()
            aug = AugParams.from_vector(params[j], n_cams=builder.n_cams, n_sweeps=cfg.data.sweeps)
            view = builder.build(int(sample_index[j]), aug)
            batch = collate([view]).to(device)
            t1 = time.perf_counter()
            with torch.inference_mode():
                out = teacher(batch)
                arrays = teacher_view_arrays(teacher, out, batch)[0]
            t2 = time.perf_counter()
            build_s += t1 - t0
            forward_s += t2 - t1
            tview = arrays.to_teacher_view(aug=params[j], sample_index=int(sample_index[j]),
                                           view=int(view_index[j]))
            q.put((v, tview))
    finally:
        q.put(None)
        thread.join()
    if write_state["error"] is not None:
        raise write_state["error"]  # type: ignore[misc]
    stats = TaskStats(views=len(views), forward_seconds=forward_s, build_seconds=build_s,
                      write_seconds=write_state["seconds"], wall_seconds=time.perf_counter() - t_start,
                      bytes_written=int(write_state["bytes"]))
    return stats.to_dict()
