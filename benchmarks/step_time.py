"""Student step-time benchmark (docs/costs.md): where do distillation targets cost time and memory?
Measures and prints; never run in CI.

    python benchmarks/step_time.py                      # demo world, trained demo teacher, /tmp/sd/bench
    python benchmarks/step_time.py --steps 24 --warmup 4 --rounds 3 --threads 2   # on a quiet machine
    python benchmarks/step_time.py --paper --paper-teacher T.pt   # the nuscenes_swint config sizes (see below)
    python benchmarks/step_time.py --paper --set device=cuda      # the same on a GPU (benchmarks/gpu_suite.sh)

Side by side, same config, seed, variant (simdistill), batch and torch threads, each mode in its own
subprocess (so peak RSS is per mode), `train_student(..., stop_after=--steps)`, the modes
interleaved over --rounds (a b c d a b c d ...) so load from other jobs falls on all of them alike:
  (a) none    no distillation targets at all (`distill.losses=[]`, no store)
  (b) dask    targets from the store through the Dask read-ahead loader (`student_train.loader=dask`)
  (c) direct  targets from the store by synchronous Zarr reads in the loop (`student_train.loader=direct`)
  (e) memory  the same targets read into RAM before the first step (`student_train.loader=memory`): the loader's
              physical limit
  (d) online  the frozen teacher run beside the student on every batch
  (t) teacher the online teacher's targets alone on the same batches (`OnlineTeacher.targets`; --paper only)
Step times come from each run's train_log.jsonl (`step_seconds`, the wall time between two logged steps,
so waiting for inputs or targets counts); the first --warmup steps are dropped. Then, with no training
attached, the loader's maximum rate (TargetPrefetcher over every array the full loss set needs) and the
rate of direct `read_batch` calls, in views/s, against the rate the student consumes views in mode (b).
The store is `WORKDIR/demo_lossless.zarr` (exported here from the demo teacher when missing; shared with
store_io.py). Progress on stderr; stdout gets the tables and, last, one JSON object of the figures.

--paper: the nuscenes_swint config sizes (6 cameras 256x704, 180x180 BEV, 80/256/256 channels, 118 depth bins,
GCM 20 points, 10 LiDAR sweeps) at batch 1 on a synthetic world rendered at nuScenes' 1600x900 (`_paper.py`; tiny
sizes with --smoke), modes a b e d t (--modes), each once per student lift setting (--lifts: separate and shared
depth nets, `model.shared_lift`), interleaved round by round. The teacher is --paper-teacher (random init when
absent: step costs do not depend on the weights); the store is exported here first (its per-view cost feeds the
ablation sweep of `ablation_cost.py`, printed at the end). Then the loader at paper size: views/s and views per
CPU-second with 1..N read threads (`student_train.loader_threads`). `--set KEY=VALUE` overrides the config
(e.g. device=cuda: CUDA peak memory per mode is then reported too).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import _common as C
import _paper as P

MODES = {"a": "none", "b": "dask", "c": "direct", "e": "memory", "d": "online", "t": "teacher alone"}
LOADERS = {"b": "dask", "c": "direct", "e": "memory"}
TARGETS = {"b<=1.10a": 1.10, "b<=0.65d": 0.65, "speed b>=0.95c": 0.95, "loader>=4x student": 4.0}
PAPER_TARGETS = {"b<=0.75d": 0.75, "b<=1.03e": 1.03, "rss b<d": 1.0}
PREFETCH_THREAD = "simdistill-prefetch"  # TargetPrefetcher's read threads are named so


def prefetcher_probe() -> tuple[Any, dict[str, bool]]:
    """A StepHook that notes whether a TargetPrefetcher's read threads are alive during training steps (tells
    whether loader=direct / memory really bypass the Dask loader), and what it noted."""
    import threading

    from simdistill.training.fit import StepHook

    seen = {"prefetcher": False}

    def run(step: int, model: Any) -> dict[str, float]:
        seen["prefetcher"] |= any(t.name.startswith(PREFETCH_THREAD) for t in threading.enumerate())
        return {}

    return StepHook(every=1, run=run), seen


def met(check: str, value: float) -> str:
    """'yes' / 'NO' against TARGETS (speed and loader checks are lower bounds, the rest upper bounds)."""
    if math.isnan(value):
        return "-"
    lower_bound = check.startswith(("speed", "loader"))
    return "yes" if (value >= TARGETS[check] if lower_bound else value <= TARGETS[check]) else "NO"


def mode_overrides(mode: str) -> list[str]:
    overrides = [f"student_train.loader={LOADERS.get(mode, 'dask')}"]
    if mode == "a":
        overrides.append("distill.losses=[]")
    return overrides


def mode_config(args: argparse.Namespace, mode: str) -> Any:
    if args.paper:
        return P.paper_config(dataroot=args.dataroot, smoke=args.smoke, threads=args.threads,
                              overrides=[*args.set, f"model.shared_lift={args.lift}", *mode_overrides(mode)])
    return C.demo_config(args, mode_overrides(mode))


def child(args: argparse.Namespace) -> None:
    """One mode's training run (in its own process); prints a JSON line of what the parent cannot see."""
    import torch

    from simdistill.student_train.trainer import train_student

    torch.set_num_threads(args.threads)
    cfg = mode_config(args, args.child)
    store = args.store if args.child in LOADERS else None
    online = args.teacher if args.child == "d" else None
    P.cuda_reset(cfg.device)
    t0 = time.perf_counter()
    info: dict[str, Any] = {}
    if args.child == "t":
        info["step_seconds"] = P.teacher_alone(cfg, teacher=args.teacher, store=args.store, steps=args.steps)
        info["prefetchers"] = 0
    else:
        probe, seen = prefetcher_probe()
        train_student(cfg, out_dir=args.out, store=store and str(store), online_teacher=online, resume=False,
                      progress=False, stop_after=args.steps, hooks=[probe])
        info["prefetchers"] = int(seen["prefetcher"])
    print(json.dumps({**info, "peak_rss_mb": C.peak_rss_mb(), "cuda_peak_mb": P.cuda_peak_mb(cfg.device),
                      "seconds": time.perf_counter() - t0}))


