"""Score a submission with the nuScenes devkit's own `DetectionEval` (detection_cvpr_2019 config).

The wrapper checks the submission against the split first (the devkit only asserts), silences the
devkit's printing and progress bars unless `verbose`, and returns an `EvalResult`.
"""

from __future__ import annotations

import contextlib
import io
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from simdistill.errors import DataError
from simdistill.pipeline.nuscenes_files import (
    check_split,
    load_nuscenes,
    split_sample_tokens,
)

TP_NAMES = {"trans_err": "mATE", "scale_err": "mASE", "orient_err": "mAOE", "vel_err": "mAVE", "attr_err": "mAAE"}


@dataclass
class EvalResult:
    """nuScenes detection metrics (per-class TP errors may be NaN where the devkit ignores them)."""

    mAP: float
    NDS: float
    mATE: float
    mASE: float
    mAOE: float
    mAVE: float
    mAAE: float
    class_ap: dict[str, float] = field(default_factory=dict)  # mean over the distance thresholds
    class_tp_errors: dict[str, dict[str, float]] = field(default_factory=dict)  # class -> {trans_err: ...}

    @classmethod
    def from_summary(cls, summary: dict[str, Any]) -> "EvalResult":
        """From the devkit's metrics_summary.json content."""
        tp = summary["tp_errors"]
        return cls(
            mAP=float(summary["mean_ap"]),
            NDS=float(summary["nd_score"]),
            **{short: float(tp[long]) for long, short in TP_NAMES.items()},
            class_ap={k: float(v) for k, v in summary["mean_dist_aps"].items()},
            class_tp_errors={
                c: {k: float(v) for k, v in errs.items()} for c, errs in summary["label_tp_errors"].items()
            },
        )

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe dict (NaN -> None)."""

        def clean(v: float) -> float | None:
            return None if math.isnan(v) else v

        out: dict[str, Any] = {k: clean(getattr(self, k)) for k in ("mAP", "NDS", *TP_NAMES.values())}
        out["class_ap"] = {c: clean(v) for c, v in self.class_ap.items()}
        out["class_tp_errors"] = {c: {k: clean(v) for k, v in e.items()} for c, e in self.class_tp_errors.items()}
        return out

    def to_table(self) -> str:
        """A rich-rendered text table: the summary line, then AP and TP errors per class."""
        from rich.console import Console
        from rich.table import Table

        table = Table(title=f"NDS {self.NDS:.4f}   mAP {self.mAP:.4f}")
        for col in ("class", "AP", "ATE", "ASE", "AOE", "AVE", "AAE"):
            table.add_column(col, justify="left" if col == "class" else "right")

        def fmt(v: float) -> str:
            return "-" if math.isnan(v) else f"{v:.3f}"

        for name, ap in self.class_ap.items():
            errs = self.class_tp_errors.get(name, {})
            table.add_row(name, fmt(ap), *(fmt(errs.get(k, math.nan)) for k in TP_NAMES))
        table.add_row("mean", fmt(self.mAP), *(fmt(getattr(self, short)) for short in TP_NAMES.values()), style="bold")
        console = Console(file=io.StringIO(), width=100, record=True, color_system=None)
        console.print(table)
        return console.export_text()


def check_submission(submission: dict[str, Any], split_tokens: list[str], split: str) -> None:
    """DataError unless the submission has meta and results for exactly the split's samples."""
    if not isinstance(submission, dict) or "results" not in submission or "meta" not in submission:
        raise DataError("submission must be a dict with 'meta' and 'results'; build it with detections_to_submission")
    have = set(submission["results"])
    missing = [t for t in split_tokens if t not in have]
    if missing:
        raise DataError(
            f"submission is missing {len(missing)} of the {len(split_tokens)} sample tokens of split '{split}' "
            f"(first: {missing[0]}); give every sample an entry, an empty list if it has no boxes"
        )
    extra = sorted(have - set(split_tokens))
    if extra:
        raise DataError(
            f"submission has {len(extra)} sample tokens outside split '{split}' (first: {extra[0]}); "
            "evaluate on the split the detections were made for"
        )


