"""Pretrained image backbones: the file `pretrain-backbone` writes, and loading one into any model's `backbone`.

A backbone file holds `{"kind": "image_backbone", "backbone": <BackboneConfig as a dict>, "state_dict": ...}` and
loads with `torch.load(..., weights_only=True)`. `model.backbone.pretrained` names one: a path, or `builtin:NAME`
for a file shipped in `simdistill/weights/` (see the README there for the command that made it and its sha256).
"""

from __future__ import annotations

import dataclasses
import hashlib
from pathlib import Path

import torch
from torch import nn

from simdistill import __version__
from simdistill.config import BackboneConfig, config_to_dict
from simdistill.errors import CheckpointError, ConfigError

BACKBONE_FILE = "backbone.pt"
BUILTIN_PREFIX = "builtin:"
BUILTIN_DIR = Path(__file__).resolve().parent.parent / "weights"


def save_backbone(backbone: nn.Module, cfg: BackboneConfig, path: Path) -> str:
    """Atomically write the backbone's weights with the config they fit; returns the file's sha256."""
    payload = {"kind": "image_backbone", "backbone": config_to_dict(dataclasses.replace(cfg, pretrained="")),
               "state_dict": backbone.state_dict(), "package_version": __version__}
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    torch.save(payload, tmp)
    tmp.replace(path)
    return hashlib.sha256(path.read_bytes()).hexdigest()


def resolve_pretrained(name: str) -> Path:
    """The file `model.backbone.pretrained` names: a path, or builtin:NAME for simdistill/weights/NAME.pt."""
    if name.startswith(BUILTIN_PREFIX):
        path = BUILTIN_DIR / f"{name[len(BUILTIN_PREFIX):]}.pt"
        if not path.is_file():
            shipped = " or ".join(f"{BUILTIN_PREFIX}{p.stem}" for p in sorted(BUILTIN_DIR.glob("*.pt"))) or "(none)"
            raise ConfigError(f"model.backbone.pretrained '{name}' is not shipped; choose {shipped}, a backbone.pt "
                              "path, or '' for random weights")
        return path
    path = Path(name).expanduser()
    if not path.is_file():
        raise ConfigError(f"model.backbone.pretrained '{name}' does not exist; run `simdistill pretrain-backbone "
                          "--out DIR` and point it at DIR/backbone.pt, or set it to '' for random weights")
    return path


def init_backbone(model: nn.Module, pretrained: str) -> nn.Module:
    """Load the backbone `pretrained` names (see `resolve_pretrained`) into `model.backbone` when it is set."""
    if not pretrained:
        return model
    path = resolve_pretrained(pretrained)
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
        state = payload["state_dict"]
    except Exception as exc:  # noqa: BLE001 - any unreadable file is the user's bad input
        raise CheckpointError(f"{path} is not a backbone file written by `simdistill pretrain-backbone` "
                              f"({type(exc).__name__}); point model.backbone.pretrained at DIR/backbone.pt") from None
    try:
        model.backbone.load_state_dict(state)
    except RuntimeError:
        raise CheckpointError(
            f"{path} holds a backbone of other sizes ({payload.get('backbone')}) than model.backbone; pretrain one "
            "with this config (simdistill pretrain-backbone) or set model.backbone.pretrained to ''") from None
    return model
