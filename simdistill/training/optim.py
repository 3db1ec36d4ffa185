"""Optimiser and learning-rate schedule (the same for teacher and students)."""

from __future__ import annotations

import torch

WARMUP_FRACTION = 0.4
"""The share of a run's steps over which the one-cycle LR warms up (its `pct_start`); the student's
`distill.weight_schedule: ramp_up` ramps the distillation terms over the same steps."""


def make_optimizer(model: torch.nn.Module, *, lr: float, weight_decay: float) -> torch.optim.Optimizer:
    params = [p for p in model.parameters() if p.requires_grad]
    return torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay)


def make_lr_schedule(optimizer: torch.optim.Optimizer, *, lr: float,
                     total_steps: int) -> torch.optim.lr_scheduler.LRScheduler:
    """One-cycle LR as BEVFusion/SimDistill's cyclic policy: warm up the first WARMUP_FRACTION (40 %) of the steps
    from lr/10 to lr, then anneal to lr*1e-4."""
    return torch.optim.lr_scheduler.OneCycleLR(
        optimizer,
        max_lr=lr,
        total_steps=max(total_steps, 1),
        pct_start=WARMUP_FRACTION,
        div_factor=10.0,
        final_div_factor=1e3,
        anneal_strategy="cos",
        cycle_momentum=False,
    )
