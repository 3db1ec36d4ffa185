"""`pretrain-backbone`: the image backbone on 2D detection of the train split's camera images, through `fit`.

The analogue of the nuImages-pretrained Swin-T that BEVFusion-C and SimDistill start from: without it every
network here starts from random weights, and a camera student spends most of a short schedule learning to see.
The run writes `backbone.pt` (the backbone's weights alone, loadable with `weights_only=True`), which
`model.backbone.pretrained` points the teacher and every student at.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from simdistill.config import CLASS_NAMES, PRETRAIN_CONTENT, Config, run_content
from simdistill.models.detector2d import Detector2D, build_targets_2d, detection_2d_terms
from simdistill.models.pretrained import BACKBONE_FILE, init_backbone, save_backbone
from simdistill.pipeline.augment import ViewBuilder
from simdistill.pipeline.sample import Batch
from simdistill.pipeline.sources import open_data_source
from simdistill.training.augmented_steps import AugmentedSteps
from simdistill.training.fit import FitResult, RunSpec, StepHook, fit, unwrap


def _terms_fn(cfg: Config):  # noqa: ANN202 - a TermsFn
    def terms(model: nn.Module, batch: Batch, targets: Any) -> dict[str, torch.Tensor]:
        images = batch.images.flatten(0, 1)  # [B*N, 3, H, W]
        heatmap, box = model(images)
        wanted = build_targets_2d(batch.to("cpu"), len(CLASS_NAMES), unwrap(model).feature_stride,
                                  min_box_pixels=cfg.pretrain.min_box_pixels)  # targets on the CPU
        return detection_2d_terms(heatmap, box, wanted, box_weight=cfg.pretrain.box_weight)

    return terms


def pretrain_backbone(cfg: Config, *, out_dir: Path, resume: bool = True, progress: bool = True,
                      stop_after: int | None = None, hooks: Sequence[StepHook] = ()) -> FitResult:
    """Train (or resume) the 2D detector on the train split; writes out_dir/{last.pt, detector2d.pt,
    backbone.pt, train_log.jsonl}. Only the key frame's LiDAR is loaded (its frame places the boxes); no sweeps."""
    data = dataclasses.replace(cfg.data, sweeps=1)
    builder = ViewBuilder.for_config(open_data_source(data, "train"), cfg, train=True)
    run = RunSpec(kind="detector2d", cfg=cfg, train=cfg.pretrain, out_dir=Path(out_dir), final_name="detector2d.pt",
                  content=run_content(cfg, only=PRETRAIN_CONTENT), shown_terms=("loss",))
    backbone_cfg = dataclasses.replace(cfg.model.backbone, pretrained="")
    result = fit(run, make_model=lambda: init_backbone(Detector2D(backbone_cfg, len(CLASS_NAMES)),
                                                         cfg.model.backbone.pretrained),
                 steps=AugmentedSteps(builder, seed=cfg.seed, batch_size=cfg.pretrain.batch_size),
                 terms=_terms_fn(cfg), resume=resume, progress=progress, stop_after=stop_after, hooks=hooks)
    if result.finished and result.rank == 0:
        save_backbone(result.model.backbone, cfg.model.backbone, Path(out_dir) / BACKBONE_FILE)
    return result
