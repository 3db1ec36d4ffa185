"""`make_demo_data`: write a synthetic world in the nuScenes v1.0 layout (DESIGN.md section 3).

out_dir/<version>/*.json (13 tables), out_dir/samples/{CAM_*,LIDAR_TOP}/... (key frames),
out_dir/sweeps/LIDAR_TOP/... (the 20 Hz sweeps between them), out_dir/maps/<token>.png, plus a small marker
file that lets a later run recognise (and replace) a world it wrote.
"""

from __future__ import annotations

import json
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np
from nuscenes.utils.splits import create_splits_scenes

from simdistill.config import CLASS_NAMES, WorldConfig, config_to_dict
from simdistill.errors import DataError
from simdistill.pipeline.synthetic.rig import build_rig
from simdistill.pipeline.synthetic.scene import write_scene
from simdistill.pipeline.synthetic.tables import CHANNELS, LIDAR_CHANNEL, Tables
from simdistill.pipeline.synthetic.world import (
    ROAD_EDGES,
    SAMPLE_PERIOD_S,
    SceneLayout,
    build_scene,
    plan_classes,
)

MARKER = ".simdistill-world.json"
OWNED_ENTRIES = ("v1.0-mini", "v1.0-trainval", "samples", "sweeps", "maps", MARKER)
MAP_RESOLUTION = 0.1  # [m / px], what the devkit's MapMask assumes for the stored PNG
MAP_MARGIN = 64.0  # [m] around every ego position (the devkit renders up to 40 * sqrt(2) m around the ego)
MAX_TRAINVAL_SCENES = (700, 150)  # (train, val) scene names the devkit lists


@dataclass
class WorldSummary:
    """What `make_demo_data` wrote, for the CLI to print and tests to check."""

    version: str
    dataroot: str
    scenes: dict[str, list[str]]  # devkit split name (mini_train, mini_val / train, val) -> scene names
    n_samples: int
    n_annotations: int
    class_counts: dict[str, int] = field(default_factory=dict)  # detection class -> annotations
    mean_lidar_points: float = 0.0  # per key frame
    n_sweeps: int = 0  # non-key-frame LiDAR sweeps
    seconds: float = 0.0

    def to_text(self) -> str:
        lines = [f"synthetic nuScenes {self.version} written to {self.dataroot} in {self.seconds:.1f} s"]
        for split, names in self.scenes.items():
            lines.append(f"  {split}: {len(names)} scenes ({', '.join(names)})")
        lines.append(
            f"  {self.n_samples} key frames, {self.n_annotations} annotations, "
            f"{self.mean_lidar_points:.0f} LiDAR points per key frame, {self.n_sweeps} LiDAR sweeps between them"
        )
        lines.append("  annotations per class: " + ", ".join(f"{c} {n}" for c, n in self.class_counts.items()))
        return "\n".join(lines)


def validate_world(world: WorldConfig) -> None:
    """Raise DataError (naming the fix) for a world the generator or the devkit cannot handle."""
    if world.version not in ("v1.0-mini", "v1.0-trainval"):
        raise DataError(f"world.version '{world.version}' is unknown; use v1.0-mini or v1.0-trainval")
    if world.seed < 0:
        raise DataError(f"world.seed must be >= 0, got {world.seed}")
    if world.scenes < 2:
        raise DataError(f"world.scenes must be >= 2 (at least one train and one val scene), got {world.scenes}")
    if world.version == "v1.0-mini" and world.scenes > 10:
        raise DataError(
            f"world.scenes={world.scenes} but v1.0-mini has only 10 scene names; "
            "set world.scenes <= 10 or world.version=v1.0-trainval"
        )
    _check_split_sizes(world)
    if world.samples_per_scene < 2:
        raise DataError(
            f"world.samples_per_scene must be >= 2 (GT velocities need a neighbouring key frame), "
            f"got {world.samples_per_scene}"
        )
    if world.image_width < 16 or world.image_height < 16:
        raise DataError(f"world.image_width/height must be >= 16, got {world.image_width}x{world.image_height}")
    if world.objects_per_scene < 1:
        raise DataError(f"world.objects_per_scene must be >= 1, got {world.objects_per_scene}")
    if not (np.isfinite(world.max_range) and world.max_range >= 10.0):
        raise DataError(f"world.max_range must be >= 10 m, got {world.max_range}")
    if world.lidar_beams < 1 or world.lidar_azimuth_steps < 16:
        raise DataError(
            f"world.lidar_beams must be >= 1 and world.lidar_azimuth_steps >= 16, "
            f"got {world.lidar_beams} and {world.lidar_azimuth_steps}"
        )
    if world.lidar_hz < 2 or world.lidar_hz % 2:
        raise DataError(f"world.lidar_hz must be an even number >= 2 (key frames are 2 Hz), got {world.lidar_hz}")


