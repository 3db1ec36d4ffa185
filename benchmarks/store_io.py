"""Feature-store I/O benchmark (docs/costs.md): store size, export overhead over the teacher forward, and
distillation losses on stored vs fp32 targets. Measures and prints; never run in CI.

    python benchmarks/store_io.py                                    # demo world + trained demo teacher
    python benchmarks/store_io.py --dataroot D --teacher T --workdir W --workers 2 --repeats 3 --paper-views 4

1. Demo size, in --repeats interleaved rounds (medians reported): the teacher forward alone (build inputs +
   forward + target encoding, no writes) as Dask tasks over the same view ranges, workers and threads as an
   export, then `export_teacher` of the demo train split lossless and lossy (`store_format.lossy=true`). Prints
   bytes per view and stored bits per value per array (`store_info`), write throughput and three ratios:
   END-TO-END (export wall / forward-alone wall, both incl. Dask cluster start-up), task-sum (export task
   walls / forward-alone task walls) and PER-TASK (each export task's wall / its own build + forward, from
   its TaskStats: does the writer thread overlap the compute?). With as many workers as cores, the writer
   threads' compression competes with the forwards for CPU, which the per-task ratio cannot see.
2. Losses on stored targets: for --loss-views views, every distillation term with fp32 targets from the
   teacher run directly (as the online mode makes them) vs targets read back from the lossless and lossy
   stores, for fixed student outputs (a random-init student, and the teacher's outputs plus noise).
3. Paper size: a RANDOM-INIT teacher at the nuscenes_swint config sizes exported on --paper-views views
   of a small synthetic world rendered at nuScenes' 1600x900 (so the paper's resize/crop to 256x704 applies
   unchanged; 1 LiDAR sweep); bytes per view and the size of a full nuScenes train export (28,130 samples).

Progress goes to stderr; stdout gets the tables and, as its last line, one JSON object of the figures.
"""

from __future__ import annotations

import argparse
import copy
import math
import shutil
import time
from pathlib import Path
from typing import Any

import _common as C
import _paper as P
import torch

NUSCENES_TRAIN_SAMPLES = P.NUSCENES_TRAIN_SAMPLES


def export_store(cfg: Any, *, teacher: Path, out: Path) -> tuple[Any, list[dict[str, Any]]]:
    """A fresh `export_teacher` run; returns its ExportReport and the per-task TaskStats (with worker pid)."""
    from simdistill.teacher_export.export import export_teacher

    shutil.rmtree(out, ignore_errors=True)
    report = export_teacher(cfg, checkpoint=teacher, out=str(out), progress=False)
    return report, report.tasks


def forward_alone(cfg: Any, *, teacher: Path) -> dict[str, Any]:
    """Forward-only Dask tasks over the export's view ranges, timed over the same scope as an export's wall."""
    from simdistill.cluster import dask_client
    from simdistill.config import config_to_dict
    from simdistill.pipeline.augment import ViewBuilder
    from simdistill.pipeline.sources import open_data_source
    from simdistill.pipeline.view_plan import plan_views

    plan = plan_views(cfg, ViewBuilder.for_config(open_data_source(cfg.data, "train"), cfg, train=True))
    k = cfg.export.views_per_task
    ranges = [list(range(s, min(s + k, plan.n_views))) for s in range(0, plan.n_views, k)]
    cfg_dict = config_to_dict(cfg)
    t0 = time.perf_counter()
    with dask_client(None, cfg.export.workers) as client:
        startup = time.perf_counter() - t0
        futures = [
            client.submit(C.forward_only_task, cfg_dict=cfg_dict, split_name=cfg.data.train_split,
                          checkpoint=str(teacher.resolve()), views=r, params=plan.params[r],
                          sample_index=plan.sample_index[r], pure=False, key=f"forward-{r[0]}-{r[-1]}")
            for r in ranges
        ]
        tasks = client.gather(futures)
    return {"wall_seconds": time.perf_counter() - t0, "startup_seconds": startup, "tasks": tasks}


