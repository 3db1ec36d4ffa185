"""TargetPrefetcher: the batches asked for, in order, equal to direct reads; local threads and a cluster."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
from helpers.store import N_VIEWS, tiny_cfg, write_store

from simdistill.errors import StoreError
from simdistill.feature_store import TargetPrefetcher, open_store, read_batch

BATCHES = [[3, 0], [5, 1, 2], [4], [2, 2]]


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> str:
    url = tmp_path_factory.mktemp("prefetch") / "s.zarr"
    write_store(url, tiny_cfg())
    return str(url)


def direct(url: str, arrays: list[str]) -> list[dict[str, np.ndarray]]:
    reader = open_store(url)
    return [read_batch(reader, b, arrays) for b in BATCHES]


def assert_same(got: list[dict[str, np.ndarray]], want: list[dict[str, np.ndarray]]) -> None:
    assert len(got) == len(want)
    for g, w in zip(got, want):
        assert set(g) == set(w)
        for name in w:
            assert g[name].dtype == w[name].dtype
            np.testing.assert_array_equal(g[name], w[name], err_msg=name)


def test_local_prefetcher_yields_the_batches_in_order(store: str) -> None:
    arrays = ["cam_bev", "boxes", "sample_index"]
    with TargetPrefetcher(store, arrays=arrays, batches=BATCHES, prefetch=2) as pf:
        got = list(pf)
    assert [g["cam_bev"].shape[0] for g in got] == [len(b) for b in BATCHES]
    assert [g["sample_index"].tolist() for g in got] == [[v // 2 for v in b] for b in BATCHES]
    assert got[0]["cam_bev"].dtype == np.float32 and got[0]["boxes"].shape == (2, 6, 10, 12, 16)
    assert_same(got, direct(store, arrays))


def test_prefetcher_keeps_prefetch_batches_in_flight(store: str) -> None:
    pulled: list[list[int]] = []

    def sampler():
        for b in BATCHES:
            pulled.append(b)
            yield b

    with TargetPrefetcher(store, arrays=["fg_mask"], batches=sampler(), prefetch=2) as pf:
        it = iter(pf)
        next(it)
        assert len(pulled) == 3  # the batch in hand plus 2 ahead
        rest = list(it)
    assert len(rest) == len(BATCHES) - 1 and len(pulled) == len(BATCHES)


def test_prefetcher_reads_only_the_requested_arrays(tmp_path: Path) -> None:
    url = tmp_path / "s.zarr"
    write_store(url, tiny_cfg())
    for v in range(N_VIEWS):  # any read of fused_bev would now fail its checksum
        chunk = url / "fused_bev" / "c" / str(v) / "0" / "0" / "0"
        chunk.write_bytes(b"\0" * chunk.stat().st_size)
    with TargetPrefetcher(str(url), arrays=["cam_bev", "fg_mask"], batches=BATCHES) as pf:
        got = list(pf)
    assert all(set(g) == {"cam_bev", "fg_mask"} for g in got)
    with TargetPrefetcher(str(url), arrays=["fused_bev"], batches=BATCHES) as pf:
        with pytest.raises(StoreError, match="view 3 array 'fused_bev' is corrupted"):
            list(pf)


def test_prefetcher_refuses_missing_arrays_and_use_after_close(store: str) -> None:
    with pytest.raises(StoreError, match="lacks array\\(s\\) depth"):
        TargetPrefetcher(store, arrays=["depth"], batches=BATCHES)
    pf = TargetPrefetcher(store, arrays=["cam_bev"], batches=BATCHES)
    pf.close()
    with pytest.raises(StoreError, match="closed"):
        list(pf)


def test_prefetcher_on_a_spawned_process_cluster(store: str) -> None:
    from distributed import Client, LocalCluster

    arrays = ["lidar_bev", "heatmap", "view"]
    with LocalCluster(n_workers=1, threads_per_worker=1, processes=True, dashboard_address=None) as cluster:
        with TargetPrefetcher(store, arrays=arrays, batches=BATCHES, scheduler=cluster.scheduler_address) as pf:
            got = list(pf)
        with Client(cluster) as client:  # the worker process opened the store itself, once
            opened = client.run(_opened_in_worker)
    assert_same(got, direct(store, arrays))
    [(worker_pid, urls)] = opened.values()
    assert worker_pid != os.getpid() and urls == [store]


def _opened_in_worker() -> tuple[int, list[str]]:
    from simdistill.feature_store import prefetch

    return os.getpid(), [reader.url for reader in prefetch._WORKER_READERS.values()]
