"""Rules on a whole config: cross-field validation, and what makes two runs (or two stores) the same.

`run_content` is the one rule for resuming: a run resumes exactly, and an export resumes a store, when the
content of the run is unchanged. Machine settings (`MACHINE_KEYS`: threads, device, workers, loader, where
files live) may change between the two; any other difference is refused, naming the key and both values.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Sequence
from typing import Any

from simdistill.config.sections import (
    CLASS_NAMES,
    DISTILL_LOSSES,
    STUDENT_VARIANTS,
    Config,
    config_to_dict,
)
from simdistill.errors import ConfigError

MACHINE_KEYS: frozenset[str] = frozenset({
    "device",
    "threads",
    "data.dataroot",  # the data may move: a store identifies it by its sample tokens
    "data.infos_train",
    "data.infos_val",
    "data.eval_split",  # what a run is scored on; scoring reads the model, never changes it
    "teacher_train.checkpoint_every",
    "pretrain.checkpoint_every",
    "pretrain.eval_every",
    "pretrain.grad_norms_every",
    "student_train.checkpoint_every",
    "student_train.prefetch_batches",
    "student_train.loader",
    "student_train.loader_threads",
    "student_train.eval_every",  # evaluating during training reads the model, never changes it
    "teacher_train.eval_every",
    "student_train.grad_norms_every",  # diagnostics: autograd.grad leaves the parameters' .grad untouched
    "teacher_train.grad_norms_every",
    "export.workers",
    "export.threads_per_worker",
    "export.write_queue",
    "export.views_per_task",
    "export.teacher_config",  # a path; the store compares the mmdet3d config's sha256 instead
    "export.log_dir",
    "export.dashboard",
})
"""Dotted config keys that say how or where a run executes, not what it computes."""

IGNORED_SECTIONS: tuple[str, ...] = ("world", "storage_options")
"""Sections that never matter to a run: `world` only tells make-demo-data what to write; `storage_options` how to
reach a remote store."""

PRETRAIN_CONTENT: tuple[str, ...] = ("seed", "data", "augment", "model.backbone", "pretrain")
"""What decides a pretrained image backbone's weights."""

TEACHER_CONTENT: tuple[str, ...] = ("seed", "data", "augment", "model", "teacher_train")
"""What decides a teacher run's weights."""

STUDENT_CONTENT: tuple[str, ...] = (
    "seed", "data", "augment", "model", "student_train", "distill", "export.views_per_sample",
)
"""What decides a student run's weights, besides where its targets come from (the trainer adds that)."""

STORE_CONTENT: tuple[str, ...] = (
    "seed", "data", "augment", "model", "store_format",
    "export.views_per_sample", "export.split", "export.teacher", "export.tap_family", "export.taps",
)
"""The parts of a config that determine what a feature store holds (the rest may differ between exports)."""


WEIGHT_SCHEDULES: tuple[str, ...] = ("constant", "ramp_up", "decay")
"""The values of `distill.weight_schedule` (`student_train.distill_step.distill_factor` computes each)."""


