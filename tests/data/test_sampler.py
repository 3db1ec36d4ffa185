"""OneViewPerSampleSampler: one view per sample per epoch, a pure function of (seed, epoch), the trainer's epochs,
disjoint equal shares per rank."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest

from simdistill.data import OneViewPerSampleSampler
from simdistill.errors import ConfigError
from simdistill.pipeline.view_plan import ViewPlan, epoch_batches

N_SAMPLES, K = 9, 3
STORE = SimpleNamespace(n_samples=N_SAMPLES, views_per_sample=K)  # what the sampler reads of a dataset


def _epoch(seed: int, epoch: int, **kw) -> list[int]:
    sampler = OneViewPerSampleSampler(STORE, seed=seed, **kw)
    sampler.set_epoch(epoch)
    return list(sampler)


def test_one_view_per_sample_per_epoch_deterministic_by_seed_and_epoch() -> None:
    epochs = [_epoch(0, e) for e in range(4)]
    for views in epochs:
        assert sorted(v // K for v in views) == list(range(N_SAMPLES))  # every sample once
        assert all(0 <= v < N_SAMPLES * K for v in views)
    assert epochs == [_epoch(0, e) for e in range(4)]  # fresh samplers, same epochs
    assert len({tuple(v) for v in epochs}) == 4  # epochs differ
    assert _epoch(1, 0) != epochs[0]  # so do seeds
    assert len({v % K for views in epochs for v in views}) == K  # every stored view is used


def test_epochs_are_the_trainers() -> None:
    plan = ViewPlan(np.zeros((N_SAMPLES * K, 1), np.float32), np.repeat(np.arange(N_SAMPLES), K), K)
    for epoch in range(3):
        trainer = sum(epoch_batches(plan, seed=5, epoch=epoch, batch_size=1), [])
        assert _epoch(5, epoch) == trainer


def test_ranks_take_disjoint_equal_shares_as_the_trainer_does() -> None:
    plan = ViewPlan(np.zeros((N_SAMPLES * K, 1), np.float32), np.repeat(np.arange(N_SAMPLES), K), K)
    shares = [_epoch(2, 1, num_replicas=2, rank=r) for r in range(2)]
    assert [len(s) for s in shares] == [4, 4]
    assert len(OneViewPerSampleSampler(STORE, num_replicas=2, rank=1)) == 4
    assert shares[0] + shares[1] == _epoch(2, 1)[:8]  # the ninth view is dropped so both ranks take 4 steps
    for r in range(2):
        assert shares[r] == sum(epoch_batches(plan, seed=2, epoch=1, batch_size=1, rank=r, world=2), [])


@pytest.mark.parametrize(("kw", "message"), [({"num_replicas": 2, "rank": 2}, "rank 2 is not in 0..1"),
                                             ({"num_replicas": 10, "rank": 0}, "9 samples cannot be shared")])
def test_bad_ranks_are_one_error_line(kw: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        OneViewPerSampleSampler(STORE, **kw)
