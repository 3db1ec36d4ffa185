"""Capture intermediate tensors of any `nn.Module` by module path, with forward hooks.

A teacher written in another codebase (an mmdetection3d BEVFusion, say) computes the camera, LiDAR and
fused BEV maps inside its forward and returns only its head outputs. `FeatureTap` records what named
submodules return during one forward, without touching the model's code:

    with FeatureTap(model, {"cam_bev": "vtransform", "fused_bev": "fusion_layer"}) as tap:
        model.extract_feat(inputs, metas)
    tap.captured["cam_bev"]   # the tensor `model.vtransform` returned

Paths are the names `model.named_modules()` lists (dot-separated). A module that returns a list or tuple
of tensors (an FPN neck, say) is recorded as its first element, unless the path names another index with
`path#k`. A module that returns something else (a head's nested dicts) is recorded as it is.
"""

from __future__ import annotations

import difflib
from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

from simdistill.errors import ConfigError

__all__ = ["FeatureTap", "parse_tap_path", "resolve_module"]


def parse_tap_path(path: str) -> tuple[str, int | None]:
    """'pts_neck#1' -> ('pts_neck', 1); 'vtransform' -> ('vtransform', None)."""
    module, _, index = path.partition("#")
    if not module:
        raise ConfigError(f"tap path '{path}' names no module; write it as module.path or module.path#index")
    if index and not index.isdigit():
        raise ConfigError(f"tap path '{path}': the part after '#' must be a list index (e.g. pts_neck#0)")
    return module, (int(index) if index else None)


def resolve_module(model: nn.Module, module_path: str) -> nn.Module:
    """The submodule at `module_path`; a ConfigError naming the closest existing paths if there is none."""
    modules = dict(model.named_modules())
    if module_path in modules:
        return modules[module_path]
    close = difflib.get_close_matches(module_path, [n for n in modules if n], n=4, cutoff=0.5)
    top = sorted({n.split(".")[0] for n in modules if n})
    hint = f"closest: {', '.join(close)}" if close else f"top-level modules: {', '.join(top[:12])}"
    raise ConfigError(
        f"{type(model).__name__} has no submodule '{module_path}' ({hint}); fix the tap path "
        "(--tap NAME=module.path) or choose the model family that matches this teacher"
    )


class FeatureTap:
    """Forward hooks that record the outputs of named submodules (see the module docstring).

    `captured[name]` holds the output of the LAST call of that module during the tap's lifetime;
    `calls[name]` counts the calls, so a caller can insist a module ran exactly once.
    """

    def __init__(self, model: nn.Module, paths: Mapping[str, str]) -> None:
        self.model = model
        self.paths = dict(paths)
        self.captured: dict[str, Any] = {}
        self.calls: dict[str, int] = {name: 0 for name in self.paths}
        self._handles: list[torch.utils.hooks.RemovableHandle] = []
        self._targets = {name: (resolve_module(model, m), i) for name, (m, i) in
                         ((n, parse_tap_path(p)) for n, p in self.paths.items())}

    def __enter__(self) -> "FeatureTap":
        self.captured.clear()
        self.calls = {name: 0 for name in self.paths}
        for name, (module, index) in self._targets.items():
            self._handles.append(module.register_forward_hook(self._hook(name, index)))
        return self

    def __exit__(self, *exc: object) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles.clear()

    def _hook(self, name: str, index: int | None):  # noqa: ANN202 - a torch forward hook
        def hook(module: nn.Module, args: Any, output: Any) -> None:
            self.calls[name] += 1
            self.captured[name] = _select(output, index, name, self.paths[name])

        return hook

    def require(self, *names: str) -> dict[str, Any]:
        """The captured outputs of `names`; a ConfigError if one of their modules did not run exactly once."""
        out = {}
        for name in names:
            calls = self.calls.get(name, 0)
            if calls != 1:
                what = "never ran" if calls == 0 else f"ran {calls} times"
                raise ConfigError(
                    f"tapped module '{self.paths.get(name, name)}' ({name}) {what} during one teacher forward; "
                    "tap a module that runs once per batch (--tap NAME=module.path)"
                )
            out[name] = self.captured[name]
        return out


def _select(output: Any, index: int | None, name: str, path: str) -> Any:
    if isinstance(output, (list, tuple)) and output and all(isinstance(o, torch.Tensor) for o in output):
        k = 0 if index is None else index
        if not 0 <= k < len(output):
            raise ConfigError(f"tap '{name}={path}': the module returned {len(output)} tensors, index {k} is out of "
                              "range")
        return output[k]
    if index is not None:
        raise ConfigError(f"tap '{name}={path}': an index was given but the module returns {type(output).__name__}")
    return output