def flatten(tree: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """{'a': {'b': 1}} -> {'a.b': 1}; lists stay values."""
    out: dict[str, Any] = {}
    for key, value in tree.items():
        dotted = f"{prefix}.{key}" if prefix else key
        if isinstance(value, dict) and value:
            out.update(flatten(value, dotted))
        else:
            out[dotted] = value
    return out


def _as_dict(cfg: Config | dict[str, Any]) -> dict[str, Any]:
    if dataclasses.is_dataclass(cfg):
        cfg = config_to_dict(cfg)
    return json.loads(json.dumps(cfg))  # a deep copy, tuples as lists


def _covered(key: str, prefixes: Sequence[str]) -> bool:
    return any(key == p or key.startswith(p + ".") for p in prefixes)


def run_content(cfg: Config | dict[str, Any], *, only: Sequence[str] | None = None) -> dict[str, Any]:
    """Dotted key -> value of everything in `cfg` that decides a run's result (`only`: restrict to these keys)."""
    flat = flatten(_as_dict(cfg))
    kept = {k: v for k, v in flat.items() if k not in MACHINE_KEYS and not _covered(k, IGNORED_SECTIONS)}
    if only is not None:
        kept = {k: v for k, v in kept.items() if _covered(k, only)}
    return kept


def first_difference(a: Any, b: Any, prefix: str = "") -> tuple[str, Any, Any] | None:
    """(dotted key, a's value, b's value) of the first difference between two nested dicts, or None."""
    if isinstance(a, dict) and isinstance(b, dict):
        for key in sorted(set(a) | set(b)):
            diff = first_difference(a.get(key), b.get(key), f"{prefix}.{key}" if prefix else key)
            if diff:
                return diff
        return None
    return None if a == b else (prefix, a, b)


def _short(value: Any) -> str:
    """repr for one-line messages; long lists (sample tokens) as a count."""
    if isinstance(value, list) and len(value) > 4:
        return f"[{len(value)} items]"
    return "(unset)" if value is None else repr(value)


def describe_difference(diff: tuple[str, Any, Any]) -> str:
    """'losses: ['imd'] before, ['imd', 'cmd'] now' for a (key, old, new) difference."""
    key, old, new = diff
    return f"{key} was {_short(old)}, now {_short(new)}"


def validate(cfg: Config) -> None:
    """Cross-field checks that a type check cannot express."""
    if cfg.data.version not in ("v1.0-mini", "v1.0-trainval", "v1.0-test"):
        raise ConfigError(f"data.version '{cfg.data.version}' is unknown; use v1.0-mini or v1.0-trainval")
    if cfg.world.version not in ("v1.0-mini", "v1.0-trainval"):
        raise ConfigError(f"world.version '{cfg.world.version}' is unknown; use v1.0-mini or v1.0-trainval")
    if cfg.data.sweeps < 1:
        raise ConfigError(f"data.sweeps must be >= 1, got {cfg.data.sweeps}")
    if cfg.data.dev_scenes < 0:
        raise ConfigError(f"data.dev_scenes must be >= 0 (0 = no dev split), got {cfg.data.dev_scenes}")
    if cfg.data.eval_split not in ("val", "dev") or (cfg.data.eval_split == "dev" and cfg.data.dev_scenes == 0):
        raise ConfigError(f"data.eval_split '{cfg.data.eval_split}' must be val, or dev with data.dev_scenes > 0")
    if cfg.data.max_points < 0:
        raise ConfigError(f"data.max_points must be >= 0 (0 keeps every point), got {cfg.data.max_points}")
    for name in ("xbound", "ybound"):
        lo, hi, step = getattr(cfg.model.bev, name)
        if not (hi > lo and step > 0):
            raise ConfigError(f"model.bev.{name} must be (min, max, step) with max > min and step > 0")
    _validate_tasks(cfg)
    for loss in cfg.distill.losses:
        if loss not in DISTILL_LOSSES:
            raise ConfigError(f"distill.losses has unknown loss '{loss}'; choose from {', '.join(DISTILL_LOSSES)}")
    if cfg.distill.feature_normalization not in ("mean", "foreground"):
        raise ConfigError(f"distill.feature_normalization '{cfg.distill.feature_normalization}' is unknown; use mean "
                          "or foreground")
    if cfg.distill.weight_schedule not in WEIGHT_SCHEDULES:
        raise ConfigError(f"distill.weight_schedule '{cfg.distill.weight_schedule}' is unknown; use "
                          f"{', '.join(WEIGHT_SCHEDULES)}")
    if cfg.student_train.loader not in ("dask", "direct", "memory"):
        raise ConfigError(f"student_train.loader '{cfg.student_train.loader}' is unknown; use dask, direct or memory")
    if cfg.student_train.loader_threads < 1:
        raise ConfigError(f"student_train.loader_threads must be >= 1, got {cfg.student_train.loader_threads}")
    if cfg.student_train.online_encoding not in ("raw", "store"):
        raise ConfigError(f"student_train.online_encoding '{cfg.student_train.online_encoding}' is unknown; use raw "
                          "or store")
    if cfg.student_train.variant not in STUDENT_VARIANTS:
        raise ConfigError(f"student_train.variant '{cfg.student_train.variant}' is unknown; "
                          f"use {' or '.join(STUDENT_VARIANTS)}")
    _validate_export(cfg)
    _check_storage_options(cfg.storage_options)
    if cfg.model.backbone.feature_stride not in (8, 16):
        raise ConfigError(f"model.backbone.feature_stride must be 8 or 16, got {cfg.model.backbone.feature_stride}")


def _validate_tasks(cfg: Config) -> None:
    seen: set[str] = set()
    for task in cfg.model.head.tasks:
        for c in task:
            if c not in CLASS_NAMES:
                raise ConfigError(f"model.head.tasks names unknown class '{c}'; classes: {', '.join(CLASS_NAMES)}")
            seen.add(c)
    if seen != set(CLASS_NAMES):
        missing = sorted(set(CLASS_NAMES) - seen)
        raise ConfigError(f"model.head.tasks must cover every class exactly once; missing: {', '.join(missing)}")
    if len(cfg.model.head.nms_radius) != len(cfg.model.head.tasks):
        raise ConfigError("model.head.nms_radius needs one radius per task")


TEACHER_KINDS: tuple[str, ...] = ("simdistill", "mmdet3d", "python")
"""What `export.teacher` may name (simdistill.teacher.loader builds each)."""


def _validate_export(cfg: Config) -> None:
    ex = cfg.export
    if ex.teacher not in TEACHER_KINDS:
        raise ConfigError(f"export.teacher '{ex.teacher}' is unknown; use {', '.join(TEACHER_KINDS)}")
    if ex.teacher != "mmdet3d" and (ex.taps or ex.teacher_config):
        raise ConfigError("--tap and --teacher-config apply to an mmdet3d teacher; add --teacher mmdet3d or drop them")
    if ex.teacher == "mmdet3d" and not ex.teacher_config:
        raise ConfigError("export.teacher is mmdet3d but no model config is given; pass --teacher-config CFG.py")
    if ex.teacher != "python" and ex.teacher_factory:
        raise ConfigError("--teacher-factory applies to a python teacher; add --teacher python or drop it")
    if ex.teacher == "python" and ":" not in ex.teacher_factory:
        raise ConfigError(f"export.teacher is python but export.teacher_factory is '{ex.teacher_factory}'; pass "
                          "--teacher-factory MODULE:FUNCTION or FILE.py:FUNCTION")


CREDENTIAL_KEYS = frozenset({
    "key", "secret", "token", "password", "aws_access_key_id", "aws_secret_access_key", "aws_session_token",
    "session_token", "account_key", "sas_token", "client_secret", "credentials",
})


def _check_storage_options(options: dict[str, Any], prefix: str = "storage_options") -> None:
    """ConfigError for a credential in storage_options (the config is copied into stores and checkpoints)."""
    for name, value in options.items():
        where = f"{prefix}.{name}"
        if name.lower() in CREDENTIAL_KEYS:
            raise ConfigError(
                f"{where} is a credential; the config is copied into stores and checkpoints, so give it by the "
                "environment instead (AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY for s3://) and drop it from the config"
            )
        if isinstance(value, dict):
            _check_storage_options(value, where)
