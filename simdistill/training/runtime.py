"""Process set-up every run shares: torch threads, seeds, the device, and DDP ranks."""

from __future__ import annotations

import os
import random

import numpy as np
import torch
import torch.distributed as dist

from simdistill.errors import ConfigError


def set_threads(threads: int) -> None:
    """Pin torch's CPU threads (0 = leave torch's default). On a shared host, fewer threads than cores avoids
    OpenMP oversubscription, which made steps many times slower on a loaded 2-core machine."""
    if threads > 0:
        torch.set_num_threads(threads)


def seed_everything(seed: int, *, deterministic: bool = True) -> None:
    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)
    if deterministic:
        torch.use_deterministic_algorithms(True, warn_only=True)


def resolve_device(name: str) -> torch.device:
    """`cfg.device` as a torch device; a CUDA device this machine lacks is a ConfigError, never a fallback."""
    try:
        device = torch.device(name)
    except (RuntimeError, ValueError):
        raise ConfigError(f"device '{name}' is not a device name; use cpu, cuda or cuda:N") from None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise ConfigError(f"device '{name}' was asked for but this machine has no usable CUDA GPU "
                              "(or torch is a CPU build); use --set device=cpu or install a CUDA build of torch")
        index = device.index or 0
        if index >= torch.cuda.device_count():
            raise ConfigError(f"device '{name}' does not exist: this machine has {torch.cuda.device_count()} CUDA "
                              "device(s); pick one of them")
    elif device.type != "cpu":
        raise ConfigError(f"device '{name}' is not supported; use cpu, cuda or cuda:N")
    return device


def distributed_rank() -> tuple[int, int]:
    """(rank, world size) under torchrun (initialising the process group once), else (0, 1)."""
    if "RANK" in os.environ and "WORLD_SIZE" in os.environ and int(os.environ["WORLD_SIZE"]) > 1:
        if not dist.is_initialized():
            dist.init_process_group(backend="nccl" if torch.cuda.is_available() else "gloo")
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def rank_device(device: torch.device, rank: int, world: int) -> torch.device:
    """Each DDP rank on its own GPU; CPU ranks share the CPU."""
    if device.type == "cuda" and world > 1:
        return torch.device(f"cuda:{rank}")
    return device
