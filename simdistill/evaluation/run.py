"""Run a model over a split's test-time views, decode, score with the devkit, and draw the plots.

Commands call this after training (`evaluate_run`), or on a saved checkpoint (`evaluate_checkpoint`); the
trainers themselves never evaluate.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

from simdistill.config import (
    MODEL_KINDS,
    Config,
    TrainConfig,
    apply_overrides,
    config_from_dict,
    config_to_dict,
)
from simdistill.evaluation.devkit_eval import EvalResult, evaluate_submission
from simdistill.evaluation.submission import detections_to_submission
from simdistill.models import build_model
from simdistill.models.head import Detections
from simdistill.pipeline.augment import ViewBuilder
from simdistill.pipeline.sample import collate
from simdistill.pipeline.sources import DataSource, open_data_source
from simdistill.training.checkpoint import checkpoint_config, load_checkpoint
from simdistill.training.fit import StepHook
from simdistill.training.prefetch_thread import prefetch
from simdistill.training.runtime import resolve_device

N_BEV_PLOTS = 3


@torch.no_grad()
def predict_split(model: torch.nn.Module, cfg: Config, source: DataSource, *,
                  batch_size: int = 4) -> tuple[list[Detections], list]:
    """Decoded detections (LiDAR frame, on the CPU) and sample metadata for every sample of `source`, in order."""
    builder = ViewBuilder.for_config(source, cfg, train=False)
    device = next(model.parameters()).device
    is_teacher = getattr(model, "uses_lidar", False)
    was_training = model.training
    model.eval()

    def batches():  # noqa: ANN202
        for start in range(0, len(source), batch_size):
            idx = range(start, min(start + batch_size, len(source)))
            yield collate([builder.build(i, builder.test_params(i)) for i in idx])

    results: list[Detections] = []
    for batch in prefetch(batches):
        batch = batch.to(device)
        out = model(batch if is_teacher else batch.without_points())
        results += [det.cpu() for det in model.head.decode(out.heatmap, out.boxes)]
    model.train(was_training)
    metas = [source.sample_meta(i) for i in range(len(source))]
    return results, metas


def score_model(model: torch.nn.Module, cfg: Config, source: DataSource, out_dir: Path) -> tuple[EvalResult, list]:
    """Devkit metrics of `model` on the samples of `source` (submission and metrics JSON in out_dir), and its
    detections."""
    results, metas = predict_split(model, cfg, source)
    submission = detections_to_submission(results, metas, class_names=cfg.class_names)
    scenes = source.scene_names if getattr(source, "part", None) else None  # a dev carve-out of the split
    result = evaluate_submission(submission, dataroot=cfg.data.dataroot, version=cfg.data.version, split=source.split,
                                 out_dir=out_dir, scenes=scenes)
    return result, results


def learning_curve_hook(cfg: Config, run_dir: Path, *, every: int, split: str) -> StepHook:
    """A `fit` hook: every `every` steps, the devkit's mAP and NDS on `split` (run_dir/curve/step_N/) join the
    step's JSONL record as `val_mAP` and `val_NDS`, so a run yields a learning curve."""
    source = open_data_source(cfg.data, split)

    def run(step: int, model: torch.nn.Module) -> dict[str, float]:
        result, _ = score_model(model, cfg, source, Path(run_dir) / "curve" / f"step_{step}")
        return {"val_mAP": result.mAP, "val_NDS": result.NDS}

    return StepHook(every=every, run=run)


def curve_hooks(cfg: Config, train: TrainConfig, run_dir: Path) -> list[StepHook]:
    """The hooks a run of `train` (cfg.teacher_train or cfg.student_train) wants: a learning curve when its
    `eval_every` is set."""
    if train.eval_every <= 0:
        return []
    return [learning_curve_hook(cfg, run_dir, every=train.eval_every, split=cfg.data.eval_split)]


def evaluate_model(model: torch.nn.Module, cfg: Config, *, split: str, out_dir: Path,
                   log_path: Path | None = None) -> EvalResult:
    """Devkit metrics of `model` on `split`; writes submission, metrics, a table and PNGs into out_dir."""
    from simdistill.evaluation.plots import plot_bev_predictions, plot_loss_curves

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    source = open_data_source(cfg.data, split)
    result, results = score_model(model, cfg, source, out_dir)
    (out_dir / "metrics_table.txt").write_text(result.to_table() + "\n")
    for i in range(min(N_BEV_PLOTS, len(results))):
        sample = source.load(i)
        keep = results[i].scores >= 0.3
        plot_bev_predictions(results[i].boxes[keep].numpy(), sample.gt_boxes, out_dir / f"bev_{i}.png",
                             title=f"{source.tokens[i][:8]}: predictions (score ≥ 0.3) vs GT",
                             xbound=cfg.model.bev.xbound, ybound=cfg.model.bev.ybound)
    if log_path is not None and Path(log_path).exists():
        plot_loss_curves(Path(log_path), out_dir / "loss_curves.png")
    return result


def evaluate_run(model: torch.nn.Module, cfg: Config, run_dir: Path, *, split: str | None = None) -> dict[str, Any]:
    """After training: evaluate the run's model on `split` (default: data.eval_split) into run_dir/eval and write
    run_dir/metrics.json (with the split it scored)."""
    run_dir = Path(run_dir)
    split = split or cfg.data.eval_split
    result = evaluate_model(model, cfg, split=split, out_dir=run_dir / "eval", log_path=run_dir / "train_log.jsonl")
    metrics = {**result.to_dict(), "split": split}
    (run_dir / "metrics.json").write_text(json.dumps(metrics, indent=2))
    return metrics


def load_model_checkpoint(checkpoint: Path, overrides: list[str] | None = None) -> tuple[torch.nn.Module, Config]:
    """The model a checkpoint holds, on the device its config (with `overrides`) names."""
    payload = load_checkpoint(checkpoint, expect_kind=MODEL_KINDS)
    cfg = checkpoint_config(payload)
    if overrides:
        cfg = config_from_dict(apply_overrides(config_to_dict(cfg), overrides))
    model = build_model(payload["kind"], cfg.model, (cfg.augment.final_height, cfg.augment.final_width))
    model.load_state_dict(payload["model"])
    return model.to(resolve_device(cfg.device)), cfg


def evaluate_checkpoint(checkpoint: Path, *, out_dir: Path | None, split: str = "val",
                        overrides: list[str] | None = None) -> EvalResult:
    """`simdistill evaluate`: metrics JSON + table + BEV plots + loss curves (from the run's log if present)."""
    checkpoint = Path(checkpoint)
    model, cfg = load_model_checkpoint(checkpoint, overrides)
    out = Path(out_dir) if out_dir is not None else checkpoint.parent / f"eval_{split}"
    log = checkpoint.parent / "train_log.jsonl"
    result = evaluate_model(model, cfg, split=split, out_dir=out, log_path=log if log.exists() else None)
    (out / "metrics.json").write_text(json.dumps(result.to_dict(), indent=2))
    return result