def ensure_store(cfg: Any, *, teacher: Path, url: Path) -> None:
    """Export (or finish) the demo store; a complete one is left as it is."""
    from simdistill.errors import SimDistillError
    from simdistill.teacher_export.export import export_teacher

    try:
        report = export_teacher(cfg, checkpoint=teacher, out=str(url), progress=False)
    except SimDistillError as exc:
        C.fail(f"{exc} (or delete {url})")
    C.log(f"store {url}: {report.exported} views exported, {report.skipped} already there")


def run_once(args: argparse.Namespace, mode: str, r: int, lift: str = "false") -> tuple[list[float], dict[str, Any]]:
    """One training run of `mode` in a fresh process: (its timed step seconds, what the child reported)."""
    tag = f"_lift-{'shared' if lift == 'true' else 'separate'}" if args.paper else ""
    out = args.workdir / f"step_{mode}_{MODES[mode].replace(' ', '-')}{tag}_{r}"
    shutil.rmtree(out, ignore_errors=True)
    teacher = args.lift_teachers[lift] if args.paper else args.teacher
    cmd = [sys.executable, str(Path(__file__).resolve()), "--child", mode, "--out", str(out), "--steps",
           str(args.steps), "--threads", str(args.threads), "--dataroot", str(args.dataroot), "--teacher",
           str(teacher), "--workdir", str(args.workdir), "--views-per-sample", str(args.views_per_sample),
           "--store", str(args.store), "--lift", lift, *(["--smoke"] if args.smoke else []),
           *(["--paper"] if args.paper else []), *(x for kv in args.set for x in ("--set", kv))]
    env = {**os.environ, "OMP_NUM_THREADS": str(args.threads), "MKL_NUM_THREADS": str(args.threads)}
    C.log(f"round {r + 1}/{args.rounds}, mode ({mode}) {MODES[mode]}{tag}: {args.steps} steps in a subprocess")
    proc = subprocess.run(cmd, stdout=subprocess.PIPE, text=True, check=False, env=env)
    if proc.returncode != 0:
        C.fail(f"mode ({mode}) failed with exit code {proc.returncode}; run `{' '.join(cmd)}` to see why")
    info = json.loads(proc.stdout.strip().splitlines()[-1])
    steps = info.pop("step_seconds", None)
    if steps is None:
        steps = [json.loads(line)["step_seconds"] for line in (out / "train_log.jsonl").read_text().splitlines()]
    C.log(f"  median step {C.summarize(steps[args.warmup:])['median']:.3f} s, peak RSS {info['peak_rss_mb']:.0f} MB")
    return steps[args.warmup:], info


