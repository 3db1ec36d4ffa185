"""Store size and loss fidelity at paper size with a trained teacher: bits per value of every store
setting, and every distillation loss on its targets against fp32 targets. Measures and prints; never run in CI.

    python benchmarks/store_paper.py --paper-teacher T.pt --paper-dataroot W --store S.zarr --views 6

The teacher is --paper-teacher (trained at the nuscenes_swint config sizes: random-init features compress
differently); --store is a lossless store it exported (step_time.py --paper leaves WORKDIR/paper_store.zarr),
exported here when absent. For the first --views views, each store setting of SETTINGS (a ladder: each rung changes
one thing) encodes the stored float16 arrays with the store's own codec chain (`codecs.array_codecs`, so the bytes
equal an export's) in an in-memory Zarr array, one view per chunk, and decodes them; every loss term is computed
on the decoded targets and on fp32 targets from the teacher run directly (as the online mode makes them), for
fixed student outputs: a random-init student, and the teacher's outputs plus 0.3 / 0.1 / 0.02 x std Gaussian
noise (a student whose MSE to the teacher is 9 % / 1 % / 0.04 % of the teacher's variance; lossy error weighs
more the closer the student is). Reported: max over views of |L(stored) / L(fp32) - 1| per term.
"""

from __future__ import annotations

import argparse
import copy
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import torch
import zarr
from zarr.storage import MemoryStore

import _common as C
import _paper as P

CF, CLF = ("cam_bev", "fused_bev"), ("cam_bev", "lidar_bev", "fused_bev")
SETTINGS: dict[str, dict[str, Any]] = {  # store_format fields; each rung changes one thing from the one before
    "lossless (default)": {},
    "bitround keepbits 7: cam, fused": {"lossy": True, "lossy_keepbits": 7},
    "8-bit codes per plane: cam, fused": {"quantize_bits": 8, "quantize_arrays": CF},
    "one step per view (0.02 std): cam, fused": {"quantize_bits": 16, "quantize_step": 0.02, "quantize_arrays": CF},
    "+ lidar_bev": {"quantize_bits": 16, "quantize_step": 0.02, "quantize_arrays": CLF},
    "+ heatmap": {"quantize_bits": 16, "quantize_step": 0.02, "quantize_arrays": (*CLF, "heatmap")},
    "step 0.05 std: cam, lidar, fused": {"quantize_bits": 16, "quantize_step": 0.05, "quantize_arrays": CLF},
    "step 0.01 std: cam, lidar, fused": {"quantize_bits": 16, "quantize_step": 0.01, "quantize_arrays": CLF},
}
NOISE = (0.3, 0.1, 0.02)


def roundtrip(name: str, x: np.ndarray, store_cfg: Any) -> tuple[np.ndarray, int]:
    """Encode one view's float16 array [1, ...] with the store's codec chain for `name`; (decoded, bytes)."""
    from simdistill.feature_store.codecs import array_codecs, quiet_numcodecs_warning

    store = MemoryStore()
    with quiet_numcodecs_warning():
        arr = zarr.create_array(store, shape=x.shape, dtype="float16", chunks=x.shape, fill_value=float("nan"),
                                **array_codecs(name, store_cfg))
        arr[:] = x
        back = arr[:]
    nbytes = sum(len(v) for k, v in store._store_dict.items() if k.startswith("c/"))
    return back, nbytes


def student_outputs(fp32: Any, student: torch.nn.Module, batch: Any, gen: torch.Generator) -> dict[str, Any]:
    from simdistill.models.outputs import BEVOutputs

    outputs = {"random-init student": student(batch.without_points())}
    for s in NOISE:
        outputs[f"teacher + {s:g} std"] = BEVOutputs(**{
            k: (t := getattr(fp32, k)) + s * t.std() * torch.randn(t.shape, generator=gen)
            for k in ("cam_bev", "lidar_bev", "fused_bev", "heatmap", "boxes")})
    return outputs


