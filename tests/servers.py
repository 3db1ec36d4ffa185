"""Servers the scale tests start on 127.0.0.1 and always stop: an S3-compatible server (moto) and a Dask
cluster started with Dask's own commands (`dask scheduler`, `dask worker`).

Every process starts in its own session (process group), so `stop` kills it with all its children.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

MOTO = (
    "import sys, time\n"
    "from moto.server import ThreadedMotoServer\n"
    "server = ThreadedMotoServer(ip_address='127.0.0.1', port=0, verbose=False)\n"
    "server.start()\n"
    "print(server.get_host_and_port()[1], flush=True)\n"
    "while True:\n"
    "    time.sleep(3600)\n"
)

# Credentials moto accepts; the instance-metadata lookup botocore would otherwise try is switched off.
S3_ENV = {
    "AWS_ACCESS_KEY_ID": "simdistill-test",
    "AWS_SECRET_ACCESS_KEY": "simdistill-test-secret",
    "AWS_DEFAULT_REGION": "us-east-1",
    "AWS_EC2_METADATA_DISABLED": "true",
    "AWS_MAX_ATTEMPTS": "2",
}


def start(cmd: list[str], *, log: Path, cwd: Path | None = None, env: dict[str, str] | None = None) -> subprocess.Popen:
    """A process in its own session, stdout and stderr into `log`."""
    with log.open("ab") as out:
        return subprocess.Popen(cmd, cwd=cwd, env=env, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                start_new_session=True)


def stop(proc: subprocess.Popen, *, sig: int = signal.SIGTERM, grace: float = 10.0) -> None:
    """Signal the process group, then SIGKILL it if it is still there after `grace` seconds."""
    for s in (sig, signal.SIGKILL):
        try:
            os.killpg(proc.pid, s)
        except ProcessLookupError:
            break
        try:
            proc.wait(timeout=grace)
            return
        except subprocess.TimeoutExpired:
            continue
    proc.wait(timeout=grace)


def wait_for(predicate, *, timeout: float, what: str, proc: subprocess.Popen | None = None, log: Path | None = None):
    """Poll `predicate` until it returns a truthy value; fail with the log's tail on timeout or a dead process."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        if proc is not None and proc.poll() is not None:
            break
        time.sleep(0.1)
    tail = log.read_text(errors="replace")[-3000:] if log is not None and log.exists() else ""
    raise RuntimeError(f"{what} did not happen within {timeout} s\n{tail}")


@dataclass
class S3Server:
    """moto's S3 server on 127.0.0.1, in a child process."""

    proc: subprocess.Popen
    endpoint: str

    def env(self, *, endpoint: bool = True) -> dict[str, str]:
        """The variables a client needs (without AWS_ENDPOINT_URL when `endpoint` is False)."""
        return {**S3_ENV, **({"AWS_ENDPOINT_URL": self.endpoint} if endpoint else {})}

    def make_bucket(self, name: str) -> str:
        import s3fs

        fs = s3fs.S3FileSystem(endpoint_url=self.endpoint, key=S3_ENV["AWS_ACCESS_KEY_ID"],
                               secret=S3_ENV["AWS_SECRET_ACCESS_KEY"], skip_instance_cache=True)
        fs.mkdir(name)
        return name


def start_s3_server(folder: Path) -> S3Server:
    log = folder / "moto.log"
    port_file = folder / "moto.port"
    with port_file.open("wb") as out, log.open("ab") as err:
        proc = subprocess.Popen([sys.executable, "-c", MOTO], stdout=out, stderr=err, stdin=subprocess.DEVNULL,
                                start_new_session=True, env={**os.environ, **S3_ENV})
    try:
        port = wait_for(lambda: port_file.read_text().strip(), timeout=60, what="moto server start", proc=proc, log=log)
    except BaseException:
        stop(proc)
        raise
    return S3Server(proc=proc, endpoint=f"http://127.0.0.1:{int(port)}")


