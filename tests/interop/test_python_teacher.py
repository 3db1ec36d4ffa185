"""export-teacher --teacher python: any torch module, built by a factory the spec names, fills the same store.

The teacher is examples/own_teacher.py (plain PyTorch, random weights written by its own command line).
"""

from __future__ import annotations

import math
import runpy
import sys
from pathlib import Path
from unittest import mock

import pytest
import torch
from conftest import ROOT, make_tiny_config
from typer.testing import CliRunner

from helpers.fake_batch import make_fake_batch
from simdistill.cli import app
from simdistill.errors import ConfigError
from simdistill.feature_store import open_store
from simdistill.interop.python_teacher import ModuleTeacher, factory_spec, load_factory, parse_factory_spec
from simdistill.models.outputs import BEVOutputs
from simdistill.pipeline.augment import ViewBuilder
from simdistill.pipeline.sources import open_data_source
from simdistill.pipeline.view_plan import build_inputs, plan_views
from simdistill.student_train.trainer import train_student
from simdistill.teacher.loader import load_teacher, with_teacher_factory

EXAMPLE = ROOT / "examples" / "own_teacher.py"
FACTORY = f"{EXAMPLE}:make_teacher"
FP16_RTOL, FP16_ATOL = 2.0**-11, 2.0**-24
runner = CliRunner()


def write_example_checkpoint(out: Path, *, config: str = "tiny") -> Path:
    """Random weights, written by the example's own command line (`python examples/own_teacher.py OUT`)."""
    with mock.patch.object(sys, "argv", [str(EXAMPLE), str(out), "--config", config]), torch.random.fork_rng():
        runpy.run_path(str(EXAMPLE), run_name="__main__")
    return out


def _export(world: Path, ckpt: Path, store: str, factory: str = FACTORY, *extra: str):
    return runner.invoke(app, ["export-teacher", "--checkpoint", str(ckpt), "--out", store, "--teacher", "python",
                               "--teacher-factory", factory, "--config", "tiny", "--set", f"data.dataroot={world}",
                               *extra])


def test_own_teacher_exports_verifies_resumes_and_trains_a_student(tiny_world, tmp_path) -> None:
    ckpt = write_example_checkpoint(tmp_path / "own_teacher.pt")
    store = str(tmp_path / "own.zarr")
    result = _export(tiny_world, ckpt, store)
    assert result.exit_code == 0, result.output
    reader = open_store(store)
    teacher = reader.attrs["teacher"]
    assert (teacher["name"], teacher["factory"], teacher["boxes"]) == ("python", FACTORY, "dense")
    assert teacher["factory_file"] == str(EXAMPLE) and len(teacher["factory_sha256"]) == 64
    verify = runner.invoke(app, ["store", "verify", store])
    assert verify.exit_code == 0 and "all done views verified" in verify.output, verify.output

    # The store holds what the module returns for the replayed view (float16).
    cfg = make_tiny_config(tiny_world, ["export.teacher=python", f"export.teacher_factory={FACTORY}"])
    builder = ViewBuilder.for_config(open_data_source(cfg.data, "train"), cfg, train=True)
    batch = build_inputs(builder, plan_views(cfg, builder), [0])
    with torch.no_grad(), torch.random.fork_rng():
        torch.set_num_threads(1)  # as the export worker ran it
        live = load_teacher(cfg, ckpt)(batch)
    stored = reader.read_views([0], ["heatmap", "fused_bev"])
    for name in ("heatmap", "fused_bev"):
        torch.testing.assert_close(torch.from_numpy(stored[name]).float(), getattr(live, name),
                                   rtol=FP16_RTOL, atol=FP16_ATOL, msg=name)

    # Resuming: the same run does nothing; another checkpoint or an edited factory file is refused.
    again = _export(tiny_world, ckpt, store)
    assert again.exit_code == 0 and f"0 exported, {reader.n_views} already done" in again.output, again.output
    other = tmp_path / "other.pt"
    torch.save({"state_dict": {k: v + 1 for k, v in torch.load(ckpt, weights_only=True)["state_dict"].items()}},
               other)
    refused = _export(tiny_world, other, store)
    assert refused.exit_code == 2 and "teacher.checkpoint_sha256" in refused.output, refused.output
    edited = tmp_path / "edited_teacher.py"
    edited.write_text(EXAMPLE.read_text() + "\n# edited\n")
    refused = _export(tiny_world, ckpt, store, f"{edited}:make_teacher")
    assert refused.exit_code == 2 and "teacher.factory_sha256" in refused.output, refused.output

    run = train_student(make_tiny_config(tiny_world), out_dir=tmp_path / "student", store=store, progress=False,
                        stop_after=2)
    assert run.steps == 2 and all(math.isfinite(v) for v in run.last_terms.values())


WRONG_SHAPE_TEACHER = '''
import torch
from torch import nn


class Teacher(nn.Module):
    def forward(self, batch):
        b = batch.batch_size
        return {"cam_bev": torch.zeros(b, 16, 32, 32), "lidar_bev": torch.zeros(b, 16, 32, 32),
                "fused_bev": torch.zeros(b, 16, 32, 40), "heatmap": torch.full((b, 10, 32, 32), -3.0),
                "boxes": torch.zeros(b, 6, 10, 32, 32)}


def make(model_cfg, checkpoint):
    return Teacher()


def not_a_module(model_cfg, checkpoint):
    return "teacher"
'''


