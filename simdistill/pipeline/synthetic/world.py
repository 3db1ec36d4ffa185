"""The layout of one synthetic scene: a gently curved road, the ego drive, and the objects' tracks.

Everything is placed in road coordinates (s = arc length along the road centre line, d = lateral
offset, left positive) and mapped to the global frame through the road's circular arc, so lanes,
sidewalks and kerbs stay parallel to the ego path. The ego drives in the lane at d = 0.

Lanes: same direction as the ego at d = 0 and -3.5, oncoming at +3.5 and +7.0; the asphalt spans
ROAD_EDGES; a 3 m sidewalk lies beyond each edge; everything further out is open terrain.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from simdistill.config import CLASS_NAMES, WorldConfig
from simdistill.errors import DataError
from simdistill.pipeline.geometry import wrap_angle
from simdistill.pipeline.synthetic.classes import (
    CLASS_SPECS,
    CYCLES,
    VEHICLES,
    class_weights,
)
from simdistill.pipeline.synthetic.raycast import rectangles_overlap

SAMPLE_PERIOD_S = 0.5  # key frames are 0.5 s apart, like nuScenes
LANES_SAME = (0.0, -3.5)
LANES_ONCOMING = (3.5, 7.0)
ROAD_EDGES = (-5.25, 8.75)
SIDEWALK_WIDTH = 3.0
EGO_SPEED = (5.0, 10.0)  # [m/s]
MAX_CURVATURE = 0.003  # [1/m]: a slight curve
EGO_FOOTPRINT = (1.3, 2.9, 1.3)  # (centre ahead of the ego origin, half length, half width) incl. a margin [m]
CLEARANCE = 0.25  # minimum gap kept between objects [m]
PLACEMENT_TRIES = 400  # proposals per object before giving up


@dataclass
class Road:
    """A circular arc of constant curvature (never exactly zero) through `origin` with `heading`."""

    origin: np.ndarray  # [2] global xy of s = 0, d = 0
    heading: float  # road direction at s = 0 [rad]
    curvature: float  # [1/m], signed (left turn positive)

    def heading_at(self, s: np.ndarray) -> np.ndarray:
        return self.heading + self.curvature * np.asarray(s, dtype=np.float64)

    def point(self, s: np.ndarray, d: np.ndarray) -> np.ndarray:
        """Global xy [..., 2] of road coordinates (s, d)."""
        k, h0 = self.curvature, self.heading
        theta = self.heading_at(s)
        cx = self.origin[0] + (np.sin(theta) - np.sin(h0)) / k
        cy = self.origin[1] + (np.cos(h0) - np.cos(theta)) / k
        d = np.asarray(d, dtype=np.float64)
        return np.stack([cx - d * np.sin(theta), cy + d * np.cos(theta)], axis=-1)

    def frame(self, x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Road coordinates (s, d) of global points (the inverse of `point`)."""
        radius = 1.0 / self.curvature  # signed
        ox = self.origin[0] - radius * np.sin(self.heading)  # arc centre = origin + radius * left normal
        oy = self.origin[1] + radius * np.cos(self.heading)
        vx, vy = x - ox, y - oy
        d = radius - np.sign(radius) * np.hypot(vx, vy)
        angle0 = np.arctan2(self.origin[1] - oy, self.origin[0] - ox)
        s = wrap_angle(np.arctan2(vy, vx) - angle0) / self.curvature
        return s, d

    def shifted(self, offset: np.ndarray) -> Road:
        return Road(origin=self.origin + offset, heading=self.heading, curvature=self.curvature)


