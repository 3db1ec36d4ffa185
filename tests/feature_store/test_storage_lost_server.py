"""A storage server that goes away in the middle of a command (a TCP proxy in front of the S3 test server is cut at a
chosen request, the server keeping its data): one `error:` line naming the server and how to resume, exit 2, no
traceback, in each phase (store creation, the export workers' writes, training reads); once the server is back, the
same command resumes, and the export ends in a store equal to an uninterrupted one."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import RESUME_EXTRA, assert_same_views, cli_args, done_count
from helpers import one_error_line
from servers import TcpProxy, stop, wait_for

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]


@pytest.fixture()
def proxy(s3_server):
    """The S3 test server as the commands see it (storage_options.s3.endpoint_url); the tests' own reads go to the
    server directly (AWS_ENDPOINT_URL)."""
    proxy = TcpProxy(int(s3_server.endpoint.rsplit(":", 1)[1])).start()
    yield proxy
    proxy.stop()


def _command(name: str, world: Path, proxy: TcpProxy, tmp_path: Path, *args: str, extra: tuple[str, ...] = ()):
    settings = [*RESUME_EXTRA, f"storage_options.s3.endpoint_url={proxy.endpoint}",
                f"export.log_dir={tmp_path / 'logs'}", *extra]
    return [sys.executable, "-m", "simdistill", name, *args, *cli_args(world, settings)]


def _run(cmd: list[str]) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, capture_output=True, text=True, timeout=600, env=dict(os.environ))


def _assert_lost_server(result: subprocess.CompletedProcess, url: str, proxy: TcpProxy, during: str) -> None:
    assert result.returncode == 2, result.stderr[-3000:]
    line = one_error_line(result.stderr)
    assert f"cannot reach the storage server of {url} at {proxy.endpoint} while {during}" in line, line
    assert "re-run the same command: it resumes" in line, line


def test_server_lost_while_creating_the_store(tiny_world, tiny_teacher, resume_reference, s3_bucket, proxy,
                                              tmp_path):
    url = f"{s3_bucket}/created.zarr"
    export = _command("export-teacher", tiny_world, proxy, tmp_path, "--checkpoint", str(tiny_teacher), "--out", url)
    proxy.cut_at("PUT", 4)  # the group's and two arrays' metadata are written, then the server is gone
    _assert_lost_server(_run(export), url, proxy, "creating the store")
    assert done_count(url) == 0

    proxy.start()
    again = _run(export)
    assert again.returncode == 0, again.stderr[-3000:]
    assert "0 already done" in again.stdout
    assert_same_views(url, resume_reference)


def test_server_lost_while_workers_write_views(tiny_world, tiny_teacher, resume_reference, s3_bucket, proxy,
                                               tmp_path):
    url = f"{s3_bucket}/written.zarr"
    export = _command("export-teacher", tiny_world, proxy, tmp_path, "--checkpoint", str(tiny_teacher), "--out", url)
    proxy.cut_at("PUT", 40)  # 11 metadata documents and the lock, then about 3 views of 10 arrays each
    _assert_lost_server(_run(export), url, proxy, "writing views")
    n_done = done_count(url)
    assert 0 < n_done < 18

    proxy.start()
    again = _run(export)
    assert again.returncode == 0, again.stderr[-3000:]
    assert f"{n_done} already done" in again.stdout
    assert_same_views(url, resume_reference)


def test_server_lost_while_training_reads_targets(tiny_world, resume_reference, s3_server, s3_bucket, proxy,
                                                  tmp_path):
    import s3fs

    url = f"{s3_bucket}/trained-from.zarr"
    s3fs.S3FileSystem(skip_instance_cache=True).put(resume_reference, url.removeprefix("s3://"), recursive=True)
    run = tmp_path / "student"
    train = _command("train-student", tiny_world, proxy, tmp_path, "--out", str(run), "--store", url,
                     "--no-evaluate", extra=("student_train.epochs=4",))
    log = tmp_path / "train.log"
    with log.open("w") as err:
        proc = subprocess.Popen(train, stdout=subprocess.DEVNULL, stderr=err, text=True, start_new_session=True)
    try:
        steps = run / "train_log.jsonl"
        wait_for(lambda: steps.is_file() and steps.read_text().strip(), timeout=300, what="a first step",
                 proc=proc, log=log)
        proxy.stop()  # mid-training: later batches' targets cannot be read
        rc = proc.wait(timeout=300)
    finally:
        stop(proc)
    result = subprocess.CompletedProcess(train, rc, "", log.read_text())
    _assert_lost_server(result, url, proxy, "")
    assert not (run / "student.pt").exists()

    proxy.start()
    again = _run(train)
    assert again.returncode == 0, again.stderr[-3000:]
    assert (run / "student.pt").is_file()