def task_ratio(tasks: list[dict[str, Any]], num: str, den: tuple[str, ...], *, skip_first: bool) -> float:
    """Σ num / Σ den over tasks; skip_first drops each worker's first task (teacher + devkit loading)."""
    seen: set[int] = set()
    n = d = 0.0
    for t in tasks:  # in completion order; one thread per worker, so a pid's first line is its first task
        if skip_first and t["worker_pid"] not in seen:
            seen.add(t["worker_pid"])
            continue
        n += t[num]
        d += sum(t[x] for x in den)
    return C.ratio(n, d)


def sizes(url: Path) -> dict[str, Any]:
    from simdistill.feature_store import store_info
    from simdistill.feature_store.schema import FEATURE_ARRAYS

    info = store_info(str(url))
    arrays = {a.name: {"bytes_per_view": a.bytes_per_view, "bits_per_value": a.bits_per_value,
                       "values_per_view": a.values / max(info.n_done, 1)} for a in info.arrays}
    return {"mode": info.mode, "views": info.n_done, "arrays": arrays,
            "bytes_per_view": sum(a["bytes_per_view"] for a in arrays.values()),
            "feature_bits_per_value": info.feature_bits_per_value,
            "feature_values_per_view": sum(a.values for a in info.arrays if a.name in FEATURE_ARRAYS)
            / max(info.n_done, 1)}


def size_table(title: str, runs: dict[str, dict[str, Any]]) -> str:
    """Bytes per view and stored bits per value per float16 array; the small int/float32 arrays as one row."""
    from simdistill.feature_store.schema import FEATURE_ARRAYS

    headers = ["array"] + [f"{m} {c}" for m in runs for c in ("B/view", "bits/val")]
    rows = [[n] + [x for r in runs.values() for x in (round(r["arrays"][n]["bytes_per_view"]),
                                                        r["arrays"][n]["bits_per_value"])] for n in FEATURE_ARRAYS]
    meta = [n for n in next(iter(runs.values()))["arrays"] if n not in FEATURE_ARRAYS]
    rows.append(["+".join(meta)] + [x for r in runs.values()
                                    for x in (round(sum(r["arrays"][n]["bytes_per_view"] for n in meta)), math.nan)])
    rows.append(["all arrays (bits: float16 features)"] + [x for r in runs.values() for x in (
        round(r["bytes_per_view"]), r["feature_bits_per_value"])])
    return C.table(title, headers, rows)


# -------------------------------------------------------------------------------------------------
def export_figures(report: Any, tasks: list[dict[str, Any]], fwd: dict[str, Any]) -> dict[str, float]:
    cost = ("build_seconds", "forward_seconds")
    return {
        "wall_seconds": report.wall_seconds,
        "forward_alone_wall_seconds": fwd["wall_seconds"],
        "forward_alone_startup_seconds": fwd["startup_seconds"],
        "end_to_end_ratio": C.ratio(report.wall_seconds, fwd["wall_seconds"]),
        "task_sum_ratio_vs_forward_alone": C.ratio(sum(t["wall_seconds"] for t in tasks),
                                                   sum(t["wall_seconds"] for t in fwd["tasks"])),
        "per_task_overlap_ratio": task_ratio(tasks, "wall_seconds", cost, skip_first=False),
        "per_task_overlap_ratio_warm": task_ratio(tasks, "wall_seconds", cost, skip_first=True),
        "forward_alone_task_ratio_warm": task_ratio(fwd["tasks"], "wall_seconds", cost, skip_first=True),
        "compute_inflation": C.ratio(sum(t[k] for t in tasks for k in cost),  # writer threads taking CPU from it
                                     sum(t[k] for t in fwd["tasks"] for k in cost)),
        "bytes_written": report.bytes_written,
        "MB_per_s_wall": report.bytes_written / 1e6 / report.wall_seconds,
        "MB_per_s_writer": report.bytes_written / 1e6 / max(report.write_seconds, 1e-9),
        "write_seconds": report.write_seconds,
    }


