"""Every benchmark runs end to end in its --smoke mode and ends with one JSON line of its figures, so none can
silently stop working. The figures of a smoke run mean nothing; only that they are there is checked."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import ROOT

BENCHMARKS = ROOT / "benchmarks"


@pytest.fixture(scope="module")
def bench_workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One workdir for the module: the smoke world and teacher are made once and reused by every script."""
    return tmp_path_factory.mktemp("bench")


def run_smoke(script: str, *args: str, timeout: int = 600) -> dict:
    env = dict(os.environ, OMP_NUM_THREADS="2")
    proc = subprocess.run([sys.executable, str(BENCHMARKS / script), "--smoke", *args], capture_output=True,
                          text=True, timeout=timeout, cwd=ROOT, env=env)
    assert proc.returncode == 0, f"{script} --smoke failed:\n{proc.stderr[-3000:]}"
    last = proc.stdout.strip().splitlines()[-1]
    return json.loads(last)


def test_store_codecs_smoke() -> None:
    figures = run_smoke("store_codecs.py")
    assert {"source", "views", "raw_f16_bytes", "total_bytes", "arrays"} <= set(figures)
    assert figures["arrays"]["cam_bev"]["blosc-zstd3-shuf"]["bytes"] > 0


@pytest.mark.slow
def test_store_io_smoke(bench_workdir: Path) -> None:
    figures = run_smoke("store_io.py", "--workdir", str(bench_workdir))
    assert {"machine", "demo_sizes", "demo_export", "loss_rel_diff_max", "paper"} <= set(figures)
    assert figures["demo_sizes"]["lossless"]["bytes_per_view"] > 0
    assert set(figures["loss_rel_diff_max"]["random-init student"]["lossless"]) == {"imd", "cmd", "mmd_f", "mmd_p"}


@pytest.mark.slow
def test_step_time_smoke(bench_workdir: Path) -> None:
    figures = run_smoke("step_time.py", "--workdir", str(bench_workdir))
    assert set(figures["modes"]) == {"a", "b", "c", "d"}
    assert {"ratios", "loader", "student_consumption_views_per_s"} <= set(figures)
    assert figures["modes"]["b"]["prefetcher_used"] and not figures["modes"]["c"]["prefetcher_used"]


@pytest.mark.slow
def test_gpu_suite_smoke_and_ablation_cost(bench_workdir: Path, tmp_path: Path) -> None:
    """benchmarks/gpu_suite.sh (step_time.py --paper) on the CPU at tiny sizes, then ablation_cost.py on its JSON."""
    env = dict(os.environ, OMP_NUM_THREADS="2", PYTHON=sys.executable)
    proc = subprocess.run(["bash", str(BENCHMARKS / "gpu_suite.sh"), "--smoke", str(bench_workdir / "gpu")],
                          capture_output=True, text=True, timeout=900, cwd=ROOT, env=env)
    assert proc.returncode == 0, f"gpu_suite.sh --smoke failed:\n{proc.stderr[-3000:]}"
    figures = json.loads(proc.stdout.strip().splitlines()[-1])
    assert set(figures["lifts"]) == {"separate", "shared"}
    assert set(figures["lifts"]["separate"]) == {"a", "b", "e", "d", "t"} and set(figures["lifts"]["shared"]) == set("abed")
    modes = figures["lifts"]["separate"]
    assert modes["b"]["prefetcher_used"] and not modes["e"]["prefetcher_used"]
    assert all("cuda_peak_mb" in m for m in modes.values()) and figures["device"] == "cpu"
    assert {"b<=0.75d", "b<=1.03e", "rss b<d", "teacher share of (d)"} <= set(figures["ratios"]["shared"])
    assert set(figures["loader"]["float16"]) == {"1", "2"} and figures["loader"]["cores_for_assumed_gpu"] > 0
    assert figures["export"]["seconds_per_view_warm"] > 0 and {"sweep", "store_GB"} <= set(figures)
    saved = tmp_path / "paper.json"
    saved.write_text(proc.stdout)
    cost = run_smoke("ablation_cost.py", "--figures", str(saved), "--runs", "2", "--epochs", "3")
    assert cost["sweep"]["lifts"]["shared"]["online_forwards_per_sample"] == 6
    assert set(cost["store_GB"]["this run's store"]) == {"K=1", "K=4", "K=8", "MB_per_view"}


def test_ablation_cost_smoke_needs_no_other_argument() -> None:
    cost = run_smoke("ablation_cost.py")  # the committed paper-size figures
    assert cost["figures_from"].endswith("step_time_paper.txt")
    assert cost["sweep"]["lifts"]["shared"]["online_forwards_per_sample"] == 6 * 20


def test_cost_chart_smoke() -> None:
    figures = run_smoke("cost_chart.py")  # draws the committed figures to bench_work/, not over the committed PNG
    assert figures["png"].endswith("cost_smoke.png") and Path(figures["png"]).stat().st_size > 10_000
    assert figures["sweep"]["lifts"]["shared"]["cached_over_online"] < 1


