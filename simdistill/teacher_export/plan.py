"""Export planning: which views exist, their replay params, and which task owns which views.

View v belongs to sample v // K and is that sample's view v % K (K = views_per_sample). With K = 1 the view
is the deterministic test-time view; with K > 1 every view is a train-time augmentation drawn from a
generator seeded by (seed, sample, view), so the plan is a pure function of the config and the split.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from simdistill.config import Config
from simdistill.pipeline.augment import AugParams, ViewBuilder


@dataclass
class ExportPlan:
    n_samples: int
    views_per_sample: int
    params: np.ndarray  # [V, P] float32 replay vectors
    sample_index: np.ndarray  # [V] int32
    view_index: np.ndarray  # [V] int16

    @property
    def n_views(self) -> int:
        return int(self.params.shape[0])


def export_view_rng(seed: int, sample: int, view: int) -> np.random.Generator:
    return np.random.default_rng([seed, sample, view, 0xE4B0])


def plan_views(cfg: Config, builder: ViewBuilder) -> ExportPlan:
    k = cfg.export.views_per_sample
    n = len(builder.source)
    vectors: list[np.ndarray] = []
    for i in range(n):
        for j in range(k):
            if k == 1:
                params: AugParams = builder.test_params(i)
            else:
                params = builder.draw(i, export_view_rng(cfg.seed, i, j))
            vectors.append(params.to_vector())
    params_arr = np.stack(vectors).astype(np.float32) if vectors else np.zeros((0, 0), np.float32)
    sample_index = np.repeat(np.arange(n, dtype=np.int32), k)
    view_index = np.tile(np.arange(k, dtype=np.int16), n)
    return ExportPlan(n_samples=n, views_per_sample=k, params=params_arr, sample_index=sample_index,
                      view_index=view_index)


def pending_tasks(task_ranges: list[range], done: np.ndarray) -> list[list[int]]:
    """Per task, the views it still has to write (tasks with nothing left are dropped)."""
    tasks = []
    for r in task_ranges:
        todo = [v for v in r if not bool(done[v])]
        if todo:
            tasks.append(todo)
    return tasks
