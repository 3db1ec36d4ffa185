"""A store over a real (tiny synthetic) dataset without a teacher: export's view plan and attributes, random maps.

What `simdistill.data` needs of a store is the plan (aug vectors, sample and view indices) and the attributes that
name the data; the maps themselves may be anything. Writing random maps skips training and running a teacher, so
augmented views (K > 1) cost a fraction of a second. The attributes follow `teacher_export.export`'s; the one
test on a store `export-teacher` really wrote (tests/data/test_dataset.py) keeps the two in step.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from helpers.store import random_view
from simdistill.config import Config, config_to_dict
from simdistill.feature_store import StoreAttrs, StoreLayout, create_store
from simdistill.pipeline.augment import AugParams, ViewBuilder
from simdistill.pipeline.sources import open_data_source
from simdistill.pipeline.view_plan import ViewPlan, plan_views


@dataclass(frozen=True)
class PlannedStore:
    """A store `write_planned_store` wrote: where, for which config, with which plan."""

    url: str
    cfg: Config
    plan: ViewPlan


def planned_views(cfg: Config) -> tuple[ViewBuilder, ViewPlan]:
    """The builder and the view plan `export-teacher` makes for `cfg` (export.split, export.views_per_sample)."""
    builder = ViewBuilder.for_config(open_data_source(cfg.data, cfg.export.split), cfg, train=True)
    return builder, plan_views(cfg, builder)


def write_planned_store(path: str | Path, cfg: Config, *, seed: int = 0, done: int | None = None,
                        tokens: list[str] | None = None) -> ViewPlan:
    """Create the store export would for `cfg`, with random maps; write its first `done` views (all by default).

    `tokens` replaces the recorded sample tokens (a store of another dataset)."""
    builder, plan = planned_views(cfg)
    source = builder.source
    attrs = StoreAttrs(
        teacher={"name": "random-maps", "checkpoint_sha256": "0" * 64},
        dataset={"dataroot": str(Path(cfg.data.dataroot).resolve()), "version": cfg.data.version,
                 "split": source.split, "sample_tokens": list(tokens or source.tokens),
                 "infos": str(getattr(source, "info_path", ""))},
        augmentation=config_to_dict(cfg.augment),
        views_per_sample=plan.views_per_sample,
        aug_layout=AugParams.names(n_cams=builder.n_cams, n_sweeps=cfg.data.sweeps),
        config=config_to_dict(cfg),
    )
    writer = create_store(str(path), layout=StoreLayout.for_model(cfg.model), store_format=cfg.store_format,
                          n_views=plan.n_views, aug_dim=plan.params.shape[1], attrs=attrs)
    rng = np.random.default_rng(seed)
    with writer.lock():
        for v in range(plan.n_views if done is None else done):
            view = dataclasses.replace(random_view(rng, cfg, v), aug=plan.params[v],
                                       sample_index=int(plan.sample_index[v]), view=int(plan.view_index[v]))
            writer.write_view(v, view)
    return plan
