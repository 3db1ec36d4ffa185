"""export-teacher and train-student on a cluster started with Dask's own commands (`dask scheduler` and two
`dask worker` processes, each in its own folder) on 127.0.0.1, the store on the S3 test server; an unreachable
scheduler; a worker-side user error on the local cluster."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys

import pytest
from conftest import (
    RESUME_EXTRA,
    assert_same_views,
    cli_args,
    done_count,
    make_tiny_config,
)
from helpers import one_error_line
from servers import DaskCluster, stop, wait_for
from typer.testing import CliRunner

import simdistill.cluster
from simdistill.cli import app
from simdistill.errors import ClusterError

runner = CliRunner()
pytestmark = pytest.mark.timeout(480)


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture()
def dask_cluster(s3_server, tmp_path):
    """`dask scheduler` + 2 × `dask worker --nworkers 1 --nthreads 1`; the workers have S3 credentials in their
    environment but no endpoint: that comes with the tasks, from the client's config."""
    env = {k: v for k, v in {**os.environ, **s3_server.env()}.items() if k != "AWS_ENDPOINT_URL"}
    cluster = DaskCluster(folder=tmp_path / "cluster", env=env)
    cluster.folder.mkdir()
    try:
        cluster.start_scheduler()
        cluster.start_worker()
        cluster.start_worker()
        cluster.wait_for_workers(2)
        yield cluster
    finally:
        cluster.stop()


@pytest.mark.slow
def test_export_and_train_on_a_dask_cli_cluster_survive_a_killed_worker(
    tiny_world, tiny_teacher, resume_reference, s3_server, s3_bucket, dask_cluster, tmp_path, monkeypatch
):
    url = f"{s3_bucket}/cluster.zarr"
    extra = [*RESUME_EXTRA, f"storage_options.s3.endpoint_url={s3_server.endpoint}"]
    cmd = [sys.executable, "-m", "simdistill", "export-teacher", "--checkpoint", str(tiny_teacher), "--out", url,
           "--scheduler", dask_cluster.address, *cli_args(tiny_world, extra)]
    env = {k: v for k, v in os.environ.items() if k != "AWS_ENDPOINT_URL"}  # the endpoint comes from the config
    log = tmp_path / "export.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=out, start_new_session=True)
    try:
        wait_for(lambda: done_count(url) >= 2, timeout=240, what="2 exported views", proc=proc, log=log)
        stop(dask_cluster.workers[0], sig=signal.SIGKILL)  # a worker host dies mid-export
        rc = proc.wait(timeout=300)
    finally:
        stop(proc)
    if rc != 0:  # Dask normally re-runs the lost task on the other worker; if not, one line, then resume
        assert rc == 2 and "error: " in one_error_line(log.read_text()), log.read_text()[-3000:]
        rerun = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
        assert rerun.returncode == 0, rerun.stderr[-3000:]
    assert_same_views(url, resume_reference)

    run = tmp_path / "student"
    monkeypatch.delenv("AWS_ENDPOINT_URL")  # here too, the endpoint comes from the config
    train = runner.invoke(app, ["train-student", "--out", str(run), "--store", url, "--scheduler", dask_cluster.address,
                                "--no-evaluate", *cli_args(tiny_world, [*extra, "student_train.epochs=1"])])
    assert train.exit_code == 0, train.output
    assert (run / "student.pt").is_file()


def test_unreachable_scheduler_is_one_cluster_error_in_export_and_training(
    tiny_world, tiny_teacher, tiny_store, tmp_path, monkeypatch
):
    from simdistill.student_train.trainer import train_student
    from simdistill.teacher_export.export import export_teacher

    monkeypatch.setattr(simdistill.cluster, "CONNECT_TIMEOUT_S", 1.0)
    address = f"tcp://127.0.0.1:{_closed_port()}"
    cfg = make_tiny_config(tiny_world)
    store = tmp_path / "new.zarr"
    with pytest.raises(ClusterError, match=f"cannot reach the Dask scheduler at {address} .*dask scheduler"):
        export_teacher(cfg, checkpoint=tiny_teacher, out=str(store), scheduler=address, progress=False)
    assert not store.exists()  # refused before anything was written
    with pytest.raises(ClusterError, match=f"cannot reach the Dask scheduler at {address} .*dask scheduler"):
        train_student(cfg, out_dir=tmp_path / "run", store=tiny_store, scheduler=address,
                      progress=False)

    for args in (["export-teacher", "--checkpoint", str(tiny_teacher), "--out", str(store)],
                 ["train-student", "--out", str(tmp_path / "run2"), "--store", tiny_store]):
        result = runner.invoke(app, [*args, "--scheduler", address, *cli_args(tiny_world)])
        assert result.exit_code == 2 and "Traceback" not in result.output, result.output
        assert one_error_line(result.stderr).startswith(f"error: cannot reach the Dask scheduler at {address}")
    assert not (tmp_path / "run2").exists()


def test_scheduler_without_workers_is_one_cluster_error(tmp_path, monkeypatch):
    monkeypatch.setattr(simdistill.cluster, "CONNECT_TIMEOUT_S", 1.0)
    cluster = DaskCluster(folder=tmp_path, env=dict(os.environ))
    try:
        cluster.start_scheduler()
        with pytest.raises(ClusterError, match="has no worker .*dask worker"):
            simdistill.cluster.connect(cluster.address)
    finally:
        cluster.stop()


@pytest.mark.slow
def test_a_workers_user_error_is_one_line_and_worker_logs_go_to_a_file(tiny_world, tiny_teacher, tmp_path):
    world = tmp_path / "world"
    shutil.copytree(tiny_world, world)
    lidar = sorted((world / "samples" / "LIDAR_TOP").iterdir())[4]
    lidar.write_bytes(lidar.read_bytes()[:-4])  # present (the up-front check passes), but torn: only a worker sees it
    store, logs = tmp_path / "s.zarr", tmp_path / "logs"
    result = subprocess.run([sys.executable, "-m", "simdistill", "export-teacher", "--checkpoint", str(tiny_teacher),
                             "--out", str(store), "--workers", "1",
                             *cli_args(world, [f"export.log_dir={logs}"])], capture_output=True, text=True, timeout=300)
    assert result.returncode == 2, result.stderr[-3000:]
    line = one_error_line(result.stderr)
    assert f"{lidar} holds" in line and "not a multiple of 5" in line
    assert "8787" not in result.stderr and "Compute Failed" not in result.stderr
    assert (logs / simdistill.cluster.WORKER_LOG_NAME).is_file()
