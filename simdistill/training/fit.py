"""The one training loop. Teacher and students differ only in what they pass in: the model, the steps (inputs
with their teacher targets, if any) and the loss terms of a step.

    result = fit(run, make_model=lambda: build_model("teacher", ...), steps=AugmentedSteps(...), terms=gt_terms)

`fit` seeds, builds the model on the device (DDP under torchrun), makes AdamW and the one-cycle schedule,
resumes exactly from `out_dir/last.pt` when the run's content is unchanged, and then steps: forward, the named
loss terms (`terms(...)["loss"]` is what is minimised; `ProgressTerms` also get the run's progress), backward,
gradient clipping, a JSONL record per step with every term, a progress bar, `last.pt` every `checkpoint_every`
steps and at the end, and the final checkpoint once every step is done. Epoch order and augmentation are pure
functions of (seed, epoch), so a resumed run continues on exactly the batches it would have seen.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import torch
import torch.distributed as dist
from torch import nn

from simdistill.config import Config, TrainConfig
from simdistill.errors import ConfigError
from simdistill.pipeline.sample import Batch
from simdistill.training.checkpoint import restore_for_resume, save_checkpoint
from simdistill.training.jsonl_log import JsonlLog
from simdistill.training.optim import make_lr_schedule, make_optimizer
from simdistill.training.progress import TrainProgress
from simdistill.training.runtime import (
    distributed_rank,
    rank_device,
    resolve_device,
    seed_everything,
    set_threads,
)

TermsFn = Callable[[nn.Module, Batch, Any], dict[str, torch.Tensor]]
"""(model, batch, targets) -> named loss terms; "loss" is the sum that is minimised."""


@dataclass(frozen=True)
class ProgressTerms:
    """Loss terms whose weights follow the run's progress (the student's `distill.weight_schedule`): `fit` calls
    `fn(model, batch, targets, progress=p)`, p = steps done before this one / total steps, in [0, 1). A plain
    `TermsFn` is called without it, so the teacher's and the pretraining's terms know nothing of schedules."""

    fn: Callable[..., dict[str, torch.Tensor]]


class StepSource(Protocol):
    """Where a run's steps come from: (inputs, targets) pairs of one epoch, from any step on."""

    steps_per_epoch: int

    def epoch(self, epoch: int, skip: int, device: torch.device) -> Iterator[tuple[Batch, Any]]:
        """The epoch's steps after the first `skip`, inputs already on `device`."""
        ...


@dataclass
class StepHook:
    """Something to run every `every` steps on rank 0 (e.g. a val evaluation for a learning curve); the dict it
    returns joins that step's JSONL record."""

    every: int
    run: Callable[[int, nn.Module], dict[str, float]]


@dataclass
class RunSpec:
    """What a run is and where it writes."""

    kind: str  # the checkpoint's kind (config.MODEL_KINDS)
    cfg: Config  # the resolved config, saved in every checkpoint
    train: TrainConfig  # cfg.teacher_train or cfg.student_train
    out_dir: Path
    final_name: str  # teacher.pt | student.pt
    content: dict[str, Any]  # what must match to resume (config.run_content + where the targets come from)
    shown_terms: tuple[str, ...] = ("loss",)  # terms on the progress bar


@dataclass
class FitResult:
    checkpoint: Path  # the final checkpoint when finished, else last.pt
    steps: int
    total_steps: int
    seconds: float
    last_terms: dict[str, float]
    model: nn.Module = field(repr=False)
    rank: int = 0

    @property
    def finished(self) -> bool:
        return self.steps >= self.total_steps

    def to_text(self) -> str:
        terms = "  ".join(f"{k} {v:.4f}" for k, v in self.last_terms.items())
        state = "finished" if self.finished else f"stopped at step {self.steps} of {self.total_steps}"
        return f"checkpoint: {self.checkpoint}\nsteps: {self.steps} ({state})  time: {self.seconds:.0f} s\n" \
               f"last step: {terms}"


