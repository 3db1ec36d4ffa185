"""Config loading: YAML + dotted overrides, unknown keys and wrong types are clear errors."""

import pytest

from simdistill.config import Config, config_from_dict, config_to_dict, load_config, resolve_config, shipped_configs
from simdistill.errors import ConfigError


def test_demo_and_paper_configs_load():
    demo = load_config("demo")
    paper = load_config("nuscenes_swint")
    assert demo.model.bev.grid_size == (48, 48)
    fast = load_config("bench_fast")  # the demo is the fast benchmark's networks on a smaller world
    assert (fast.model.bev, fast.model.head, fast.model.gcm) == (demo.model.bev, demo.model.head, demo.model.gcm)
    assert demo.model.backbone.pretrained.startswith("builtin:") and fast.data.dev_scenes > 0
    assert paper.model.bev.grid_size == (180, 180)
    assert (paper.augment.final_height, paper.augment.final_width) == (256, 704)
    assert paper.model.bev.dbound == (1.0, 60.0, 0.5)
    assert (paper.model.channels.cam, paper.model.channels.lidar, paper.model.channels.fused) == (80, 256, 256)


def test_dotted_override_parses_yaml_values():
    cfg = load_config("demo", ["model.channels.cam=24", "model.bev.xbound=[-20, 20, 0.5]",
                                                    "distill.losses=[imd, cmd]"])
    assert cfg.model.channels.cam == 24
    assert cfg.model.bev.xbound == (-20.0, 20.0, 0.5)
    assert cfg.model.bev.grid_size[1] == 80
    assert cfg.distill.losses == ("imd", "cmd")


def test_round_trip_through_dict():
    cfg = load_config("demo")
    assert config_from_dict(config_to_dict(cfg)) == cfg


@pytest.mark.parametrize(
    ("override", "words"),
    [
        ("model.channels.camm=3", "unknown config key 'model.channels.camm'"),
        ("model.channels.cam=abc", "must be an integer"),
        ("model.bev.xbound=[1, 2]", "must have 3 entries"),
        ("distill.losses=[imd, foo]", "unknown loss 'foo'"),
        ("nonsense", "section.key=value"),
        ("data.version=v2.0", "data.version 'v2.0' is unknown"),
        ("student_train.variant=big", "variant 'big' is unknown"),
    ],
)
def test_bad_config_is_a_clear_error(override, words):
    with pytest.raises(ConfigError, match=words.replace("[", r"\[").replace(".", r"\.")):
        load_config("demo", [override])


def test_missing_config_file(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "nope.yaml")


def test_unknown_top_level_key_in_yaml(tmp_path):
    p = tmp_path / "c.yaml"
    p.write_text("modle:\n  channels: {cam: 3}\n")
    with pytest.raises(ConfigError, match="unknown config key 'modle'"):
        load_config(p)


def test_defaults_are_paper_sizes():
    assert Config().model.bev.grid_size == (180, 180)


def test_shipped_configs_resolve_by_name_and_path(tmp_path, monkeypatch):
    shipped = shipped_configs()
    assert {"demo", "bench", "tiny", "nuscenes_swint"} <= set(shipped)
    assert resolve_config(None) == shipped["demo"] == resolve_config("demo") == resolve_config("demo.yaml")
    assert load_config("nuscenes_swint") == load_config(shipped["nuscenes_swint"])
    own = tmp_path / "demo"  # an existing path wins over a shipped name
    own.write_text("seed: 7\n")
    assert load_config(own).seed == 7
    monkeypatch.chdir(tmp_path)
    assert load_config("demo").seed == 7
    with pytest.raises(ConfigError, match="shipped config name .*demo.*tiny"):
        resolve_config("nonesuch")
    with pytest.raises(ConfigError, match="does not exist"):
        resolve_config(tmp_path / "sub" / "demo.yaml")  # a path with a folder is never a shipped name
