"""Dask clients: the one place simdistill creates them (docs/scaling-out.md).

    with dask_client(None, workers=2, log_dir=Path("run/logs")) as client:   # local spawned worker processes
        fut = client.submit(quiet_task, run_export_task, ...)
        stats = task_result(fut, what="views 0..7", log_dir=...)
    with dask_client("tcp://10.0.0.5:8786") as client:                        # started with `dask scheduler`
        ...

- `connect(address)`: an existing cluster. An unreachable scheduler, or one without a worker, is one
  `ClusterError` naming the address and the commands that start it (export and training raise the same).
- `local_cluster(workers, log_dir=...)`: spawned worker processes (zarr's event loop does not survive fork),
  one thread each, no dashboard unless asked (no port to collide with). The workers' log records, warnings
  and stray prints go to `log_dir/dask-workers.log`, not to the terminal. Workers started with
  `dask worker` keep their own logs: whoever started them chose where those go.
- `quiet_task(fn, ...)` runs a task so that a user error (`SimDistillError`) comes back as a value, not
  as a raised exception: the worker logs nothing (distributed logs every failed task with its
  traceback), and `task_result` re-raises it on the client as the same one-line error. A worker that
  dies, or a lost scheduler, becomes one `ClusterError`.

This module sits at the bottom of the import layers: it imports only `simdistill.errors` and third-party
packages.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

from distributed import Client, LocalCluster
from distributed.client import FutureCancelledError
from distributed.comm.core import CommClosedError
from distributed.diagnostics.plugin import WorkerPlugin
from distributed.scheduler import KilledWorker

from simdistill.errors import ClusterError, SimDistillError

T = TypeVar("T")

CONNECT_TIMEOUT_S = 10.0  # to reach a scheduler, and for it to have a worker
WORKER_LOG_NAME = "dask-workers.log"
START_HINT = ("start it with `dask scheduler` and one `dask worker ADDRESS` per GPU, or drop --scheduler to use "
              "local workers")


def _reason(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{exc.__class__.__name__}: {text[0][:160]}" if text else exc.__class__.__name__


def connect(address: str, *, timeout: float | None = None) -> Client:
    """A client of the scheduler at `address` that has at least one worker (ClusterError otherwise)."""
    timeout = CONNECT_TIMEOUT_S if timeout is None else timeout
    try:
        client = Client(address, timeout=timeout, set_as_default=False)
    except (OSError, TimeoutError, ValueError, TypeError) as exc:
        raise ClusterError(f"cannot reach the Dask scheduler at {address} ({_reason(exc)}); {START_HINT}") from None
    try:
        client.wait_for_workers(1, timeout=timeout)
    except (OSError, TimeoutError) as exc:
        client.close()
        raise ClusterError(
            f"the Dask scheduler at {address} has no worker after {timeout:.0f} s ({_reason(exc)}); start "
            f"`dask worker {address} --nworkers 1 --nthreads 1` (one per GPU) where the store and the dataroot "
            "are reachable"
        ) from None
    return client


class _LogToFile(WorkerPlugin):
    """On each worker: log records (warning and up), Python warnings and stdout/stderr go to one file."""

    idempotent = True
    name = "simdistill-log-to-file"

    def __init__(self, path: str) -> None:
        self.path = path

    def setup(self, worker: Any) -> None:
        stream = open(self.path, "a", buffering=1, encoding="utf-8")  # noqa: SIM115 - lives as long as the worker
        handler = logging.StreamHandler(stream)
        handler.setFormatter(logging.Formatter(f"%(asctime)s {os.getpid()} %(name)s %(levelname)s %(message)s"))
        for name in ("", "distributed", "py.warnings"):
            log = logging.getLogger(name)
            for old in [h for h in log.handlers if isinstance(h, logging.StreamHandler)]:
                log.removeHandler(old)
            if name == "" or not log.propagate:  # distributed's logger does not propagate to the root
                log.addHandler(handler)
        logging.getLogger("distributed").setLevel(logging.WARNING)
        logging.captureWarnings(True)
        sys.stdout = sys.stderr = stream


@contextlib.contextmanager
def local_cluster(
    workers: int, *, threads_per_worker: int = 1, log_dir: Path | None = None, dashboard: bool = False
) -> Iterator[Client]:
    """A LocalCluster of `workers` spawned processes and its client (see the module docstring)."""
    saved_env = dict(os.environ)  # distributed sets OMP_NUM_THREADS & co. in this process for its workers
    try:
        with LocalCluster(
            n_workers=max(1, workers), threads_per_worker=threads_per_worker, processes=True, host="127.0.0.1",
            dashboard_address="127.0.0.1:8787" if dashboard else None, silence_logs=logging.CRITICAL,
            # without a dashboard the scheduler still serves health routes over HTTP, by default on 8787
            scheduler_kwargs=None if dashboard else {"dashboard": False, "dashboard_address": "127.0.0.1:0"},
        ) as cluster, Client(cluster, set_as_default=False) as client:
            if log_dir is not None:
                log_dir.mkdir(parents=True, exist_ok=True)
                client.register_plugin(_LogToFile(str((log_dir / WORKER_LOG_NAME).resolve())))
            yield client
    finally:
        os.environ.clear()
        os.environ.update(saved_env)


@contextlib.contextmanager
def dask_client(scheduler: str | None, workers: int = 1, *, log_dir: Path | None = None) -> Iterator[Client]:
    """`connect(scheduler)` when an address is given, else `local_cluster(workers, log_dir=log_dir)`."""
    if not scheduler:
        with local_cluster(workers, log_dir=log_dir) as client:
            yield client
        return
    client = connect(scheduler)
    try:
        yield client
    finally:
        client.close()


class TaskUserError:
    """What `quiet_task` returns instead of raising a user error (a picklable value, not a failure)."""

    def __init__(self, error: SimDistillError) -> None:
        self.error = error


def quiet_task(fn: Callable[..., T], /, *args: Any, **kwargs: Any) -> T | TaskUserError:
    """Run `fn` on a worker; a SimDistillError is returned (see the module docstring), anything else raises."""
    try:
        return fn(*args, **kwargs)
    except SimDistillError as exc:
        return TaskUserError(exc)


def task_result(future: Any, *, what: str, log_dir: Path | None = None) -> Any:
    """The value of a `quiet_task` future; its user error re-raised as is, a dead worker as a ClusterError."""
    log = f"; worker logs: {log_dir / WORKER_LOG_NAME}" if log_dir is not None else ""
    try:
        value = future.result()
    except KilledWorker as exc:
        raise ClusterError(
            f"Dask workers died while running {what} ({_reason(exc)}){log}; give the workers more memory or "
            "fewer threads, then re-run the same command (finished work is kept)"
        ) from None
    except (CommClosedError, FutureCancelledError, OSError) as exc:
        raise ClusterError(
            f"lost the Dask cluster while running {what} ({_reason(exc)}){log}; check the scheduler and workers, "
            "then re-run the same command (finished work is kept)"
        ) from None
    if isinstance(value, TaskUserError):
        raise value.error
    return value
