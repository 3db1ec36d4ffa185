"""Any `torch.nn.Module` as a teacher, built by the user's factory function (`export.teacher: python`).

The export runs the teacher in Dask worker processes that rebuild it from the config, so the factory is named
by a spec string, never passed as an object: `export.teacher_factory` is "package.module:function" (importable
where the export runs) or "path/to/file.py:function" (a file, relative to the current directory). It is called
in every export process as

    factory(model_cfg: simdistill.config.ModelConfig, checkpoint: pathlib.Path) -> torch.nn.Module

and reads its checkpoint in its own format. The module's forward takes a simdistill `Batch` and returns
`BEVOutputs` or a dict with cam_bev, lidar_bev, fused_bev, heatmap (logits) and boxes, shaped as
`simdistill.interop.teacher_outputs` describes (docs/own-teacher.md). A module with a `box_source` attribute
(a `TappedTeacher`, say) says how its boxes were made; otherwise they are taken as a dense head's.
"""

from __future__ import annotations

import copy
import functools
import hashlib
import importlib
import importlib.util
import inspect
import os
import sys
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any

from torch import nn

from simdistill.config import Config, ModelConfig
from simdistill.errors import CheckpointError, ConfigError
from simdistill.interop.teacher_outputs import BEV_MAPS, as_bev_outputs, check_teacher_outputs
from simdistill.models.head import CenterHead
from simdistill.models.outputs import BEVOutputs
from simdistill.pipeline.sample import Batch

__all__ = ["ModuleTeacher", "factory_identity", "factory_spec", "load_factory", "load_python_teacher",
           "parse_factory_spec", "python_teacher_identity"]

SPEC_FORM = "MODULE:FUNCTION or FILE.py:FUNCTION (e.g. my_pkg.teachers:make_teacher)"


def parse_factory_spec(spec: str) -> tuple[str, str]:
    """'pkg.mod:make' -> ('pkg.mod', 'make'); 'dir/t.py:make' -> ('dir/t.py', 'make'); a ConfigError otherwise."""
    target, sep, name = spec.rpartition(":")
    if not sep or not target.strip() or not name or not all(p.isidentifier() for p in name.split(".")):
        raise ConfigError(f"export.teacher_factory '{spec}' is not {SPEC_FORM}")
    return target.strip(), name


def _is_file(target: str) -> bool:
    return target.endswith(".py") or "/" in target or os.sep in target


@functools.lru_cache(maxsize=None)
def _file_module(path: str) -> ModuleType:
    """The module of a .py file, imported once per process under a name of its own (so classes stay one)."""
    name = f"simdistill_teacher_{Path(path).stem}_{hashlib.sha256(path.encode()).hexdigest()[:8]}"
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise ConfigError(f"cannot import {path} as a Python module; name a .py file")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses and pickling look their module up here
    try:
        spec.loader.exec_module(module)
    except BaseException:
        del sys.modules[name]
        raise
    return module


def _import(target: str, spec: str) -> ModuleType:
    try:
        if not _is_file(target):
            return importlib.import_module(target)
        path = Path(target).expanduser().resolve()
        if not path.is_file():
            raise ConfigError(f"the teacher factory file {target} (export.teacher_factory '{spec}') does not exist; "
                              "pass a path relative to where the export runs, or an absolute one")
        return _file_module(str(path))
    except ImportError as exc:
        raise ConfigError(f"cannot import the teacher factory's module '{target}' ({exc}); install what it imports "
                          "where the export runs, or put its folder on PYTHONPATH") from None
    except SyntaxError as exc:
        raise ConfigError(f"the teacher factory's module '{target}' has a syntax error: {exc}") from None


def load_factory(spec: str) -> Callable[..., Any]:
    """The callable that `spec` names (see the module docstring), imported in this process."""
    target, name = parse_factory_spec(spec)
    obj: Any = _import(target, spec)
    for part in name.split("."):
        if not hasattr(obj, part):
            raise ConfigError(f"'{target}' has no '{name}' (export.teacher_factory '{spec}'); name the function that "
                              "builds the teacher")
        obj = getattr(obj, part)
    if not callable(obj):
        raise ConfigError(f"'{spec}' is a {type(obj).__name__}, not a function; name the function that builds the "
                          "teacher")
    return obj


