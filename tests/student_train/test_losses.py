"""Losses against hand computations, per-view normalisation, gradient routing and shape validation."""

from __future__ import annotations

import math

import pytest
import torch

from simdistill.student_train.losses import (
    cmd_loss,
    gt_loss,
    imd_loss,
    mmd_f_loss,
    mmd_p_loss,
)

CODE_WEIGHTS = (1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 0.2, 0.2)
LN2 = math.log(2.0)


def sig(x: float) -> float:
    return 1.0 / (1.0 + math.exp(-x))


def focal(logit: float, target: float) -> float:
    """CenterNet focal loss of one cell, written out (alpha 2, gamma 4, clamped sigmoid)."""
    p = min(max(sig(logit), 1e-4), 1 - 1e-4)
    if target == 1:
        return -math.log(p) * (1 - p) ** 2
    return -math.log(1 - p) * p**2 * (1 - target) ** 4


def gt_inputs() -> dict[str, torch.Tensor]:
    """2 views, 2 tasks of one class each, a 1x2 map, K = 2 slots."""
    pred_heatmap = torch.tensor([[[[0.0, 0.0]], [[0.0, 0.0]]], [[[2.0, -2.0]], [[0.0, 0.0]]]])
    targets_heatmap = torch.tensor([[[[1.0, 0.5]], [[0.0, 0.0]]], [[[1.0, 1.0]], [[0.5, 1.0]]]])
    pred_boxes = torch.zeros(2, 2, 10, 1, 2)
    pred_boxes[0, 0] = 1.0
    pred_boxes[0, 1] = 5.0  # task without objects: never read
    pred_boxes[1, 0, :, 0, 0], pred_boxes[1, 0, :, 0, 1] = 0.5, 1.0
    pred_boxes[1, 1, :, 0, 0], pred_boxes[1, 1, :, 0, 1] = 0.5, 9.0
    indices = torch.tensor([[[1, 0], [0, 0]], [[0, 1], [0, 0]]])
    mask = torch.tensor([[[True, False], [False, False]], [[True, True], [True, False]]])
    box_targets = torch.zeros(2, 2, 2, 10)
    box_targets[0, 0, 1] = float("nan")  # padded slot: ignored
    box_targets[1, 0, 1] = 1.0
    box_targets[1, 1, 0] = 2.0
    return dict(pred_heatmap=pred_heatmap, pred_boxes=pred_boxes, targets_heatmap=targets_heatmap,
                indices=indices, box_targets=box_targets, mask=mask)


def test_gt_loss_hand_computation() -> None:
    out = gt_loss(**gt_inputs(), code_weights=CODE_WEIGHTS, bbox_weight=0.25, task_sizes=[1, 1])
    # view 0: task 0 = (0.25 ln2 + ln2 / 64) / 1 peak; task 1 has no peak: 2 * 0.25 ln2 / max(1, 0)
    view0 = LN2 * (0.25 + 1 / 64) + 0.5 * LN2
    assert focal(0, 1) + focal(0, 0.5) == pytest.approx(LN2 * (0.25 + 1 / 64))
    # view 1: task 0 has 2 peaks; task 1 has 1
    view1 = (focal(2, 1) + focal(-2, 1)) / 2 + (focal(0, 0.5) + focal(0, 1)) / 1
    assert out["heatmap"].item() == pytest.approx((view0 + view1) / 2, rel=1e-5)
    # code-weighted sum of a unit difference: 8 * 1 + 2 * 0.2 = 8.4
    bbox0 = 0.25 * (8.4 * 1.0 / 1)  # task 0: |1 - 0| over one object
    bbox1 = 0.25 * ((8.4 * 0.5 + 0.0) / 2 + 8.4 * 1.5 / 1)  # task 0: two objects; task 1: |0.5 - 2|
    assert out["bbox"].item() == pytest.approx((bbox0 + bbox1) / 2, rel=1e-6)
    assert out["total"].item() == pytest.approx(out["heatmap"].item() + out["bbox"].item())


def test_gt_loss_default_tasks_and_task_size_errors() -> None:
    heat = torch.zeros(1, 10, 2, 2)
    boxes = torch.zeros(1, 6, 10, 2, 2)
    idx, mask = torch.zeros(1, 6, 3, dtype=torch.long), torch.zeros(1, 6, 3, dtype=torch.bool)
    out = gt_loss(heat, boxes, heat, idx, torch.zeros(1, 6, 3, 10), mask, code_weights=CODE_WEIGHTS)
    # every channel: 4 cells of -ln(0.5) * 0.25; 6 tasks without peaks -> sum over all 10 channels
    assert out["heatmap"].item() == pytest.approx(10 * 4 * 0.25 * LN2, rel=1e-6)
    with pytest.raises(ValueError, match="task sizes"):
        gt_loss(heat[:, :4], boxes, heat[:, :4], idx, torch.zeros(1, 6, 3, 10), mask, code_weights=CODE_WEIGHTS)


