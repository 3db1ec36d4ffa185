"""The object classes of the synthetic world: nuScenes categories, sizes, mix, motion, look.

Sizes are nuScenes-typical (w, l, h) means of the annotation boxes; the body that cameras and LiDAR see is
smaller by `margin` on every side and on top (its bottom rests on the ground, as the box's does), so range
noise does not push surface points out of the box, as on nuScenes where annotators draw boxes around the
points. The mix is skewed like nuScenes (cars most common).
Colours avoid the sky's blues and the ground's greys/greens so a camera can tell objects apart
from the background, while several classes share hues (as in real data, colour is not the label).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import numpy as np

from simdistill.config import CLASS_NAMES


@dataclass(frozen=True)
class ClassSpec:
    category: str  # nuScenes category name (maps to the detection name via the devkit)
    wlh: tuple[float, float, float]  # mean width, length, height [m]
    weight: float  # share of objects
    p_moving: float  # probability an object of this class moves
    speed: tuple[float, float]  # speed range when moving [m/s]
    color: tuple[int, int, int]  # base RGB
    reflectivity: float  # LiDAR intensity scale (0..255)
    margin: float  # gap between the body and its annotation box on each side and on top [m]


CLASS_SPECS: dict[str, ClassSpec] = {
    "car": ClassSpec("vehicle.car", (1.95, 4.62, 1.73), 0.42, 0.6, (3.0, 10.0), (196, 38, 38), 60.0, 0.10),
    "truck": ClassSpec("vehicle.truck", (2.51, 6.93, 2.84), 0.08, 0.5, (3.0, 8.0), (226, 128, 28), 70.0, 0.10),
    "construction_vehicle": ClassSpec(
        "vehicle.construction", (2.85, 6.37, 3.19), 0.03, 0.2, (1.0, 3.0), (232, 196, 24), 75.0, 0.10
    ),
    "bus": ClassSpec("vehicle.bus.rigid", (2.94, 10.50, 3.47), 0.03, 0.6, (3.0, 8.0), (186, 34, 150), 65.0, 0.10),
    "trailer": ClassSpec("vehicle.trailer", (2.90, 12.29, 3.87), 0.03, 0.3, (3.0, 7.0), (124, 72, 36), 55.0, 0.10),
    "barrier": ClassSpec(
        "movable_object.barrier", (2.53, 0.50, 0.98), 0.09, 0.0, (0.0, 0.0), (238, 96, 64), 90.0, 0.05
    ),
    "motorcycle": ClassSpec(
        "vehicle.motorcycle", (0.77, 2.11, 1.47), 0.04, 0.6, (3.0, 9.0), (124, 40, 172), 50.0, 0.06
    ),
    "bicycle": ClassSpec("vehicle.bicycle", (0.60, 1.70, 1.28), 0.04, 0.5, (2.0, 5.0), (20, 168, 160), 40.0, 0.06),
    "pedestrian": ClassSpec(
        "human.pedestrian.adult", (0.67, 0.73, 1.77), 0.18, 0.6, (0.8, 1.7), (222, 150, 108), 30.0, 0.05
    ),
    "traffic_cone": ClassSpec(
        "movable_object.trafficcone", (0.41, 0.41, 1.07), 0.06, 0.0, (0.0, 0.0), (255, 104, 8), 120.0, 0.05
    ),
}

VEHICLES = ("car", "truck", "construction_vehicle", "bus", "trailer")
CYCLES = ("motorcycle", "bicycle")

ATTRIBUTES: tuple[tuple[str, str], ...] = (
    ("vehicle.moving", "Vehicle is moving."),
    ("vehicle.stopped", "Vehicle, with a driver/rider in/on it, is currently stationary but has an intent to move."),
    ("vehicle.parked", "Vehicle is stationary (usually for longer duration) with no immediate intent to move."),
    ("cycle.with_rider", "There is someone riding the bicycle or motorcycle."),
    ("cycle.without_rider", "There is NO rider on the bicycle or motorcycle."),
    ("pedestrian.sitting_lying_down", "The human is sitting or lying down."),
    ("pedestrian.standing", "The human is standing."),
    ("pedestrian.moving", "The human is moving."),
)

VISIBILITY_LEVELS: tuple[tuple[str, str, str], ...] = (
    ("1", "v0-40", "visibility of whole object is between 0 and 40%"),
    ("2", "v40-60", "visibility of whole object is between 40 and 60%"),
    ("3", "v60-80", "visibility of whole object is between 60 and 80%"),
    ("4", "v80-100", "visibility of whole object is between 80 and 100%"),
)


def visibility_token(fraction: float) -> str:
    """The nuScenes visibility token ('1'..'4') for the visible fraction of an object's camera pixels."""
    if fraction < 0.4:
        return "1"
    if fraction < 0.6:
        return "2"
    if fraction < 0.8:
        return "3"
    return "4"


def body_lwh(class_name: str, box_lwh: np.ndarray) -> np.ndarray:
    """The visible body's (length, width, height) [3] inside an annotation box of `box_lwh` [3]."""
    margin = CLASS_SPECS[class_name].margin
    return np.asarray(box_lwh, dtype=np.float64) - np.array([2.0 * margin, 2.0 * margin, margin])


def class_weights() -> np.ndarray:
    weights = np.array([CLASS_SPECS[c].weight for c in CLASS_NAMES])
    return weights / weights.sum()


def instance_color(class_name: str, instance_token: str) -> np.ndarray:
    """RGB float [3] (0..255) of one object: the class colour with a small per-instance jitter.

    A pure function of the instance token, so tests can predict what a box looks like in an image.
    """
    base = np.array(CLASS_SPECS[class_name].color, dtype=np.float64)
    digest = hashlib.md5(instance_token.encode()).digest()
    jitter = (np.frombuffer(digest[:3], dtype=np.uint8).astype(np.float64) / 255.0 - 0.5) * 24.0  # +-12
    return np.clip(base + jitter, 0.0, 255.0)


def attribute_name(class_name: str, *, moving: bool, on_road: bool) -> str | None:
    """A devkit-valid attribute consistent with the object's motion (barriers and cones have none)."""
    if class_name in VEHICLES:
        if moving:
            return "vehicle.moving"
        return "vehicle.stopped" if on_road else "vehicle.parked"
    if class_name in CYCLES:
        return "cycle.with_rider" if (moving or on_road) else "cycle.without_rider"
    if class_name == "pedestrian":
        return "pedestrian.moving" if moving else "pedestrian.standing"
    return None
