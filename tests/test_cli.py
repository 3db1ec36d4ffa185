"""The CLI explains itself and turns bad input into one-line errors with exit code 2."""

from __future__ import annotations

import pytest
import yaml
from conftest import TINY_CONFIG, tiny_overrides
from typer.testing import CliRunner

from simdistill.cli import app
from simdistill.config import config_from_dict, config_to_dict

runner = CliRunner()

COMMANDS = ["make-demo-data", "train-teacher", "export-teacher", "train-student", "evaluate", "demo"]


def test_top_level_help_lists_every_command():
    result = runner.invoke(app, ["--help"])
    assert result.exit_code == 0
    for cmd in COMMANDS + ["store"]:
        assert cmd in result.output


@pytest.mark.parametrize("cmd", COMMANDS)
def test_each_command_help(cmd):
    result = runner.invoke(app, [cmd, "--help"])
    assert result.exit_code == 0
    assert "--" in result.output and len(result.output.splitlines()) > 5


@pytest.mark.parametrize(("cmd", "words"), [
    ("train-student", ["distill.losses; imd,cmd,mmd_f,mmd_p in demo", "student_train.variant; simdistill in demo"]),
    ("export-teacher", ["export.views_per_sample; 1 in demo", "export.workers; 1 in demo"]),
    ("make-demo-data", ["world.scenes; 10 in demo"]),
])
def test_help_names_defaults_that_come_from_the_config(cmd, words):
    result = runner.invoke(app, [cmd, "--help"], env={"COLUMNS": "400"})
    text = " ".join(result.output.split())
    for w in words + ["bench, bench_fast, demo, nuscenes_swint, tiny"]:
        assert w in text, w


@pytest.mark.parametrize(("sub", "says"), [("info", "views done/total"), ("verify", "--reset-bad"),
                                           ("show", "--view"), ("stats", "channel_standardization")])
def test_store_subcommand_help(sub, says):
    result = runner.invoke(app, ["store", sub, "--help"])
    assert result.exit_code == 0
    assert says in result.output and "Store path or URL" in result.output, result.output


@pytest.mark.parametrize("name", ["demo", "tiny", "bench", "nuscenes_swint"])
def test_config_show_prints_every_field_with_its_comment(name):
    from simdistill.config import flatten, load_config
    from simdistill.config.describe import field_comments

    result = runner.invoke(app, ["config", "show", "--config", name, "--set", "model.channels.cam=24",
                                 "--set", "threads=1"])
    assert result.exit_code == 0, result.output
    shown = yaml.safe_load(result.output)  # the output is a config file that loads back to the same config
    want = load_config(name, ["model.channels.cam=24", "threads=1"])
    assert config_from_dict(shown) == want and shown["model"]["channels"]["cam"] == 24
    assert set(flatten(shown)) == set(flatten(config_to_dict(want)))  # every field appears
    assert "overrides: model.channels.cam=24 threads=1" in result.output
    assert "  cam: 24  # camera BEV channels" in result.output
    comments = [text for fields in field_comments().values() for f, text in fields.items() if f]
    assert len(comments) > 60
    flat = " ".join(line.split("#", 1)[1].strip() for line in result.output.splitlines() if "#" in line)
    for text in comments:  # each comment in sections.py is shown (wrapped, so compared word by word)
        assert " ".join(text.split()[:4]) in " ".join(flat.split()), text


def test_config_show_default_and_unknown_name():
    result = runner.invoke(app, ["config", "show"])
    assert result.exit_code == 0 and "configs/demo.yaml" in result.output.splitlines()[0]
    _assert_user_error(runner.invoke(app, ["config", "show", "--config", "nonesuch"]), "nonesuch", "demo, ")


def _assert_user_error(result, *words: str) -> None:
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output
    text = result.output.lower()
    for w in words:
        assert w.lower() in text, (w, result.output)


def test_unknown_config_key(tmp_path):
    result = runner.invoke(app, ["train-teacher", "--out", str(tmp_path / "r"), "--config",
                                 "demo", "--set", "model.channels.bogus=1"])
    _assert_user_error(result, "unknown config key", "model.channels.bogus")


def test_missing_dataroot(tmp_path):
    result = runner.invoke(app, ["train-teacher", "--out", str(tmp_path / "r"), "--config",
                                 "demo", "--set", f"data.dataroot={tmp_path / 'nowhere'}"])
    _assert_user_error(result, "nowhere")


def test_unknown_version_in_config(tmp_path):
    result = runner.invoke(app, ["train-teacher", "--out", str(tmp_path / "r"), "--set", "data.version=v9"])
    _assert_user_error(result, "data.version")


def test_unknown_split(tiny_world, tmp_path):
    result = runner.invoke(app, ["train-teacher", "--out", str(tmp_path / "r"), "--set", f"data.dataroot={tiny_world}",
                                 "--set", "data.train_split=bogus_split"])
    _assert_user_error(result, "bogus_split")


def test_missing_checkpoint(tiny_world, tmp_path):
    result = runner.invoke(app, ["export-teacher", "--checkpoint", str(tmp_path / "none.pt"), "--out",
                                 str(tmp_path / "s.zarr"), "--set", f"data.dataroot={tiny_world}"])
    _assert_user_error(result, "does not exist")


def test_store_info_on_missing_store(tmp_path):
    result = runner.invoke(app, ["store", "info", str(tmp_path / "nothing.zarr")])
    _assert_user_error(result, "nothing.zarr")


def test_evaluate_missing_checkpoint(tmp_path):
    result = runner.invoke(app, ["evaluate", "--checkpoint", str(tmp_path / "x.pt")])
    _assert_user_error(result, "does not exist")


def test_make_demo_data_into_a_file(tmp_path):
    target = tmp_path / "a_file"
    target.write_text("x")
    result = runner.invoke(app, ["make-demo-data", str(target), "--scenes", "2", "--samples-per-scene", "2"])
    _assert_user_error(result, "a_file")


@pytest.mark.parametrize("cmd", ["train-teacher", "train-student"])
def test_a_missing_cuda_device_is_one_line_not_a_fallback(cmd, tiny_world, tmp_path):
    result = runner.invoke(app, [cmd, "--out", str(tmp_path / "run"), "--config", str(TINY_CONFIG),
                                 *[a for o in tiny_overrides(tiny_world) for a in ("--set", o)],
                                 "--set", "device=cuda:99", "--losses" if cmd == "train-student" else "--no-evaluate",
                                 *(["none"] if cmd == "train-student" else [])])
    assert result.exit_code == 2, result.output
    assert result.output.startswith("error: device 'cuda:99'") and result.output.count("\n") == 1, result.output