def measure(cfg: Any, *, teacher: Path, store: Path, n_views: int) -> dict[str, Any]:
    """Bytes per array and the worst relative loss change per setting / student output / term."""
    from simdistill.feature_store import open_store
    from simdistill.feature_store.schema import FEATURE_ARRAYS
    from simdistill.models import build_model
    from simdistill.pipeline.augment import ViewBuilder
    from simdistill.pipeline.sources import open_data_source
    from simdistill.student_train.distill_step import TeacherTargets, distill_terms
    from simdistill.student_train.target_sources import OnlineTeacher
    from simdistill.pipeline.view_plan import build_inputs

    cfg = copy.deepcopy(cfg)
    cfg.distill.losses = C.LOSS_TERMS
    online = OnlineTeacher(teacher, cfg, torch.device("cpu"))
    torch.manual_seed(cfg.seed)
    student = build_model("simdistill", cfg.model, (cfg.augment.final_height, cfg.augment.final_width)).eval()
    reader = open_store(str(store))
    from simdistill.student_train.target_sources import StoreTargets

    plan = StoreTargets(str(store), cfg, []).plan
    builder = ViewBuilder.for_config(open_data_source(cfg.data, "train"), cfg, train=True)
    gen = torch.Generator().manual_seed(cfg.seed)
    settings = {name: P.with_overrides(cfg, store_format=fields).store_format for name, fields in SETTINGS.items()}
    nbytes = {s: {a: 0 for a in FEATURE_ARRAYS} for s in settings}
    worst: dict[str, dict[str, dict[str, float]]] = {s: {} for s in settings}
    values = 0
    for v in range(n_views):
        C.log(f"view {v + 1}/{n_views}: teacher (fp32), student, {len(settings)} store settings")
        stored = {k: x.astype(np.float16) for k, x in reader.read_views([v], list(FEATURE_ARRAYS)).items()}
        values += sum(x.size for x in stored.values())
        batch = build_inputs(builder, plan, [v])
        with torch.no_grad():
            fp32 = online.targets(batch)
            outputs = student_outputs(fp32, student, batch, gen)
            refs = {kind: distill_terms(out, student.head, batch, fp32, cfg) for kind, out in outputs.items()}
            for s, store_cfg in settings.items():
                decoded = {}
                for a, x in stored.items():
                    decoded[a], b = roundtrip(a, x, store_cfg)
                    nbytes[s][a] += b
                targets = TeacherTargets.from_arrays({a: x.astype(np.float32) for a, x in decoded.items()},
                                                     torch.device("cpu"))
                for kind, out in outputs.items():
                    got = distill_terms(out, student.head, batch, targets, cfg)
                    row = worst[s].setdefault(kind, {})
                    for term in C.LOSS_TERMS:
                        rel = abs(float(got[term]) / float(refs[kind][term]) - 1.0)
                        row[term] = max(row.get(term, 0.0), rel)
    per_view_values = values / n_views
    return {s: {"bytes_per_view": sum(nbytes[s].values()) / n_views,
                "feature_bits_per_value": 8 * sum(nbytes[s].values()) / (per_view_values * n_views),
                "arrays_bits_per_value": {a: 8 * b / (stored[a].size * n_views) for a, b in nbytes[s].items()},
                "mode_fields": SETTINGS[s], "loss_rel_diff_max": worst[s]} for s in settings}