def mode_figures(args: argparse.Namespace, m: str, timed: list[list[float]], infos: list[dict[str, Any]]) -> dict:
    s = C.summarize([x for steps in timed for x in steps])
    cuda = [i["cuda_peak_mb"] for i in infos if i.get("cuda_peak_mb") is not None]
    return {"mode": MODES[m], "step_median_s": s["median"], "step_mean_s": s["mean"], "step_min_s": s["min"],
            "step_max_s": s["max"], "steps_timed": s["n"], "views_per_s": C.ratio(args.batch_size, s["median"]),
            "peak_rss_mb": max(i["peak_rss_mb"] for i in infos), "cuda_peak_mb": max(cuda) if cuda else None,
            "prefetcher_used": any(i["prefetchers"] > 0 for i in infos),
            "round_medians_s": [C.summarize(steps)["median"] for steps in timed]}


def run_modes(args: argparse.Namespace, lifts: tuple[str, ...] = ("false",)) -> dict[str, dict[str, dict[str, Any]]]:
    """Every mode once per round and lift, rounds interleaved (a b c d a b c d ...): load from other jobs on a
    shared machine then falls on all modes alike. Step times are pooled over rounds; peak RSS is the maximum.
    Mode (t), the teacher alone, does not depend on the student's lift: it runs with the first. Returns
    lift → mode → figures."""
    keys = [(lift, m) for lift in lifts for m in args.modes if m != "t" or lift == lifts[0]]
    timed: dict[tuple[str, str], list[list[float]]] = {k: [] for k in keys}
    infos: dict[tuple[str, str], list[dict[str, Any]]] = {k: [] for k in keys}
    for r in range(args.rounds):
        for lift, m in keys:
            steps, info = run_once(args, m, r, lift)
            timed[(lift, m)].append(steps)
            infos[(lift, m)].append(info)
    out: dict[str, dict[str, dict[str, Any]]] = {lift: {} for lift in lifts}
    for lift, m in keys:
        out[lift][m] = mode_figures(args, m, timed[(lift, m)], infos[(lift, m)])
    return out


def loader_rates(cfg: Any, *, url: Path, rounds: int) -> dict[str, Any]:
    """Views/s of the read-ahead loader and of direct reads over one epoch's batches, interleaved rounds."""
    from simdistill.feature_store import TargetPrefetcher, open_store, read_batch
    from simdistill.student_train.distill_step import arrays_needed
    from simdistill.student_train.target_sources import StoreTargets
    from simdistill.pipeline.view_plan import epoch_batches

    arrays = arrays_needed(C.LOSS_TERMS)
    plan = StoreTargets(str(url), cfg, arrays).plan
    batches = epoch_batches(plan, seed=cfg.seed, epoch=0, batch_size=cfg.student_train.batch_size)
    n = sum(len(b) for b in batches)

    def direct() -> float:
        t0 = time.perf_counter()
        reader = open_store(str(url), arrays=arrays)
        for b in batches:
            read_batch(reader, b, arrays)
        return n / (time.perf_counter() - t0)

    def dask_loader() -> float:
        t0 = time.perf_counter()
        with TargetPrefetcher(str(url), arrays=arrays, batches=batches,
                              prefetch=cfg.student_train.prefetch_batches) as prefetcher:
            for _ in prefetcher:
                pass
        return n / (time.perf_counter() - t0)

    direct()  # untimed pass: neither reader pays for a cold page cache or first-open costs
    rates: dict[str, list[float]] = {"dask": [], "direct": []}
    for r in range(rounds):
        order = [("dask", dask_loader), ("direct", direct)]
        for name, fn in order if r % 2 == 0 else order[::-1]:
            rates[name].append(fn())
        C.log(f"loader round {r + 1}/{rounds}: dask {rates['dask'][-1]:.1f}, direct {rates['direct'][-1]:.1f} views/s")
    return {"arrays": arrays, "views_per_round": n, "batch_size": cfg.student_train.batch_size,
            "prefetch_batches": cfg.student_train.prefetch_batches,
            "dask_views_per_s": C.summarize(rates["dask"])["median"],
            "direct_views_per_s": C.summarize(rates["direct"])["median"], "rounds": rates}


