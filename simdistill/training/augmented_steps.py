"""`AugmentedSteps`: the steps of a run on freshly augmented train views (the teacher's, the backbone's
pretraining), in an order and with augmentations that are pure functions of (seed, epoch), so resume needs no
RNG state."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import torch

from simdistill.pipeline.augment import ViewBuilder
from simdistill.pipeline.sample import Batch, collate
from simdistill.training.prefetch_thread import prefetch


def epoch_order(seed: int, epoch: int, n: int) -> np.ndarray:
    """The sample order of one epoch: a pure function of (seed, epoch) so resume needs no RNG state."""
    return np.random.default_rng([seed, epoch, 0x5EED]).permutation(n)


def view_rng(seed: int, epoch: int, index: int) -> np.random.Generator:
    """The generator that draws the augmentation of sample `index` in `epoch` (pure, resumable)."""
    return np.random.default_rng([seed, epoch, index, 0xA06])


class AugmentedSteps:
    """Batches of freshly augmented train views (with their LiDAR), in the deterministic order of (seed, epoch)."""

    def __init__(self, builder: ViewBuilder, *, seed: int, batch_size: int) -> None:
        self.builder, self.seed, self.batch_size = builder, seed, batch_size
        self.steps_per_epoch = len(builder.source) // batch_size  # drop_last: every step sees a full batch

    def _batches(self, epoch: int, skip: int) -> Iterator[Batch]:
        order = epoch_order(self.seed, epoch, len(self.builder.source))
        for b in range(skip, self.steps_per_epoch):
            idx = order[b * self.batch_size:(b + 1) * self.batch_size]
            yield collate([self.builder.build(int(i), self.builder.draw(int(i), view_rng(self.seed, epoch, int(i))))
                           for i in idx])

    def epoch(self, epoch: int, skip: int, device: torch.device) -> Iterator[tuple[Batch, None]]:
        for batch in prefetch(lambda: self._batches(epoch, skip)):
            yield batch.to(device), None
