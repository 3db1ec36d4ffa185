"""Does cached SimDistill deliver the paper's gain? The synthetic benchmark: baseline vs SimDistill, and ablations.

One world, one teacher, one export; then every row trains a camera student from that single store (same views,
same schedule), each in its own subprocess so its wall time and peak RSS are its own, with a val evaluation every
`student_train.eval_every` steps (a learning curve) and per-term gradient norms in its log. Rows:

    pilot     baseline and full SimDistill at the first seed (the go/no-go: does the baseline learn at all?)
    main      baseline and full SimDistill at every --seeds (mean +- std and the same-seed differences)
    ablation  +IMD, +IMD+CMD, +IMD+CMD+MMD-F, full without GCM (first seed)
    extra     full with the online teacher, and the depth supervision switched the other way for baseline and
              full (first seed)

Rows run --jobs at a time (default 2), each with `threads` = 1: on a 2-core machine two single-thread runs take
about the time of two sequential two-thread runs, and a single-thread run does not stall when another process
takes a core (two-thread OpenMP steps did, several times over).

Finished rows are reused (their run folder holds row.json), so `--rows main` after `--rows pilot` trains only the
new seeds, and the report always merges every finished row of the workdir into one table:
benchmarks/results/reproduce.md, reproduce.png (bars) and learning_curves.png, plus the JSON figures as the last
line on stdout. The targets (DESIGN.md §9) are printed with whether each is met.

    python benchmarks/reproduce.py --config configs/bench.yaml --workdir bench_work/reproduce --rows pilot
    python benchmarks/reproduce.py --config configs/bench.yaml --workdir bench_work/reproduce --rows main
    python benchmarks/reproduce.py --config configs/bench.yaml --workdir bench_work/reproduce --rows ablation
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import _reproduce_report as report

REPO = Path(__file__).resolve().parent.parent
RESULTS = REPO / "benchmarks" / "results"
FULL = "imd,cmd,mmd_f,mmd_p"
ROW_SETS = ("pilot", "main", "ablation", "extra")


def log(msg: str) -> None:
    print(f"[reproduce {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def row(label: str, variant: str, losses: str, seed: int, *, extra: list[str] | None = None,
        sets: list[str] | None = None) -> dict[str, Any]:
    return dict(label=label, variant=variant, losses=losses, seed=seed, extra=list(extra or []),
                sets=list(sets or []))


def rows(which: str, seeds: list[int], depth_default: bool) -> list[dict[str, Any]]:
    """The rows of one set; each row is (label, variant, losses, seed, extra CLI args, extra --set overrides)."""
    s0 = seeds[0]
    if which == "pilot":
        return [row("baseline (GT only)", "baseline", "none", s0), row("full SimDistill (cached)", "simdistill", FULL, s0)]
    if which == "main":
        return [row("baseline (GT only)", "baseline", "none", s) for s in seeds] + \
               [row("full SimDistill (cached)", "simdistill", FULL, s) for s in seeds]
    if which == "ablation":
        return [
            row("+IMD", "simdistill", "imd", s0),
            row("+IMD+CMD", "simdistill", "imd,cmd", s0),
            row("+IMD+CMD+MMD-F", "simdistill", "imd,cmd,mmd_f", s0),
            row("full without GCM", "simdistill", FULL, s0, extra=["--no-gcm"]),
        ]
    flipped = [f"student_train.depth_supervision={str(not depth_default).lower()}"]
    depth_label = "without" if depth_default else "with"
    return [
        row("full, online teacher", "simdistill", FULL, s0, extra=["--online-teacher"]),
        row(f"baseline, {depth_label} depth supervision", "baseline", "none", s0, sets=flipped),
        row(f"full, {depth_label} depth supervision", "simdistill", FULL, s0, sets=flipped),
    ]


def run_dir_name(r: dict[str, Any]) -> str:
    slug = "".join(c if c.isalnum() else "_" for c in r["label"]).strip("_").replace("__", "_")
    return f"{slug}_seed{r['seed']}"


def cli(config: Path, overrides: list[str]) -> list[str]:
    args = ["--config", str(config)]
    for o in overrides:
        args += ["--set", o]
    return args


def run_measured(cmd: list[str], log_file: Path) -> tuple[float, float]:
    """Run a command to completion; (wall seconds, peak RSS MB of that child alone, via wait4)."""
    log_file.parent.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    with open(log_file, "w") as err:
        proc = subprocess.Popen(cmd, stdout=err, stderr=subprocess.STDOUT)
        _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - t0
    if status != 0:
        tail = log_file.read_text()[-3000:]
        raise SystemExit(f"command failed ({status}): {' '.join(cmd)}\n{tail}")
    return wall, usage.ru_maxrss / 1024.0


def prepare(config: Path, workdir: Path, overrides: list[str]) -> tuple[list[str], Path, str, dict[str, Any]]:
    """World, teacher, export (each skipped when done). Returns (overrides, teacher ckpt, store, teacher metrics)."""
    from simdistill.config import config_to_dict, load_config
    from simdistill.evaluation.run import evaluate_run
    from simdistill.pipeline.synthetic import make_demo_data
    from simdistill.teacher_export.export import export_teacher
    from simdistill.teacher.trainer import train_teacher

    dataroot = workdir / "data"
    cfg = load_config(config, overrides)
    overrides = overrides + [f"data.dataroot={dataroot}", f"data.version={cfg.world.version}"]
    cfg = load_config(config, overrides)
    marker = workdir / "world_config.json"
    wanted = json.dumps(config_to_dict(cfg.world), sort_keys=True)
    if not (marker.exists() and marker.read_text() == wanted):
        log("world: generating")
        t0 = time.perf_counter()
        make_demo_data(dataroot, cfg.world, progress=False)
        marker.write_text(wanted)
        log(f"world: {time.perf_counter() - t0:.0f} s")
    teacher_dir = workdir / "teacher"
    if not (teacher_dir / "teacher.pt").exists() or not (teacher_dir / "metrics.json").exists():
        log("teacher: training")
        t0 = time.perf_counter()
        result = train_teacher(cfg, out_dir=teacher_dir, progress=False)
        evaluate_run(result.model, cfg, teacher_dir)
        (teacher_dir / "wall_seconds.txt").write_text(f"{time.perf_counter() - t0:.1f}\n")
    store = str(workdir / "teacher_store.zarr")
    log("export: running (resumes)")
    export_teacher(cfg, checkpoint=teacher_dir / "teacher.pt", out=store, progress=False)
    return overrides, teacher_dir / "teacher.pt", store, json.loads((teacher_dir / "metrics.json").read_text())


def train_row(r: dict[str, Any], *, config: Path, overrides: list[str], workdir: Path, teacher: Path,
              store: str) -> dict[str, Any]:
    out = workdir / "runs" / run_dir_name(r)
    result_file = out / "row.json"
    if result_file.exists():
        log(f"{r['label']} (seed {r['seed']}): done before, reused")
        return json.loads(result_file.read_text())
    extra = ["--online-teacher", str(teacher)] if r["extra"] == ["--online-teacher"] else list(r["extra"])
    cmd = [sys.executable, "-m", "simdistill", "train-student", "--out", str(out), "--store", store,
           "--variant", r["variant"], "--losses", r["losses"], *extra,
           *cli(config, overrides + [f"seed={r['seed']}"] + r["sets"])]
    log(f"{r['label']} (seed {r['seed']}): training")
    wall, rss = run_measured(cmd, out.parent / f"{out.name}.log")
    log_lines = [json.loads(x) for x in (out / "train_log.jsonl").read_text().splitlines()]
    record = {**r, "metrics": json.loads((out / "metrics.json").read_text()), "wall_seconds": wall,
              "train_seconds": sum(x["step_seconds"] for x in log_lines), "peak_rss_mb": rss,
              "steps": log_lines[-1]["step"], "run_dir": str(out)}
    result_file.write_text(json.dumps(record, indent=2))
    log(f"{r['label']} (seed {r['seed']}): NDS {record['metrics']['NDS']:.4f} mAP {record['metrics']['mAP']:.4f} "
        f"in {wall / 60:.1f} min")
    return record


def finished_rows(workdir: Path) -> list[dict[str, Any]]:
    return [json.loads(p.read_text()) for p in sorted((workdir / "runs").glob("*/row.json"))]


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", type=Path, default=REPO / "configs" / "bench.yaml")
    parser.add_argument("--workdir", type=Path, default=REPO / "bench_work" / "reproduce")
    parser.add_argument("--rows", default="pilot", help=f"comma list of {', '.join(ROW_SETS)} (default pilot)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--set", dest="overrides", action="append", default=[], help="config override")
    parser.add_argument("--results", type=Path, default=RESULTS, help="where the table and charts go")
    parser.add_argument("--jobs", type=int, default=2, help="rows trained at the same time, one thread each")
    parser.add_argument("--smoke", action="store_true", help="configs/tiny.yaml, one epoch, the pilot rows and the "
                        "online row, results in --workdir: checks the script runs (the test suite runs it)")
    args = parser.parse_args()
    unknown = [r for r in args.rows.split(",") if r not in ROW_SETS]
    if unknown:
        raise SystemExit(f"error: --rows {args.rows}: unknown set {unknown[0]}; choose from {', '.join(ROW_SETS)}")
    if args.smoke:
        args.config, args.seeds, args.results = REPO / "configs" / "tiny.yaml", [0], args.workdir / "results"
        args.overrides += ["student_train.epochs=1", "teacher_train.epochs=1", "student_train.eval_every=3",
                           "student_train.grad_norms_every=2"]
    return args


def main() -> None:
    args = parse_args()
    from simdistill.config import load_config

    args.workdir.mkdir(parents=True, exist_ok=True)
    workdir = args.workdir.resolve()
    t0 = time.time()
    overrides, teacher, store, teacher_metrics = prepare(args.config, workdir, list(args.overrides))
    depth_default = load_config(args.config, overrides).student_train.depth_supervision
    chosen = [r for which in args.rows.split(",") for r in rows(which, args.seeds, depth_default)]
    if args.smoke:
        chosen = rows("pilot", args.seeds, depth_default) + rows("extra", args.seeds, depth_default)[:1]
    unique = list({run_dir_name(r): r for r in chosen}.values())
    with ThreadPoolExecutor(max_workers=max(1, args.jobs)) as pool:  # each row is its own subprocess
        jobs = [pool.submit(train_row, r, config=args.config, overrides=overrides + ["threads=1"] * (args.jobs > 1),
                            workdir=workdir, teacher=teacher, store=store) for r in unique]
        for job in jobs:
            job.result()
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, cwd=REPO).stdout
    command = "python benchmarks/reproduce.py " + " ".join(sys.argv[1:])
    records = finished_rows(workdir)
    text, figures = report.write(records, teacher_metrics, command=command.strip(), commit=commit.strip(),
                                 config=args.config.resolve(), repo=REPO, depth_default=depth_default)
    args.results.mkdir(parents=True, exist_ok=True)
    (args.results / "reproduce.md").write_text(text + "\n")
    report.plot_bars(records, teacher_metrics, args.results / "reproduce.png")
    report.plot_learning_curves(records, args.results / "learning_curves.png")
    figures["total_seconds_this_invocation"] = time.time() - t0
    print(text)
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
