"""Which augmented view each student step trains on, and rebuilding its inputs from the replay params.

Every run of an ablation trains on the same plan: the store's views (K per sample), or, without a store,
the plan the exporter would make from the config. Each epoch takes one view per sample (a seeded choice
among its K) in a seeded order, so the order is a pure function of (seed, epoch) and resume needs no state.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from simdistill.config import Config
from simdistill.pipeline.augment import AugParams, ViewBuilder
from simdistill.pipeline.sample import Batch, collate
from simdistill.teacher_export.plan import plan_views


@dataclass
class ViewPlan:
    """Replay params per view plus which sample each view shows."""

    params: np.ndarray  # [V, P] float32
    sample_index: np.ndarray  # [V] int
    views_per_sample: int

    @property
    def n_samples(self) -> int:
        return len(self.sample_index) // self.views_per_sample


def plan_from_config(cfg: Config, builder: ViewBuilder) -> ViewPlan:
    """The plan `export-teacher` would make for this config (used when no store supplies one)."""
    plan = plan_views(cfg, builder)
    return ViewPlan(plan.params, plan.sample_index, plan.views_per_sample)


def epoch_views(plan: ViewPlan, *, seed: int, epoch: int) -> np.ndarray:
    """One view per sample (seeded choice among its K views), shuffled by view."""
    rng = np.random.default_rng([seed, epoch, 0x57D])
    k = plan.views_per_sample
    chosen = np.arange(plan.n_samples) * k + rng.integers(0, k, size=plan.n_samples)
    return chosen[rng.permutation(plan.n_samples)]


def epoch_batches(plan: ViewPlan, *, seed: int, epoch: int, batch_size: int, rank: int = 0,
                  world: int = 1) -> list[list[int]]:
    """This rank's batches of view ids for one epoch (disjoint across ranks, full batches only)."""
    views = epoch_views(plan, seed=seed, epoch=epoch)
    per_rank = len(views) // world
    mine = views[rank * per_rank:(rank + 1) * per_rank]
    n = len(mine) // batch_size
    return [mine[b * batch_size:(b + 1) * batch_size].tolist() for b in range(n)]


def build_inputs(builder: ViewBuilder, plan: ViewPlan, views: list[int]) -> Batch:
    """Rebuild the exact augmented inputs of `views` from their replay params."""
    out = []
    for v in views:
        params = AugParams.from_vector(plan.params[v], n_cams=builder.n_cams, n_sweeps=builder.n_sweeps)
        out.append(builder.build(int(plan.sample_index[v]), params))
    return collate(out)