def demo_main(args: argparse.Namespace) -> None:
    C.resolve_inputs(args)
    cfg = C.demo_config(args)
    args.batch_size = cfg.student_train.batch_size
    url = args.store = args.workdir / "demo_lossless.zarr"
    figures: dict[str, Any] = {"machine": C.machine(), "store": str(url), "steps": args.steps,
                               "warmup": args.warmup, "rounds": args.rounds, "threads": args.threads,
                               "batch_size": args.batch_size,
                               "variant": cfg.student_train.variant}
    ensure_store(cfg, teacher=args.teacher, url=url)

    modes = run_modes(args)["false"]
    figures["modes"] = modes
    print(step_table(f"Student step ({cfg.student_train.variant}, batch {args.batch_size}, {args.threads} torch "
                     f"thread(s); steps {args.warmup + 1}..{args.steps} of {args.rounds} interleaved run(s) per mode)",
                     modes))

    C.log(f"loader maximum rate, no training, {args.loader_rounds} rounds")
    loader = loader_rates(cfg, url=url, rounds=args.loader_rounds)
    figures["loader"] = loader

    def med(m: str) -> float:
        return modes[m]["step_median_s"] if m in modes else float("nan")

    consumption = modes["b"]["views_per_s"] if "b" in modes else float("nan")
    checks = {
        "b<=1.10a": C.ratio(med("b"), med("a")),
        "b<=0.65d": C.ratio(med("b"), med("d")),
        "speed b>=0.95c": C.ratio(med("c"), med("b")),
        "loader>=4x student": C.ratio(loader["dask_views_per_s"], consumption),
    }
    figures["ratios"] = checks
    figures["rss_b_over_d"] = C.ratio(modes["b"]["peak_rss_mb"], modes["d"]["peak_rss_mb"]) \
        if "b" in modes and "d" in modes else None
    figures["student_consumption_views_per_s"] = consumption
    figures["loader_over_direct"] = C.ratio(loader["dask_views_per_s"], loader["direct_views_per_s"])
    print(C.table("Loader, no training attached (median of rounds)", ["reader", "views/s", "x student (b)"], [
        ["TargetPrefetcher (Dask tasks, read-ahead)", loader["dask_views_per_s"], checks["loader>=4x student"]],
        ["direct read_batch", loader["direct_views_per_s"], C.ratio(loader["direct_views_per_s"], consumption)],
        ["student consumption, mode (b)", consumption, 1.0]]))
    print(C.table("Targets (median step times)", ["check", "measured", "target", "met"],
                  [[k, v, TARGETS[k], met(k, v)] for k, v in checks.items()]))
    print_bypass(modes)
    C.log("done")
    C.emit_json(figures)


def step_table(title: str, modes: dict[str, dict[str, Any]]) -> str:
    cuda = any(r.get("cuda_peak_mb") is not None for r in modes.values())
    rows = [[f"({m}) {r['mode']}", r["step_median_s"], r["step_mean_s"], r["step_min_s"], r["step_max_s"],
             r["views_per_s"], r["peak_rss_mb"], *([r["cuda_peak_mb"]] if cuda else []),
             "yes" if r["prefetcher_used"] else "no"] for m, r in modes.items()]
    return C.table(title, ["mode", "median s", "mean s", "min s", "max s", "views/s", "peak RSS MB",
                           *(["CUDA peak MB"] if cuda else []), "prefetcher"], rows)


def print_bypass(modes: dict[str, dict[str, Any]]) -> None:
    """Whether loader=direct / memory were honoured (no prefetcher thread seen during their steps)."""
    for m in ("c", "e"):
        if m not in modes:
            continue
        if modes[m]["prefetcher_used"]:
            print(f"mode ({m}): WARNING student_train.loader={LOADERS[m]} is NOT honoured: a TargetPrefetcher ran, so "
                  f"({m}) measured the Dask loader again.")
        else:
            print(f"mode ({m}): student_train.loader={LOADERS[m]} is honoured (no TargetPrefetcher ran).")


# -------------------------------------------------------------------------------------------------
LIFT_NAMES = {"false": "separate", "true": "shared"}