class _Loop:
    """The state one `fit` call carries between steps (model, optimiser, schedule, log, step)."""

    def __init__(self, run: RunSpec, model: nn.Module, total_steps: int, rank: int, world: int) -> None:
        self.run, self.model, self.rank, self.world = run, model, rank, world
        self.train_model: nn.Module = model
        if world > 1:
            self.train_model = nn.parallel.DistributedDataParallel(model, find_unused_parameters=True)
        tc = run.train
        self.optimizer = make_optimizer(model, lr=tc.lr, weight_decay=tc.weight_decay)
        self.lr_schedule = make_lr_schedule(self.optimizer, lr=tc.lr, total_steps=total_steps)
        self.total_steps = total_steps
        self.step = 0
        self.log: JsonlLog | None = None
        self.last_terms: dict[str, float] = {}

    def resume(self, enabled: bool) -> None:
        last = self.run.out_dir / "last.pt"
        if enabled:
            self.step = restore_for_resume(last, kind=self.run.kind, content=self.run.content, model=self.model,
                                           optimizer=self.optimizer, lr_schedule=self.lr_schedule)
        if self.rank == 0:
            self.log = JsonlLog(self.run.out_dir / "train_log.jsonl", resume_step=self.step or None)

    def save(self, name: str) -> None:
        if self.rank == 0:
            save_checkpoint(self.run.out_dir / name, kind=self.run.kind, cfg=self.run.cfg, model=self.model,
                            optimizer=self.optimizer.state_dict(), lr_schedule=self.lr_schedule.state_dict(),
                            step=self.step, torch_rng=torch.get_rng_state(), content=self.run.content)

    def term_grad_norms(self, terms: dict[str, torch.Tensor]) -> dict[str, float]:
        """Each term's gradient norm on the shared image/lift parameters (the model's `shared_parameters()`, or
        all of them): which term steers the features every term reaches."""
        inner = unwrap(self.model)
        params = inner.shared_parameters() if hasattr(inner, "shared_parameters") else list(inner.parameters())
        norms = {}
        for name, term in terms.items():
            if name == "loss" or not term.requires_grad:
                continue
            grads = torch.autograd.grad(term, params, retain_graph=True, allow_unused=True)
            norms[f"grad_norm/{name}"] = float(torch.sqrt(sum((g.float() ** 2).sum() for g in grads if g is not None)))
        return norms

    def train_step(self, batch: Batch, targets: Any, terms_fn: TermsFn | ProgressTerms) -> dict[str, float]:
        if isinstance(terms_fn, ProgressTerms):
            terms = terms_fn.fn(self.train_model, batch, targets, progress=self.step / self.total_steps)
        else:
            terms = terms_fn(self.train_model, batch, targets)
        every = self.run.train.grad_norms_every
        diagnostics = self.term_grad_norms(terms) if every and (self.step + 1) % every == 0 else {}
        self.optimizer.zero_grad(set_to_none=True)
        terms["loss"].backward()
        grad_norm = torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.run.train.grad_clip)
        self.optimizer.step()
        self.lr_schedule.step()
        self.step += 1
        self.last_terms = {k: float(v.detach()) for k, v in terms.items()}
        return {"grad_norm": float(grad_norm), **diagnostics}

    def finish_step(self, epoch: int, extra: dict[str, float], hooks: Sequence[StepHook]) -> None:
        """Hooks due at this step, the step's JSONL record, and a checkpoint when one is due."""
        if self.rank == 0:
            for hook in hooks:
                if hook.every and self.step % hook.every == 0:
                    extra.update(hook.run(self.step, self.model))
        if self.log is not None:
            self.log.write({"step": self.step, "epoch": epoch, "lr": self.lr_schedule.get_last_lr()[0],
                            **self.last_terms, **extra})
        if self.step % self.run.train.checkpoint_every == 0:
            self.save("last.pt")


def fit(run: RunSpec, *, make_model: Callable[[], nn.Module], steps: StepSource, terms: TermsFn | ProgressTerms,
        resume: bool = True, progress: bool = True, stop_after: int | None = None,
        hooks: Sequence[StepHook] = ()) -> FitResult:
    """Train (or resume) one run; see the module docstring. `stop_after` ends after that many steps, as a
    crash would (for resume tests); `hooks` run every so many steps on rank 0."""
    tc = run.train
    rank, world = distributed_rank()
    run.out_dir = Path(run.out_dir)
    run.out_dir.mkdir(parents=True, exist_ok=True)
    set_threads(run.cfg.threads)
    device = rank_device(resolve_device(run.cfg.device), rank, world)
    if steps.steps_per_epoch == 0:
        raise ConfigError(f"the train split gives no full batch of {tc.batch_size} on {world} rank(s); lower the "
                          "batch size or use more data")
    seed_everything(run.cfg.seed, deterministic=tc.deterministic)
    total_steps = steps.steps_per_epoch * tc.epochs
    loop = _Loop(run, make_model().to(device), total_steps, rank, world)
    loop.resume(resume)
    stop = total_steps if stop_after is None else min(total_steps, stop_after)
    t0 = time.perf_counter()
    loop.model.train()
    with TrainProgress(run.kind, total=total_steps, start=loop.step, enabled=progress and rank == 0) as bar:
        while loop.step < stop:
            epoch, skip = divmod(loop.step, steps.steps_per_epoch)
            t_step = time.perf_counter()
            for batch, targets in steps.epoch(epoch, skip, device):
                extra = loop.train_step(batch, targets, terms)
                extra["step_seconds"] = time.perf_counter() - t_step
                loop.finish_step(epoch, extra, hooks)
                t_step = time.perf_counter()  # a hook's time (an evaluation) is not the next step's
                bar.update(loop.step, {k: v for k, v in loop.last_terms.items() if k in run.shown_terms})
                if loop.step >= stop:
                    break
    loop.save("last.pt")
    if loop.step >= total_steps:
        loop.save(run.final_name)
    if world > 1:
        dist.barrier()
    final = run.out_dir / (run.final_name if loop.step >= total_steps else "last.pt")
    return FitResult(checkpoint=final, steps=loop.step, total_steps=total_steps, seconds=time.perf_counter() - t0,
                     last_terms=loop.last_terms, model=loop.model, rank=rank)


def unwrap(model: nn.Module) -> nn.Module:
    """The model inside a DistributedDataParallel wrapper (or the model itself)."""
    return model.module if isinstance(model, nn.parallel.DistributedDataParallel) else model
