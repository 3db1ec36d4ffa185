"""What does tapping an mmdet3d teacher cost? Measures and prints; never run in CI. Needs the mmdet3d extra.

    python benchmarks/tap_overhead.py                       # demo config, demo world at demo_work/data
    python benchmarks/tap_overhead.py --dataroot /tmp/sd/demo_data --views 8 --rounds 5 --threads 2

On the same views, interleaved over --rounds, with torch in inference mode:
  (raw)    the mmdet3d detector's own forward, `model(inputs, samples, mode="tensor")`, no hooks;
  (tapped) `TappedTeacher`: the same forward with forward hooks on vtransform / pts_middle_encoder /
           fusion_layer / bbox_head, the head output converted to simdistill's layout, shapes checked;
  (native) simdistill's own teacher of the same config, for scale.
The detector is `SimDistillCPUBEVFusion` built from `cpu_bevfusion_config(cfg)` with random weights (speed
does not depend on the weights). Prints ms per view (median over all views and rounds, the modes alternating view by view) and the
tap's overhead, with the spread of the per-view ratio tapped/raw.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import _common as C
import torch


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", type=Path, default=C.DEMO_CONFIG)
    parser.add_argument("--dataroot", type=Path, default=C.DEFAULT_DATAROOT)
    parser.add_argument("--views", type=int, default=8, help="views per round (one per forward, as export)")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--workdir", type=Path, default=C.DEFAULT_WORKDIR, help="--smoke makes its tiny world here")
    C.add_smoke_arg(parser)
    args = parser.parse_args()
    if args.smoke:
        args.config, args.views, args.rounds = C.TINY_CONFIG, 2, 1
        args.dataroot, _ = C.smoke_inputs(args.workdir)
    else:
        C.require_inputs(args.dataroot, None)
    try:
        from simdistill.interop import require_mmdet3d

        require_mmdet3d()
    except Exception as exc:  # noqa: BLE001 - report and exit like the other input checks
        C.fail(str(exc))
    torch.set_num_threads(args.threads)

    from mmdet3d.registry import MODELS
    from mmdet3d.structures import Det3DDataSample
    from mmengine.config import Config as MMConfig
    from mmengine.registry import init_default_scope

    from simdistill.config import load_config
    from simdistill.interop.bevfusion_inputs import batch_to_bevfusion_inputs
    from simdistill.interop.mmdet3d_cpu_bevfusion import cpu_bevfusion_config
    from simdistill.interop.tapped_teacher import TappedTeacher
    from simdistill.models import build_model
    from simdistill.pipeline.augment import ViewBuilder
    from simdistill.pipeline.sample import collate
    from simdistill.pipeline.sources import open_data_source

    cfg = load_config(args.config, [f"data.dataroot={args.dataroot}"])
    init_default_scope("mmdet3d")
    torch.manual_seed(0)
    detector = MODELS.build(MMConfig(cpu_bevfusion_config(cfg)).model).eval()
    tapped = TappedTeacher(detector, cfg.model).eval()
    native = build_model("teacher", cfg.model, (cfg.augment.final_height, cfg.augment.final_width)).eval()
    builder = ViewBuilder.for_config(open_data_source(cfg.data, "train"), cfg, train=False)
    batches = [collate([builder.build(i, builder.test_params(i))]) for i in range(args.views)]
    C.log(f"{args.views} views, {args.rounds} rounds, {args.threads} threads, config {args.config.name}")

    def raw(batch):  # noqa: ANN001, ANN202
        inputs, metas = batch_to_bevfusion_inputs(batch)
        return detector(inputs, [Det3DDataSample(metainfo=m) for m in metas], mode="tensor")

    modes = {"raw": raw, "tapped": tapped, "native": native}
    times: dict[str, list[float]] = {m: [] for m in modes}
    with torch.inference_mode():
        for fn in modes.values():
            fn(batches[0])  # warm-up
        for r in range(args.rounds):
            for batch in batches:  # modes alternate view by view, so load from other jobs falls on all alike
                for name, fn in modes.items():
                    t0 = time.perf_counter()
                    fn(batch)
                    times[name].append((time.perf_counter() - t0) * 1e3)
            C.log(f"round {r + 1}: " + ", ".join(
                f"{m} {statistics.median(times[m][-len(batches):]):.1f} ms" for m in modes))
    med = {m: statistics.median(v) for m, v in times.items()}
    overhead = med["tapped"] / med["raw"] - 1.0
    ratios = sorted(t / r for t, r in zip(times["tapped"], times["raw"]))
    q1, q3 = ratios[len(ratios) // 4], ratios[(3 * len(ratios)) // 4]
    print("| forward | ms / view (median) |\n|---|---|")
    for m in modes:
        print(f"| {m} | {med[m]:.1f} |")
    print(f"\ntap overhead (tapped / raw - 1): {overhead * 100:+.1f} % "
          f"(per-view ratio, quartiles {q1:.3f} .. {q3:.3f}, {len(ratios)} views)")
    print(json.dumps({"ms_per_view": med, "tap_overhead": overhead, "ratio_quartiles": [q1, q3], "views": args.views, "rounds": args.rounds,
                      "threads": args.threads, "config": str(args.config)}))


if __name__ == "__main__":
    sys.exit(main())