def paper_inputs(args: argparse.Namespace) -> Any:
    """World, one teacher checkpoint per lift setting, the exported store; returns the base config."""
    args.dataroot = args.paper_dataroot or P.paper_world(args.workdir, scenes=args.paper_scenes,
                                                         samples=args.paper_samples, smoke=args.smoke)
    args.lift_teachers = {}
    for lift in args.lifts:
        cfg = P.paper_config(dataroot=args.dataroot, smoke=args.smoke, threads=args.threads,
                             overrides=[*args.set, f"model.shared_lift={lift}"])
        args.lift_teachers[lift] = P.teacher_checkpoint(cfg, source=args.paper_teacher,
                                                        out=args.workdir / f"paper_teacher_lift-{lift}.pt")
    cfg = P.paper_config(dataroot=args.dataroot, smoke=args.smoke, threads=args.threads,
                         overrides=[*args.set, f"model.shared_lift={args.lifts[0]}"])
    args.batch_size = cfg.student_train.batch_size
    args.store = args.workdir / "paper_store.zarr"
    return cfg


def paper_checks(lifts: dict[str, dict[str, dict[str, Any]]]) -> dict[str, dict[str, float]]:
    out = {}
    for lift, modes in lifts.items():
        def med(m: str) -> float:
            return modes[m]["step_median_s"] if m in modes else float("nan")

        teacher = lifts[next(iter(lifts))].get("t")
        out[LIFT_NAMES[lift]] = {
            "b<=0.75d": C.ratio(med("b"), med("d")),
            "b<=1.03e": C.ratio(med("b"), med("e")),
            "rss b<d": C.ratio(modes["b"]["peak_rss_mb"], modes["d"]["peak_rss_mb"]) if "d" in modes else math.nan,
            "b/a": C.ratio(med("b"), med("a")),
            "teacher share of (d)": C.ratio(teacher["step_median_s"], med("d")) if teacher else math.nan,
            "(d)-(e) share of (d)": C.ratio(med("d") - med("e"), med("d")),
        }
        if modes.get("b", {}).get("cuda_peak_mb") and modes.get("d", {}).get("cuda_peak_mb"):
            out[LIFT_NAMES[lift]]["cuda b<d"] = C.ratio(modes["b"]["cuda_peak_mb"], modes["d"]["cuda_peak_mb"])
    return out


def print_paper_targets(checks: dict[str, dict[str, float]]) -> None:
    rows = []
    for lift, c in checks.items():
        for k, v in c.items():
            target = PAPER_TARGETS.get(k.replace("cuda ", "rss "))
            ok = "-" if target is None or math.isnan(v) else ("yes" if (v < target if "<d" in k else v <= target)
                                                                 else "NO")
            rows.append([f"{lift} lifts: {k}", v, target if target is not None else "-", ok])
    print(C.table("Paper-size targets (median step times; peak memory ratios)",
                  ["check", "measured", "target", "met"], rows))


