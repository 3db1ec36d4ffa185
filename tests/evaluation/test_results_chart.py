"""The results chart takes plain run records and draws seeds, mean ± std, paired differences and the paper."""

from __future__ import annotations

from pathlib import Path

import pytest

from simdistill.errors import DataError
from simdistill.evaluation.results_chart import PAPER_NUSCENES_VAL, plot_results


def _records() -> list[dict]:
    out = [{"protocol": "p", "row": "teacher", "split": "val", "seed": 0, "mAP": 0.5, "NDS": 0.5}]
    for seed in (0, 1, 2):
        out.append({"protocol": "p", "row": "baseline", "split": "val", "seed": seed, "mAP": 0.2 + seed / 100,
                    "NDS": 0.3})
        out.append({"protocol": "p", "row": "simdistill", "split": "val", "seed": seed, "mAP": 0.21, "NDS": 0.31})
    out.append({"protocol": "q", "row": "baseline", "split": "val", "seed": 0, "mAP": 0.1, "NDS": 0.2})
    return out


def test_results_chart_writes_a_png(tmp_path: Path) -> None:
    png = plot_results(_records(), tmp_path / "results.png", paper=PAPER_NUSCENES_VAL, title="t")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 10_000


def test_results_chart_names_a_bad_record(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="lacks seed"):
        plot_results([{"protocol": "p", "row": "baseline", "split": "val", "mAP": 0.1, "NDS": 0.2}],
                     tmp_path / "x.png")
    with pytest.raises(DataError, match="no run records"):
        plot_results([], tmp_path / "x.png")