def test_imd_cmd_mmd_f_hand_computation() -> None:
    s = torch.tensor([[[[1.0, 2.0], [3.0, 4.0]]]])
    t = torch.ones(1, 1, 2, 2)
    assert imd_loss(s, t).item() == pytest.approx((0 + 1 + 4 + 9) / 4)
    assert mmd_f_loss(s, t, weight=2.0).item() == pytest.approx(2 * 14 / 4)
    s2 = torch.tensor([[[[1.0, 2.0]], [[3.0, 4.0]]]])  # [1, 2, 1, 2]
    m = torch.tensor([[[0.5, 0.0]]])  # [1, 1, 2]
    # masked: [[0.5, 0], [1.5, 0]] vs 0 -> (0.25 + 2.25) / 4 elements * 100
    assert cmd_loss(s2, torch.zeros_like(s2), m).item() == pytest.approx(62.5)
    assert cmd_loss(s2, torch.zeros_like(s2), m[:, None]).item() == pytest.approx(62.5)


def test_cmd_is_blind_to_background() -> None:
    gen = torch.Generator().manual_seed(0)
    s, t = torch.randn(2, 4, 5, 6, generator=gen), torch.randn(2, 4, 5, 6, generator=gen)
    mask = torch.rand(2, 5, 6, generator=gen) * 1.5
    mask[:, :2] = 0.0
    ref = cmd_loss(s, t, mask)
    s2, t2 = s.clone(), t.clone()
    s2[:, :, :2] += 100.0
    t2[:, :, :2] = torch.randn(2, 4, 2, 6, generator=gen)
    torch.testing.assert_close(cmd_loss(s2, t2, mask), ref)
    s2[:, :, 3] += 1.0  # foreground changes do count
    assert cmd_loss(s2, t2, mask) != ref


def test_mmd_p_hand_computation() -> None:
    s_logits, t_logits = [0.0, 1.0, -1.0], [0.0, -10.0, 2.0]
    s_heat = torch.tensor(s_logits).view(1, 1, 1, 3)
    t_heat = torch.tensor(t_logits).view(1, 1, 1, 3)
    diff = torch.tensor([1.0, 0.05, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.5, -2.0])
    s_boxes = torch.zeros(1, 1, 10, 1, 3)
    s_boxes[0, 0, :, 0, 2] = diff
    s_boxes[0, 0, :, 0, 0] = 7.0  # padded slot's cell: ignored
    t_boxes = torch.zeros(1, 1, 10, 1, 3)
    indices, mask = torch.tensor([[[2, 0]]]), torch.tensor([[[True, False]]])
    out = mmd_p_loss(s_heat, t_heat, s_boxes, t_boxes, indices, mask, code_weights=CODE_WEIGHTS)

    qfl = 0.0
    for s, tl in zip(s_logits, t_logits):
        t, p = sig(tl), sig(s)
        qfl += -(t * math.log(p) + (1 - t) * math.log(1 - p)) * (p - t) ** 2
    positives = 2  # sigmoid(0) = 0.5 and sigmoid(2) = 0.88 exceed 0.1; sigmoid(-10) does not
    assert out["heatmap"].item() == pytest.approx(0.25 * qfl / positives, rel=1e-5)
    beta = 1 / 9
    # SmoothL1: 1.0 -> 1 - beta/2; 0.05 -> 0.5 * 0.05^2 / beta; 0.5 and -2.0 (weight 0.2) -> |x| - beta/2
    box = (1 - beta / 2) + 0.5 * 0.05**2 / beta + 0.2 * (0.5 - beta / 2) + 0.2 * (2.0 - beta / 2)
    assert box == pytest.approx(1.433472, abs=1e-6)
    assert out["bbox"].item() == pytest.approx(0.25 * box / 1, rel=1e-5)
    assert out["total"].item() == pytest.approx(out["heatmap"].item() + out["bbox"].item())


