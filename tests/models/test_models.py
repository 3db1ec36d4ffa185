"""Models: output shapes (demo and paper sizes), LSS geometry and pooling, pillars, students without LiDAR,
and a tiny teacher that overfits two fake samples."""

from __future__ import annotations

import math

import pytest
import torch
from helpers.fake_batch import CAMERA_YAWS_DEG, make_fake_batch, resize_crop_matrix

from simdistill.config import Config, load_config
from simdistill.errors import ConfigError, DataError
from simdistill.models import bev_pool, build_model
from simdistill.models.backbone import ImageBackbone
from simdistill.models.lidar import PillarEncoder, cap_per_group
from simdistill.models.lss import LSSTransform, depth_bins
from simdistill.student_train.losses import gt_loss

PAPER_SMALL = [  # paper grid (180x180) and input (256x704), thin channels and a shallow backbone
    "model.channels.cam=8", "model.channels.lidar=16", "model.channels.fused=16", "model.channels.pillar=8",
    "model.backbone.stem_channels=8", "model.backbone.stage_channels=[8,8,16,16]",
    "model.backbone.stage_blocks=[1,1,1,1]", "model.backbone.neck_channels=16",
    "model.decoder.layer_nums=[1,1]", "model.decoder.out_channels=[16,16]",
    "model.decoder.upsample_channels=[16,16]", "model.head.shared_channels=8", "model.head.head_conv=8",
    "model.gcm.points=4", "device=cpu",
]
TINY = [  # 32x32 BEV at 2.4 m, 32x88 images: small enough to train for a few dozen steps in a test
    "model.channels.cam=8", "model.channels.lidar=16", "model.channels.fused=16", "model.channels.pillar=16",
    "model.backbone.stem_channels=8", "model.backbone.stage_channels=[8,16]", "model.backbone.stage_blocks=[1,1]",
    "model.backbone.neck_channels=16", "model.decoder.layer_nums=[1,1]", "model.decoder.out_channels=[16,32]",
    "model.decoder.upsample_channels=[16,16]", "model.head.shared_channels=16", "model.head.head_conv=16",
    "model.bev.xbound=[-38.4,38.4,2.4]", "model.bev.ybound=[-38.4,38.4,2.4]", "model.bev.dbound=[1.0,45.0,4.0]",
    "augment.final_height=32", "augment.final_width=88", "model.head.min_radius=1",
]


