"""Checkpoints that load with `torch.load(..., weights_only=True)` and are written atomically.

A checkpoint holds the model state, optimizer/scheduler state, the position in training, RNG states, the
resolved config and provenance (package version, git commit). Writing goes to a temporary file that is
renamed over the old one, so a crash mid-write never leaves a truncated checkpoint behind.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
from pathlib import Path
from typing import Any

import torch

from simdistill import __version__
from simdistill.config import (
    Config,
    config_from_dict,
    config_to_dict,
    describe_difference,
    first_difference,
)
from simdistill.errors import CheckpointError


def git_commit() -> str:
    """The repository's HEAD commit if the package runs from a git checkout, else 'unknown'."""
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"],
            cwd=Path(__file__).resolve().parent,
            capture_output=True,
            text=True,
            timeout=5,
            check=False,
        )
        return out.stdout.strip() or "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def save_checkpoint(path: Path, *, kind: str, cfg: Config, model: torch.nn.Module, **state: Any) -> None:
    """Atomically write {kind, config, model, provenance, **state} to `path`."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = {
        "kind": kind,
        "config": config_to_dict(cfg),
        "model": model.state_dict(),
        "package_version": __version__,
        "git_commit": git_commit(),
        **state,
    }
    tmp = path.with_name(path.name + ".tmp")
    try:
        torch.save(payload, tmp)
        with open(tmp, "rb") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise CheckpointError(f"could not write checkpoint {path}: {exc.strerror or exc}; free disk space or "
                              "choose another --out") from None


def load_checkpoint(path: Path, *, expect_kind: str | tuple[str, ...] | None = None) -> dict[str, Any]:
    """Load a checkpoint safely (weights_only) and check what kind of model it holds."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint '{path}' does not exist; train one first (simdistill train-teacher / "
                              "train-student) or fix the path")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any unpickling/format failure is a user-facing bad file
        raise CheckpointError(f"checkpoint '{path}' is not a readable simdistill checkpoint ({type(exc).__name__}); "
                              "pass a file written by simdistill") from None
    if not isinstance(payload, dict) or "kind" not in payload or "model" not in payload:
        raise CheckpointError(f"checkpoint '{path}' was not written by simdistill (no kind/model entries)")
    if expect_kind is not None:
        kinds = (expect_kind,) if isinstance(expect_kind, str) else expect_kind
        if payload["kind"] not in kinds:
            raise CheckpointError(
                f"checkpoint '{path}' holds a '{payload['kind']}' model but a {' or '.join(kinds)} is needed here"
            )
    return payload


def restore_for_resume(last: Path, *, kind: str, content: dict[str, Any], model: torch.nn.Module,
                       optimizer: torch.optim.Optimizer, lr_schedule: Any) -> int:
    """Load `last` into model/optimizer/schedule/torch RNG if it exists; returns the step to continue from.

    The run resumes only when its content (`simdistill.config.run_content` plus where its targets come from)
    equals the checkpoint's: machine settings may change, anything else is a CheckpointError naming the key.
    """
    if not Path(last).exists():
        return 0
    payload = load_checkpoint(last, expect_kind=kind)
    diff = first_difference(payload.get("content", {}), content)
    if diff:
        raise CheckpointError(f"{last} belongs to another run ({describe_difference(diff)}); resume with the same "
                              "settings, pass --no-resume to start over, or use another --out")
    model.load_state_dict(payload["model"])
    optimizer.load_state_dict(payload["optimizer"])
    lr_schedule.load_state_dict(payload["lr_schedule"])
    torch.set_rng_state(payload["torch_rng"])
    return int(payload["step"])


def checkpoint_config(payload: dict[str, Any]) -> Config:
    return config_from_dict(payload["config"])


def file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()
