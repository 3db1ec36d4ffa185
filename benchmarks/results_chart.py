"""The results chart of the committed benchmark report: every seed per arm, mean ± std, the paired same-seed
differences against the baseline, and the paper's figures marked as the paper's.

    python benchmarks/results_chart.py            # benchmarks/results/reproduce.md -> benchmarks/results/results.png
    python benchmarks/results_chart.py --smoke    # the same, drawn to bench_work/results_smoke.png

It reads the run table of a `reproduce.py` report (`| row | seed | mAP | NDS | ...`), turns each line into a run
record {protocol, row, split, seed, mAP, NDS} and hands the records to
`simdistill.evaluation.results_chart.plot_results`, which anyone with records of their own can call directly.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import _common as C

REPORT = C.REPO / "benchmarks" / "results" / "reproduce.md"
PAPER_ROWS = {"teacher (LiDAR+camera)": "teacher", "baseline (GT only)": "baseline",
              "full SimDistill (cached)": "simdistill"}
"""Report row label → the row name the paper's figures are keyed by (evaluation.results_chart.PAPER_NUSCENES_VAL)."""


def report_records(path: Path, *, protocol: str) -> list[dict[str, Any]]:
    """The run records of a reproduce.py report's first table (the teacher's seed '-' becomes 0)."""
    lines = [line.strip() for line in path.read_text().splitlines()]
    start = next((i for i, line in enumerate(lines) if line.startswith("| row | seed | mAP | NDS")), None)
    if start is None:
        C.fail(f"{path} has no run table (a line starting '| row | seed | mAP | NDS'); pass a reproduce.py report")
    records = []
    for line in lines[start + 2:]:
        if not line.startswith("|"):
            break
        cells = [c.strip() for c in line.strip("|").split("|")]
        label = cells[0]
        records.append({"protocol": protocol, "row": PAPER_ROWS.get(label, label), "split": "val",
                        "seed": 0 if cells[1] == "-" else int(cells[1]), "mAP": float(cells[2]),
                        "NDS": float(cells[3])})
    return records


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--report", type=Path, default=REPORT, help="a reproduce.py report (default: the committed one)")
    p.add_argument("--out", type=Path, default=C.REPO / "benchmarks" / "results" / "results.png")
    p.add_argument("--protocol", default="bench config, 1200 steps", help="what the runs had in common")
    C.add_smoke_arg(p)
    args = p.parse_args()
    if args.smoke:
        args.out = C.DEFAULT_WORKDIR / "results_smoke.png"
    from simdistill.evaluation.results_chart import PAPER_NUSCENES_VAL, plot_results

    records = report_records(args.report, protocol=args.protocol)
    seeds = sorted({r["seed"] for r in records if r["row"] == "baseline"})
    title = (f"Synthetic benchmark ({args.report.name}): {len(seeds)} seed(s) per arm; "
             "diamonds: the paper on real nuScenes, for scale only")
    plot_results(records, args.out, paper=PAPER_NUSCENES_VAL, title=title)
    C.emit_json({"report": str(args.report), "png": str(args.out), "records": records})


if __name__ == "__main__":
    main()
