"""The bit-reproducible setting (docs/reproducibility.md): one torch thread, the same seed, config and data give
the same checkpoint, bit for bit, and the same devkit metrics."""

from __future__ import annotations

import json

import torch
from conftest import make_tiny_config

from simdistill.evaluation.run import evaluate_run
from simdistill.teacher.trainer import train_teacher


def _tensors(tree, prefix: str = ""):
    """(dotted name, tensor) of every tensor in a checkpoint: weights, optimiser state, RNG states."""
    if isinstance(tree, dict):
        for key, value in tree.items():
            yield from _tensors(value, f"{prefix}{key}.")
    elif isinstance(tree, (list, tuple)):
        for i, value in enumerate(tree):
            yield from _tensors(value, f"{prefix}{i}.")
    elif torch.is_tensor(tree):
        yield prefix, tree


def test_same_run_twice_with_one_thread_is_bit_identical(tiny_world, tmp_path):
    cfg = make_tiny_config(tiny_world, ["threads=1", "teacher_train.epochs=2"])
    before = torch.get_num_threads()
    try:
        runs = []
        for name in ("a", "b"):
            result = train_teacher(cfg, out_dir=tmp_path / name, progress=False)
            metrics = evaluate_run(result.model, cfg, tmp_path / name)
            runs.append((dict(_tensors(torch.load(result.checkpoint, weights_only=True))), metrics))
    finally:
        torch.set_num_threads(before)
    (a, metrics_a), (b, metrics_b) = runs
    assert a.keys() == b.keys() and len(a) > 100
    different = [name for name in a if not torch.equal(a[name], b[name])]
    assert not different, f"{len(different)} of {len(a)} checkpoint tensors differ, e.g. {different[:3]}"
    assert {k: metrics_a[k] for k in ("mAP", "NDS")} == {k: metrics_b[k] for k in ("mAP", "NDS")}
    logs = [[{k: v for k, v in json.loads(line).items() if "second" not in k and k != "time"}
             for line in (tmp_path / name / "train_log.jsonl").read_text().splitlines()] for name in ("a", "b")]
    assert logs[0] == logs[1]