def paper_main(args: argparse.Namespace) -> None:
    import ablation_cost

    cfg = paper_inputs(args)
    figures: dict[str, Any] = {"machine": C.machine(), "device": cfg.device, "steps": args.steps,
                               "warmup": args.warmup, "rounds": args.rounds, "threads": args.threads,
                               "batch_size": args.batch_size, "views_per_sample": cfg.export.views_per_sample,
                               "world": {"dataroot": str(args.dataroot), "sweeps": cfg.data.sweeps,
                                         "image": list(P.SMOKE_IMAGE if args.smoke else P.PAPER_IMAGE)},
                               "teacher": str(args.paper_teacher or "random init (seed 0)"), "set": args.set}
    C.log(f"paper: exporting the train split to {args.store}")
    figures["export"] = P.export_figures(cfg, teacher=args.lift_teachers[args.lifts[0]], url=args.store)
    e = figures["export"]
    print(f"export of {e['views']} views on {cfg.device}: {1 / e['seconds_per_view_warm']:.3f} views/s warm "
          f"(teacher forward {e['forward_seconds_per_view_warm']:.3f} s/view), {e['views_per_s_incl_startup']:.3f} "
          f"views/s including cluster start-up; {e['bytes_per_view'] / 1e6:.2f} MB/view")
    lifts = run_modes(args, tuple(args.lifts))
    figures["lifts"] = {LIFT_NAMES[k]: v for k, v in lifts.items()}
    for lift, modes in lifts.items():
        print(step_table(f"Paper-size student step, {LIFT_NAMES[lift]} lifts (batch {args.batch_size}, device "
                         f"{cfg.device}, {args.threads} torch thread(s); steps {args.warmup + 1}..{args.steps} of "
                         f"{args.rounds} interleaved run(s) per mode)", modes))
        print_bypass(modes)
    figures["ratios"] = paper_checks(lifts)
    print_paper_targets(figures["ratios"])

    C.log(f"loader at paper size: {args.loader_threads} read threads, {args.loader_rounds} rounds")
    figures["loader"] = P.loader_scaling(cfg, url=args.store, threads=args.loader_threads, rounds=args.loader_rounds)
    consumption = lifts[args.lifts[0]]["b"]["views_per_s"] if "b" in lifts[args.lifts[0]] else math.nan
    P.loader_table(figures["loader"], consumption=consumption, gpu_rate=args.gpu_views_per_s)
    if all(m in modes for modes in lifts.values() for m in "bd"):
        figures.update(ablation_cost.report(figures, None, runs=6, epochs=20, samples=ablation_cost.NUSCENES_TRAIN_SAMPLES,
                                            views_per_sample=cfg.export.views_per_sample))
    C.log("done")
    C.emit_json(figures)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    C.add_input_args(p)
    p.add_argument("--steps", type=int, default=16, help="training steps per run (demo: 24 per epoch)")
    p.add_argument("--warmup", type=int, default=3, help="first steps of each run left out of the figures")
    p.add_argument("--rounds", type=int, default=2, help="runs per mode, interleaved across modes")
    p.add_argument("--threads", type=int, default=1,
                   help="torch threads of each training run (default 1: on a shared 2-core machine, 2 OpenMP "
                        "threads stall at every op when another job holds a core)")
    p.add_argument("--modes", help="which modes to run, in this order (default abcd; --paper: abedt)")
    p.add_argument("--loader-rounds", type=int, default=3, help="interleaved rounds of the loader-rate test")
    paper = p.add_argument_group("paper size (--paper)")
    paper.add_argument("--paper", action="store_true", help="the nuscenes_swint config sizes on a 1600x900 world")
    paper.add_argument("--paper-teacher", type=Path, help="teacher checkpoint at paper size (default: random init)")
    paper.add_argument("--paper-dataroot", type=Path, help="an existing 1600x900 world (default: render one)")
    paper.add_argument("--paper-scenes", type=int, default=4, help="scenes of the rendered world (last one: val)")
    paper.add_argument("--paper-samples", type=int, default=6, help="key frames per scene of the rendered world")
    paper.add_argument("--lifts", default="false,true", help="model.shared_lift values to run (default both)")
    paper.add_argument("--loader-threads", default="1,2", help="read threads of the paper-size loader test")
    paper.add_argument("--gpu-views-per-s", type=float, default=3.1,
                       help="views/s a GPU student consumes, for the loader-cores figure (see docs/costs.md)")
    paper.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="config override (repeatable)")
    p.add_argument("--child", choices=list(MODES), help=argparse.SUPPRESS)
    p.add_argument("--out", type=Path, help=argparse.SUPPRESS)
    p.add_argument("--store", type=Path, help=argparse.SUPPRESS)
    p.add_argument("--lift", default="false", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        child(args)
        return
    args.modes = args.modes or ("abedt" if args.paper else "abcd")
    args.lifts = args.lifts.split(",") if args.paper else ["false"]
    args.loader_threads = [int(t) for t in args.loader_threads.split(",")]
    if args.smoke:
        args.steps, args.warmup, args.rounds, args.loader_rounds = 3, 1, 1, 1
        args.paper_scenes, args.paper_samples = 2, 3
    if args.steps <= args.warmup:
        C.fail(f"--steps {args.steps} must exceed --warmup {args.warmup}")
    if "t" in args.modes and not args.paper:
        C.fail("mode (t), the teacher alone, needs --paper")
    args.workdir.mkdir(parents=True, exist_ok=True)
    paper_main(args) if args.paper else demo_main(args)


if __name__ == "__main__":
    main()
