"""Loading a config: YAML, dotted CLI overrides, type checks, and conversion back to plain dicts.

`load_config("demo", ["model.channels.cam=32"])` returns a validated `Config` (a shipped name or a YAML path).
Unknown keys, wrong types and malformed overrides raise `ConfigError` naming the key and the fix.
"""

from __future__ import annotations

import dataclasses
import types
import typing
import warnings
from pathlib import Path
from typing import Any

import yaml

from simdistill.config.checks import validate
from simdistill.config.files import resolve_config
from simdistill.config.sections import Config
from simdistill.errors import ConfigError

RENAMED_SECTIONS: dict[str, str] = {"store": "store_format"}
"""Old top-level section name → new one; the old name still loads, with a warning."""


def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", str(tp))


def _coerce_scalar(value: Any, tp: Any, key: str) -> Any:
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"config key '{key}' must be true or false, got {value!r}")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"config key '{key}' must be an integer, got {value!r}")
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"config key '{key}' must be a number, got {value!r}")
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(f"config key '{key}' must be a string, got {value!r}")
        return value
    raise ConfigError(f"config key '{key}' has an unsupported type {tp!r}")  # pragma: no cover


def _coerce(value: Any, tp: Any, key: str) -> Any:
    """Check `value` against the annotation `tp` and convert lists to tuples; raise ConfigError."""
    origin = typing.get_origin(tp)
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise ConfigError(f"config key '{key}' must be a mapping of {_type_name(tp)} fields, got {value!r}")
        return _build(tp, value, key)
    if origin is tuple:
        args = typing.get_args(tp)
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"config key '{key}' must be a list, got {value!r}")
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_coerce(v, args[0], f"{key}[{i}]") for i, v in enumerate(value))
        if len(value) != len(args):
            raise ConfigError(f"config key '{key}' must have {len(args)} entries, got {len(value)}: {value!r}")
        return tuple(_coerce(v, a, f"{key}[{i}]") for i, (v, a) in enumerate(zip(value, args)))
    if origin is dict:
        key_tp, value_tp = typing.get_args(tp)
        if not isinstance(value, dict):
            raise ConfigError(f"config key '{key}' must be a mapping, got {value!r}")
        return {_coerce(k, key_tp, key): _coerce(v, value_tp, f"{key}.{k}") for k, v in value.items()}
    if tp is Any:
        return value
    if origin in (typing.Union, types.UnionType):
        for arg in typing.get_args(tp):
            try:
                return _coerce(value, arg, key)
            except ConfigError:
                continue
        raise ConfigError(f"config key '{key}' has the wrong type: {value!r}")
    return _coerce_scalar(value, tp, key)


def _build(cls: type, raw: dict[str, Any], prefix: str) -> Any:
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(raw) - names)
    if unknown:
        where = f"'{prefix}'" if prefix else "the top level"
        raise ConfigError(
            f"unknown config key '{_join(prefix, unknown[0])}' in {where}; valid keys: {', '.join(sorted(names))}"
        )
    kwargs = {k: _coerce(v, hints[k], _join(prefix, k)) for k, v in raw.items()}
    return cls(**kwargs)


def _join(prefix: str, key: str) -> str:
    return f"{prefix}.{key}" if prefix else key


def _renamed(raw: dict[str, Any]) -> dict[str, Any]:
    """Move sections that were renamed to their new names (merging into the new section if both exist)."""
    for old, new in RENAMED_SECTIONS.items():
        if old in raw:
            warnings.warn(f"config section '{old}' is now '{new}'; rename it (e.g. --set {new}.lossy=true)",
                          FutureWarning, stacklevel=3)
            moved = raw.pop(old)
            if isinstance(moved, dict) and isinstance(raw.get(new), dict):
                moved = {**moved, **raw[new]}
            raw[new] = moved
    return raw


def config_from_dict(raw: dict[str, Any]) -> Config:
    cfg = _build(Config, _renamed(dict(raw)), "")
    validate(cfg)
    return cfg


def parse_override(text: str) -> tuple[list[str], Any]:
    """'model.channels.cam=32' -> (['model', 'channels', 'cam'], 32) with the value read as YAML."""
    if "=" not in text:
        raise ConfigError(f"override '{text}' must look like section.key=value, e.g. model.channels.cam=32")
    key, value = text.split("=", 1)
    parts = [p for p in key.strip().split(".") if p]
    if not parts:
        raise ConfigError(f"override '{text}' has an empty key")
    try:
        parsed = yaml.safe_load(value) if value.strip() else ""
    except yaml.YAMLError as exc:
        raise ConfigError(f"override '{text}': value is not valid YAML ({exc.__class__.__name__})") from None
    return parts, parsed


def apply_overrides(raw: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    for text in overrides:
        parts, value = parse_override(text)
        node = raw
        for p in parts[:-1]:
            child = node.setdefault(p, {})
            if not isinstance(child, dict):
                raise ConfigError(f"override '{text}': '{p}' is a value, not a section")
            node = child
        node[parts[-1]] = value
    return raw


def load_config(path: str | Path | None = None, overrides: list[str] | None = None) -> Config:
    """Load a YAML config, by path or shipped name (`resolve_config`), and apply overrides. None = the dataclass
    defaults (paper sizes), not the CLI's default config."""
    raw: dict[str, Any] = {}
    if path is not None:
        p = resolve_config(path)
        try:
            loaded = yaml.safe_load(p.read_text())
        except yaml.YAMLError as exc:
            raise ConfigError(f"config file '{p}' is not valid YAML: {str(exc).splitlines()[0]}") from None
        if loaded is None:
            loaded = {}
        if not isinstance(loaded, dict):
            raise ConfigError(f"config file '{p}' must hold a mapping of sections at the top level")
        raw = loaded
    raw = apply_overrides(raw, list(overrides or []))
    return config_from_dict(raw)
