"""Optimiser and learning-rate schedule (the same for teacher and students)."""

from __future__ import annotations

import torch


def make_optimizer(model: torch.nn.Module, *, lr: float, weight_decay: float) -> torch.optim.Optimizer:
    params = [p for p in model.parameters() if p.requires_grad]
    return torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay)


def make_lr_schedule(optimizer: torch.optim.Optimizer, *, lr: float,
                     total_steps: int) -> torch.optim.lr_scheduler.LRScheduler:
    """One-cycle LR as BEVFusion/SimDistill's cyclic policy: warm up 40 % from lr/10 to lr, anneal to lr*1e-4."""
    return torch.optim.lr_scheduler.OneCycleLR(
        optimizer,
        max_lr=lr,
        total_steps=max(total_steps, 1),
        pct_start=0.4,
        div_factor=10.0,
        final_div_factor=1e3,
        anneal_strategy="cos",
        cycle_momentum=False,
    )