def _check_split_sizes(world: WorldConfig) -> None:
    """DataError unless the train and val scene counts fit the devkit's scene names of `world.version`."""
    if not 0 <= world.val_scenes < world.scenes:
        raise DataError(
            f"world.val_scenes must be >= 0 and below world.scenes={world.scenes} (0 = a fifth), got {world.val_scenes}"
        )
    n_val = _n_val(world)
    train_names, val_names = (8, 2) if world.version == "v1.0-mini" else MAX_TRAINVAL_SCENES
    if n_val > val_names or world.scenes - n_val > train_names:
        raise DataError(
            f"{world.version} has {train_names} train and {val_names} val scene names, but world.scenes={world.scenes} "
            f"with {n_val} val scenes needs {world.scenes - n_val} and {n_val}; lower world.scenes or world.val_scenes"
        )


def _n_val(world: WorldConfig) -> int:
    if world.val_scenes:
        return world.val_scenes
    n_val = max(1, round(0.2 * world.scenes))
    return min(n_val, 2) if world.version == "v1.0-mini" else n_val


def scene_names(world: WorldConfig, rng: np.random.Generator) -> dict[str, list[str]]:
    """Scene names from the devkit's own splits, so its split logic applies unchanged."""
    splits = create_splits_scenes()
    n_val = _n_val(world)
    if world.version == "v1.0-mini":
        return {"mini_train": splits["mini_train"][: world.scenes - n_val], "mini_val": splits["mini_val"][:n_val]}
    train = sorted(rng.choice(splits["train"], size=world.scenes - n_val, replace=False).tolist())
    val = sorted(rng.choice(splits["val"], size=n_val, replace=False).tolist())
    return {"train": train, "val": val}


def prepare_out_dir(out_dir: Path) -> None:
    """Create `out_dir`, or empty it if it holds a world written before; refuse anything else."""
    if out_dir.exists() and not out_dir.is_dir():
        raise DataError(f"out_dir '{out_dir}' is a file; pass a directory path (it is created if missing)")
    if out_dir.is_dir() and any(out_dir.iterdir()):
        if not (out_dir / MARKER).is_file():
            raise DataError(
                f"out_dir '{out_dir}' is not empty and holds no synthetic world (no {MARKER}); "
                "pass an empty or new directory"
            )
        for name in OWNED_ENTRIES:
            entry = out_dir / name
            if entry.is_dir():
                shutil.rmtree(entry)
            elif entry.exists():
                entry.unlink()
    out_dir.mkdir(parents=True, exist_ok=True)


def write_map(path: Path, layouts: list[SceneLayout], *, size_px: tuple[int, int], max_range: float) -> None:
    """The semantic-prior mask (255 = drivable road) the devkit's map table points to."""
    width, height = size_px
    mask = np.zeros((height, width), dtype=np.uint8)
    for layout in layouts:
        ego_s = layout.ego.s0 + layout.ego.vs * layout.times
        s = np.arange(ego_s[0] - max_range - 20.0, ego_s[-1] + max_range + 20.0, 1.0)
        left, right = layout.road.point(s, ROAD_EDGES[1]), layout.road.point(s, ROAD_EDGES[0])
        polygon = np.concatenate([left, right[::-1]])  # [2S, 2] global xy
        pixels = np.stack([polygon[:, 0] / MAP_RESOLUTION, height - polygon[:, 1] / MAP_RESOLUTION], -1)
        cv2.fillPoly(mask, [np.rint(pixels).astype(np.int32)], 255)
    path.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(path), mask)


def _place_in_map(layouts: list[SceneLayout]) -> tuple[list[SceneLayout], tuple[int, int]]:
    """Shift every scene so all global coordinates are positive and covered by one map image."""
    ego_xy = np.concatenate([layout.ego_poses()[0] for layout in layouts])  # [sum S, 2]
    lo, hi = ego_xy.min(0), ego_xy.max(0)
    offset = MAP_MARGIN - lo
    size = np.ceil((hi - lo + 2 * MAP_MARGIN) / MAP_RESOLUTION).astype(int)
    return [layout.shifted(offset) for layout in layouts], (int(size[0]), int(size[1]))


