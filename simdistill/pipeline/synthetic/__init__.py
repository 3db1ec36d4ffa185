"""The synthetic nuScenes world: `make_demo_data(out_dir, world)` writes a v1.0 dataroot (DESIGN.md section 3)."""

from simdistill.pipeline.synthetic.generate import WorldSummary, make_demo_data

__all__ = ["WorldSummary", "make_demo_data"]
