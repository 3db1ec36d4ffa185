"""`build_model`: the one place a model kind (a string from config or CLI) becomes a class."""

from __future__ import annotations

from collections.abc import Callable

from torch import nn

from simdistill.config import STUDENT_VARIANTS, ModelConfig
from simdistill.errors import ConfigError
from simdistill.models.pretrained import init_backbone
from simdistill.models.student import Student
from simdistill.models.teacher import Teacher

MODELS: dict[str, Callable[[ModelConfig, tuple[int, int]], nn.Module]] = {
    "teacher": lambda cfg, hw: Teacher(cfg, hw),
    **{variant: (lambda cfg, hw, v=variant: Student(cfg, hw, variant=v)) for variant in STUDENT_VARIANTS},
}


def build_model(kind: str, cfg: ModelConfig, final_hw: tuple[int, int]) -> nn.Module:
    """kind: one of config.MODEL_KINDS; final_hw: (augment.final_height, augment.final_width)."""
    if kind not in MODELS:
        raise ConfigError(f"model kind '{kind}' is unknown; choose one of {', '.join(MODELS)}")
    return MODELS[kind](cfg, tuple(final_hw))


def build_model_to_train(kind: str, cfg: ModelConfig, final_hw: tuple[int, int]) -> nn.Module:
    """`build_model` with the image backbone started from `cfg.backbone.pretrained` (when set): what a fresh
    training run starts from. A resumed run then loads its own checkpoint over it."""
    return init_backbone(build_model(kind, cfg, final_hw), cfg.backbone.pretrained)
