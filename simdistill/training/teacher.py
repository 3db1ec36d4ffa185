"""`train-teacher`: train the LiDAR-camera teacher on the train split, checkpoint, resume, evaluate."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

import torch

from simdistill.config import Config
from simdistill.errors import ConfigError
from simdistill.models import build_model
from simdistill.pipeline.augment import ViewBuilder
from simdistill.pipeline.sample import Batch, collate
from simdistill.pipeline.sources import DataSource, open_data_source
from simdistill.student_train.losses import gt_loss
from simdistill.training.checkpoint import restore_for_resume, save_checkpoint
from simdistill.training.common import (
    JsonlLog,
    epoch_order,
    make_optimizer,
    make_scheduler,
    prefetch,
    seed_everything,
    set_threads,
    view_rng,
)
from simdistill.training.progress import TrainProgress


@dataclass
class TrainResult:
    checkpoint: Path
    steps: int
    seconds: float
    final_loss: float
    metrics: dict[str, Any] = field(default_factory=dict)

    def to_text(self) -> str:
        lines = [f"checkpoint: {self.checkpoint}", f"steps: {self.steps}  time: {self.seconds:.0f} s",
                 f"final loss: {self.final_loss:.4f}"]
        if self.metrics:
            lines.append(f"val mAP: {self.metrics['mAP']:.4f}  NDS: {self.metrics['NDS']:.4f}")
        return "\n".join(lines)


def open_split(cfg: Config, split: str) -> DataSource:
    return open_data_source(cfg.data, split)


def iterate_epoch_batches(
    builder: ViewBuilder, *, seed: int, epoch: int, batch_size: int, skip_batches: int = 0
) -> Iterator[Batch]:
    """Batches of freshly augmented train views, in the deterministic order of (seed, epoch)."""
    order = epoch_order(seed, epoch, len(builder.source))
    n_batches = len(order) // batch_size  # drop_last: every step sees a full batch
    for b in range(skip_batches, n_batches):
        idx = order[b * batch_size : (b + 1) * batch_size]
        views = [builder.build(int(i), builder.draw(int(i), view_rng(seed, epoch, int(i)))) for i in idx]
        yield collate(views)


def teacher_step_loss(model: torch.nn.Module, batch: Batch, cfg: Config) -> dict[str, torch.Tensor]:
    out = model(batch)
    targets = model.head.build_targets(batch.gt_boxes, batch.gt_labels)
    return gt_loss(
        out.heatmap, out.boxes, targets.heatmap, targets.indices, targets.box_targets, targets.mask,
        code_weights=cfg.model.head.code_weights, bbox_weight=cfg.model.head.loss_bbox_weight,
        task_sizes=[len(t) for t in cfg.model.head.tasks],
    )


def train_teacher(cfg: Config, *, out_dir: Path, resume: bool = True, evaluate: bool = True,
                  progress: bool = True, stop_after: int | None = None) -> TrainResult:
    """Train (or resume) the teacher; writes out_dir/{last.pt, teacher.pt, train_log.jsonl, eval/}.

    `stop_after` ends the run after that many steps, as a crash would (for resume tests).
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    tc = cfg.teacher_train
    set_threads(cfg.threads)
    seed_everything(cfg.seed)
    device = torch.device(cfg.device)
    source = open_split(cfg, "train")
    builder = ViewBuilder(source, cfg.augment, train=True)
    final_hw = (cfg.augment.final_height, cfg.augment.final_width)
    model = build_model("teacher", cfg.model, final_hw).to(device)
    optimizer = make_optimizer(model, lr=tc.lr, weight_decay=tc.weight_decay)
    steps_per_epoch = len(source) // tc.batch_size
    if steps_per_epoch == 0:
        raise ConfigError(f"train split has {len(source)} samples, fewer than teacher_train.batch_size="
                              f"{tc.batch_size}; lower the batch size or make a larger world")
    total_steps = steps_per_epoch * tc.epochs
    scheduler = make_scheduler(optimizer, lr=tc.lr, total_steps=total_steps)

    last = out_dir / "last.pt"
    final = out_dir / "teacher.pt"
    step = 0
    if resume:
        step = restore_for_resume(last, kind="teacher", cfg=cfg, model=model, optimizer=optimizer, scheduler=scheduler)
    log = JsonlLog(out_dir / "train_log.jsonl", resume_step=step if step else None)

    def save(path: Path) -> None:
        save_checkpoint(path, kind="teacher", cfg=cfg, model=model, optimizer=optimizer.state_dict(),
                        scheduler=scheduler.state_dict(), step=step, torch_rng=torch.get_rng_state())

    t0 = time.time()
    loss_value = float("nan")
    model.train()
    stop = total_steps if stop_after is None else min(total_steps, stop_after)
    with TrainProgress("teacher", total=total_steps, start=step, enabled=progress) as bar:
        while step < stop:
            epoch, skip = divmod(step, steps_per_epoch)
            batches = prefetch(lambda e=epoch, s=skip: iterate_epoch_batches(
                builder, seed=cfg.seed, epoch=e, batch_size=tc.batch_size, skip_batches=s))
            for batch in batches:
                terms = teacher_step_loss(model, batch.to(device), cfg)
                optimizer.zero_grad(set_to_none=True)
                terms["total"].backward()
                torch.nn.utils.clip_grad_norm_(model.parameters(), tc.grad_clip)
                optimizer.step()
                scheduler.step()
                step += 1
                loss_value = float(terms["total"].detach())
                record = {"step": step, "epoch": epoch, "lr": scheduler.get_last_lr()[0],
                          "loss": loss_value, **{f"gt_{k}": float(v.detach()) for k, v in terms.items() if k != "total"}}
                log.write(record)
                bar.update(step, {"loss": loss_value})
                if step % tc.checkpoint_every == 0:
                    save(last)
                if step >= stop:
                    break
    save(last)
    seconds = time.time() - t0
    metrics: dict[str, Any] = {}
    if step < total_steps:
        return TrainResult(checkpoint=last, steps=step, seconds=seconds, final_loss=loss_value)
    save(final)
    if evaluate:
        from simdistill.evaluation.run import evaluate_model

        result = evaluate_model(model, cfg, split="val", out_dir=out_dir / "eval", log_path=out_dir / "train_log.jsonl")
        metrics = result.to_dict()
        (out_dir / "metrics.json").write_text(json.dumps(metrics, indent=2))
    return TrainResult(checkpoint=final, steps=step, seconds=seconds, final_loss=loss_value, metrics=metrics)


def random_init_metrics(cfg: Config, *, out_dir: Path) -> dict[str, Any]:
    """Devkit metrics of an untrained teacher (the 'did it learn' reference)."""
    from simdistill.evaluation.run import evaluate_model

    seed_everything(cfg.seed)
    model = build_model("teacher", cfg.model, (cfg.augment.final_height, cfg.augment.final_width))
    return evaluate_model(model, cfg, split="val", out_dir=Path(out_dir)).to_dict()

