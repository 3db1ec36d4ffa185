"""The export lock on a local store."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import zarr
from helpers.store import N_VIEWS, P, make_attrs, store_args

from simdistill.config import Config
from simdistill.errors import StoreError
from simdistill.feature_store import create_store, open_for_resume


def test_lock_refuses_a_second_writer_and_takes_over_a_stale_one(tmp_path: Path, cfg: Config) -> None:
    url = str(tmp_path / "s.zarr")
    first = create_store(url, **store_args(cfg), n_views=N_VIEWS, aug_dim=P, attrs=make_attrs(cfg))
    second = open_for_resume(url, attrs=make_attrs(cfg))
    lock_file = Path(url) / ".export.lock"
    with first.lock():
        held = json.loads(lock_file.read_text())
        assert held["pid"] == os.getpid() and held["host"] == socket.gethostname()
        with pytest.raises(StoreError) as info:
            with second.lock():
                pass
        msg = str(info.value)
        assert f"is being written by pid {os.getpid()} on host {socket.gethostname()} since" in msg
        assert f"remove {lock_file} if that process is gone" in msg
    assert not lock_file.exists()

    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    lock_file.write_text(json.dumps({"pid": dead.pid, "host": socket.gethostname(), "time": time.time() - 60}))
    with second.lock():
        assert json.loads(lock_file.read_text())["pid"] == os.getpid()
    assert not lock_file.exists()

    lock_file.write_text(json.dumps({"pid": dead.pid, "host": "another-host", "time": time.time()}))
    with pytest.raises(StoreError, match="pid .* on host another-host"):
        with second.lock():
            pass