def _empty_summary() -> dict[str, Any]:
    """metrics_summary.json content for a submission without a single box."""
    from simdistill.config import CLASS_NAMES

    ones = {long: 1.0 for long in TP_NAMES}
    return {
        "mean_ap": 0.0,
        "nd_score": 0.0,
        "tp_errors": dict(ones),
        "mean_dist_aps": {c: 0.0 for c in CLASS_NAMES},
        "label_tp_errors": {c: dict(ones) for c in CLASS_NAMES},
        "note": "empty submission: no detections above the score threshold",
    }


CUSTOM_SPLIT = "simdistill_subset"
"""The name a scene subset (a dev carve-out) is scored under, as a devkit custom split."""


def _custom_split(scenes: list[str], out: Path) -> tuple[str, contextlib.AbstractContextManager]:
    """(eval_set, context) that make the devkit score `scenes` as a custom split. The devkit reads custom splits
    from DATAROOT/VERSION/splits.json; a user's dataroot may be read-only, so the file goes into `out` and the
    devkit's one look-up of its path (which it keeps separate so that it can be replaced) points there."""
    from unittest import mock

    path = out / "splits.json"
    path.write_text(json.dumps({CUSTOM_SPLIT: scenes}))
    return CUSTOM_SPLIT, mock.patch("nuscenes.utils.splits._get_custom_splits_file_path", return_value=str(path))


def evaluate_submission(
    submission: dict[str, Any],
    *,
    dataroot: str | Path,
    version: str,
    split: str,
    out_dir: str | Path,
    scenes: list[str] | None = None,
    verbose: bool = False,
) -> EvalResult:
    """Run the devkit's DetectionEval on `submission` for `split` (e.g. 'mini_val', 'val').

    `scenes`: score only these scenes of `split` (a dev carve-out), through the devkit's own custom-split path.
    Writes results_nusc.json, metrics_summary.json and metrics_details.json into `out_dir`.
    """
    from nuscenes.eval.common.config import config_factory
    from nuscenes.eval.detection.evaluate import DetectionEval

    check_split(version, split)
    nusc = load_nuscenes(dataroot, version)
    tokens = split_sample_tokens(nusc, split)
    if scenes is not None:
        chosen = set(scenes)
        tokens = [t for t in tokens if nusc.get("scene", nusc.get("sample", t)["scene_token"])["name"] in chosen]
    if not tokens:
        raise DataError(f"split '{split}' has no scenes in dataroot {dataroot}; evaluate on a split the data holds")
    check_submission(submission, tokens, split)

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    result_path = out / "results_nusc.json"
    result_path.write_text(json.dumps(submission))

    if not any(submission["results"].values()):
        # The devkit cannot evaluate an empty submission (it crashes looking up the first box's class); score it
        # as the devkit scores a class without detections: AP 0 and every TP error 1, hence NDS 0.
        summary = _empty_summary()
        (out / "metrics_summary.json").write_text(json.dumps(summary, indent=2))
        return EvalResult.from_summary(summary)

    sink = io.StringIO()
    quiet = contextlib.ExitStack()
    if not verbose:
        quiet.enter_context(contextlib.redirect_stdout(sink))
        quiet.enter_context(contextlib.redirect_stderr(sink))
    eval_set, custom = split, contextlib.nullcontext()
    if scenes is not None:
        eval_set, custom = _custom_split(sorted(scenes), out)
    with quiet, custom:
        evaluator = DetectionEval(
            nusc,
            config=config_factory("detection_cvpr_2019"),
            result_path=str(result_path),
            eval_set=eval_set,
            output_dir=str(out),
            verbose=verbose,
        )
        summary = evaluator.main(plot_examples=0, render_curves=False)
    return EvalResult.from_summary(summary)