def demo_exports(cfg: Any, *, teacher: Path, workdir: Path, repeats: int) -> tuple[dict[str, Any], dict[str, Any]]:
    """Rounds of (forward alone, lossless export, lossy export), so each export sits next to its baseline."""
    rounds: dict[str, list[dict[str, float]]] = {"lossless": [], "lossy": []}
    runs: dict[str, dict[str, Any]] = {}
    for r in range(repeats):
        C.log(f"demo round {r + 1}/{repeats}: teacher forward alone, {cfg.export.workers} Dask workers")
        fwd = forward_alone(cfg, teacher=teacher)
        for mode, per_round in rounds.items():
            mcfg = copy.deepcopy(cfg)
            mcfg.store_format.lossy = mode == "lossy"
            C.log(f"demo round {r + 1}/{repeats}: export-teacher, {mode}")
            url = workdir / f"demo_{mode}.zarr"
            report, tasks = export_store(mcfg, teacher=teacher, out=url)
            per_round.append(export_figures(report, tasks, fwd))
            runs[mode] = sizes(url)
    exports = {m: {"median": {k: C.summarize([x[k] for x in rs])["median"] for k in rs[0]}, "rounds": rs}
               for m, rs in rounds.items()}
    return runs, exports


# -------------------------------------------------------------------------------------------------
def _near(t: torch.Tensor, scale: float, gen: torch.Generator) -> torch.Tensor:
    """t + scale * std(t) * N(0, 1): a fixed student output whose MSE to t is scale² var(t)."""
    return t + scale * t.std() * torch.randn(t.shape, generator=gen)


def loss_check(cfg: Any, *, teacher: Path, stores: dict[str, Path], n_views: int,
               noise: tuple[float, ...]) -> dict[str, dict[str, dict[str, float]]]:
    """max over batches of |L(stored targets) / L(fp32 targets) - 1| per term, per student output, per store."""
    from simdistill.feature_store import open_store
    from simdistill.models import build_model
    from simdistill.models.outputs import BEVOutputs
    from simdistill.pipeline.augment import ViewBuilder
    from simdistill.pipeline.sample import collate
    from simdistill.pipeline.sources import open_data_source
    from simdistill.student_train.distill_step import (
        TeacherTargets,
        arrays_needed,
        distill_terms,
    )
    from simdistill.student_train.target_sources import OnlineTeacher

    cfg = copy.deepcopy(cfg)
    cfg.distill.losses = C.LOSS_TERMS
    device = torch.device("cpu")
    online = OnlineTeacher(teacher, cfg, device)  # fp32 targets exactly as the online-teacher mode makes them
    torch.manual_seed(cfg.seed)
    student = build_model("simdistill", cfg.model, (cfg.augment.final_height, cfg.augment.final_width)).eval()
    readers = {name: open_store(str(url)) for name, url in stores.items()}
    meta = next(iter(readers.values())).read_views(list(range(n_views)), ["aug", "sample_index"])
    builder = ViewBuilder.for_config(open_data_source(cfg.data, "train"), cfg, train=True)
    arrays = arrays_needed(C.LOSS_TERMS)
    gen = torch.Generator().manual_seed(cfg.seed)
    worst: dict[str, dict[str, dict[str, float]]] = {}
    for start in range(0, n_views, cfg.student_train.batch_size):
        views = list(range(start, min(start + cfg.student_train.batch_size, n_views)))
        batch = collate([builder.build(int(meta["sample_index"][v]), meta["aug"][v]) for v in views])
        with torch.no_grad():
            fp32 = online.targets(batch)
            outputs = {"random-init student": student(batch.without_points())}
            for s in noise:  # a student that already sits close to the teacher: the hardest case for rounding
                outputs[f"teacher + {s:g} std noise"] = BEVOutputs(
                    **{k: _near(getattr(fp32, k), s, gen) for k in ("cam_bev", "lidar_bev", "fused_bev", "heatmap",
                                                                     "boxes")})
            stored = {name: TeacherTargets.from_arrays(r.read_views(views, arrays), device)
                      for name, r in readers.items()}
            for kind, out in outputs.items():
                ref = distill_terms(out, student.head, batch, fp32, cfg)
                for name, tgt in stored.items():
                    got = distill_terms(out, student.head, batch, tgt, cfg)
                    row = worst.setdefault(kind, {}).setdefault(name, {})
                    for term in C.LOSS_TERMS:
                        rel = abs(float(got[term]) / float(ref[term]) - 1.0)
                        row[term] = max(row.get(term, 0.0), rel)
    return worst


