"""`train-teacher`: the LiDAR-camera teacher on freshly augmented train views, GT loss only, through `fit`."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from simdistill.config import TEACHER_CONTENT, Config, run_content
from simdistill.models.build import build_model_to_train
from simdistill.models.center_loss import gt_terms
from simdistill.pipeline.augment import ViewBuilder
from simdistill.pipeline.sample import Batch
from simdistill.pipeline.sources import open_data_source
from simdistill.training.augmented_steps import AugmentedSteps
from simdistill.training.fit import FitResult, RunSpec, StepHook, fit, unwrap


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
    return fit(run, make_model=lambda: build_model_to_train("teacher", cfg.model, final_hw),
               steps=AugmentedSteps(builder, seed=cfg.seed, batch_size=cfg.teacher_train.batch_size),
               terms=teacher_terms, resume=resume, progress=progress, stop_after=stop_after, hooks=hooks)