def test_mmd_p_accepts_gathered_teacher_boxes_and_ignores_padding() -> None:
    gen = torch.Generator().manual_seed(1)
    s_heat, t_heat = torch.randn(2, 10, 4, 5, generator=gen), torch.randn(2, 10, 4, 5, generator=gen)
    s_boxes, t_boxes = torch.randn(2, 6, 10, 4, 5, generator=gen), torch.randn(2, 6, 10, 4, 5, generator=gen)
    indices = torch.randint(0, 20, (2, 6, 3), generator=gen)
    mask = torch.rand(2, 6, 3, generator=gen) > 0.5
    full = mmd_p_loss(s_heat, t_heat, s_boxes, t_boxes, indices, mask, code_weights=CODE_WEIGHTS)
    gathered = t_boxes.flatten(3).gather(3, indices[:, :, None].expand(-1, -1, 10, -1)).transpose(2, 3)
    gathered[~mask] = float("nan")  # a compact store's padding
    compact = mmd_p_loss(s_heat, t_heat, s_boxes, gathered, indices, mask, code_weights=CODE_WEIGHTS)
    for key in ("heatmap", "bbox", "total"):
        torch.testing.assert_close(compact[key], full[key])


def _views(gen: torch.Generator) -> list[dict[str, torch.Tensor]]:
    """Two single views with different object / positive counts."""
    views = []
    for n_obj in (1, 3):
        mask = torch.zeros(1, 6, 4, dtype=torch.bool)
        mask[0, 0, :n_obj] = True
        views.append(dict(
            s_heat=torch.randn(1, 10, 4, 5, generator=gen), t_heat=torch.randn(1, 10, 4, 5, generator=gen) * n_obj,
            s_boxes=torch.randn(1, 6, 10, 4, 5, generator=gen), t_boxes=torch.randn(1, 6, 10, 4, 5, generator=gen),
            target=(torch.rand(1, 10, 4, 5, generator=gen) > 0.9).float(),
            box_targets=torch.randn(1, 6, 4, 10, generator=gen),
            indices=torch.randint(0, 20, (1, 6, 4), generator=gen), mask=mask,
            fg=torch.rand(1, 4, 5, generator=gen),
        ))
    return views