def summarize(results: dict[str, Any]) -> None:
    """Per-setting bits and worst loss change: over students down to 0.1 std noise, and at 0.02."""
    from simdistill.feature_store.schema import FEATURE_ARRAYS

    rows, prev = [], None
    for s, r in results.items():
        near = r["loss_rel_diff_max"]["teacher + 0.02 std"]
        far = [r["loss_rel_diff_max"][k] for k in r["loss_rel_diff_max"] if k != "teacher + 0.02 std"]
        r["worst_to_0.1"] = max(x[t] for x in far for t in C.LOSS_TERMS)
        r["worst_at_0.02"] = max(near.values())
        r["within_1pct_to_0.1"] = r["worst_to_0.1"] <= 0.01
        bits = r["feature_bits_per_value"]
        rows.append([s, bits, r["bytes_per_view"] / 1e6, prev / bits if prev else 1.0, 100 * r["worst_to_0.1"],
                     100 * r["worst_at_0.02"], "yes" if r["within_1pct_to_0.1"] and bits <= 4 else "no",
                     "yes" if r["within_1pct_to_0.1"] and bits <= 3 else "no"])
        prev = bits
    print(C.table("Store settings at paper size (ladder: each row changes one thing from the row above)",
                  ["setting", "bits/value", "MB/view", "x smaller than row above", "worst |dL| % (rand..0.1)",
                   "worst |dL| % (0.02)", "<=4 bits & 1%", "<=3 bits & 1%"], rows))
    print(C.table("Bits per value per array", ["setting", *FEATURE_ARRAYS],
                  [[s, *[r["arrays_bits_per_value"][a] for a in FEATURE_ARRAYS]] for s, r in results.items()]))
    rows = [[s, kind, *[100 * d[t] for t in C.LOSS_TERMS]] for s, r in results.items()
            for kind, d in r["loss_rel_diff_max"].items()]
    print(C.table("|L(stored) / L(fp32) - 1| in %, max over views", ["setting", "student output", *C.LOSS_TERMS],
                  rows))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--paper-teacher", type=Path, help="trained paper-size teacher (--smoke: random init)")
    p.add_argument("--paper-dataroot", type=Path, help="its 1600x900 world (default: render one into --workdir)")
    p.add_argument("--store", type=Path, help="a lossless store that teacher exported (default: export one)")
    p.add_argument("--workdir", type=Path, default=C.DEFAULT_WORKDIR, help="where a world / store are made")
    p.add_argument("--views", type=int, default=6, help="views measured")
    p.add_argument("--threads", type=int, default=1, help="torch threads")
    p.add_argument("--loader-threads", default="1,2", help="read threads of the loader test on --store")
    p.add_argument("--loader-rounds", type=int, default=3, help="interleaved rounds of the loader test")
    p.add_argument("--gpu-views-per-s", type=float, default=3.1, help="views/s a GPU student consumes (docs/costs.md)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="config override (repeatable)")
    C.add_smoke_arg(p)
    args = p.parse_args()
    if args.smoke:
        args.views, args.loader_rounds = 2, 1
    elif args.paper_teacher is None:
        C.fail("--paper-teacher is required (a teacher trained at the nuscenes_swint config sizes)")
    torch.set_num_threads(args.threads)
    args.workdir.mkdir(parents=True, exist_ok=True)
    root = args.paper_dataroot or P.paper_world(args.workdir, scenes=2, samples=3 if args.smoke else args.views,
                                                 smoke=args.smoke)
    cfg = P.paper_config(dataroot=root, smoke=args.smoke, threads=args.threads, overrides=args.set)
    teacher = P.teacher_checkpoint(cfg, source=args.paper_teacher, out=args.workdir / "store_paper_teacher.pt")
    store = args.store
    if store is None:
        store = args.workdir / "store_paper_lossless.zarr"
        shutil.rmtree(store, ignore_errors=True)
        C.log(f"exporting a lossless store to {store}")
        P.export_figures(cfg, teacher=teacher, url=store)
    results = measure(cfg, teacher=teacher, store=store, n_views=args.views)
    summarize(results)
    threads = [int(t) for t in args.loader_threads.split(",")]
    C.log(f"loader on {store}: {threads} read threads, {args.loader_rounds} rounds")
    loader = P.loader_scaling(cfg, url=store, threads=threads, rounds=args.loader_rounds)
    P.loader_table(loader, consumption=float("nan"), gpu_rate=args.gpu_views_per_s)
    C.emit_json({"machine": C.machine(), "teacher": str(args.paper_teacher or "random init (seed 0)"),
                 "store": str(store), "views": args.views, "noise": list(NOISE), "settings": results,
                 "loader": loader})


if __name__ == "__main__":
    main()