@pytest.fixture(autouse=True)
def one_thread():
    """Small ops on a shared 2-core machine: one intra-op thread is ~10x faster than two under contention."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def final_hw(cfg: Config) -> tuple[int, int]:
    return cfg.augment.final_height, cfg.augment.final_width


@pytest.fixture(scope="module")
def demo_cfg() -> Config:
    return load_config("bench")


def check_shapes(out, cfg: Config, batch_size: int, kind: str) -> None:
    h, w = cfg.model.bev.grid_size
    ch = cfg.model.channels
    assert out.cam_bev.shape == (batch_size, ch.cam, h, w)
    assert out.fused_bev.shape == (batch_size, ch.fused, h, w)
    assert out.heatmap.shape == (batch_size, 10, h, w)
    assert out.boxes.shape == (batch_size, len(cfg.model.head.tasks), 10, h, w)
    if kind == "baseline":
        assert out.lidar_bev is None and out.sim_lidar_bev is None
    else:
        assert out.lidar_bev.shape == (batch_size, ch.lidar, h, w)
    if kind == "simdistill":
        assert out.sim_lidar_bev.shape == (batch_size, ch.cam, h, w)
    if kind == "teacher":
        assert out.sim_lidar_bev is None


@pytest.mark.parametrize("kind", ["teacher", "simdistill", "baseline"])
def test_demo_config_shapes(demo_cfg: Config, kind: str) -> None:
    torch.manual_seed(0)
    model = build_model(kind, demo_cfg.model, final_hw(demo_cfg))
    batch = make_fake_batch(demo_cfg, 2, seed=0)
    out = model(batch if kind == "teacher" else batch.without_points())
    check_shapes(out, demo_cfg, 2, kind)
    assert model.uses_lidar == (kind == "teacher")
    assert torch.isfinite(out.heatmap).all() and torch.isfinite(out.boxes).all()


def test_paper_config_shapes() -> None:
    cfg = load_config("nuscenes_swint", PAPER_SMALL)
    assert cfg.model.bev.grid_size == (180, 180) and final_hw(cfg) == (256, 704)
    batch = make_fake_batch(cfg, 1, seed=1)
    for kind in ("teacher", "simdistill", "baseline"):
        torch.manual_seed(0)
        model = build_model(kind, cfg.model, final_hw(cfg)).eval()
        with torch.no_grad():
            out = model(batch if kind == "teacher" else batch.without_points())
        check_shapes(out, cfg, 1, kind)
    assert model.camera_lift.frustum.shape == (118, 32, 88, 3)  # 118 depth bins on 32x88 features


def test_students_never_read_points(demo_cfg: Config) -> None:
    batch = make_fake_batch(demo_cfg, 2, seed=2)
    for kind in ("simdistill", "baseline"):
        torch.manual_seed(0)
        model = build_model(kind, demo_cfg.model, final_hw(demo_cfg)).eval()
        with torch.no_grad():
            with_points = model(batch)
            without = model(batch.without_points())
        assert torch.equal(with_points.heatmap, without.heatmap)
        assert torch.equal(with_points.fused_bev, without.fused_bev)


def test_teacher_without_points_is_a_data_error(demo_cfg: Config) -> None:
    model = build_model("teacher", demo_cfg.model, final_hw(demo_cfg))
    with pytest.raises(DataError, match="LiDAR point cloud"):
        model(make_fake_batch(demo_cfg, 1, seed=0).without_points())


def test_build_model_and_config_errors(demo_cfg: Config) -> None:
    with pytest.raises(ConfigError, match="teacher, simdistill, baseline"):
        build_model("bevdet", demo_cfg.model, final_hw(demo_cfg))
    model = build_model("baseline", demo_cfg.model, final_hw(demo_cfg))
    wrong = make_fake_batch(load_config("bench", ["augment.final_height=64"]), 1, seed=0)
    with pytest.raises(ConfigError, match="augment.final_height"):
        model(wrong)
    shallow = load_config(
        "bench", ["model.backbone.stage_channels=[16]", "model.backbone.stage_blocks=[1]"]
    )
    with pytest.raises(ConfigError, match="feature_stride"):
        ImageBackbone(shallow.model.backbone)


@pytest.mark.parametrize("stride", [8, 16])
def test_backbone_feature_stride(demo_cfg: Config, stride: int) -> None:
    cfg = load_config("bench", [f"model.backbone.feature_stride={stride}"])
    feats = ImageBackbone(cfg.model.backbone)(torch.randn(2, 3, 96, 256))
    assert feats.shape == (2, cfg.model.backbone.neck_channels, 96 // stride, 256 // stride)


# -------------------------------------------------------------------------------------------- LSS


def test_bev_pool_matches_naive_loop() -> None:
    gen = torch.Generator().manual_seed(0)
    b, c, h, w, m = 2, 3, 4, 5, 40
    feats = torch.randn(m, c, generator=gen)
    coords = torch.stack(
        [torch.randint(0, b, (m,), generator=gen), torch.randint(0, h, (m,), generator=gen),
         torch.randint(0, w, (m,), generator=gen)], dim=1,
    )
    expected = torch.zeros(b, c, h, w)
    for f, (bi, r, col) in zip(feats, coords.tolist()):
        expected[bi, :, r, col] += f
    torch.testing.assert_close(bev_pool(feats, coords, b, h, w), expected)


def _flip_rotate(angle: float, shift: tuple[float, float]) -> torch.Tensor:
    """x-flip, then rotation by `angle` about z, then translation: a BEV augmentation matrix."""
    c, s = math.cos(angle), math.sin(angle)
    rot = torch.tensor([[c, -s, 0.0, shift[0]], [s, c, 0.0, shift[1]], [0.0, 0.0, 1.0, 0.0], [0.0, 0.0, 0.0, 1.0]])
    return rot @ torch.diag(torch.tensor([-1.0, 1.0, 1.0, 1.0]))


def test_lss_one_hot_depth_lands_at_the_expected_cell(demo_cfg: Config) -> None:
    cfg = demo_cfg
    bev = cfg.model.bev
    stride = cfg.model.backbone.feature_stride
    lss = LSSTransform(16, 3, bev, final_hw=final_hw(cfg), feature_stride=stride)
    batch = make_fake_batch(cfg, 1, seed=0, lidar_aug=False)
    angle, shift = 0.5, (1.5, -2.0)
    batch.lidar_aug_matrix = _flip_rotate(angle, shift)[None]
    geometry = lss.geometry(batch)
    d, fh, fw = lss.frustum.shape[:3]
    aug = resize_crop_matrix((cfg.world.image_height, cfg.world.image_width), final_hw(cfg))
    f, cx, cy = 0.8 * cfg.world.image_width, cfg.world.image_width / 2, cfg.world.image_height / 2
    step = bev.xbound[2] / bev.lss_downsample
    gen = torch.Generator().manual_seed(0)
    checked = 0
    for _ in range(12):
        cam, di = int(torch.randint(6, (1,), generator=gen)), int(torch.randint(d, (1,), generator=gen))
        i, j = int(torch.randint(fh, (1,), generator=gen)), int(torch.randint(fw, (1,), generator=gen))
        volume = torch.zeros(1, 6, d, fh, fw, 3)
        volume[0, cam, di, i, j] = torch.tensor([1.0, 2.0, 3.0])
        pooled = lss.splat(volume, geometry)  # [1, 3, 128, 128]

        # The same point by explicit geometry: feature-pixel centre -> raw pixel -> camera -> LiDAR -> augmented.
        u, v, depth = (j + 0.5) * stride - 0.5, (i + 0.5) * stride - 0.5, float(depth_bins(bev.dbound)[di])
        u_raw, v_raw = (u - aug[0, 3]) / aug[0, 0], (v - aug[1, 3]) / aug[1, 1]
        xc, yc, zc = (u_raw - cx) * depth / f, (v_raw - cy) * depth / f, depth
        yaw = math.radians(CAMERA_YAWS_DEG[cam])
        x = xc * math.sin(yaw) + zc * math.cos(yaw) + math.cos(yaw)
        y = -xc * math.cos(yaw) + zc * math.sin(yaw) + math.sin(yaw)
        x = -x  # flip, then rotate, then shift
        ca, sa = math.cos(angle), math.sin(angle)
        x, y = x * ca - y * sa + shift[0], x * sa + y * ca + shift[1]
        col, row = math.floor((x - bev.xbound[0]) / step), math.floor((y - bev.ybound[0]) / step)
        nonzero = pooled[0].abs().sum(0).nonzero().tolist()
        if not (0 <= row < pooled.shape[2] and 0 <= col < pooled.shape[3]):
            assert nonzero == []  # outside the grid: dropped
            continue
        assert -10.0 < -yc - 0.3 < 10.0  # inside zbound
        assert nonzero == [[row, col]]
        torch.testing.assert_close(pooled[0, :, row, col], torch.tensor([1.0, 2.0, 3.0]))
        checked += 1
    assert checked >= 6


def test_lss_geometry_projects_back_to_the_frustum(demo_cfg: Config) -> None:
    lss = LSSTransform(16, 3, demo_cfg.model.bev, final_hw=final_hw(demo_cfg), feature_stride=8)
    batch = make_fake_batch(demo_cfg, 2, seed=3)  # with a random lidar_aug_matrix
    geom = lss.geometry(batch)  # [B, N, D, fH, fW, 3]
    pts = torch.cat([geom, torch.ones_like(geom[..., :1])], -1).reshape(2, 6, -1, 4).double()
    lidar2aug = batch.lidar_aug_matrix.double()[:, None]
    cam = pts @ torch.linalg.inv(lidar2aug @ batch.camera2lidar.double()).transpose(-1, -2)  # camera frame
    pix = cam[..., :3] @ batch.cam_intrinsics.double()[..., :3, :3].transpose(-1, -2)
    depth = pix[..., 2:3]
    uv1 = torch.cat([pix[..., :2] / depth, torch.ones_like(depth)], -1)  # raw (u, v, 1)
    aug = batch.img_aug_matrix.double()
    uv_aug = uv1[..., :2] @ aug[..., :2, :2].transpose(-1, -2) + aug[..., None, :2, 3]
    frustum = lss.frustum.reshape(-1, 3).double().expand(2, 6, -1, -1)
    torch.testing.assert_close(uv_aug, frustum[..., :2], atol=2e-3, rtol=0)
    torch.testing.assert_close(depth[..., 0], frustum[..., 2], atol=1e-4, rtol=0)


# -------------------------------------------------------------------------------------------- pillars


def test_cap_per_group_keeps_the_first_points_of_each_pillar() -> None:
    group = torch.tensor([5, 2, 5, 5, 2, 7, 5])
    assert cap_per_group(group, 2).tolist() == [True, True, True, False, True, True, False]


def test_pillar_features_and_scatter_max(demo_cfg: Config) -> None:
    bev = demo_cfg.model.bev  # pillars at 0.6 m: x in [0.0, 0.6) is column 64
    enc = PillarEncoder(bev, pillar_channels=4, out_channels=8, max_points_per_pillar=2).eval()
    pts = torch.tensor([
        [0.1, 0.1, -1.0, 0.5, 0.0],  # pillar (64, 64)
        [0.3, 0.5, -1.5, 0.2, 0.0],  # same pillar
        [0.2, 0.2, 0.0, 0.9, 0.0],  # same pillar, third point: dropped by the cap
        [50.0, 0.0, 0.0, 0.1, 0.0],  # outside x bounds
        [0.1, 0.1, 12.0, 0.1, 0.0],  # outside z bounds
        [-10.0, 5.0, -1.0, 0.3, 0.05],  # another pillar
    ])
    feats, pid = enc.point_features([pts])
    assert feats.shape == (3, 10)
    torch.testing.assert_close(feats[:, :5], pts[[0, 1, 5]])
    torch.testing.assert_close(feats[:2, 5:8], pts[:2, :3] - pts[:2, :3].mean(0))  # offsets to the pillar mean
    torch.testing.assert_close(feats[:2, 8:10], pts[:2, :2] - torch.tensor([0.3, 0.3]))  # to the pillar centre
    assert pid[:2].tolist() == [64 * 128 + 64] * 2
    image = enc.pseudo_image([pts])  # [1, 4, 128, 128]
    with torch.no_grad():
        per_point = enc.pointnet(feats)  # [3, 4]
    torch.testing.assert_close(image[0, :, 64, 64], per_point[:2].max(0).values)
    torch.testing.assert_close(image[0, :, 72, 47], per_point[2])  # x=-10 -> column 47, y=5 -> row 72
    occupied = {tuple(rc) for rc in (image[0].abs().sum(0) > 0).nonzero().tolist()}
    assert occupied <= {(64, 64), (72, 47)}


# -------------------------------------------------------------------------------------------- training


def test_tiny_teacher_overfits_two_samples() -> None:
    cfg = load_config("bench", TINY)
    batch = make_fake_batch(cfg, 2, seed=1)
    torch.manual_seed(0)
    model = build_model("teacher", cfg.model, final_hw(cfg))
    targets = model.head.build_targets(batch.gt_boxes, batch.gt_labels)
    optimizer = torch.optim.Adam(model.parameters(), lr=0.01)

    def loss() -> dict[str, torch.Tensor]:
        out = model(batch)
        return gt_loss(out.heatmap, out.boxes, targets.heatmap, targets.indices, targets.box_targets, targets.mask,
                       code_weights=cfg.model.head.code_weights)

    first = loss()
    for _ in range(60):
        optimizer.zero_grad()
        loss()["total"].backward()
        optimizer.step()
    last = loss()
    assert last["total"] < first["total"] / 10
    assert last["bbox"] < first["bbox"] / 10

    with torch.no_grad():
        out = model(batch)
    step = cfg.model.bev.xbound[2]
    for det, boxes, labels in zip(model.head.decode(out.heatmap, out.boxes), batch.gt_boxes, batch.gt_labels):
        for box, label in zip(boxes, labels):  # every object is found, with its class, within one cell
            dist = (det.boxes[:, :2] - box[:2]).norm(dim=1)
            near = dist < step
            assert near.any() and int(label) in det.labels[near].tolist()
