"""Does cached SimDistill deliver the paper's gain? The factorial on a dev split, then the seeded verdict on val.

One world, one pretrained image backbone, one teacher, one export; then every row trains a camera student from
that single store (same views, same schedule), each in its own subprocess so its wall time and peak RSS are its
own, with a learning curve (`student_train.eval_every`) and per-term gradient norms in its log. Two protocols:

    P1  the paper's: no depth supervision in either arm
    P2  LiDAR depth supervision (train-time only) in both arms

Row sets (each row runs under every --protocols unless it names its own):

    factorial  on dev, first seed: baseline; the two-branch student with GT only (the architecture alone); full;
               full minus each term (leave-one-out); full without the GCM
    options    on dev, first seed: full with foreground-normalised IMD/MMD-F, with a zero-initialised GCM output,
               without MMD-P's box term, with channel-standardised IMD/CMD/MMD-F (the teacher's σ_c from the
               store), with the distillation weight decayed 1 → 0 and ramped up 0 → 1 over the LR warm-up
    verdict    on val, every --seeds: baseline and full
    released   on val, first seed, P1: the released code's student, whose lift reads LiDAR depth at training and at
               test (NOT camera-only), so the table shows what the paper's number includes

Rows run --jobs at a time (default 2), each with one torch thread: on a 2-core machine two single-thread runs take
about the time of two sequential two-thread runs, and a single-thread run does not stall when another process
takes a core. Finished rows are reused (their run folder holds row.json), so an interrupted invocation, or one in a
later session, trains only what is missing; the report always merges every finished row of the workdir:
RESULTS/factorial.md (dev), RESULTS/verdict.md (val), RESULTS/verdict.json (one record per finished run),
RESULTS/learning_curves.png and RESULTS/results.png (every seed, mean ± std, paired differences), and the JSON figures as the last line on stdout.

    python benchmarks/reproduce.py --rows factorial            # the shipped bench_fast config, both protocols, dev
    python benchmarks/reproduce.py --rows verdict,released     # val, 5 seeds per arm
    python benchmarks/reproduce.py --config bench --rows verdict --seeds 0 1 2
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import _reproduce_report as report

REPO = Path(__file__).resolve().parent.parent
FULL = "imd,cmd,mmd_f,mmd_p"
PROTOCOLS = {"P1": ["student_train.depth_supervision=false"], "P2": ["student_train.depth_supervision=true"]}
ROW_SETS = ("factorial", "options", "verdict", "released")
TERM_NAMES = {"imd": "IMD", "cmd": "CMD", "mmd_f": "MMD-F", "mmd_p": "MMD-P"}

# label -> (variant, losses, extra CLI arguments, extra --set overrides)
ROWS: dict[str, tuple[str, str, list[str], list[str]]] = {
    report.BASELINE: ("baseline", "none", [], []),
    report.ARCH_ONLY: ("simdistill", "none", [], []),
    report.FULL: ("simdistill", FULL, [], []),
    **{f"full − {TERM_NAMES[t]}": ("simdistill", ",".join(x for x in FULL.split(",") if x != t), [], [])
       for t in TERM_NAMES},
    "full, no GCM": ("simdistill", FULL, ["--no-gcm"], []),
    "full, foreground-normalised": ("simdistill", FULL, [], ["distill.feature_normalization=foreground"]),
    "full, GCM zero-init output": ("simdistill", FULL, [], ["model.gcm.zero_init_output=true"]),
    "full, no MMD-P box term": ("simdistill", FULL, [], ["distill.mmd_p_box_weight=0"]),
    "full, channel-standardised": ("simdistill", FULL, [], ["distill.channel_standardization=true"]),
    "full, distillation weight decayed": ("simdistill", FULL, [], ["distill.weight_schedule=decay"]),
    "full, distillation ramped up": ("simdistill", FULL, [], ["distill.weight_schedule=ramp_up"]),
    report.RELEASED: ("simdistill", FULL, [], ["model.student_depth_input=true"]),
}
FACTORIAL = [report.BASELINE, report.FULL, report.ARCH_ONLY, *[f"full − {n}" for n in TERM_NAMES.values()],
             "full, no GCM"]
OPTIONS = ["full, foreground-normalised", "full, GCM zero-init output", "full, no MMD-P box term",
           "full, channel-standardised", "full, distillation weight decayed", "full, distillation ramped up"]


def log(msg: str) -> None:
    print(f"[reproduce {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def row(label: str, protocol: str, split: str, seed: int) -> dict[str, Any]:
    variant, losses, extra, sets = ROWS[label]
    return dict(row=label, protocol=protocol, split=split, seed=seed, variant=variant, losses=losses,
                extra=list(extra), sets=[*PROTOCOLS[protocol], f"data.eval_split={split}", *sets])


def rows(which: str, seeds: list[int], protocols: list[str]) -> list[dict[str, Any]]:
    """The rows of one set, ordered so that each pair run side by side compares like with like."""
    s0 = seeds[0]
    if which == "factorial":  # baseline and full of each protocol first: the pair the schedule was sized on
        first = [row(label, p, "dev", s0) for p in protocols for label in FACTORIAL[:2]]
        return first + [row(label, p, "dev", s0) for label in FACTORIAL[2:] for p in protocols]
    if which == "options":
        return [row(label, p, "dev", s0) for label in OPTIONS for p in protocols]
    if which == "verdict":
        return [row(label, p, "val", s) for s in seeds for p in protocols for label in (report.BASELINE, report.FULL)]
    return [row(report.RELEASED, "P1", "val", s0)]


def run_dir_name(r: dict[str, Any]) -> str:
    slug = "".join(c if c.isalnum() else "_" for c in r["row"]).strip("_")
    while "__" in slug:
        slug = slug.replace("__", "_")
    return f"{r['protocol']}_{r['split']}_{slug}_seed{r['seed']}"


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


def _stage(name: str, done: bool, run: Any) -> None:
    if done:
        return
    log(f"{name}: running")
    t0 = time.perf_counter()
    run()
    log(f"{name}: {time.perf_counter() - t0:.0f} s")


def prepare(config: Path, workdir: Path, overrides: list[str]) -> tuple[list[str], Path, str, dict[str, Any]]:
    """World, pretrained backbone, teacher, export (each skipped when done). Returns (overrides with the data and
    backbone paths, teacher checkpoint, store URL, teacher metrics on val)."""
    from simdistill.config import config_to_dict, load_config
    from simdistill.evaluation.run import evaluate_run
    from simdistill.pipeline.synthetic import make_demo_data
    from simdistill.teacher_export.export import export_teacher
    from simdistill.training.backbone_pretrain import pretrain_backbone
    from simdistill.teacher.trainer import train_teacher

    dataroot = (workdir / "data").resolve()  # resolved: a workdir may link another's world, teacher and store
    cfg = load_config(config, overrides)
    overrides = overrides + [f"data.dataroot={dataroot}", f"data.version={cfg.world.version}"]
    cfg = load_config(config, overrides)
    marker = workdir / "world_config.json"
    wanted = json.dumps(config_to_dict(cfg.world), sort_keys=True)

    def world() -> None:
        make_demo_data(dataroot, cfg.world, progress=False)
        marker.write_text(wanted)

    _stage("world", marker.exists() and marker.read_text() == wanted, world)
    backbone = (workdir / "pretrain").resolve() / "backbone.pt"
    _stage("pretrain-backbone", backbone.exists(), lambda: pretrain_backbone(cfg, out_dir=backbone.parent,
                                                                             progress=False))
    overrides = overrides + [f"model.backbone.pretrained={backbone}"]
    cfg = load_config(config, overrides)
    teacher_dir = (workdir / "teacher").resolve()

    def teacher() -> None:
        result = train_teacher(cfg, out_dir=teacher_dir, progress=False)
        evaluate_run(result.model, cfg, teacher_dir, split="val")

    _stage("teacher", (teacher_dir / "teacher.pt").exists() and (teacher_dir / "metrics.json").exists(), teacher)
    store = str((workdir / "teacher_store.zarr").resolve())
    log("export: running (resumes; finished views are skipped)")
    export_teacher(cfg, checkpoint=teacher_dir / "teacher.pt", out=store, progress=False)
    return overrides, teacher_dir / "teacher.pt", store, json.loads((teacher_dir / "metrics.json").read_text())


def train_row(r: dict[str, Any], *, config: Path, overrides: list[str], workdir: Path, teacher: Path,
              store: str) -> dict[str, Any]:
    out = workdir / "runs" / run_dir_name(r)
    result_file = out / "row.json"
    name = f"{r['protocol']} {r['split']} {r['row']} (seed {r['seed']})"
    extra = ["--online-teacher", str(teacher)] if r["extra"] == ["--online-teacher"] else list(r["extra"])
    settings = cli(config, overrides + [f"seed={r['seed']}"] + r["sets"])
    if result_file.exists():
        done = json.loads(result_file.read_text())
        check_same_settings(name, done.get("settings"), settings, workdir)
        log(f"{name}: done before, reused")
        return done
    cmd = [sys.executable, "-m", "simdistill", "train-student", "--out", str(out), "--store", store,
           "--variant", r["variant"], "--losses", r["losses"], *extra, *settings]
    log(f"{name}: training")
    wall, rss = run_measured(cmd, out.parent / f"{out.name}.log")
    log_lines = [json.loads(x) for x in (out / "train_log.jsonl").read_text().splitlines()]
    metrics = json.loads((out / "metrics.json").read_text())
    record = {**r, "settings": settings, "mAP": metrics["mAP"], "NDS": metrics["NDS"], "steps": log_lines[-1]["step"], "metrics": metrics,
              "commit": _commit(),
              "wall_seconds": wall, "train_seconds": sum(x["step_seconds"] for x in log_lines), "peak_rss_mb": rss,
              "run_dir": str(out.relative_to(workdir))}
    result_file.write_text(json.dumps(record, indent=2))
    log(f"{name}: NDS {record['NDS']:.4f} mAP {record['mAP']:.4f} in {wall / 60:.1f} min")
    return record


def check_same_settings(name: str, stored: list[str] | None, wanted: list[str], workdir: Path) -> None:
    """A finished row is reused only if it was trained with the same config file and overrides (the thread count
    aside: it does not change a single-thread row's result), so a changed schedule never mixes into old rows."""
    def comparable(args: list[str]) -> list[str]:
        return [a for a in args if not a.startswith("threads=")]

    if stored is not None and comparable(stored) != comparable(wanted):
        diff = sorted(set(comparable(wanted)) ^ set(comparable(stored)))
        raise SystemExit(f"error: {name} in {workdir} was trained with other settings ({', '.join(diff[:4])}); "
                         "use another --workdir for the new settings (the world, teacher and store can be linked)")


def _commit() -> str:
    return subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, cwd=REPO).stdout.strip()