def test_factory_mistakes_end_in_one_line_also_from_the_workers(tiny_world, tmp_path) -> None:
    ckpt = tmp_path / "ckpt.pt"
    ckpt.write_bytes(b"unused by these factories")
    teacher_py = tmp_path / "wrong_teacher.py"
    teacher_py.write_text(WRONG_SHAPE_TEACHER)
    cases = [
        (f"{teacher_py}:make", "fused_bev (returned by", "set model.bev.xbound"),  # raised in the Dask worker
        (f"{teacher_py}:not_a_module", "returned a str, not a torch.nn.Module", ""),
        (f"{teacher_py}:nothing", "has no 'nothing'", "name the function"),
        (f"{tmp_path / 'missing.py'}:make", "missing.py", "does not exist"),
        ("no_such_package.teachers:make", "cannot import the teacher factory's module 'no_such_package.teachers'",
         "PYTHONPATH"),
        ("make_teacher", "export.teacher_factory is 'make_teacher'", "MODULE:FUNCTION"),
    ]
    for spec, *words in cases:
        result = _export(tiny_world, ckpt, str(tmp_path / "s.zarr"), spec)
        assert result.exit_code == 2, (spec, result.output)
        assert "Traceback" not in result.output and len(result.output.strip().splitlines()) == 1, result.output
        for w in words:
            assert w in result.output, (spec, w, result.output)
    result = runner.invoke(app, ["export-teacher", "--checkpoint", str(ckpt), "--out", str(tmp_path / "s.zarr"),
                                 "--teacher-factory", f"{teacher_py}:make", "--config", "tiny"])
    assert result.exit_code == 2 and "add --teacher python" in result.output, result.output


class _Returns(torch.nn.Module):
    def __init__(self, make) -> None:
        super().__init__()
        self.make = make

    def forward(self, batch):
        return self.make(batch.batch_size)


def _maps(b: int, **changes) -> dict:
    maps = {"cam_bev": torch.zeros(b, 16, 32, 32), "lidar_bev": torch.zeros(b, 16, 32, 32),
            "fused_bev": torch.zeros(b, 16, 32, 32), "heatmap": torch.full((b, 10, 32, 32), -2.0),
            "boxes": torch.zeros(b, 6, 10, 32, 32), "extra": "ignored"}
    maps.update(changes)
    return {k: v for k, v in maps.items() if v is not None}


@pytest.mark.parametrize(("changes", "message"), [
    ({"boxes": None}, r"returned no boxes; its dict must hold"),
    ({"lidar_bev": torch.zeros(2, 8, 32, 32)}, r"lidar_bev \(returned by t\.py:f\) is \[2, 8, 32, 32\] but the "
                                               r"simdistill config expects \[2, 16, 32, 32\]; dimension 1 differs: set "
                                               r"model\.channels\.lidar"),
    ({"cam_bev": torch.zeros(2, 16, 30, 32)}, r"dimension 2 differs: set model\.bev\.ybound .*rows follow y"),
    ({"boxes": torch.zeros(2, 6, 9, 32, 32)}, r"each box code has 10 values"),
    ({"heatmap": torch.zeros(2, 10, 32, 32)}, r"heatmap \(returned by t\.py:f\) lies entirely in \[0, 1\].*logits"),
    ({"fused_bev": torch.zeros(1, 16, 32, 32)}, r"return one map per sample of the batch"),
])
def test_module_teacher_checks_what_the_module_returns(tiny_config, changes, message) -> None:
    batch = make_fake_batch(tiny_config, batch_size=2, seed=0)
    ok = ModuleTeacher(_Returns(lambda b: _maps(b)), tiny_config.model, source="t.py:f")(batch)
    assert isinstance(ok, BEVOutputs) and ok.boxes.shape == (2, 6, 10, 32, 32)
    teacher = ModuleTeacher(_Returns(lambda b: _maps(b, **changes)), tiny_config.model, source="t.py:f")
    with pytest.raises(ConfigError, match=message):
        teacher(batch)


def test_factory_specs_and_the_python_api(tiny_config) -> None:
    assert parse_factory_spec("pkg.teachers:make") == ("pkg.teachers", "make")
    assert parse_factory_spec("C:/x/t.py:Builder.make") == ("C:/x/t.py", "Builder.make")
    for bad in ("pkg.teachers", ":make", "t.py:", "t.py:make-it"):
        with pytest.raises(ConfigError, match="is not MODULE:FUNCTION or FILE.py:FUNCTION"):
            parse_factory_spec(bad)
    assert factory_spec(write_example_checkpoint) == f"{write_example_checkpoint.__module__}:write_example_checkpoint"
    example_make = load_factory(FACTORY)  # imported from its file: its spec is the file again
    assert factory_spec(example_make) == FACTORY and load_factory(FACTORY) is example_make
    with pytest.raises(ConfigError, match="at module level"):
        factory_spec(lambda cfg, ckpt: None)
    cfg = with_teacher_factory(tiny_config, example_make)
    assert (cfg.export.teacher, cfg.export.teacher_factory) == ("python", FACTORY)
    assert tiny_config.export.teacher == "simdistill"  # the caller's config is left as it was
    tiny_config.export.teacher = "python"
    from simdistill.config import validate

    with pytest.raises(ConfigError, match="pass --teacher-factory MODULE:FUNCTION"):
        validate(tiny_config)
