"""A tiny feature store for the store's tests: configs with small odd-sized grids, random teacher views, a written
store, and what the store must return for a view (computed by hand)."""

from __future__ import annotations

import numpy as np

from simdistill.config import Config, config_to_dict, load_config
from simdistill.feature_store import StoreAttrs, StoreLayout, StoreLike, TeacherView, create_store

N_SAMPLES, VPS, P, K = 3, 2, 7, 5
N_VIEWS = N_SAMPLES * VPS
SHA = "a" * 64


def tiny_cfg(*overrides: str) -> Config:
    """A 12 x 16 BEV grid (H != W catches transposes) with 4 / 6 / 5 channels."""
    return load_config(
        "bench",
        [
            "model.bev.xbound=[-8.0, 8.0, 1.0]",
            "model.bev.ybound=[-6.0, 6.0, 1.0]",
            "model.channels.cam=4",
            "model.channels.lidar=6",
            "model.channels.fused=5",
            *overrides,
        ],
    )


def layout(cfg: Config) -> StoreLayout:
    return StoreLayout.for_model(cfg.model)


def store_args(cfg: Config) -> dict:
    """What a stage passes the store for its config: the layout and the codec settings."""
    return {"layout": layout(cfg), "store_format": cfg.store_format}


def make_attrs(
    cfg: Config, *, sha: str = SHA, n_samples: int = N_SAMPLES, tokens: list[str] | None = None,
    config: Config | None = None,
) -> StoreAttrs:
    return StoreAttrs(
        teacher={"name": "tiny-teacher", "checkpoint": "/ckpt/teacher.pt", "checkpoint_sha256": sha,
                 "config": {"channels": (4, 6, 5)}},
        dataset={"dataroot": "/data/demo", "version": "v1.0-mini", "split": "mini_train",
                 "sample_tokens": tokens or [f"token{i}" for i in range(n_samples)]},
        augmentation={"rand_flip": cfg.augment.rand_flip},
        views_per_sample=VPS,
        aug_layout=[f"p{i}" for i in range(P)],
        config=config_to_dict(config or cfg),
    )


def random_view(rng: np.random.Generator, cfg: Config, v: int, *, fg_fraction: float = 0.5) -> TeacherView:
    h, w = cfg.model.bev.grid_size
    t = len(cfg.model.head.tasks)
    ch = cfg.model.channels

    def f(*shape: int) -> np.ndarray:
        return rng.standard_normal(shape).astype(np.float32) * 3

    fg = rng.random((h, w)).astype(np.float32) * 1.5
    fg[rng.random((h, w)) > fg_fraction] = 0
    return TeacherView(
        cam_bev=f(ch.cam, h, w),
        lidar_bev=f(ch.lidar, h, w),
        fused_bev=f(ch.fused, h, w),
        heatmap=f(10, h, w),
        boxes=f(t, 10, h, w),
        fg_mask=fg,
        aug=f(P),
        sample_index=v // VPS,
        view=v % VPS,
        centre_indices=rng.integers(0, h * w, size=(t, K)),
        centre_mask=rng.random((t, K)) < 0.6,
    )


def write_store(path: StoreLike, cfg: Config, *, seed: int = 0, views: int | None = None, **kw) -> list[TeacherView]:
    """Create a store and write its first `views` views (all by default); returns every view's input."""
    rng = np.random.default_rng(seed)
    tvs = [random_view(rng, cfg, v, **kw) for v in range(N_VIEWS)]
    writer = create_store(path, **store_args(cfg), n_views=N_VIEWS, aug_dim=P, attrs=make_attrs(cfg))
    with writer.lock():
        for v in range(N_VIEWS if views is None else views):
            writer.write_view(v, tvs[v])
    return tvs


def expected_stored(tv: TeacherView, cfg: Config) -> dict[str, np.ndarray]:
    """What the store must return for a view, computed by hand: masking, compaction, float16 rounding."""
    h, w = cfg.model.bev.grid_size
    boxes = np.zeros_like(tv.boxes)
    for t in range(tv.boxes.shape[0]):
        for k in range(K):
            if tv.centre_mask[t, k]:
                r, c = divmod(int(tv.centre_indices[t, k]), w)
                boxes[t, :, r, c] = tv.boxes[t, :, r, c]
    lidar = tv.lidar_bev.copy()
    lidar[:, tv.fg_mask <= 0] = 0
    f16 = lambda x: x.astype(np.float16).astype(np.float32)  # noqa: E731
    return {
        "cam_bev": f16(tv.cam_bev),
        "lidar_bev": f16(lidar),
        "fused_bev": f16(tv.fused_bev),
        "heatmap": f16(tv.heatmap),
        "boxes": f16(boxes),
        "fg_mask": f16(tv.fg_mask),
        "aug": tv.aug,
        "sample_index": np.int32(tv.sample_index),
        "view": np.int16(tv.view),
    }