def test_results_chart_smoke() -> None:
    figures = run_smoke("results_chart.py")  # the committed report, drawn to bench_work/, not over the committed PNG
    assert figures["png"].endswith("results_smoke.png") and Path(figures["png"]).stat().st_size > 10_000
    assert {r["row"] for r in figures["records"]} >= {"baseline", "simdistill", "teacher"}


def test_no_benchmark_needs_an_argument_besides_smoke() -> None:
    """Every benchmark runs with `--smoke` alone: no required option, no required positional argument."""
    import ast

    for script in sorted(BENCHMARKS.glob("[a-z]*.py")):
        tree = ast.parse(script.read_text())
        for call in (n for n in ast.walk(tree) if isinstance(n, ast.Call) and getattr(n.func, "attr", "") ==
                     "add_argument"):
            first = call.args[0].value if call.args and isinstance(call.args[0], ast.Constant) else ""
            required = any(k.arg == "required" and getattr(k.value, "value", False) for k in call.keywords)
            optional_positional = any(k.arg == "nargs" and getattr(k.value, "value", "") in ("?", "*")
                                      for k in call.keywords)
            assert not required, f"{script.name}: {first} is required"
            assert first.startswith("-") or optional_positional, f"{script.name}: positional {first} is required"


@pytest.mark.slow
def test_store_paper_smoke(bench_workdir: Path) -> None:
    figures = run_smoke("store_paper.py", "--workdir", str(bench_workdir / "store_paper"))
    settings = figures["settings"]
    assert "lossless (default)" in settings and "+ lidar_bev" in settings
    lossless = settings["lossless (default)"]
    assert lossless["feature_bits_per_value"] > 0 and lossless["within_1pct_to_0.1"]
    assert set(lossless["loss_rel_diff_max"]["random-init student"]) == {"imd", "cmd", "mmd_f", "mmd_p"}
    assert figures["loader"]["float16"]["1"]["views_per_cpu_s"] > 0


@pytest.mark.slow
def test_reproduce_smoke(tmp_path: Path) -> None:
    """World, pretrained backbone, teacher, export, then dev and val rows and the released-code row; the report
    records every run with its protocol, split and seed, and a re-run reuses every finished row."""
    workdir = tmp_path / "reproduce"
    figures = run_smoke("reproduce.py", "--workdir", str(workdir))
    assert figures["runs"] == 5 and set(figures["verdict"]) == {"P1"}
    assert (workdir / "pretrain" / "backbone.pt").is_file()
    results = workdir / "results"
    runs = json.loads((results / "verdict.json").read_text())["runs"]
    assert {(r["protocol"], r["split"], r["row"]) for r in runs} == {
        ("P2", "dev", "baseline"), ("P2", "dev", "full"), ("P1", "val", "baseline"), ("P1", "val", "full"),
        ("P1", "val", "released code's student (LiDAR at test: NOT camera-only)")}
    assert all({"seed", "mAP", "NDS", "steps"} <= set(r) and r["steps"] > 0 for r in runs)
    assert "P2" in (results / "factorial.md").read_text() and "not measurable yet" in (results / "verdict.md").read_text()
    assert (results / "learning_curves.png").stat().st_size > 1000
    again = run_smoke("reproduce.py", "--workdir", str(workdir))  # finished rows are reused, nothing retrained
    assert again["runs"] == 5 and again["total_seconds_this_invocation"] < figures["total_seconds_this_invocation"]


def test_reproduce_never_mixes_rows_trained_with_other_settings(tmp_path: Path, monkeypatch) -> None:
    """A finished row is reused only with the settings it was trained with (the thread count aside); a bad --only
    is one error line before anything runs."""
    monkeypatch.syspath_prepend(str(BENCHMARKS))
    import reproduce

    same = ["--config", "c.yaml", "--set", "seed=0", "--set", "threads=1"]
    reproduce.check_same_settings("P1 dev full (seed 0)", same[:-1] + ["threads=2"], same, tmp_path)
    reproduce.check_same_settings("P1 dev full (seed 0)", None, same, tmp_path)  # rows from before settings were kept
    with pytest.raises(SystemExit, match="other settings .*student_train.epochs=30"):
        reproduce.check_same_settings("P1 dev full (seed 0)", same + ["--set", "student_train.epochs=10"],
                                      same + ["--set", "student_train.epochs=30"], tmp_path)
    bad = subprocess.run([sys.executable, str(BENCHMARKS / "reproduce.py"), "--only", "(", "--workdir",
                          str(tmp_path / "w")], capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert bad.returncode != 0 and "--only '(' is not a regular expression" in bad.stderr
    assert "Traceback" not in bad.stderr and not (tmp_path / "w").exists()


def test_tap_overhead_smoke(bench_workdir: Path) -> None:
    pytest.importorskip("mmdet3d.registry", reason="needs the mmdet3d extra (scripts/install_mmdet3d.sh)")
    figures = run_smoke("tap_overhead.py", "--workdir", str(bench_workdir))
    assert {"ms_per_view", "tap_overhead", "views"} <= set(figures)
