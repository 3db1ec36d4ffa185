"""What every `simdistill` command shares: the user-error wrapper, common options and the config loader."""

from __future__ import annotations

import errno
import functools
from pathlib import Path
from typing import Annotated, Any, Callable, Optional, TypeVar

import typer

from simdistill.config import Config, load_config
from simdistill.config.files import DEFAULT_CONFIG_NAME, shipped_configs
from simdistill.errors import SimDistillError

F = TypeVar("F", bound=Callable[..., Any])
USER_OS_ERRORS = frozenset({errno.ENOTDIR, errno.EISDIR, errno.EEXIST, errno.EACCES, errno.EPERM, errno.EROFS,
                            errno.ENOSPC, errno.EDQUOT, errno.ENAMETOOLONG})

ConfigOpt = Annotated[
    Optional[str],
    typer.Option("--config", "-c", show_default=False,
                 help=f"A YAML file, or the name of a shipped config ({', '.join(shipped_configs())}). Default: "
                      f"{DEFAULT_CONFIG_NAME}. `simdistill config show` prints it with every field explained."),
]
SetOpt = Annotated[
    Optional[list[str]],
    typer.Option("--set", help="Dotted config override, repeatable: --set model.channels.cam=32"),
]
RunOut = Annotated[Path, typer.Option("--out", "-o", help="Run folder for checkpoints, logs and metrics.")]
SchedulerOpt = Annotated[
    Optional[str], typer.Option(help="Address of an existing Dask scheduler (tcp://host:8786); default: local.")
]
ResumeOpt = Annotated[bool, typer.Option(help="Continue exactly from the last checkpoint in --out.")]
EvaluateOpt = Annotated[bool, typer.Option(help="Evaluate on the val split with the devkit when training ends.")]


@functools.lru_cache(maxsize=None)
def config_default(key: str) -> str:
    """Help text for an option that overrides config key `key` (dotted): where its default comes from, and its
    value in the shipped default config, e.g. "Default: from the config (export.views_per_sample; 4 in demo)."."""
    from simdistill.config import DEFAULT_CONFIG_NAME, config_to_dict, flatten, load_config

    value = flatten(config_to_dict(load_config(DEFAULT_CONFIG_NAME)))[key]
    shown = ",".join(map(str, value)) if isinstance(value, list) else value
    return f"Default: from the config ({key}; {shown} in {DEFAULT_CONFIG_NAME})."


def user_errors(fn: F) -> F:
    """Turn SimDistillError into `error: <message>` + exit 2 (no traceback for user errors)."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except SimDistillError as exc:
            typer.secho(f"error: {exc}", err=True, fg=typer.colors.RED)
            raise typer.Exit(2) from None
        except OSError as exc:  # a path the user gave cannot be written (under a file, read-only, disk full)
            if exc.errno not in USER_OS_ERRORS or not exc.filename:
                raise
            typer.secho(f"error: cannot use {exc.filename} ({exc.strerror}); choose another path, or fix the "
                        "folder's permissions or free space", err=True, fg=typer.colors.RED)
            raise typer.Exit(2) from None
        except KeyboardInterrupt:
            typer.secho("interrupted; finished work is kept (re-run the same command to resume)", err=True)
            raise typer.Exit(130) from None

    return wrapper  # type: ignore[return-value]


def load_cli_config(config: Optional[str], overrides: Optional[list[str]]) -> Config:
    """The --config file or shipped name (default: the shipped `demo`) with the --set overrides applied (its
    `storage_options` travel with the store URLs the commands open: `feature_store.StoreURL`)."""
    return load_config(config if config is not None else DEFAULT_CONFIG_NAME, list(overrides or []))


