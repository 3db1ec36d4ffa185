"""`train-teacher`: the LiDAR-camera teacher on freshly augmented train views, GT loss only, through `fit`."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from simdistill.config import TEACHER_CONTENT, Config, run_content
from simdistill.models import build_model
from simdistill.models.center_loss import gt_terms
from simdistill.pipeline.augment import ViewBuilder
from simdistill.pipeline.sample import Batch, collate
from simdistill.pipeline.sources import open_data_source
from simdistill.training.fit import FitResult, RunSpec, StepHook, fit, unwrap
from simdistill.training.prefetch_thread import prefetch


def epoch_order(seed: int, epoch: int, n: int) -> np.ndarray:
    """The sample order of one epoch: a pure function of (seed, epoch) so resume needs no RNG state."""
    return np.random.default_rng([seed, epoch, 0x5EED]).permutation(n)


def view_rng(seed: int, epoch: int, index: int) -> np.random.Generator:
    """The generator that draws the augmentation of sample `index` in `epoch` (pure, resumable)."""
    return np.random.default_rng([seed, epoch, index, 0xA06])


class TeacherSteps:
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


def teacher_terms(model: nn.Module, batch: Batch, targets: Any) -> dict[str, torch.Tensor]:
    """The teacher's step: GT loss only ("loss" = "gt")."""
    out = model(batch)
    terms, _ = gt_terms(unwrap(model).head, out.heatmap, out.boxes, batch.gt_boxes, batch.gt_labels)
    return {"loss": terms["gt"], **terms}


def train_teacher(cfg: Config, *, out_dir: Path, resume: bool = True, progress: bool = True,
                  stop_after: int | None = None, hooks: Sequence[StepHook] = ()) -> FitResult:
    """Train (or resume) the teacher; writes out_dir/{last.pt, teacher.pt, train_log.jsonl}."""
    builder = ViewBuilder.for_config(open_data_source(cfg.data, "train"), cfg, train=True)
    final_hw = (cfg.augment.final_height, cfg.augment.final_width)
    run = RunSpec(kind="teacher", cfg=cfg, train=cfg.teacher_train, out_dir=Path(out_dir), final_name="teacher.pt",
                  content={**run_content(cfg, only=TEACHER_CONTENT), "targets.source": "none"}, shown_terms=("loss",))
    return fit(run, make_model=lambda: build_model("teacher", cfg.model, final_hw),
               steps=TeacherSteps(builder, seed=cfg.seed, batch_size=cfg.teacher_train.batch_size),
               terms=teacher_terms, resume=resume, progress=progress, stop_after=stop_after, hooks=hooks)