@dataclass
class DaskCluster:
    """`dask scheduler` and `dask worker` processes on 127.0.0.1, each worker in its own folder."""

    folder: Path
    env: dict[str, str]
    scheduler: subprocess.Popen | None = None
    address: str = ""
    workers: list[subprocess.Popen] = field(default_factory=list)

    def start_scheduler(self) -> None:
        info = self.folder / "scheduler.json"
        self.scheduler = start(
            [sys.executable, "-m", "dask", "scheduler", "--host", "127.0.0.1", "--port", "0", "--no-dashboard",
             "--dashboard-address", "127.0.0.1:0", "--scheduler-file", str(info)],
            log=self.folder / "scheduler.log", cwd=self.folder, env=self.env)
        self.address = wait_for(lambda: info.exists() and json.loads(info.read_text() or "{}").get("address"),
                                timeout=60, what="dask scheduler start", proc=self.scheduler,
                                log=self.folder / "scheduler.log")

    def start_worker(self) -> subprocess.Popen:
        i = len(list(self.folder.glob("worker*")))
        cwd = self.folder / f"worker{i}"
        cwd.mkdir()
        proc = start([sys.executable, "-m", "dask", "worker", self.address, "--nworkers", "1", "--nthreads", "1",
                      "--no-dashboard", "--host", "127.0.0.1", "--local-directory", str(cwd), "--death-timeout", "60",
                      "--name", f"worker{i}"], log=cwd / "worker.log", cwd=cwd, env=self.env)
        self.workers.append(proc)
        return proc

    def n_workers(self) -> int:
        from distributed import Client

        with Client(self.address, timeout=10, set_as_default=False) as client:
            return len(client.nthreads())

    def wait_for_workers(self, n: int) -> None:
        wait_for(lambda: self.n_workers() >= n, timeout=120, what=f"{n} dask workers",
                 log=self.folder / "worker0" / "worker.log")

    def stop(self) -> None:
        for proc in [*self.workers, *([self.scheduler] if self.scheduler else [])]:
            stop(proc)


class TcpProxy:
    """A TCP forwarder on 127.0.0.1 in front of a server: `stop()` makes the server go away for its clients at once
    (listener and every open connection closed) while it keeps its state; `start()` brings it back on the same port."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.port = 0
        self._listener: socket.socket | None = None
        self._conns: list[socket.socket] = []
        self._lock = threading.Lock()
        self._cut: tuple[bytes, int] | None = None  # (method, requests of it still let through)

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> TcpProxy:
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", self.port))
        sock.listen(64)
        self.port = sock.getsockname()[1]
        self._listener = sock
        threading.Thread(target=self._accept, args=(sock,), daemon=True).start()
        return self

    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                client, _ = listener.accept()
                upstream = socket.create_connection(("127.0.0.1", self.target_port))
            except OSError:
                if listener.fileno() < 0 or self._listener is not listener:
                    return
                continue
            with self._lock:
                self._conns += [client, upstream]
            for a, b, requests in ((client, upstream, True), (upstream, client, False)):
                threading.Thread(target=self._pipe, args=(a, b, requests), daemon=True).start()

    def cut_at(self, method: str, n: int) -> None:
        """Stop (as `stop()`) when the `n`-th request with HTTP `method` from now on arrives, before it is forwarded."""
        self._cut = (method.encode(), n)

    def _cut_now(self, data: bytes) -> bool:
        with self._lock:
            if self._cut is None:
                return False
            method, left = self._cut
            left -= len(re.findall(rb"(?:^|\r\n)" + method + rb" /", data))
            self._cut = (method, left) if left > 0 else None
        return left <= 0

    def _pipe(self, a: socket.socket, b: socket.socket, requests: bool) -> None:
        try:
            while data := a.recv(65536):
                if requests and self._cut_now(data):
                    self.stop()
                    return
                b.sendall(data)
        except OSError:
            pass
        finally:
            for s in (a, b):
                with contextlib.suppress(OSError):
                    s.shutdown(socket.SHUT_RDWR)

    def stop(self) -> None:
        listener, self._listener = self._listener, None
        if listener is not None:
            with contextlib.suppress(OSError):
                listener.shutdown(socket.SHUT_RDWR)  # wakes the accept() above
            listener.close()
        with self._lock:
            conns, self._conns = self._conns, []
        for s in conns:
            with contextlib.suppress(OSError):
                s.shutdown(socket.SHUT_RDWR)
            s.close()