# -------------------------------------------------------------------------------------------------
def paper_size(workdir: Path, *, samples: int, smoke: bool) -> dict[str, Any]:
    from simdistill.config import load_config
    from simdistill.models import build_model
    from simdistill.training.checkpoint import save_checkpoint

    root = P.paper_world(workdir, scenes=2, samples=samples, smoke=smoke)  # 1 train scene
    cfg = load_config(C.TINY_CONFIG if smoke else C.PAPER_CONFIG, [
        "device=cpu", f"data.dataroot={root}", "data.version=v1.0-mini", "data.train_split=mini_train",
        "data.val_split=mini_val", "data.sweeps=1", "export.workers=1", f"export.views_per_task={samples}"])
    torch.manual_seed(cfg.seed)
    teacher = build_model("teacher", cfg.model, (cfg.augment.final_height, cfg.augment.final_width))
    ckpt = workdir / "paper_teacher_random_init.pt"
    save_checkpoint(ckpt, kind="teacher", cfg=cfg, model=teacher)
    del teacher
    out: dict[str, Any] = {"samples": samples, "teacher": "random init (seed 0)", "world": "1600x900, 1 sweep"}
    for mode in ("lossless", "lossy"):
        mcfg = copy.deepcopy(cfg)
        mcfg.store_format.lossy = mode == "lossy"
        url = workdir / f"paper_{mode}.zarr"
        C.log(f"paper: exporting {samples} views at paper size, {mode}")
        report, _ = export_store(mcfg, teacher=ckpt, out=url)
        s = sizes(url)
        s["export_views_per_second"] = report.views_per_second  # incl. cluster start-up and teacher loading
        s["export_MB_per_s"] = report.bytes_written / 1e6 / report.wall_seconds
        s["full_train_GB"] = s["bytes_per_view"] * NUSCENES_TRAIN_SAMPLES / 1e9
        out[mode] = s
    ckpt.unlink(missing_ok=True)  # 180 MB of random weights
    return out


