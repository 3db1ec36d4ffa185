"""Evaluation: LiDAR-frame detections -> nuScenes submission JSON -> the devkit's DetectionEval; plots.

Plots live in `simdistill.evaluation.plots` (imported on its own: it pulls in matplotlib).
"""

from simdistill.evaluation.devkit_eval import EvalResult, evaluate_submission
from simdistill.evaluation.submission import (
    Detections,
    attribute_for,
    detections_to_submission,
)

__all__ = ["Detections", "EvalResult", "attribute_for", "detections_to_submission", "evaluate_submission"]