def _all_losses(v: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    gt = gt_loss(v["s_heat"], v["s_boxes"], v["target"], v["indices"], v["box_targets"], v["mask"],
                 code_weights=CODE_WEIGHTS)
    mp = mmd_p_loss(v["s_heat"], v["t_heat"], v["s_boxes"], v["t_boxes"], v["indices"], v["mask"],
                    code_weights=CODE_WEIGHTS)
    return {"gt": gt["total"], "mmd_p": mp["total"], "imd": imd_loss(v["s_boxes"][:, 0], v["t_boxes"][:, 0]),
            "cmd": cmd_loss(v["s_boxes"][:, 0], v["t_boxes"][:, 0], v["fg"]),
            "mmd_f": mmd_f_loss(v["s_heat"], v["t_heat"])}


def test_every_loss_is_normalised_per_view_then_averaged() -> None:
    a, b = _views(torch.Generator().manual_seed(2))
    batch = {k: torch.cat([a[k], b[k]]) for k in a}
    together, alone_a, alone_b = _all_losses(batch), _all_losses(a), _all_losses(b)
    for key in together:
        torch.testing.assert_close(together[key], (alone_a[key] + alone_b[key]) / 2, msg=key)


def test_gradients_reach_the_student_never_the_teacher() -> None:
    (v,) = _views(torch.Generator().manual_seed(3))[:1]
    student = {k: v[k].clone().requires_grad_(True) for k in ("s_heat", "s_boxes")}
    teacher = {k: v[k].clone().requires_grad_(True) for k in ("t_heat", "t_boxes", "fg")}
    terms = [
        imd_loss(student["s_boxes"][:, 0], teacher["t_boxes"][:, 0]),
        cmd_loss(student["s_boxes"][:, 0], teacher["t_boxes"][:, 0], teacher["fg"]),
        mmd_f_loss(student["s_heat"], teacher["t_heat"]),
        mmd_p_loss(student["s_heat"], teacher["t_heat"], student["s_boxes"], teacher["t_boxes"], v["indices"],
                   v["mask"], code_weights=CODE_WEIGHTS)["total"],
    ]
    sum(terms).backward()
    for name, tensor in student.items():
        assert tensor.grad is not None and tensor.grad.abs().sum() > 0, name
    for name, tensor in teacher.items():
        assert tensor.grad is None, name


def test_shape_mismatches_name_both_shapes() -> None:
    a, b = torch.zeros(1, 4, 5, 6), torch.zeros(1, 4, 5, 7)
    with pytest.raises(ValueError, match=r"\(1, 4, 5, 6\).*\(1, 4, 5, 7\)"):
        imd_loss(a, b)
    with pytest.raises(ValueError, match=r"\(1, 4, 5, 6\).*\(1, 4, 5, 7\)"):
        mmd_f_loss(a, b)
    with pytest.raises(ValueError, match="fg_mask"):
        cmd_loss(a, a, torch.zeros(1, 5, 7))
    heat, boxes = torch.zeros(1, 10, 5, 6), torch.zeros(1, 6, 10, 5, 6)
    idx, mask = torch.zeros(1, 6, 2, dtype=torch.long), torch.zeros(1, 6, 2, dtype=torch.bool)
    with pytest.raises(ValueError, match=r"\(1, 6, 10, 5, 7\)"):
        mmd_p_loss(heat, heat, boxes, torch.zeros(1, 6, 10, 5, 7), idx, mask, code_weights=CODE_WEIGHTS)
    with pytest.raises(ValueError, match="indices"):
        gt_loss(heat, boxes, heat, idx[:, :3], torch.zeros(1, 3, 2, 10), mask[:, :3], code_weights=CODE_WEIGHTS)


def test_foreground_normalised_feature_losses_by_hand() -> None:
    """sum(e * M) / (C * sum(M)) per view: background errors do not count, a view's object mass does not scale it."""
    student = torch.zeros(2, 3, 2, 2)
    teacher = torch.zeros(2, 3, 2, 2)
    teacher[0, :, 0, 0] = 2.0  # error 4 per channel on the one foreground cell of view 0
    teacher[0, :, 1, 1] = 10.0  # a large background error that a plain mean would be dominated by
    teacher[1, :, 0, 1] = 1.0
    mask = torch.zeros(2, 2, 2)
    mask[0, 0, 0] = 1.0
    mask[1, 0, 1] = 2.0
    expected = (4.0 * 1.0 * 3 / (3 * 1.0) + 1.0 * 2.0 * 3 / (3 * 2.0)) / 2  # per view 4.0 and 1.0, then mean
    assert math.isclose(float(imd_loss(student, teacher, fg_mask=mask)), expected, rel_tol=1e-6)
    assert math.isclose(float(mmd_f_loss(student, teacher, weight=2.0, fg_mask=mask)), 2 * expected, rel_tol=1e-6)
    assert float(imd_loss(student, teacher)) > 5 * expected  # the plain mean is mostly background
    empty = torch.zeros(2, 2, 2)
    assert float(imd_loss(student, teacher, fg_mask=empty)) == 0.0  # no objects: nothing to distill, no NaN


def test_channel_standardised_feature_losses_by_hand() -> None:
    """Each channel's squared error divided by σ_c²; with the foreground mask too; CMD on its masked difference."""
    student = torch.zeros(1, 2, 1, 2)
    teacher = torch.tensor([[[[2.0, 4.0]], [[1.0, 1.0]]]])  # channel 0 large, channel 1 small
    std = torch.tensor([2.0, 0.5])
    # (2/2)², (4/2)², (1/0.5)², (1/0.5)² = 1, 4, 4, 4 -> mean 3.25
    assert math.isclose(float(imd_loss(student, teacher, channel_std=std)), 3.25, rel_tol=1e-6)
    assert math.isclose(float(mmd_f_loss(student, teacher, weight=3.0, channel_std=std)), 9.75, rel_tol=1e-6)
    mask = torch.tensor([[[1.0, 0.0]]])  # only cell 0: (1 + 4) / (C=2 * 1)
    assert math.isclose(float(imd_loss(student, teacher, fg_mask=mask, channel_std=std)), 2.5, rel_tol=1e-6)
    soft = torch.tensor([[[0.5, 0.0]]])  # CMD: (0.5·2/2)², 0, (0.5·1/0.5)², 0 over 4 elements, × weight 10
    assert math.isclose(float(cmd_loss(student, teacher, soft, weight=10.0, channel_std=std)), 10 * (0.25 + 1) / 4,
                        rel_tol=1e-6)
    assert float(imd_loss(student, teacher)) == pytest.approx((4 + 16 + 1 + 1) / 4)  # unstandardised differs


def test_unit_channel_std_is_the_plain_loss() -> None:
    """σ = 1 (and the teacher's mean, which cancels) leaves every standardised term equal to the plain one."""
    gen = torch.Generator().manual_seed(0)
    s, t = torch.randn(2, 3, 4, 5, generator=gen), torch.randn(2, 3, 4, 5, generator=gen) * 7
    mask = torch.rand(2, 4, 5, generator=gen)
    one = torch.ones(3)
    assert torch.equal(imd_loss(s, t, channel_std=one), imd_loss(s, t))
    assert torch.equal(imd_loss(s, t, fg_mask=mask, channel_std=one), imd_loss(s, t, fg_mask=mask))
    assert torch.equal(mmd_f_loss(s, t, weight=2.0, channel_std=one), mmd_f_loss(s, t, weight=2.0))
    assert torch.equal(cmd_loss(s, t, mask, channel_std=one), cmd_loss(s, t, mask))
    with pytest.raises(ValueError, match=r"channel_std \(4,\).*\(2, 3, 4, 5\)"):
        imd_loss(s, t, channel_std=torch.ones(4))
