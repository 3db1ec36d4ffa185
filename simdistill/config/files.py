"""Where a config comes from: a YAML path, or the name of a config shipped inside the package.

`resolve_config("demo")` and `resolve_config("path/to/my.yaml")` both return a readable file; this is the one
place that maps `--config` to a file. The shipped configs live in `simdistill/configs/` (package data, so a
non-editable install has them too).
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path

from simdistill.errors import ConfigError

DEFAULT_CONFIG_NAME = "demo"
"""The config a command uses when --config is not given."""


def shipped_config_dir() -> Path:
    """The folder of the configs that ship with the package."""
    return Path(str(resources.files("simdistill") / "configs"))


def shipped_configs() -> dict[str, Path]:
    """Shipped config name (the file's stem: demo, bench, tiny, nuscenes_swint, ...) → its file."""
    return {p.stem: p for p in sorted(shipped_config_dir().glob("*.yaml"))}


def resolve_config(config: str | Path | None) -> Path:
    """The YAML file `config` names: an existing path wins; otherwise a shipped name (`demo` or `demo.yaml`);
    None is the default (`demo`). Raise ConfigError naming the shipped configs when neither fits."""
    if config is None:
        config = DEFAULT_CONFIG_NAME
    path = Path(config)
    if path.is_file():
        return path
    shipped = shipped_configs()
    name = path.name[:-len(".yaml")] if path.name.endswith(".yaml") else path.name
    if path.parent == Path(".") and name in shipped:
        return shipped[name]
    if path.exists():
        raise ConfigError(f"config '{config}' is a folder, not a YAML file")
    names = ", ".join(shipped) or "none found"
    raise ConfigError(f"config file '{config}' does not exist; pass a YAML file or a shipped config name "
                      f"({names}), e.g. --config demo")