class _Progress:
    """A rich progress bar, or nothing."""

    def __init__(self, enabled: bool, total: int) -> None:
        self.bar = None
        if enabled:
            from rich.progress import (
                BarColumn,
                MofNCompleteColumn,
                Progress,
                TextColumn,
                TimeRemainingColumn,
            )

            self.bar = Progress(TextColumn("synthetic world"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn())
            self.task = self.bar.add_task("world", total=total)

    def __enter__(self) -> _Progress:
        if self.bar is not None:
            self.bar.start()
        return self

    def advance(self) -> None:
        if self.bar is not None:
            self.bar.advance(self.task)

    def __exit__(self, *exc: object) -> None:
        if self.bar is not None:
            self.bar.stop()


@dataclass
class WorldPlan:
    """Everything drawn before a file is written: split names, classes and scene layouts (placed in the map)."""

    splits: dict[str, list[str]]  # devkit split name -> scene names, in scene order
    classes: list[list[str]]  # per scene, per object
    layouts: list[SceneLayout]
    map_size: tuple[int, int]  # (width, height) [px]
    render_rngs: list[np.random.Generator]  # per scene: image and range noise

    @property
    def names(self) -> list[str]:
        return [name for names in self.splits.values() for name in names]


def plan_world(world: WorldConfig) -> WorldPlan:
    """The deterministic (by `world.seed`) plan of the world `make_demo_data` writes."""
    validate_world(world)
    streams = np.random.SeedSequence(world.seed).spawn(3)
    rng = np.random.default_rng(streams[0])
    splits = scene_names(world, rng)
    classes = plan_classes(rng, world)
    layout_rngs = [np.random.default_rng(s) for s in streams[1].spawn(world.scenes)]
    layouts = [build_scene(layout_rngs[i], classes[i], world) for i in range(world.scenes)]
    layouts, map_size = _place_in_map(layouts)
    render_rngs = [np.random.default_rng(s) for s in streams[2].spawn(world.scenes)]
    return WorldPlan(splits=splits, classes=classes, layouts=layouts, map_size=map_size, render_rngs=render_rngs)


def sweeps_between(world: WorldConfig) -> int:
    """Non-key-frame LiDAR sweeps between two key frames."""
    return world.lidar_hz // round(1.0 / SAMPLE_PERIOD_S) - 1


def make_demo_data(out_dir: Path | str, world: WorldConfig, *, progress: bool = True) -> WorldSummary:
    """Generate the synthetic nuScenes world described by `world` under `out_dir` (see module doc)."""
    start = time.perf_counter()
    validate_world(world)
    root = Path(out_dir)
    prepare_out_dir(root)
    (root / MARKER).write_text(
        json.dumps({"generator": "simdistill make-demo-data", "world": config_to_dict(world)}, indent=1)
    )
    plan = plan_world(world)
    rig = build_rig(
        image_width=world.image_width,
        image_height=world.image_height,
        lidar_beams=world.lidar_beams,
        lidar_azimuth_steps=world.lidar_azimuth_steps,
    )
    tables = Tables(world.seed)
    for folder in [f"samples/{channel}" for channel in CHANNELS] + [f"sweeps/{LIDAR_CHANNEL}"]:
        (root / folder).mkdir(parents=True, exist_ok=True)
    lidar_points = 0
    with _Progress(progress, world.scenes * world.samples_per_scene) as bar:
        for i, (layout, name) in enumerate(zip(plan.layouts, plan.names, strict=True)):
            lidar_points += write_scene(
                root, tables, rig, layout, scene=i, name=name, between=sweeps_between(world), rng=plan.render_rngs[i],
                on_sample=bar.advance,
            )  # fmt: skip
    filename = f"maps/{tables.token('map', 0)}.png"
    write_map(root / filename, plan.layouts, size_px=plan.map_size, max_range=world.max_range)
    tables.add_map(filename=filename)
    tables.write(root / world.version)

    n_samples = world.scenes * world.samples_per_scene
    per_scene = {name: sum(row.count(name) for row in plan.classes) for name in CLASS_NAMES}
    class_counts = {name: n * world.samples_per_scene for name, n in per_scene.items()}
    return WorldSummary(
        version=world.version,
        dataroot=str(root),
        scenes=plan.splits,
        n_samples=n_samples,
        n_annotations=len(tables.records["sample_annotation"]),
        class_counts=class_counts,
        mean_lidar_points=lidar_points / n_samples,
        n_sweeps=world.scenes * (world.samples_per_scene - 1) * sweeps_between(world),
        seconds=time.perf_counter() - start,
    )
