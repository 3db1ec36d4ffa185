"""What every `simdistill` command shares: the user-error wrapper, common options and the config loader."""

from __future__ import annotations

import errno
import functools
from pathlib import Path
from typing import Annotated, Any, Callable, Optional, TypeVar

import typer

from simdistill.config import Config, load_config
from simdistill.errors import SimDistillError

F = TypeVar("F", bound=Callable[..., Any])
USER_OS_ERRORS = frozenset({errno.ENOTDIR, errno.EISDIR, errno.EEXIST, errno.EACCES, errno.EPERM, errno.EROFS,
                            errno.ENOSPC, errno.EDQUOT, errno.ENAMETOOLONG})

ConfigOpt = Annotated[
    Optional[Path],
    typer.Option("--config", "-c", help="YAML config (e.g. configs/demo.yaml). Default: configs/demo.yaml."),
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

DEFAULT_CONFIG = Path(__file__).resolve().parent.parent / "configs" / "demo.yaml"


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


def load_cli_config(config: Optional[Path], overrides: Optional[list[str]]) -> Config:
    """The --config file (default configs/demo.yaml) with the --set overrides applied (its `storage_options` travel
    with the store URLs the commands open: `feature_store.StoreURL`)."""
    path = config
    if path is None:
        path = Path("configs/demo.yaml") if Path("configs/demo.yaml").is_file() else DEFAULT_CONFIG
    return load_config(path, list(overrides or []))


