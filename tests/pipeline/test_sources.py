"""A dev split carved out of the train scenes: disjoint from what training reads, scored by the devkit alone."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from simdistill.config import load_config
from simdistill.errors import ConfigError, DataError
from simdistill.evaluation.devkit_eval import evaluate_submission
from simdistill.evaluation.submission import detections_to_submission
from simdistill.models.head import Detections
from simdistill.pipeline.sources import open_data_source
from conftest import TINY_CONFIG, make_tiny_config


def test_dev_is_the_last_train_scenes_and_train_is_the_rest(tiny_world: Path) -> None:
    whole = open_data_source(make_tiny_config(tiny_world).data, "train")
    cfg = make_tiny_config(tiny_world, ["data.dev_scenes=1"])
    train, dev = open_data_source(cfg.data, "train"), open_data_source(cfg.data, "dev")
    assert set(train.tokens).isdisjoint(dev.tokens)
    assert set(train.tokens) | set(dev.tokens) == set(whole.tokens)
    assert dev.scene_names == whole.scene_names[-1:] and train.scene_names == whole.scene_names[:-1]
    val = open_data_source(cfg.data, "val")
    assert set(val.tokens).isdisjoint(whole.tokens)


def test_dev_needs_a_carve_out_and_a_sensible_size(tiny_world: Path) -> None:
    with pytest.raises(DataError, match="data.dev_scenes"):
        open_data_source(make_tiny_config(tiny_world).data, "dev")
    with pytest.raises(DataError, match="dev_scenes"):
        open_data_source(make_tiny_config(tiny_world, ["data.dev_scenes=3"]).data, "train")  # 3 of 3 scenes
    with pytest.raises(ConfigError, match="eval_split"):
        load_config(TINY_CONFIG, ["data.eval_split=dev"])


def test_the_devkit_scores_exactly_the_dev_scenes(tiny_world: Path, tmp_path: Path) -> None:
    """Ground truth as predictions scores ~1 on dev, and a submission for dev alone is what the devkit expects."""
    cfg = make_tiny_config(tiny_world, ["data.dev_scenes=1"])
    dev = open_data_source(cfg.data, "dev")
    dets, metas = [], []
    for i in range(len(dev)):
        sample = dev.load(i)
        dets.append(Detections(sample.gt_boxes, np.ones(len(sample.gt_boxes)), sample.gt_labels))
        metas.append(dev.sample_meta(i))
    result = evaluate_submission(detections_to_submission(dets, metas), dataroot=tiny_world, version="v1.0-mini",
                                 split=dev.split, out_dir=tmp_path, scenes=dev.scene_names)
    assert result.mAP > 0.9
    with pytest.raises(DataError, match="missing"):  # a dev submission is not a submission for all of train
        evaluate_submission(detections_to_submission(dets, metas), dataroot=tiny_world, version="v1.0-mini",
                            split=dev.split, out_dir=tmp_path / "all")
