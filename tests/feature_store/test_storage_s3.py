"""The feature store on a real S3-compatible server (moto, on 127.0.0.1): export through the CLI, SIGKILL and
resume, inspect and train from it; the export lock as a conditional PUT; storage options from the config."""

from __future__ import annotations

import copy
import json
import os
import pickle
import signal
import socket
import subprocess
import sys
import time

import fsspec
import pytest
from conftest import RESUME_EXTRA, assert_same_views, cli_args, done_count
from helpers.store import expected_stored, layout, tiny_cfg, write_store
from servers import wait_for
from typer.testing import CliRunner

from simdistill.cli import app
from simdistill.errors import StoreError
from simdistill.feature_store import open_store
from simdistill.feature_store.lock import LOCK_NAME, _RemoteLock, export_lock
from simdistill.feature_store.storage import store_url

runner = CliRunner()
pytestmark = pytest.mark.timeout(420)


def _s3fs():
    import s3fs

    return s3fs.S3FileSystem(skip_instance_cache=True)


@pytest.mark.slow
def test_export_to_s3_killed_resumed_inspected_and_trained_from(
    tiny_world, tiny_teacher, resume_reference, s3_bucket, tmp_path
):
    """export-teacher into s3://, SIGKILL mid-export, resume (bit-identical to an uninterrupted export), then
    `store info/verify/show` and train-student read the store from S3."""
    url = f"{s3_bucket}/store.zarr"
    args = cli_args(tiny_world, [*RESUME_EXTRA, f"export.log_dir={tmp_path / 'logs'}"])
    cmd = [sys.executable, "-m", "simdistill", "export-teacher", "--checkpoint", str(tiny_teacher), "--out", url, *args]
    log = tmp_path / "export.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(cmd, start_new_session=True, stdout=out, stderr=subprocess.STDOUT, env=dict(os.environ))
    try:
        wait_for(lambda: done_count(url) >= 4, timeout=180, what="4 exported views", proc=proc, log=log)
        # While it runs, a second exporter is refused by the lock object (a conditional PUT on S3).
        second = runner.invoke(app, ["export-teacher", "--checkpoint", str(tiny_teacher), "--out", url, *args])
        assert second.exit_code == 2 and "being written by" in second.output, second.output
        assert f"remove {url}/{LOCK_NAME}" in second.output
    finally:
        os.killpg(proc.pid, signal.SIGKILL)  # the coordinator and its local Dask workers, like a crash
        proc.wait()
    n_done = done_count(url)
    assert 0 < n_done < 18, log.read_text()[-2000:]
    assert _s3fs().exists(f"{url}/{LOCK_NAME}")  # the crashed exporter's lock stays behind ...

    resumed = runner.invoke(app, ["export-teacher", "--checkpoint", str(tiny_teacher), "--out", url, *args])
    assert resumed.exit_code == 0, resumed.output  # ... and is taken over: its pid is gone on this host
    assert f"{n_done} already done" in resumed.output
    assert_same_views(url, resume_reference)
    assert not _s3fs().exists(f"{url}/{LOCK_NAME}")  # released

    info = runner.invoke(app, ["store", "info", url])
    assert info.exit_code == 0 and "views done 18/18" in info.output, info.output
    verify = runner.invoke(app, ["store", "verify", url])
    assert verify.exit_code == 0 and "all done views verified" in verify.output, verify.output
    png = tmp_path / "v3.png"
    show = runner.invoke(app, ["store", "show", url, "--view", "3", "--out", str(png)])
    assert show.exit_code == 0 and png.stat().st_size > 1000, show.output
    run = tmp_path / "student"
    train = runner.invoke(app, ["train-student", "--out", str(run), "--store", url, "--no-evaluate",
                                *cli_args(tiny_world, [*RESUME_EXTRA, "student_train.epochs=1"])])
    assert train.exit_code == 0, train.output
    assert (run / "student.pt").is_file()


def test_export_lock_on_s3_is_a_conditional_put(s3_bucket):
    fs = _s3fs()
    bucket = s3_bucket.removeprefix("s3://")
    fs.pipe_file(f"{bucket}/probe", b"1", mode="create")  # the server honours If-None-Match: *
    with pytest.raises(FileExistsError):
        fs.pipe_file(f"{bucket}/probe", b"2", mode="create")

    url = f"{s3_bucket}/s.zarr"
    lock = f"{bucket}/s.zarr/{LOCK_NAME}"
    with export_lock(url):
        holder = json.loads(fs.cat_file(lock))
        assert holder["pid"] == os.getpid() and holder["host"] == socket.gethostname()
        with pytest.raises(StoreError, match=f"being written by pid {os.getpid()} .*remove {url}/{LOCK_NAME}"):
            with export_lock(url):
                pass
    assert not fs.exists(lock)

    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    stale = json.dumps({"pid": dead.pid, "host": socket.gethostname(), "time": time.time() - 60}).encode()
    fs.pipe_file(lock, stale)
    with export_lock(url):  # a crashed exporter of this host: taken over
        assert json.loads(fs.cat_file(lock))["pid"] == os.getpid()
    assert not fs.exists(lock)

    fs.pipe_file(lock, stale)
    holder, etag = _RemoteLock(url).read()
    racer = json.dumps({"pid": 1, "host": "racer", "time": time.time()}).encode()
    fs.pipe_file(lock, racer)  # another exporter replaced the stale lock between our read and our PUT
    _RemoteLock(url).replace_stale(etag)  # If-Match on the stale lock's ETag fails: the racer keeps it
    assert fs.cat_file(lock) == racer
    with pytest.raises(StoreError, match="pid 1 on host racer"):  # locks of other hosts are never taken over
        with export_lock(url):
            pass


def test_storage_options_travel_with_the_store_url(s3_server, s3_bucket, monkeypatch):
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:9")  # nothing listens there
    url = f"{s3_bucket}/opts.zarr"
    with pytest.raises(StoreError, match="cannot reach the storage server of .*AWS_ENDPOINT_URL"):
        open_store(url)

    cfg = tiny_cfg(f"storage_options.s3.endpoint_url={s3_server.endpoint}")
    conf_before = copy.deepcopy(fsspec.config.conf)
    location = store_url(url, cfg.storage_options)  # what every stage makes of its config and URL
    tvs = write_store(location, cfg, views=2)
    got = open_store(location, expect=layout(cfg)).read_view(1, ["fused_bev"])["fused_bev"]
    assert (got == expected_stored(tvs[1], cfg)["fused_bev"]).all()
    assert fsspec.config.conf == conf_before  # nothing process-global was written
    with pytest.raises(StoreError, match="cannot reach the storage server"):  # the plain URL has no options
        open_store(url)
    shipped = pickle.loads(pickle.dumps(location))  # what a Dask task carries to a worker
    assert shipped == location and open_store(shipped).done_views().sum() == 2
