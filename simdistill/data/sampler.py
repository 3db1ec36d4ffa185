"""One stored view per sample per epoch, in a seeded order: the epochs our trainer takes, for any DataLoader.

    sampler = OneViewPerSampleSampler(ds, seed=0)       # under torch.distributed: this rank's share
    loader = DataLoader(ds, batch_size=4, sampler=sampler, collate_fn=collate_cached_views, num_workers=2)
    for epoch in range(epochs):
        sampler.set_epoch(epoch)                        # as with DistributedSampler

Each epoch picks one of every sample's K stored views and shuffles the picks, a pure function of (seed, epoch)
(`pipeline.view_plan.epoch_view_ids`, the trainer's own draw), so resuming needs no sampler state and a run with
our config's seed sees the views our student would. Distributed: it replaces DistributedSampler (do not wrap one
in the other); rank r takes the r-th contiguous share of len // num_replicas views, the rest of the epoch is
dropped so every rank takes the same number of steps.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Protocol

import torch.distributed as dist
from torch.utils.data import Sampler

from simdistill.errors import ConfigError
from simdistill.pipeline.view_plan import epoch_view_ids, rank_share


class StoredViews(Protocol):
    """What the sampler needs to know of a store (a `CachedTeacherDataset` has both)."""

    n_samples: int
    views_per_sample: int


class OneViewPerSampleSampler(Sampler[int]):
    """Yields store view indices: one view per sample per epoch, seeded by (seed, epoch), this rank's share."""

    def __init__(self, dataset: StoredViews, *, seed: int = 0, num_replicas: int | None = None,
                 rank: int | None = None) -> None:
        """num_replicas / rank default to torch.distributed's world size and rank when it is initialised, else 1 / 0."""
        distributed = dist.is_available() and dist.is_initialized()
        self.num_replicas = num_replicas if num_replicas is not None else dist.get_world_size() if distributed else 1
        self.rank = rank if rank is not None else dist.get_rank() if distributed else 0
        if self.num_replicas < 1 or not 0 <= self.rank < self.num_replicas:
            raise ConfigError(f"rank {self.rank} is not in 0..{self.num_replicas - 1} (num_replicas "
                              f"{self.num_replicas}); pass 0 <= rank < num_replicas")
        self.n_samples, self.views_per_sample = int(dataset.n_samples), int(dataset.views_per_sample)
        if self.n_samples < self.num_replicas:
            raise ConfigError(f"{self.n_samples} samples cannot be shared among {self.num_replicas} ranks; use at "
                              "most as many ranks as samples")
        self.seed = seed
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        """Choose the epoch whose views `__iter__` yields (call before each epoch, as with DistributedSampler)."""
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return self.n_samples // self.num_replicas

    def __iter__(self) -> Iterator[int]:
        views = epoch_view_ids(self.n_samples, self.views_per_sample, seed=self.seed, epoch=self.epoch)
        return iter(rank_share(views, rank=self.rank, world=self.num_replicas).tolist())