# -------------------------------------------------------------------------------------------------
def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    C.add_input_args(p)
    p.add_argument("--workers", type=int, default=2, help="export Dask workers (1 thread each)")
    p.add_argument("--loss-views", type=int, default=8, help="views for the stored-vs-fp32 loss check")
    p.add_argument("--noise", type=float, nargs="*", default=[0.1, 0.02],
                   help="near-teacher student outputs: teacher + this × std Gaussian noise")
    p.add_argument("--repeats", type=int, default=2,
                   help="interleaved rounds of (forward alone, lossless export, lossy export); medians reported")
    p.add_argument("--paper-views", type=int, default=4, help="views exported at paper size (0 = skip)")
    args = p.parse_args()
    if args.smoke:
        args.workers, args.repeats, args.loss_views, args.paper_views = 1, 1, 2, min(args.paper_views, 2)
    args.workdir.mkdir(parents=True, exist_ok=True)
    C.resolve_inputs(args)
    cfg = C.demo_config(args, [f"export.workers={args.workers}"])
    figures: dict[str, Any] = {"machine": C.machine()}

    runs, exports = demo_exports(cfg, teacher=args.teacher, workdir=args.workdir, repeats=args.repeats)
    figures["demo_sizes"] = runs
    figures["demo_export"] = exports
    print(size_table(f"Demo store, trained demo teacher, {runs['lossless']['views']} views (bytes per view, "
                     "stored bits per value)", runs))
    rows = [[label] + [exports[m]["median"][key] for m in exports] for label, key in (
        ("export wall [s] (incl. cluster start-up)", "wall_seconds"),
        ("forward alone wall [s] (same scope)", "forward_alone_wall_seconds"),
        ("  of which cluster start-up [s]", "forward_alone_startup_seconds"),
        ("END-TO-END ratio export / forward alone", "end_to_end_ratio"),
        ("task-sum ratio export / forward-alone tasks", "task_sum_ratio_vs_forward_alone"),
        ("PER-TASK ratio wall / (build+forward)", "per_task_overlap_ratio"),
        ("  same, each worker's first task dropped", "per_task_overlap_ratio_warm"),
        ("  forward-alone tasks: wall / (build+forward)", "forward_alone_task_ratio_warm"),
        ("export (build+forward) / forward-alone (build+forward)", "compute_inflation"),
        ("writer thread busy [s] (summed)", "write_seconds"),
        ("write throughput MB/s (bytes / export wall)", "MB_per_s_wall"),
        ("write throughput MB/s (bytes / writer busy)", "MB_per_s_writer"))]
    print(C.table(f"Export vs teacher forward alone (target <= 1.10x): median of {args.repeats} interleaved "
                  f"rounds, {args.workers} workers x 1 thread, {runs['lossless']['views']} views",
                  ["figure"] + list(exports), rows))

    C.log(f"losses: stored vs fp32 targets on {args.loss_views} views")
    losses = loss_check(cfg, teacher=args.teacher, n_views=args.loss_views, noise=tuple(args.noise),
                        stores={m: args.workdir / f"demo_{m}.zarr" for m in runs})
    figures["loss_rel_diff_max"] = losses
    rows = [[kind, store] + [losses[kind][store][t] * 100 for t in C.LOSS_TERMS]
            for kind in losses for store in losses[kind]]
    print(C.table(f"|L(stored) / L(fp32) - 1| in %, max over batches of {cfg.student_train.batch_size} "
                  f"({args.loss_views} views; target < 1 %)", ["student output", "store", *C.LOSS_TERMS], rows))

    if args.paper_views > 0:
        paper = paper_size(args.workdir, samples=args.paper_views, smoke=args.smoke)
        figures["paper"] = paper
        print(size_table(f"Paper size (nuscenes_swint: 180x180, 80/256/256 ch), RANDOM-INIT teacher, "
                         f"{paper['samples']} views", {m: paper[m] for m in ("lossless", "lossy")}))
        rows = []
        for m in ("lossless", "lossy"):
            vals = paper[m]["feature_values_per_view"]
            trained = runs[m]["feature_bits_per_value"] * vals / 8  # demo-trained bits/value at paper counts
            paper[m]["trained_demo_bits_extrapolated_GB"] = trained * NUSCENES_TRAIN_SAMPLES / 1e9
            rows.append([m, paper[m]["bytes_per_view"] / 1e6, paper[m]["feature_bits_per_value"],
                         paper[m]["full_train_GB"], trained / 1e6, paper[m]["trained_demo_bits_extrapolated_GB"]])
        fp32_mb = 4 * paper["lossless"]["feature_values_per_view"] / 1e6
        print(C.table(f"Full nuScenes train export ({NUSCENES_TRAIN_SAMPLES:,} samples x 1 view); fp32 raw = "
                      f"{fp32_mb:.1f} MB/view = {fp32_mb * NUSCENES_TRAIN_SAMPLES / 1e3:,.0f} GB",
                      ["mode", "random-init MB/view", "bits/val", "random-init GB",
                       "demo-trained bits -> MB/view", "-> GB"], rows))
        print("note: random-init features are small and smooth (heatmap logits ~constant) and compress differently "
              "from a trained teacher's; the last two columns apply the trained demo teacher's bits/value instead.")
    C.log("done")
    C.emit_json(figures)


if __name__ == "__main__":
    main()
