"""Bad input to any command ends in one `error:` line that names the problem and the fix, exit code 2, no
traceback, and leaves an existing store and run folder exactly as they were.

Each case is (id, arguments, words naming the problem, words naming the fix). Arguments are built from a
`Ctx` of prepared inputs: the tiny world and teacher, a copy of the tiny store, an existing run folder, a file
where a folder is expected, damaged copies of the store and the world.
"""

from __future__ import annotations

import hashlib
import shutil
from collections.abc import Callable
from functools import cached_property
from pathlib import Path

import pytest
import zarr
from conftest import cli_args
from typer.testing import CliRunner

import simdistill.cluster
from simdistill.cli import app
from simdistill.cli_store import store_app

runner = CliRunner()
EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "own_teacher.py"  # a python teacher's factory file


class Ctx:
    """Inputs for the cases, made on first use under tmp_path."""

    def __init__(self, tmp: Path, world: Path, teacher: Path, store: str, request: pytest.FixtureRequest) -> None:
        self.tmp, self.world, self.teacher, self._store, self._request = tmp, world, teacher, store, request

    def cfg(self, *extra: str) -> list[str]:
        return cli_args(self.world, list(extra))

    @cached_property
    def store(self) -> str:
        """A copy of the complete tiny store: commands must leave it as it was."""
        shutil.copytree(self._store, self.tmp / "store.zarr")
        return str(self.tmp / "store.zarr")

    @cached_property
    def run(self) -> str:
        """An existing run folder with something in it."""
        (self.tmp / "run").mkdir()
        (self.tmp / "run" / "notes.txt").write_text("an earlier run\n")
        return str(self.tmp / "run")

    @cached_property
    def file(self) -> Path:
        (self.tmp / "a_file").write_text("x")
        return self.tmp / "a_file"

    def damaged_store(self, member: str) -> str:
        """A store copy whose `member` zarr.json is cut in half (an interrupted copy)."""
        root = self.tmp / "torn.zarr"
        shutil.copytree(self._store, root)
        meta = root / member / "zarr.json"
        meta.write_bytes(meta.read_bytes()[: meta.stat().st_size // 2])
        return str(root)

    @cached_property
    def unfinished_store(self) -> str:
        root = self.tmp / "unfinished.zarr"
        shutil.copytree(self._store, root)
        zarr.open_group(str(root), mode="r+")["done"][3] = False
        return str(root)

    @cached_property
    def store_without_stats(self) -> str:
        """A complete store exported before the teacher's channel stats were kept."""
        root = self.tmp / "no_stats.zarr"
        shutil.copytree(self._store, root)
        zarr.open_group(str(root), mode="r+").attrs.pop("channel_stats")
        return str(root)

    @cached_property
    def broken_world(self) -> Path:
        """The tiny world without one key-frame LiDAR file."""
        shutil.copytree(self.world, self.tmp / "world")
        sorted((self.tmp / "world" / "samples" / "LIDAR_TOP").iterdir())[2].unlink()
        return self.tmp / "world"

    @cached_property
    def garbage_ckpt(self) -> Path:
        (self.tmp / "garbage.pt").write_bytes(b"not a checkpoint")
        return self.tmp / "garbage.pt"

    @cached_property
    def locked_store(self) -> str:
        """A store copy whose export lock is held by a live process of this host (pid 1)."""
        import json
        import socket
        import time

        root = self.tmp / "locked.zarr"
        shutil.copytree(self._store, root)
        (root / ".export.lock").write_text(json.dumps({"pid": 1, "host": socket.gethostname(), "time": time.time()}))
        return str(root)

    @cached_property
    def s3(self) -> str:
        return self._request.getfixturevalue("s3_bucket")

    @cached_property
    def closed_scheduler(self) -> str:
        import socket

        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            return f"tcp://127.0.0.1:{s.getsockname()[1]}"


def export(c: Ctx, *args: str, out: str | None = None) -> list[str]:
    return ["export-teacher", "--checkpoint", str(c.teacher), "--out", out or str(c.tmp / "new.zarr"), *args]


def train(c: Ctx, *args: str) -> list[str]:
    return ["train-student", "--out", c.run, "--no-evaluate", *args]


Case = tuple[str, Callable[[Ctx], list[str]], tuple[str, ...], tuple[str, ...]]
CASES: list[Case] = [
    # make-demo-data
    ("demo-data-under-a-file", lambda c: ["make-demo-data", str(c.file / "world")],
     ("a_file is a file, not a folder",), ("choose a path under a folder",)),
    ("demo-data-into-a-file", lambda c: ["make-demo-data", str(c.file)], ("is a file",), ("pass a directory",)),
    ("demo-data-unknown-version", lambda c: ["make-demo-data", str(c.tmp / "w"), "--version", "v9"],
     ("world.version 'v9' is unknown",), ("use v1.0-mini",)),
    ("demo-data-too-many-mini-scenes", lambda c: ["make-demo-data", str(c.tmp / "w"), "--scenes", "11"],
     ("world.scenes",), ("v1.0-trainval",)),
    ("demo-data-unknown-key", lambda c: ["make-demo-data", str(c.tmp / "w"), "--set", "world.bogus=1"],
     ("unknown config key 'world.bogus'",), ("valid keys",)),
    # pretrain-backbone
    ("pretrain-missing-dataroot", lambda c: ["pretrain-backbone", "--out", c.run, "--set",
                                             f"data.dataroot={c.tmp}/nope"],
     ("nope does not exist",), ("make-demo-data",)),
    ("pretrain-dev-split-too-large", lambda c: ["pretrain-backbone", "--out", c.run, *c.cfg("data.dev_scenes=3")],
     ("dev split of 3 scene(s)",), ("set data.dev_scenes",)),
    ("teacher-missing-pretrained-backbone", lambda c: ["train-teacher", "--out", c.run,
                                                       *c.cfg(f"model.backbone.pretrained={c.tmp}/none.pt")],
     ("none.pt' does not exist",), ("pretrain-backbone",)),
    ("student-unshipped-builtin-backbone", lambda c: ["train-student", "--out", c.run, "--losses", "none",
                                                      *c.cfg("model.backbone.pretrained=builtin:nope")],
     ("'builtin:nope' is not shipped",), ("builtin:synthetic_tiny_resnet",)),
    # train-teacher
    ("teacher-unknown-key", lambda c: ["train-teacher", "--out", c.run, *c.cfg("model.channels.bogus=1")],
     ("model.channels.bogus",), ("valid keys",)),
    ("teacher-missing-dataroot", lambda c: ["train-teacher", "--out", c.run, "--set", f"data.dataroot={c.tmp}/nope"],
     ("nope does not exist",), ("make-demo-data",)),
    ("teacher-unknown-data-version", lambda c: ["train-teacher", "--out", c.run, *c.cfg("data.version=v9")],
     ("data.version 'v9'",), ("use v1.0-mini",)),
    ("teacher-unknown-split", lambda c: ["train-teacher", "--out", c.run, *c.cfg("data.train_split=bogus_split")],
     ("unknown split 'bogus_split'",), ("valid splits",)),
    ("teacher-missing-config", lambda c: ["train-teacher", "--out", c.run, "--config", str(c.tmp / "none.yaml")],
     ("none.yaml' does not exist",), ("--config demo",)),
    ("teacher-malformed-override", lambda c: ["train-teacher", "--out", c.run, "--set", "teacher_train"],
     ("override 'teacher_train'",), ("section.key=value",)),
    ("teacher-wrong-type", lambda c: ["train-teacher", "--out", c.run, *c.cfg("teacher_train.batch_size=two")],
     ("teacher_train.batch_size'", "got 'two'"), ("must be an integer",)),
    ("teacher-out-under-a-file", lambda c: ["train-teacher", "--out", str(c.file / "run"), *c.cfg()],
     ("a_file",), ("choose another path",)),
    # export-teacher
    ("export-missing-checkpoint", lambda c: ["export-teacher", "--checkpoint", str(c.tmp / "none.pt"), "--out",
                                             str(c.tmp / "s.zarr"), *c.cfg()], ("none.pt",), ("does not exist",)),
    ("export-garbage-checkpoint", lambda c: ["export-teacher", "--checkpoint", str(c.garbage_ckpt), "--out",
                                             str(c.tmp / "s.zarr"), *c.cfg()], ("not a readable",),
     ("pass a file written by simdistill",)),
    ("export-dataroot-lacks-a-lidar-file", lambda c: export(c, *cli_args(c.broken_world)),
     ("1 input file(s) of the export are missing", "LIDAR_TOP"), ("make-demo-data", "data.dataroot")),
    ("export-unreachable-scheduler", lambda c: export(c, "--scheduler", c.closed_scheduler, *c.cfg()),
     ("cannot reach the Dask scheduler",), ("dask scheduler", "drop --scheduler")),
    ("export-changed-config-into-store", lambda c: export(c, *c.cfg("seed=7"), out=c.store),
     ("seed was 0, now 7",), ("--overwrite",)),
    ("export-other-views-per-sample", lambda c: export(c, "--views-per-sample", "2", *c.cfg(), out=c.store),
     ("export.views_per_sample",), ("--overwrite",)),
    ("export-out-under-a-file", lambda c: export(c, *c.cfg(), out=str(c.file / "s.zarr")),
     ("cannot write the feature store",), ("choose a writable output path",)),
    ("export-unknown-split", lambda c: export(c, "--split", "bogus", *c.cfg()), ("unknown split 'bogus'",),
     ("valid splits",)),
    ("export-tap-without-mmdet3d", lambda c: export(c, "--tap", "cam_bev=x", *c.cfg()), ("--tap",),
     ("add --teacher mmdet3d",)),
    ("export-teacher-factory-without-python", lambda c: export(c, "--teacher-factory", "pkg.mod:make", *c.cfg()),
     ("--teacher-factory applies to a python teacher",), ("add --teacher python",)),
    ("export-python-teacher-factory-not-there", lambda c: export(c, "--teacher", "python", "--teacher-factory",
                                                                 f"{EXAMPLE}:make_teachr", *c.cfg()),
     ("has no 'make_teachr'",), ("name the function that builds the teacher",)),
    ("export-store-locked", lambda c: export(c, *c.cfg(), out=c.locked_store),
     ("is being written by pid 1",), ("wait for it or remove",)),
    ("export-credential-in-config", lambda c: export(c, *c.cfg("storage_options.s3.secret=x")),
     ("storage_options.s3.secret is a credential",), ("AWS_SECRET_ACCESS_KEY",)),
    ("export-backend-not-installed", lambda c: export(c, *c.cfg(), out="gs://bucket/s.zarr"),
     ("cannot open store URL 'gs://bucket/s.zarr'",), ("gcsfs",)),
    ("export-s3-bucket-missing", lambda c: export(c, *c.cfg(), out=f"{c.s3}-nope/s.zarr"),
     ("-nope' of s3://", "does not exist"), ("create it",)),
    ("export-s3-endpoint-unreachable", lambda c: [*export(c, *c.cfg(), out=f"{c.s3}/s.zarr"), "--set",
                                                  "storage_options.s3.endpoint_url=http://127.0.0.1:9"],
     ("cannot reach the storage server", "127.0.0.1:9"), ("start it or set AWS_ENDPOINT_URL",)),
    # store info / verify / show
    ("info-missing-store", lambda c: ["store", "info", str(c.tmp / "nothing.zarr")], ("no feature store",),
     ("export-teacher",)),
    ("info-not-a-store", lambda c: ["store", "info", str(c.world)], ("no feature store",), ("export-teacher",)),
    ("info-torn-group-metadata", lambda c: ["store", "info", c.damaged_store("")],
     ("unreadable metadata zarr.json",), ("--overwrite",)),
    ("verify-torn-array-metadata", lambda c: ["store", "verify", c.damaged_store("cam_bev")],
     ("unreadable metadata",), ("--overwrite",)),
    ("show-view-out-of-range", lambda c: ["store", "show", c.store, "--view", "99", "--out", str(c.tmp / "v.png")],
     ("view 99 is outside",), ("views 0..8",)),
    ("show-out-under-a-file", lambda c: ["store", "show", c.store, "--out", str(c.file / "v.png")],
     ("a_file",), ("choose another path",)),
    ("stats-unfinished-store", lambda c: ["store", "stats", c.unfinished_store], ("1 of 9 views unfinished",),
     ("re-running the same `simdistill export-teacher`",)),
    ("stats-missing-store", lambda c: ["store", "stats", str(c.tmp / "nothing.zarr")], ("no feature store",),
     ("export-teacher",)),
    ("stats-store-locked", lambda c: ["store", "stats", c.locked_store], ("is being written by pid 1",),
     ("wait for it or remove",)),
    # train-student
    ("student-torn-store", lambda c: train(c, "--store", c.damaged_store(""), *c.cfg()),
     ("unreadable metadata",), ("--overwrite",)),
    ("student-store-of-another-grid", lambda c: train(c, "--store", c.store, *c.cfg("model.channels.cam=8")),
     ("has channels",), ("re-export the teacher with this config",)),
    ("student-unfinished-store", lambda c: train(c, "--store", c.unfinished_store, *c.cfg()),
     ("1 of 9 views unfinished",), ("re-running the same `simdistill export-teacher`",)),
    ("student-missing-store", lambda c: train(c, "--store", str(c.tmp / "none.zarr"), *c.cfg()),
     ("no feature store",), ("export-teacher",)),
    ("student-unknown-loss", lambda c: train(c, "--store", c.store, "--losses", "imd,bogus", *c.cfg()),
     ("unknown loss 'bogus'",), ("choose from",)),
    ("student-unknown-variant", lambda c: train(c, "--variant", "bogus", *c.cfg()), ("'bogus' is unknown",),
     ("use simdistill or baseline",)),
    ("student-losses-without-targets", lambda c: train(c, *c.cfg()), ("need teacher targets",), ("--store",)),
    ("student-standardised-online-teacher", lambda c: train(c, "--online-teacher", str(c.teacher),
                                                            *c.cfg("distill.channel_standardization=true")),
     ("channel_standardization needs the teacher's channel statistics",), ("drop --online-teacher",)),
    ("student-standardised-store-without-stats", lambda c: train(c, "--store", c.store_without_stats,
                                                                 *c.cfg("distill.channel_standardization=true")),
     ("cam_bev, lidar_bev, fused_bev, which store",), ("run `simdistill store stats",)),
    ("student-unreachable-scheduler", lambda c: train(c, "--store", c.store, "--scheduler", c.closed_scheduler,
                                                      *c.cfg()),
     ("cannot reach the Dask scheduler",), ("dask scheduler",)),
    ("student-out-under-a-file", lambda c: ["train-student", "--out", str(c.file / "r"), "--store", c.store, *c.cfg()],
     ("a_file",), ("choose another path",)),
    # evaluate
    ("evaluate-missing-checkpoint", lambda c: ["evaluate", "--checkpoint", str(c.tmp / "x.pt")], ("x.pt",),
     ("does not exist",)),
    ("evaluate-garbage-checkpoint", lambda c: ["evaluate", "--checkpoint", str(c.garbage_ckpt)],
     ("not a readable",), ("pass a file written by simdistill",)),
    ("evaluate-unknown-split", lambda c: ["evaluate", "--checkpoint", str(c.teacher), "--split", "bogus",
                                          "--set", f"data.dataroot={c.world}"], ("unknown split 'bogus'",),
     ("valid splits",)),
    # demo
    ("demo-workdir-under-a-file", lambda c: ["demo", "--workdir", str(c.file / "demo")], ("a_file",),
     ("choose another path",)),
    ("demo-unknown-key", lambda c: ["demo", "--workdir", str(c.tmp / "d"), "--set", "demo.bogus=1"],
     ("unknown config key 'demo'",), ("valid keys",)),
]


def _snapshot(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest() if p.is_file() else "dir"
            for p in sorted(folder.rglob("*"))}


class _Placeholders:
    """Stands in for a Ctx where only the command a case runs matters: nothing is made."""

    def cfg(self, *extra: str) -> list[str]:
        return []

    def damaged_store(self, member: str) -> str:
        return "torn.zarr"

    def __getattr__(self, name: str) -> Path:
        return Path(name)


def test_every_command_has_bad_input_cases():
    """Read from the app itself: a command added without cases here fails this test."""
    commands = {(c.name,) for c in app.registered_commands} | {("store", c.name) for c in store_app.registered_commands}
    covered: dict[tuple[str, ...], int] = {}
    for _, build, _, _ in CASES:
        args = build(_Placeholders())
        command = tuple(args[:2]) if args[0] == "store" else (args[0],)
        covered[command] = covered.get(command, 0) + 1
    assert commands <= set(covered), f"without a case: {sorted(commands - set(covered))}"
    assert set(covered) <= commands, f"cases of commands that do not exist: {sorted(set(covered) - commands)}"


@pytest.mark.parametrize("case", CASES, ids=[case[0] for case in CASES])
def test_bad_input_is_one_error_line(case: Case, tiny_world, tiny_teacher, tiny_store, tmp_path, request,
                                     monkeypatch):
    name, build, problem, fix = case
    monkeypatch.setattr(simdistill.cluster, "CONNECT_TIMEOUT_S", 1.0)
    monkeypatch.setenv("AWS_MAX_ATTEMPTS", "1")
    ctx = Ctx(tmp_path, tiny_world, tiny_teacher, tiny_store, request)
    args = build(ctx)
    before = {p: _snapshot(Path(p)) for p in (ctx.store, ctx.run)}  # an existing store and run folder

    result = runner.invoke(app, args)

    assert result.exit_code == 2, (name, result.output, result.exception)
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), (name, result.stderr)
    assert "Traceback" not in result.output
    for words in (*problem, *fix):
        assert words in lines[0], (name, words, lines[0])
    for path, snapshot in before.items():
        assert _snapshot(Path(path)) == snapshot, f"{name} changed {path}"
    assert not (tmp_path / "new.zarr").exists(), f"{name} began a store before refusing"
