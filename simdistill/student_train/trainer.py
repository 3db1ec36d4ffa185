"""`train-student`: the camera-only student trained from cached targets, an online teacher, or GT only.

The student trains on the store's view plan (or, without a store, the plan export-teacher would make), through
the one training loop (`simdistill.training.fit`). Under `torchrun`, each rank trains on its own disjoint slice
of every epoch's views (gloo on CPU, nccl on CUDA).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from functools import partial
from pathlib import Path
from typing import Any

import torch

from simdistill.config import STUDENT_CONTENT, Config, run_content
from simdistill.errors import ConfigError
from simdistill.models.build import build_model_to_train
from simdistill.pipeline.augment import ViewBuilder
from simdistill.pipeline.sample import Batch
from simdistill.pipeline.sources import open_data_source
from simdistill.pipeline.view_plan import ViewPlan, build_inputs, epoch_batches, plan_views
from simdistill.student_train.distill_step import (
    TERM_KEYS,
    TeacherTargets,
    arrays_needed,
    check_losses_for_variant,
    standardized_arrays,
    student_terms,
)
from simdistill.student_train.target_sources import (
    NoTargets,
    OnlineTeacher,
    StoreTargets,
)
from simdistill.training.checkpoint import file_sha256
from simdistill.training.fit import FitResult, ProgressTerms, RunSpec, StepHook, fit
from simdistill.training.prefetch_thread import prefetch
from simdistill.training.runtime import distributed_rank, rank_device, resolve_device

TargetSource = NoTargets | StoreTargets | OnlineTeacher


class StudentSteps:
    """One epoch of (inputs rebuilt from the plan, their teacher targets) for this rank."""

    def __init__(self, builder: ViewBuilder, plan: ViewPlan, targets: TargetSource, *, seed: int, batch_size: int,
                 rank: int, world: int) -> None:
        self.builder, self.plan, self.targets = builder, plan, targets
        self.seed, self.batch_size, self.rank, self.world = seed, batch_size, rank, world
        self.steps_per_epoch = len(self._view_batches(0))

    def _view_batches(self, epoch: int) -> list[list[int]]:
        return epoch_batches(self.plan, seed=self.seed, epoch=epoch, batch_size=self.batch_size, rank=self.rank,
                             world=self.world)

    def epoch(self, epoch: int, skip: int, device: torch.device) -> Iterator[tuple[Batch, TeacherTargets | None]]:
        batches = self._view_batches(epoch)[skip:]
        inputs = prefetch(lambda: (build_inputs(self.builder, self.plan, b) for b in batches))
        return self.targets.attach(batches, inputs, device)


def _targets(cfg: Config, *, store: str | None, online_teacher: Path | None, scheduler: str | None,
             tokens: list[str], device: torch.device) -> tuple[TargetSource, StoreTargets | None, dict[str, Any]]:
    """(the target source, the store supplying the views if any, what the run records about both)."""
    losses = tuple(cfg.distill.losses)
    cached: StoreTargets | None = None
    identity: dict[str, Any] = {"targets.source": "none"}
    if store:  # the store's views, even for GT-only runs: every row of an ablation sees the same inputs
        # With --online-teacher too, the store only supplies the views and the teacher supplies the targets.
        needed = [] if online_teacher else arrays_needed(losses)
        cached = StoreTargets(store, cfg, needed, scheduler=scheduler, expected_tokens=tokens)
        identity.update({"targets.store_url": str(store), "targets.store_teacher_sha256": cached.teacher_sha256})
    if online_teacher and losses:
        identity.update({"targets.source": "online", "targets.teacher_sha256": file_sha256(Path(online_teacher))})
        return OnlineTeacher(Path(online_teacher), cfg, device), cached, identity
    if cached is not None and losses:
        identity["targets.source"] = "store"
        return cached, cached, identity
    return NoTargets(), cached, identity


def train_student(cfg: Config, *, out_dir: Path, store: str | None = None, online_teacher: Path | None = None,
                  scheduler: str | None = None, resume: bool = True, progress: bool = True,
                  stop_after: int | None = None, hooks: Sequence[StepHook] = ()) -> FitResult:
    """Train (or resume) a student; `scheduler` is a Dask scheduler address for reading the store; `hooks` run
    every so many steps (e.g. `evaluation.run.learning_curve_hook`)."""
    sc = cfg.student_train
    losses = tuple(cfg.distill.losses)
    check_losses_for_variant(losses, sc.variant)
    if losses and not store and not online_teacher:
        raise ConfigError(f"losses {','.join(losses)} need teacher targets: pass --store STORE (from export-teacher), "
                          "--online-teacher CHECKPOINT, or --losses none for the GT-only student")
    standardized = standardized_arrays(cfg.distill)  # their σ_c are read from the store (so none online)
    if standardized and online_teacher:
        raise ConfigError("distill.channel_standardization needs the teacher's channel statistics, which a store keeps "
                          "and an online teacher has not; drop --online-teacher, or set "
                          "distill.channel_standardization=false")
    rank, world = distributed_rank()
    device = rank_device(resolve_device(cfg.device), rank, world)
    source = open_data_source(cfg.data, "train")
    builder = ViewBuilder.for_config(source, cfg, train=True)
    targets, cached, identity = _targets(cfg, store=store, online_teacher=online_teacher, scheduler=scheduler,
                                         tokens=source.tokens, device=device)
    scales = cached.channel_scales(standardized, device) if standardized else None
    plan = cached.plan if cached is not None else plan_views(cfg, builder)
    final_hw = (cfg.augment.final_height, cfg.augment.final_width)
    run = RunSpec(kind=sc.variant, cfg=cfg, train=sc, out_dir=Path(out_dir), final_name="student.pt",
                  content={**run_content(cfg, only=STUDENT_CONTENT), **identity},
                  shown_terms=tuple(k for k in TERM_KEYS if k in ("loss", "gt") or k in losses))
    steps = StudentSteps(builder, plan, targets, seed=cfg.seed, batch_size=sc.batch_size, rank=rank, world=world)
    return fit(run, make_model=lambda: build_model_to_train(sc.variant, cfg.model, final_hw), steps=steps,
               terms=ProgressTerms(partial(student_terms, cfg=cfg, scales=scales)), resume=resume, progress=progress,
               stop_after=stop_after, hooks=hooks)

