"""`train-student`: the camera-only student trained from cached targets, an online teacher, or GT only.

Views: the same plan for every run (the store's, or the exporter's plan recomputed from the config), one view
per sample per epoch chosen with a seeded generator, shuffled by view. Resume restores model, optimizer,
scheduler, torch RNG and the step; the epoch order and view choice are pure functions of (seed, epoch), so
a resumed run continues exactly where the last checkpoint left off. Under `torchrun`, each rank trains on its
own disjoint slice of every epoch's views (gloo on CPU, nccl on CUDA).
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import torch
import torch.distributed as dist

from simdistill.config import Config
from simdistill.errors import ConfigError
from simdistill.models import build_model
from simdistill.pipeline.augment import AugParams, ViewBuilder
from simdistill.pipeline.sample import Batch, collate
from simdistill.student_train.distill_step import (
    LOSS_KEYS,
    TeacherTargets,
    arrays_needed,
    check_losses_for_variant,
    student_losses,
)
from simdistill.student_train.sources import OnlineTeacher, StoreTargets, ViewPlan, plan_from_config
from simdistill.training.checkpoint import restore_for_resume, save_checkpoint
from simdistill.training.common import JsonlLog, make_optimizer, make_scheduler, prefetch, seed_everything, set_threads
from simdistill.training.progress import TrainProgress
from simdistill.training.teacher import open_split


@dataclass
class StudentResult:
    checkpoint: Path
    steps: int
    seconds: float
    last_terms: dict[str, float]
    metrics: dict[str, Any] = field(default_factory=dict)

    def to_text(self) -> str:
        terms = "  ".join(f"{k} {v:.4f}" for k, v in self.last_terms.items())
        lines = [f"checkpoint: {self.checkpoint}", f"steps: {self.steps}  time: {self.seconds:.0f} s",
                 f"last step: {terms}"]
        if self.metrics:
            lines.append(f"val mAP: {self.metrics['mAP']:.4f}  NDS: {self.metrics['NDS']:.4f}")
        return "\n".join(lines)


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


def build_inputs(builder: ViewBuilder, plan: ViewPlan, views: list[int], n_sweeps: int) -> Batch:
    """Rebuild the exact augmented inputs of `views` from their replay params."""
    out = []
    for v in views:
        params = AugParams.from_vector(plan.params[v], n_cams=builder.n_cams, n_sweeps=n_sweeps)
        out.append(builder.build(int(plan.sample_index[v]), params))
    return collate(out)


def _distributed() -> tuple[int, int]:
    if "RANK" in os.environ and "WORLD_SIZE" in os.environ and int(os.environ["WORLD_SIZE"]) > 1:
        if not dist.is_initialized():
            dist.init_process_group(backend="nccl" if torch.cuda.is_available() else "gloo")
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def train_student(cfg: Config, *, out_dir: Path, store: str | None = None, online_teacher: Path | None = None,
                  scheduler: str | None = None, resume: bool = True, evaluate: bool = True, progress: bool = True,
                  stop_after: int | None = None) -> StudentResult:
    """Train a student; `stop_after` ends early after that many steps (as a crash would), for resume tests."""
    sc = cfg.student_train
    losses = tuple(cfg.distill.losses)
    check_losses_for_variant(losses, sc.variant)
    if losses and not store and not online_teacher:
        raise ConfigError(f"losses {','.join(losses)} need teacher targets: pass --store STORE (from export-teacher), "
                          "--online-teacher CHECKPOINT, or --losses none for the GT-only student")
    rank, world = _distributed()
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    set_threads(cfg.threads)
    seed_everything(cfg.seed, deterministic=sc.deterministic)
    device = torch.device(cfg.device if not cfg.device.startswith("cuda") or world == 1 else f"cuda:{rank}")

    source = open_split(cfg, "train")
    builder = ViewBuilder(source, cfg.augment, train=True)
    cached: StoreTargets | None = None
    online: OnlineTeacher | None = None
    if store:  # the store's views, even for GT-only runs: every row of an ablation sees the same inputs
        # With --online-teacher too, the store only supplies the views and the teacher supplies the targets.
        needed = [] if online_teacher else arrays_needed(losses)
        cached = StoreTargets(store, cfg, needed, scheduler=scheduler, expected_tokens=source.tokens)
        plan = cached.plan
    else:
        plan = plan_from_config(cfg, builder)
    if online_teacher and losses:
        online = OnlineTeacher(Path(online_teacher), cfg, device)

    final_hw = (cfg.augment.final_height, cfg.augment.final_width)
    torch.manual_seed(cfg.seed)  # the student's init must not depend on what was built before it
    model = build_model(sc.variant, cfg.model, final_hw).to(device)
    train_model: torch.nn.Module = model
    if world > 1:
        train_model = torch.nn.parallel.DistributedDataParallel(model, find_unused_parameters=True)
    optimizer = make_optimizer(model, lr=sc.lr, weight_decay=sc.weight_decay)
    steps_per_epoch = len(epoch_batches(plan, seed=cfg.seed, epoch=0, batch_size=sc.batch_size, rank=rank,
                                        world=world))
    if steps_per_epoch == 0:
        raise ConfigError(f"{plan.n_samples} train samples are too few for student_train.batch_size={sc.batch_size} "
                          f"on {world} rank(s); lower the batch size")
    total_steps = steps_per_epoch * sc.epochs
    lr_sched = make_scheduler(optimizer, lr=sc.lr, total_steps=total_steps)

    last = out_dir / "last.pt"
    final = out_dir / "student.pt"
    step = 0
    if resume:
        step = restore_for_resume(last, kind=sc.variant, cfg=cfg, model=model, optimizer=optimizer, scheduler=lr_sched)
    log = JsonlLog(out_dir / "train_log.jsonl", resume_step=step if step else None) if rank == 0 else None
    run_info = {"store": store, "online_teacher": str(online_teacher) if online_teacher else None,
                "losses": list(losses), "variant": sc.variant, "gcm": cfg.model.gcm.enabled, "world_size": world}

    def save(path: Path) -> None:
        if rank == 0:
            save_checkpoint(path, kind=sc.variant, cfg=cfg, model=model, optimizer=optimizer.state_dict(),
                            scheduler=lr_sched.state_dict(), step=step, torch_rng=torch.get_rng_state(), run=run_info)

    t0 = time.time()
    last_terms: dict[str, float] = {}
    model.train()
    stop = total_steps if stop_after is None else min(total_steps, stop_after)
    t_step = time.perf_counter()
    with TrainProgress(f"student[{sc.variant}]", total=total_steps, start=step, enabled=progress and rank == 0) as bar:
        while step < stop:
            epoch, skip = divmod(step, steps_per_epoch)
            batches = epoch_batches(plan, seed=cfg.seed, epoch=epoch, batch_size=sc.batch_size, rank=rank,
                                    world=world)[skip:]
            inputs = prefetch(lambda bs=batches: (build_inputs(builder, plan, b, cfg.data.sweeps) for b in bs))
            targets: Iterator[TeacherTargets | None]
            if cached is not None and losses and online is None:
                targets = cached.iterate(batches, device)
            else:
                targets = iter([None] * len(batches))
            for batch, tgt in zip(inputs, targets):
                batch = batch.to(device)
                if online is not None:
                    tgt = online.targets(batch)
                out = train_model(batch.without_points())
                terms = student_losses(out, batch, tgt, model.head, cfg)
                optimizer.zero_grad(set_to_none=True)
                terms["loss"].backward()
                torch.nn.utils.clip_grad_norm_(model.parameters(), sc.grad_clip)
                optimizer.step()
                lr_sched.step()
                step += 1
                last_terms = {k: float(terms[k].detach()) for k in LOSS_KEYS}
                if log is not None:
                    now = time.perf_counter()
                    log.write({"step": step, "epoch": epoch, "lr": lr_sched.get_last_lr()[0], **last_terms,
                               "step_seconds": now - t_step})
                    t_step = now
                bar.update(step, {k: v for k, v in last_terms.items() if k == "loss" or k in losses or k == "gt"})
                if step % sc.checkpoint_every == 0:
                    save(last)
                if step >= stop:
                    break
    save(last)
    seconds = time.time() - t0
    metrics: dict[str, Any] = {}
    if step >= total_steps:
        save(final)
        if evaluate and rank == 0:
            from simdistill.evaluation.run import evaluate_model

            result = evaluate_model(model, cfg, split="val", out_dir=out_dir / "eval",
                                    log_path=out_dir / "train_log.jsonl")
            metrics = result.to_dict()
            (out_dir / "metrics.json").write_text(json.dumps(metrics, indent=2))
    if world > 1:
        dist.barrier()
    return StudentResult(checkpoint=final if step >= total_steps else last, steps=step, seconds=seconds,
                         last_terms=last_terms, metrics=metrics)