def factory_spec(factory: str | Callable[..., Any]) -> str:
    """The spec string of a factory: a string is checked and kept; a module-level function becomes 'module:name'
    (or 'its/file.py:name' when defined in the script being run, whose module is __main__)."""
    if isinstance(factory, str):
        parse_factory_spec(factory)
        return factory
    qualname, module = getattr(factory, "__qualname__", ""), getattr(factory, "__module__", None)
    if not qualname or "<" in qualname:
        raise ConfigError("define the teacher factory at module level: the export's worker processes import it by "
                          "name, which a lambda or a nested function does not have")
    if module in (None, "__main__") or module.startswith("simdistill_teacher_"):
        source = inspect.getsourcefile(factory)
        if source is None:
            raise ConfigError(f"cannot tell which file defines {qualname}; pass the spec FILE.py:{qualname}")
        return f"{Path(source).resolve()}:{qualname}"
    return f"{module}:{qualname}"


def factory_identity(spec: str) -> dict[str, Any]:
    """What the store records of the factory: its spec, the file that defines it, and `factory_sha256`, the sha256
    of that file's bytes and the function's name (a resumed export must match it; other files it imports are not
    covered)."""
    factory = load_factory(spec)
    try:
        source = inspect.getsourcefile(factory)
    except TypeError:  # a builtin or C extension: only its name identifies it
        source = None
    digest = hashlib.sha256(Path(source).read_bytes() if source else b"")
    digest.update(b"\0" + getattr(factory, "__qualname__", spec).encode())
    return {"factory": spec, "factory_file": str(Path(source).resolve()) if source else None,
            "factory_sha256": digest.hexdigest()}


class ModuleTeacher(nn.Module):
    """A user's teacher module that returns simdistill `BEVOutputs`, shape-checked against the config.

    `head` is a simdistill CenterHead used only for GT target encoding (the store's fg_mask and centre indices come
    from the GT and the simdistill config, never from the teacher); its layers never run.
    """

    uses_lidar = True  # the teacher is given the view's points

    def __init__(self, module: nn.Module, cfg: ModelConfig, *, source: str) -> None:
        super().__init__()
        self.module = module
        self.cfg = cfg
        self.source = source
        self.head = CenterHead(1, cfg.head, cfg.bev)

    @property
    def box_source(self) -> str:
        """What the store's `teacher.boxes` attribute records (the module's own `box_source`, else "dense")."""
        return str(getattr(self.module, "box_source", "dense"))

    def forward(self, batch: Batch) -> BEVOutputs:
        out = as_bev_outputs(self.module(batch), source=self.source)
        check_teacher_outputs(out, self.cfg, batch.batch_size,
                              sources={name: f"returned by {self.source}" for name in BEV_MAPS})
        return out


def load_python_teacher(cfg: Config, checkpoint: Path) -> ModuleTeacher:
    """The module `cfg.export.teacher_factory` builds from `checkpoint`, wrapped as a `ModuleTeacher`."""
    spec = cfg.export.teacher_factory
    checkpoint = Path(checkpoint)
    if not checkpoint.is_file():
        raise CheckpointError(f"teacher checkpoint {checkpoint} does not exist; pass the file the factory {spec} "
                              "reads (--checkpoint)")
    module = load_factory(spec)(copy.deepcopy(cfg.model), checkpoint)
    if not isinstance(module, nn.Module):
        raise ConfigError(f"the teacher factory {spec} returned a {type(module).__name__}, not a torch.nn.Module")
    return ModuleTeacher(module, cfg.model, source=spec)


def python_teacher_identity(cfg: Config, checkpoint: Path) -> dict[str, Any]:
    """What the store records about a python teacher (and what a resumed export must match: factory_sha256)."""
    return {"name": "python", **factory_identity(cfg.export.teacher_factory),
            "checkpoint": str(Path(checkpoint).resolve())}