def finished_rows(workdir: Path) -> list[dict[str, Any]]:
    return [json.loads(p.read_text()) for p in sorted((workdir / "runs").glob("*/row.json"))]


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default="bench_fast", help="a YAML file or a shipped config name "
                        "(default bench_fast)")
    parser.add_argument("--workdir", type=Path, default=None, help="default bench_work/<config name>")
    parser.add_argument("--results", type=Path, default=None, help="default benchmarks/results/<config name>")
    parser.add_argument("--rows", default="factorial", help=f"comma list of {', '.join(ROW_SETS)} (default factorial)")
    parser.add_argument("--protocols", default="P2,P1", help="comma list of P1, P2 (default P2,P1)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    parser.add_argument("--set", dest="overrides", action="append", default=[], help="config override")
    parser.add_argument("--only", default="", help="train only the rows whose label matches this regular "
                        "expression (e.g. 'decayed|standardised'); the report still merges every finished row")
    parser.add_argument("--jobs", type=int, default=2, help="rows trained at the same time, one thread each")
    parser.add_argument("--report-only", action="store_true", help="train nothing; rewrite the report from the "
                        "finished rows")
    parser.add_argument("--smoke", action="store_true", help="the tiny config, one epoch per stage, a few rows of "
                        "each kind, results in --workdir: checks the script runs (the test suite runs it)")
    args = parser.parse_args()
    sets, protocols = args.rows.split(","), args.protocols.split(",")
    for given, allowed, what in ((sets, ROW_SETS, "--rows"), (protocols, tuple(PROTOCOLS), "--protocols")):
        unknown = [x for x in given if x not in allowed]
        if unknown:
            raise SystemExit(f"error: {what}: unknown {unknown[0]!r}; choose from {', '.join(allowed)}")
    args.row_sets, args.protocol_list = sets, protocols
    try:
        re.compile(args.only)
    except re.error as exc:
        raise SystemExit(f"error: --only {args.only!r} is not a regular expression ({exc}); e.g. 'decayed|standardised'")
    from simdistill.config import resolve_config

    if args.smoke:
        args.config, args.seeds = "tiny", [0]
        args.workdir = args.workdir or REPO / "bench_work" / "reproduce_smoke"
        args.results = args.workdir / "results"
        args.overrides += ["pretrain.epochs=1", "teacher_train.epochs=1", "student_train.epochs=1",
                           "student_train.eval_every=3", "student_train.grad_norms_every=2", "data.dev_scenes=1"]
    args.config = resolve_config(args.config)
    name = "smoke" if args.smoke else args.config.stem
    args.workdir = (args.workdir or REPO / "bench_work" / name).resolve()
    args.results = args.results or REPO / "benchmarks" / "results" / name
    return args


def main() -> None:
    args = parse_args()
    args.workdir.mkdir(parents=True, exist_ok=True)
    t0 = time.time()
    overrides, teacher, store, teacher_metrics = prepare(args.config, args.workdir, list(args.overrides))
    chosen = [r for which in args.row_sets for r in rows(which, args.seeds, args.protocol_list)
              if re.search(args.only, r["row"])]
    if args.smoke:
        chosen = rows("factorial", args.seeds, ["P2"])[:2] + rows("verdict", args.seeds, ["P1"]) + \
            rows("released", args.seeds, ["P1"])
    unique = [] if args.report_only else list({run_dir_name(r): r for r in chosen}.values())
    with ThreadPoolExecutor(max_workers=max(1, args.jobs)) as pool:  # each row is its own subprocess
        jobs = [pool.submit(train_row, r, config=args.config, overrides=overrides + ["threads=1"] * (args.jobs > 1),
                            workdir=args.workdir, teacher=teacher, store=store) for r in unique]
        for job in jobs:
            job.result()
    commit = _commit()
    command = "python benchmarks/reproduce.py " + " ".join(sys.argv[1:])
    records = finished_rows(args.workdir)
    figures = report.write_all(records, teacher_metrics, out_dir=args.results, workdir=args.workdir,
                               command=command.strip(), commit=commit, config=args.config, repo=REPO)
    figures["total_seconds_this_invocation"] = time.time() - t0
    print((args.results / "factorial.md").read_text())
    print((args.results / "verdict.md").read_text())
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
