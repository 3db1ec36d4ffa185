"""A student step's terms: the default config's loss as before bit for bit, the distillation weight schedule, and
channel standardisation with the teacher's σ_c."""

from __future__ import annotations

import pytest
import torch
from conftest import TINY_CONFIG
from helpers.fake_batch import make_fake_batch

from simdistill.config import DISTILL_LOSSES, WEIGHT_SCHEDULES, Config, load_config
from simdistill.errors import ConfigError
from simdistill.models import build_model
from simdistill.models.center_loss import gt_terms
from simdistill.models.head import fg_mask
from simdistill.student_train.distill_step import (
    DISTILL_FACTOR,
    TERM_KEYS,
    ChannelScales,
    TeacherTargets,
    depth_term,
    distill_factor,
    distill_terms,
)
from simdistill.student_train.losses import cmd_loss, imd_loss, mmd_f_loss, mmd_p_loss
from simdistill.training.optim import WARMUP_FRACTION, make_lr_schedule, make_optimizer


def _step(*overrides: str) -> tuple[Config, object, torch.nn.Module, object, TeacherTargets]:
    """The tiny student's outputs on a fake batch, with random teacher targets of the stored shapes."""
    cfg = load_config(TINY_CONFIG, list(overrides))
    torch.manual_seed(0)
    model = build_model("simdistill", cfg.model, (cfg.augment.final_height, cfg.augment.final_width))
    batch = make_fake_batch(cfg, 2, seed=3)
    with torch.no_grad():  # the values are under test here, not the gradients
        out = model(batch.without_points())
    gen = torch.Generator().manual_seed(1)

    def like(x: torch.Tensor, scale: float = 1.0) -> torch.Tensor:
        return torch.randn(x.shape, generator=gen) * scale

    targets = TeacherTargets(cam_bev=like(out.cam_bev, 3.0), lidar_bev=like(out.lidar_bev, 5.0),
                             fused_bev=like(out.fused_bev), heatmap=like(out.heatmap), boxes=like(out.boxes),
                             fg_mask=like(out.heatmap[:, 0]).abs())
    return cfg, out, model.head, batch, targets


@pytest.mark.parametrize("depth", [False, True])
def test_default_config_gives_the_loss_as_before(depth: bool) -> None:
    """With the new keys at their defaults, inside a run (a progress given) or not: the same terms and the same
    loss, bit for bit, as the sum written out with the loss functions' previous arguments."""
    cfg, out, head, batch, t = _step(f"student_train.depth_supervision={str(depth).lower()}")
    assert not cfg.distill.channel_standardization and cfg.distill.weight_schedule == "constant"
    d = cfg.distill
    gt, gt_targets = gt_terms(head, out.heatmap, out.boxes, batch.gt_boxes, batch.gt_labels)
    want = {
        "imd": imd_loss(out.cam_bev, t.cam_bev, weight=d.imd_weight),
        "cmd": cmd_loss(out.lidar_bev, t.lidar_bev, t.fg_mask, weight=d.cmd_weight),
        "mmd_f": mmd_f_loss(out.fused_bev, t.fused_bev, weight=d.mmd_f_weight),
        "mmd_p": mmd_p_loss(out.heatmap, t.heatmap, out.boxes, t.boxes, gt_targets.indices, gt_targets.mask,
                            code_weights=head.cfg.code_weights, heatmap_weight=d.mmd_p_heatmap_weight,
                            box_weight=d.mmd_p_box_weight, qfl_threshold=d.qfl_threshold)["total"],
    }
    depth_loss = depth_term(out, batch, cfg) if depth else gt["gt"].new_zeros(())
    loss = gt["gt"] + depth_loss + sum(want[name] for name in DISTILL_LOSSES)
    for progress in (None, 0.0, 0.63):
        terms = distill_terms(out, head, batch, t, cfg, progress=progress)
        assert set(terms) == set(TERM_KEYS)  # no distill_factor in the log of a constant schedule
        for name in DISTILL_LOSSES:
            assert torch.equal(terms[name], want[name]), name
        assert torch.equal(terms["depth"], depth_loss) and torch.equal(terms["loss"], loss)


def test_schedule_factors_at_given_progress() -> None:
    assert [distill_factor("constant", p) for p in (0.0, 0.5, 0.99)] == [1.0, 1.0, 1.0]
    assert [distill_factor("ramp_up", p) for p in (0.0, 0.1, 0.2, 0.4, 0.7)] == pytest.approx([0, 0.25, 0.5, 1, 1])
    assert [distill_factor("decay", p) for p in (0.0, 0.25, 0.9)] == pytest.approx([1.0, 0.75, 0.1])
    for name in WEIGHT_SCHEDULES:  # every value the config accepts has a factor
        assert 0.0 <= distill_factor(name, 0.5) <= 1.0
    with pytest.raises(ConfigError, match="weight_schedule 'cosine'.*constant, ramp_up, decay"):
        distill_factor("cosine", 0.5)
    with pytest.raises(ConfigError, match="weight_schedule 'cosine'"):
        load_config(TINY_CONFIG, ["distill.weight_schedule=cosine"])


