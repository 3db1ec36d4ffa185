"""Stack `CachedView` items into one `CachedBatch`: targets stacked per array, inputs as a pipeline `Batch`.

    loader = DataLoader(ds, batch_size=4, sampler=OneViewPerSampleSampler(ds, seed=0), collate_fn=collate_cached_views)
    for batch in loader:                  # batch.inputs.images [B, N_cam, 3, H, W]; batch.targets["heatmap"] [B, n_cls, H, W]
        batch = batch.to("cuda")

The inputs are the same `Batch` our trainer builds (`simdistill.pipeline.sample.Batch`), so a student written for
our models takes it too; boxes, labels and points stay per-view lists because their lengths differ.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch

from simdistill.data.dataset import CachedView
from simdistill.errors import ConfigError
from simdistill.pipeline.sample import Batch


@dataclass
class CachedBatch:
    """A batch of stored views: ids, teacher targets and (unless targets-only) the replayed inputs."""

    indices: torch.Tensor  # [B] int64, the store's view indices
    sample_tokens: list[str]
    views: torch.Tensor  # [B] int64, which view of its sample each is
    aug: torch.Tensor  # [B, P] float32 replay vectors
    img_aug_matrix: torch.Tensor  # [B, N_cam, 4, 4]
    lidar_aug_matrix: torch.Tensor  # [B, 4, 4]
    targets: dict[str, torch.Tensor]  # name -> [B, ...] float32
    inputs: Batch | None  # None when the dataset is targets-only

    @property
    def batch_size(self) -> int:
        return int(self.indices.shape[0])

    def to(self, device: torch.device | str) -> CachedBatch:
        return self._map(lambda t: t.to(device, non_blocking=True), lambda b: b.to(device))

    def pin_memory(self) -> CachedBatch:
        """What DataLoader(pin_memory=True) calls: every tensor in page-locked memory."""
        return self._map(lambda t: t.pin_memory(), _pin_batch)

    def _map(self, fn: Callable[[torch.Tensor], torch.Tensor], on_inputs: Callable[[Batch], Batch]) -> CachedBatch:
        return CachedBatch(indices=fn(self.indices), sample_tokens=list(self.sample_tokens), views=fn(self.views),
                           aug=fn(self.aug), img_aug_matrix=fn(self.img_aug_matrix),
                           lidar_aug_matrix=fn(self.lidar_aug_matrix),
                           targets={k: fn(x) for k, x in self.targets.items()},
                           inputs=on_inputs(self.inputs) if self.inputs is not None else None)


def _pin_batch(batch: Batch) -> Batch:
    return Batch(tokens=list(batch.tokens), images=batch.images.pin_memory(),
                 cam_intrinsics=batch.cam_intrinsics.pin_memory(), camera2lidar=batch.camera2lidar.pin_memory(),
                 img_aug_matrix=batch.img_aug_matrix.pin_memory(), lidar_aug_matrix=batch.lidar_aug_matrix.pin_memory(),
                 points=[p.pin_memory() for p in batch.points], gt_boxes=[b.pin_memory() for b in batch.gt_boxes],
                 gt_labels=[x.pin_memory() for x in batch.gt_labels])


def collate_cached_views(items: Sequence[CachedView]) -> CachedBatch:
    """The DataLoader `collate_fn` for `CachedTeacherDataset`: items of one dataset, inputs all present or all not."""
    if not items:
        raise ConfigError("collate_cached_views got an empty batch; use a batch_size of at least 1")
    with_inputs = [item.images is not None for item in items]
    if any(with_inputs) != all(with_inputs):
        raise ConfigError("collate_cached_views got views with and without inputs; batch views of one dataset")
    inputs = None
    if all(with_inputs):
        inputs = Batch(
            tokens=[item.sample_token for item in items],
            images=torch.stack([item.images for item in items]),  # [B, N_cam, 3, H, W]
            cam_intrinsics=torch.stack([item.cam_intrinsics for item in items]),  # [B, N_cam, 4, 4]
            camera2lidar=torch.stack([item.camera2lidar for item in items]),
            img_aug_matrix=torch.stack([item.img_aug_matrix for item in items]),
            lidar_aug_matrix=torch.stack([item.lidar_aug_matrix for item in items]),  # [B, 4, 4]
            points=[item.points for item in items if item.points is not None],  # empty unless points=True
            gt_boxes=[item.gt_boxes for item in items],
            gt_labels=[item.gt_labels for item in items],
        )
    return CachedBatch(
        indices=torch.tensor([item.index for item in items], dtype=torch.int64),
        sample_tokens=[item.sample_token for item in items],
        views=torch.tensor([item.view for item in items], dtype=torch.int64),
        aug=torch.stack([item.aug for item in items]),  # [B, P]
        img_aug_matrix=torch.stack([item.img_aug_matrix for item in items]),
        lidar_aug_matrix=torch.stack([item.lidar_aug_matrix for item in items]),
        targets={name: torch.stack([item.targets[name] for item in items]) for name in items[0].targets},
        inputs=inputs,
    )
