"""The view plan: which augmented views exist, their replay params, and the views each training step takes.

View v belongs to sample v // K and is that sample's view v % K (K = views_per_sample). With K = 1 the view is the
deterministic test-time view; with K > 1 every view is a train-time augmentation drawn from a generator seeded by
(seed, sample, view), so the plan is a pure function of the config and the split. Export writes the plan into the
store; every student run (cached, online teacher, GT only) trains on the store's plan, or without a store on the plan
export would make, so all of them see exactly the same inputs. Each epoch takes one view per sample (a seeded choice
among its K) in a seeded order, so the order is a pure function of (seed, epoch) and resume needs no state.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from simdistill.config import Config
from simdistill.pipeline.augment import AugParams, ViewBuilder
from simdistill.pipeline.sample import Batch, collate


@dataclass
class ViewPlan:
    """Replay params per view plus which sample each view shows."""

    params: np.ndarray  # [V, P] float32 replay vectors
    sample_index: np.ndarray  # [V] int
    views_per_sample: int

    @property
    def n_views(self) -> int:
        return int(self.params.shape[0])

    @property
    def n_samples(self) -> int:
        return len(self.sample_index) // self.views_per_sample

    @property
    def view_index(self) -> np.ndarray:
        """[V] int16: which view of its sample each view is."""
        return (np.arange(len(self.sample_index)) % self.views_per_sample).astype(np.int16)


def export_view_rng(seed: int, sample: int, view: int) -> np.random.Generator:
    return np.random.default_rng([seed, sample, view, 0xE4B0])


def plan_views(cfg: Config, builder: ViewBuilder) -> ViewPlan:
    """The plan `export-teacher` makes for this config (`export.views_per_sample`, `seed`) and the builder's split."""
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
    return ViewPlan(params=params_arr, sample_index=sample_index, views_per_sample=k)


def epoch_view_ids(n_samples: int, views_per_sample: int, *, seed: int, epoch: int) -> np.ndarray:
    """[n_samples] view ids: one view per sample (seeded choice among its K views), shuffled by view.

    A function of the counts alone, so a sampler that knows only the store's shape draws what the trainer draws."""
    rng = np.random.default_rng([seed, epoch, 0x57D])
    k = views_per_sample
    chosen = np.arange(n_samples) * k + rng.integers(0, k, size=n_samples)
    return chosen[rng.permutation(n_samples)]


def epoch_views(plan: ViewPlan, *, seed: int, epoch: int) -> np.ndarray:
    """One view per sample (seeded choice among its K views), shuffled by view."""
    return epoch_view_ids(plan.n_samples, plan.views_per_sample, seed=seed, epoch=epoch)


def rank_share(views: np.ndarray, *, rank: int, world: int) -> np.ndarray:
    """This rank's contiguous share of an epoch's views; every rank gets len // world (the rest is dropped), so
    all ranks take the same number of steps."""
    per_rank = len(views) // world
    return views[rank * per_rank:(rank + 1) * per_rank]


def epoch_batches(plan: ViewPlan, *, seed: int, epoch: int, batch_size: int, rank: int = 0,
                  world: int = 1) -> list[list[int]]:
    """This rank's batches of view ids for one epoch (disjoint across ranks, full batches only)."""
    mine = rank_share(epoch_views(plan, seed=seed, epoch=epoch), rank=rank, world=world)
    n = len(mine) // batch_size
    return [mine[b * batch_size:(b + 1) * batch_size].tolist() for b in range(n)]


def build_inputs(builder: ViewBuilder, plan: ViewPlan, views: list[int]) -> Batch:
    """Rebuild the exact augmented inputs of `views` from their replay params."""
    out = []
    for v in views:
        params = AugParams.from_vector(plan.params[v], n_cams=builder.n_cams, n_sweeps=builder.n_sweeps)
        out.append(builder.build(int(plan.sample_index[v]), params))
    return collate(out)