def test_ramp_up_ends_where_the_lr_warm_up_does() -> None:
    """ramp_up reaches 1 at the step where the one-cycle LR peaks (one owner: WARMUP_FRACTION)."""
    total = 50
    opt = make_optimizer(torch.nn.Linear(2, 2), lr=1.0, weight_decay=0.0)
    schedule = make_lr_schedule(opt, lr=1.0, total_steps=total)
    lrs = []
    for _ in range(total):
        lrs.append(schedule.get_last_lr()[0])
        opt.step()
        schedule.step()
    peak = max(range(total), key=lambda s: lrs[s])
    assert abs(peak - WARMUP_FRACTION * total) <= 1
    assert distill_factor("ramp_up", (peak + 1) / total) == 1.0 and distill_factor("ramp_up", (peak - 2) / total) < 1


@pytest.mark.parametrize(("schedule", "progress", "factor"), [("decay", 0.25, 0.75), ("ramp_up", 0.1, 0.25)])
def test_a_schedule_scales_the_loss_and_logs_the_unscaled_terms(schedule: str, progress: float, factor: float) -> None:
    cfg, out, head, batch, t = _step(f"distill.weight_schedule={schedule}")
    plain = distill_terms(out, head, batch, t, load_config(TINY_CONFIG), progress=progress)
    terms = distill_terms(out, head, batch, t, cfg, progress=progress)
    assert float(terms[DISTILL_FACTOR]) == pytest.approx(factor)
    for name in ("gt", "depth", *DISTILL_LOSSES):
        assert torch.equal(terms[name], plain[name]), name  # logged unscaled
    distill = sum(plain[name] for name in DISTILL_LOSSES)
    assert float(distill) > 0
    assert float(terms["loss"]) == pytest.approx(float(plain["gt"] + factor * distill), rel=1e-6)
    assert distill_terms(out, head, batch, t, cfg, progress=None).keys() == plain.keys()  # outside a run: none


def test_standardised_terms_divide_by_the_teacher_variance() -> None:
    cfg, out, head, batch, t = _step("distill.channel_standardization=true")
    plain = distill_terms(out, head, batch, t, load_config(TINY_CONFIG))
    ch = cfg.model.channels
    sizes = {"cam_bev": ch.cam, "lidar_bev": ch.lidar, "fused_bev": ch.fused}
    ones = ChannelScales.from_std({a: [1.0] * c for a, c in sizes.items()}, torch.device("cpu"))
    same = distill_terms(out, head, batch, t, cfg, scales=ones)
    for name in ("imd", "cmd", "mmd_f", "mmd_p", "loss"):
        assert torch.equal(same[name], plain[name]), name
    twos = ChannelScales.from_std({a: [2.0] * c for a, c in sizes.items()}, torch.device("cpu"))
    quarter = distill_terms(out, head, batch, t, cfg, scales=twos)
    for name in ("imd", "cmd", "mmd_f"):
        assert float(quarter[name]) == pytest.approx(float(plain[name]) / 4, rel=1e-6), name
    assert torch.equal(quarter["mmd_p"], plain["mmd_p"])  # the prediction term is not a feature MSE
    first = torch.ones(ch.cam)
    first[0] = 0.5  # only channel 0 is re-weighted (×4)
    mixed = distill_terms(out, head, batch, t, cfg, scales=ChannelScales({**twos.std, "cam_bev": first}))
    err = (out.cam_bev.float() - t.cam_bev).pow(2).mean(dim=(0, 2, 3))  # [C] (equal-sized views)
    want = cfg.distill.imd_weight * float((err * torch.tensor([4.0] + [1.0] * (ch.cam - 1))).mean())
    assert float(mixed["imd"]) == pytest.approx(want, rel=1e-5)
    with pytest.raises(ConfigError, match="channel_standardization.*cam_bev.*simdistill store stats"):
        distill_terms(out, head, batch, t, cfg)
    only_p = load_config(TINY_CONFIG, ["distill.channel_standardization=true", "distill.losses=[mmd_p]"])
    assert torch.equal(distill_terms(out, head, batch, t, only_p)["mmd_p"], plain["mmd_p"])  # nothing to scale


def test_sigma_is_clamped_from_below() -> None:
    scales = ChannelScales.from_std({"cam_bev": [0.0, 1e-9, 1.0, 2.0, 3.0, 4.0], "fused_bev": [0.0, 0.0]},
                                    torch.device("cpu"))
    want = torch.tensor([2e-3, 2e-3, 1.0, 2.0, 3.0, 4.0])  # 1e-3 × the median positive σ, 2
    assert torch.allclose(scales.std["cam_bev"], want, rtol=1e-6, atol=0)
    assert torch.equal(scales.std["fused_bev"], torch.ones(2))  # no positive σ at all: no re-weighting


def test_foreground_normalisation_combines_with_standardisation() -> None:
    cfg, out, head, batch, t = _step("distill.channel_standardization=true", "distill.feature_normalization=foreground")
    ch = cfg.model.channels
    twos = ChannelScales.from_std({"cam_bev": [2.0] * ch.cam, "lidar_bev": [1.0] * ch.lidar,
                                   "fused_bev": [1.0] * ch.fused}, torch.device("cpu"))
    terms = distill_terms(out, head, batch, t, cfg, scales=twos)
    _, gt_targets = gt_terms(head, out.heatmap, out.boxes, batch.gt_boxes, batch.gt_labels)
    fg = fg_mask(gt_targets)
    want = imd_loss(out.cam_bev, t.cam_bev, weight=cfg.distill.imd_weight, fg_mask=fg) / 4
    assert float(terms["imd"]) == pytest.approx(float(want), rel=1e-6)