@dataclass
class Track:
    """Constant-velocity motion in road coordinates: s(t) = s0 + vs t, d(t) = d0 + vd t."""

    s0: float
    d0: float
    vs: float = 0.0
    vd: float = 0.0
    yaw_rel: float = 0.0  # heading relative to the road direction [rad]

    def pose(self, road: Road, times: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(xy [T, 2], yaw [T]) in the global frame at `times` [T] seconds."""
        s = self.s0 + self.vs * times
        d = self.d0 + self.vd * times
        return road.point(s, d), road.heading_at(s) + self.yaw_rel

    def velocity(self, road: Road, times: np.ndarray) -> np.ndarray:
        """Global velocity [T, 2] at `times` [T]: d/dt of `pose`'s xy (the arc shortens by 1 - curvature * d)."""
        s = self.s0 + self.vs * np.asarray(times, dtype=np.float64)
        d = self.d0 + self.vd * np.asarray(times, dtype=np.float64)
        theta = road.heading_at(s)
        tangent = np.stack([np.cos(theta), np.sin(theta)], -1)  # [T, 2]
        normal = np.stack([-np.sin(theta), np.cos(theta)], -1)
        return (self.vs * (1.0 - road.curvature * d))[:, None] * tangent + self.vd * normal


@dataclass
class SceneObject:
    class_name: str
    lwh: np.ndarray  # [3] length (along heading), width, height [m]
    track: Track
    moving: bool
    on_road: bool


@dataclass
class SceneLayout:
    road: Road
    ego: Track  # the ego's track (d = 0, moving along the road)
    times: np.ndarray  # [S] seconds since the first key frame
    objects: list[SceneObject] = field(default_factory=list)

    def shifted(self, offset: np.ndarray) -> SceneLayout:
        return SceneLayout(road=self.road.shifted(offset), ego=self.ego, times=self.times, objects=self.objects)

    def ego_poses(self) -> tuple[np.ndarray, np.ndarray]:
        return self.ego.pose(self.road, self.times)


def plan_classes(rng: np.random.Generator, world: WorldConfig) -> list[list[str]]:
    """Class names per scene, drawn from the nuScenes-like mix.

    Every scene with room for all 10 classes holds each at least once, so any split (even a single val scene)
    has ground truth for every class and the devkit's mAP/NDS are meaningful on it.
    """
    draws = rng.choice(len(CLASS_NAMES), size=(world.scenes, world.objects_per_scene), p=class_weights())
    rows = range(world.scenes) if world.objects_per_scene >= len(CLASS_NAMES) else [None]
    for row in rows:
        block = draws if row is None else draws[row : row + 1]
        if block.size < len(CLASS_NAMES):
            continue
        for cls in range(len(CLASS_NAMES)):
            if (block == cls).any():
                continue
            counts = np.bincount(block.ravel(), minlength=len(CLASS_NAMES))
            donors = np.argwhere(block == counts.argmax())  # replace one object of the most common class
            r, slot = donors[rng.integers(len(donors))]
            block[r, slot] = cls
    return [[CLASS_NAMES[c] for c in row] for row in draws]


def _lane(rng: np.random.Generator, lanes: tuple[float, ...] = LANES_SAME + LANES_ONCOMING) -> tuple[float, float]:
    """(lateral offset, direction +1/-1) of a random lane."""
    d = float(rng.choice(lanes))
    return d, (1.0 if d in LANES_SAME else -1.0)


def _sidewalk(rng: np.random.Generator, margin: float) -> float:
    if rng.random() < 0.5:
        return float(rng.uniform(ROAD_EDGES[0] - SIDEWALK_WIDTH + margin, ROAD_EDGES[0] - margin))
    return float(rng.uniform(ROAD_EDGES[1] + margin, ROAD_EDGES[1] + SIDEWALK_WIDTH - margin))


def _offroad(rng: np.random.Generator, max_range: float) -> float:
    lo = ROAD_EDGES[1] + SIDEWALK_WIDTH + 1.0
    return float(np.sign(rng.random() - 0.5) * rng.uniform(lo, max(lo, max_range)))


def _vehicle_track(rng: np.random.Generator, s0: float, speed: float, w: float, max_range: float) -> tuple[Track, bool]:
    """(track, on_road) of a car, truck, bus, trailer or construction vehicle (or a moving motorcycle)."""
    yaw_jitter = float(rng.normal(0.0, 0.02))
    u = rng.random()
    if speed > 0 or u < 0.35:  # driving, or stopped in a lane
        d, direction = _lane(rng)
        d += float(rng.normal(0.0, 0.15))
        return Track(s0, d, vs=direction * speed, yaw_rel=(0.0 if direction > 0 else np.pi) + yaw_jitter), True
    if u < 0.7:  # parked at the kerb, facing the traffic of that side
        right = rng.random() < 0.5
        d = ROAD_EDGES[0] - w / 2 - 0.3 if right else ROAD_EDGES[1] + w / 2 + 0.3
        return Track(s0, d, yaw_rel=(0.0 if right else np.pi) + yaw_jitter), False
    yaw = float(rng.choice([0.0, np.pi / 2, np.pi, -np.pi / 2])) + 5 * yaw_jitter  # parked in a lot
    return Track(s0, _offroad(rng, max_range), yaw_rel=yaw), False


def _cycle_track(rng: np.random.Generator, s0: float, speed: float) -> tuple[Track, bool]:
    """(track, on_road) of a bicycle, or of a parked motorcycle."""
    if speed > 0:  # riding in the bicycle lane along a kerb
        right = rng.random() < 0.5
        d = ROAD_EDGES[0] + 0.7 if right else ROAD_EDGES[1] - 0.7
        yaw = (0.0 if right else np.pi) + float(rng.normal(0.0, 0.02))
        return Track(s0, d, vs=speed if right else -speed, yaw_rel=yaw), True
    return Track(s0, _sidewalk(rng, 0.6), yaw_rel=float(rng.uniform(-np.pi, np.pi))), False


def _pedestrian_track(rng: np.random.Generator, s0: float, speed: float, max_range: float) -> tuple[Track, bool]:
    u = rng.random()
    direction = 1.0 if rng.random() < 0.5 else -1.0
    if speed > 0 and u < 0.55:  # walking along a sidewalk
        yaw = (0.0 if direction > 0 else np.pi) + float(rng.normal(0.0, 0.02))
        return Track(s0, _sidewalk(rng, 0.5), vs=direction * speed, yaw_rel=yaw), False
    if speed > 0 and u < 0.75:  # crossing the road
        d = float(rng.uniform(ROAD_EDGES[0], ROAD_EDGES[1]))
        return Track(s0, d, vd=direction * speed, yaw_rel=direction * np.pi / 2), True
    yaw = float(rng.uniform(-np.pi, np.pi))  # standing, or walking anywhere off the road
    d = _sidewalk(rng, 0.5) if rng.random() < 0.5 else _offroad(rng, max_range)
    return Track(s0, d, vs=speed * np.cos(yaw), vd=speed * np.sin(yaw), yaw_rel=yaw), False


def _static_track(rng: np.random.Generator, class_name: str, s0: float, max_range: float) -> tuple[Track, bool]:
    """(track, on_road) of a barrier (kerbs, lane closures) or a traffic cone (lane lines, kerbs)."""
    u = rng.random()
    if class_name == "barrier" and u < 0.6:
        d = ROAD_EDGES[0] - 0.5 if rng.random() < 0.5 else ROAD_EDGES[1] + 0.5
        return Track(s0, d, yaw_rel=float(rng.normal(0.0, 0.02))), False
    if class_name == "barrier" and u < 0.8:
        return Track(s0, float(rng.choice([-1.75, 5.25])), yaw_rel=float(rng.normal(0.0, 0.02))), True
    if class_name == "traffic_cone" and u < 0.8:
        d = float(rng.choice([ROAD_EDGES[0] + 0.25, -1.75, 1.75, 5.25, ROAD_EDGES[1] - 0.25]))
        return Track(s0, d + float(rng.normal(0.0, 0.1)), yaw_rel=float(rng.uniform(-np.pi, np.pi))), True
    return Track(s0, _offroad(rng, max_range), yaw_rel=float(rng.uniform(-np.pi, np.pi))), False


def _propose(
    rng: np.random.Generator, class_name: str, *, s_range: tuple[float, float], max_range: float
) -> SceneObject:
    """One candidate object of `class_name`, placed where that class is found on and around a road."""
    spec = CLASS_SPECS[class_name]
    w, length, h = (np.array(spec.wlh) * rng.uniform(0.9, 1.1, size=3)).tolist()
    moving = bool(rng.random() < spec.p_moving)
    speed = float(rng.uniform(*spec.speed)) if moving else 0.0
    s0 = float(rng.uniform(*s_range))
    if class_name in VEHICLES or (class_name == "motorcycle" and moving):
        track, on_road = _vehicle_track(rng, s0, speed, w, max_range)
    elif class_name in CYCLES:
        track, on_road = _cycle_track(rng, s0, speed)
    elif class_name == "pedestrian":
        track, on_road = _pedestrian_track(rng, s0, speed, max_range)
    else:
        track, on_road = _static_track(rng, class_name, s0, max_range)
    return SceneObject(class_name=class_name, lwh=np.array([length, w, h]), track=track, moving=moving, on_road=on_road)


def _within_range(obj: SceneObject, path_length: float, max_range: float) -> bool:
    """Whether the object starts within `max_range` of the ego path (the segment s in [0, L], d = 0)."""
    s, d = obj.track.s0, obj.track.d0
    ds = 0.0 if 0.0 <= s <= path_length else min(abs(s), abs(s - path_length))
    return bool(np.hypot(ds, d) <= max_range)


def build_scene(rng: np.random.Generator, classes: list[str], world: WorldConfig) -> SceneLayout:
    """Lay out one scene around the origin (the caller shifts it into the map)."""
    curvature = float(rng.uniform(-MAX_CURVATURE, MAX_CURVATURE))
    if abs(curvature) < 1e-4:
        curvature = 1e-4 if curvature >= 0 else -1e-4
    road = Road(origin=rng.normal(0.0, 5.0, size=2), heading=float(rng.uniform(-np.pi, np.pi)), curvature=curvature)
    speed = float(rng.uniform(*EGO_SPEED))
    times = SAMPLE_PERIOD_S * np.arange(world.samples_per_scene, dtype=np.float64)
    layout = SceneLayout(road=road, ego=Track(0.0, 0.0, vs=speed), times=times)
    path_length = speed * float(times[-1])

    ego_xy, ego_yaw = layout.ego_poses()
    ego_centre = ego_xy + EGO_FOOTPRINT[0] * np.stack([np.cos(ego_yaw), np.sin(ego_yaw)], -1)
    placed: list[tuple[np.ndarray, np.ndarray, tuple[float, float]]] = [(ego_centre, ego_yaw, EGO_FOOTPRINT[1:])]
    s_range = (-world.max_range, path_length + world.max_range)
    for class_name in classes:
        for _ in range(PLACEMENT_TRIES):
            obj = _propose(rng, class_name, s_range=s_range, max_range=world.max_range)
            if not _within_range(obj, path_length, world.max_range):
                continue
            xy, yaw = obj.track.pose(road, times)
            half = (obj.lwh[0] / 2 + CLEARANCE / 2, obj.lwh[1] / 2 + CLEARANCE / 2)
            if any(rectangles_overlap(xy, yaw, half, c, y, h).any() for c, y, h in placed):
                continue
            placed.append((xy, yaw, half))
            layout.objects.append(obj)
            break
        else:
            raise DataError(
                f"could not place {len(classes)} non-overlapping objects within max_range={world.max_range} m; "
                "lower world.objects_per_scene or raise world.max_range"
            )
    return layout
