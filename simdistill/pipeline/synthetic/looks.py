"""What an object's surface looks like where a ray hits it: colour for the cameras, reflectivity for the LiDAR.

A body is an upright box, so heading has to come from its paint: vehicles have a windshield and a light
bumper with white headlights in front, a dark bumper with red tail-light reflectors behind, and side windows
shifted towards the front (the hood is longer than the boot; a truck's cab is at its front); cycles have a
white lamp in front and a red one behind; pedestrians show a face in front and hair behind. Barriers and
cones stay symmetric (the devkit ignores a cone's orientation and scores a barrier's modulo pi). In the LiDAR,
glass returns little and the rear reflectors return most, so intensity tells front from back too.

Patches are given in the body's own normalised coordinates: `across` = |y| / (w/2) on the front and back
faces, `along` = x / (l/2) on the sides and the top (+1 = front), `up` = z from 0 (ground) to 1 (top).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from simdistill.config import CLASS_NAMES

FRONT, BACK, SIDE, TOP = 0, 1, 2, 3

GLASS = ((58.0, 72.0, 90.0), 6.0)  # (RGB, LiDAR reflectivity; None keeps the body's)
HEADLIGHT = ((246.0, 246.0, 232.0), 140.0)
TAIL_LIGHT = ((214.0, 22.0, 22.0), 230.0)  # red retro-reflectors: the strongest returns on a vehicle
LIGHT_BUMPER = ((206.0, 206.0, 200.0), None)
DARK_BUMPER = ((38.0, 38.0, 42.0), None)
DARK_PANEL = ((46.0, 44.0, 40.0), None)
SKIN = ((240.0, 198.0, 170.0), None)
HAIR = ((44.0, 32.0, 24.0), None)
TROUSERS = ((46.0, 50.0, 68.0), None)
REFLECTIVE_STRIPE = ((236.0, 236.0, 236.0), 230.0)


@dataclass(frozen=True)
class Patch:
    face: int  # FRONT, BACK, SIDE or TOP
    horizontal: tuple[float, float]  # `across` range on FRONT/BACK, `along` range on SIDE/TOP
    up: tuple[float, float]  # height range, 0 = ground, 1 = top of the body
    material: tuple[tuple[float, float, float], float | None]  # (RGB, reflectivity or None)


def _lit_ends(glass_up: tuple[float, float], *, rear_glass: bool) -> tuple[Patch, ...]:
    """A vehicle's front (windshield, headlights, light bumper) and back (tail lights, dark bumper)."""
    patches = [
        Patch(FRONT, (0.0, 0.9), glass_up, GLASS),
        Patch(FRONT, (0.55, 0.92), (0.42, 0.56), HEADLIGHT),
        Patch(FRONT, (0.0, 1.0), (0.1, 0.36), LIGHT_BUMPER),
        Patch(BACK, (0.45, 0.95), (0.36, 0.6), TAIL_LIGHT),
        Patch(BACK, (0.0, 1.0), (0.1, 0.36), DARK_BUMPER),
    ]
    if rear_glass:
        patches.append(Patch(BACK, (0.0, 0.85), (glass_up[0] + 0.02, glass_up[1] - 0.03), GLASS))
    return tuple(patches)


_HEAD = (0.82, 0.97)
_CYCLE_LAMPS = (Patch(FRONT, (0.0, 0.45), (0.55, 0.75), HEADLIGHT), Patch(BACK, (0.0, 0.45), (0.5, 0.7), TAIL_LIGHT))
LOOKS: dict[str, tuple[Patch, ...]] = {
    "car": _lit_ends((0.68, 0.95), rear_glass=True)
    + (Patch(SIDE, (-0.6, 0.3), (0.68, 0.93), GLASS), Patch(TOP, (-0.6, 0.3), (0.0, 1.0), GLASS)),
    "truck": _lit_ends((0.62, 0.92), rear_glass=False) + (Patch(SIDE, (0.62, 0.95), (0.6, 0.9), GLASS),),
    "construction_vehicle": _lit_ends((0.62, 0.92), rear_glass=False)
    + (Patch(SIDE, (0.55, 0.95), (0.6, 0.9), GLASS),),
    "bus": _lit_ends((0.55, 0.95), rear_glass=False) + (Patch(SIDE, (-0.9, 0.9), (0.58, 0.86), GLASS),),
    "trailer": (
        Patch(FRONT, (0.0, 1.0), (0.05, 0.35), DARK_PANEL),
        Patch(BACK, (0.55, 0.92), (0.1, 0.22), TAIL_LIGHT),
        Patch(BACK, (0.0, 1.0), (0.0, 0.1), DARK_BUMPER),
    ),
    "motorcycle": _CYCLE_LAMPS,
    "bicycle": _CYCLE_LAMPS,
    "pedestrian": (
        Patch(FRONT, (0.0, 0.55), _HEAD, SKIN),
        Patch(BACK, (0.0, 1.0), (_HEAD[0] - 0.02, 1.0), HAIR),
        Patch(SIDE, (0.0, 0.5), _HEAD, SKIN),
        Patch(SIDE, (-1.0, 0.0), (_HEAD[0] - 0.02, 1.0), HAIR),
        Patch(TOP, (-1.0, 1.0), (0.0, 1.0), HAIR),
        *(Patch(face, (-1.0, 1.0), (0.0, 0.45), TROUSERS) for face in (FRONT, BACK, SIDE)),
    ),
    "barrier": (),
    "traffic_cone": tuple(Patch(face, (-1.0, 1.0), (0.7, 0.82), REFLECTIVE_STRIPE) for face in (FRONT, BACK, SIDE)),
}


@dataclass
class SurfaceHits:
    """Where P rays met bodies, in each body's normalised frame (module doc)."""

    face: np.ndarray  # [P] FRONT, BACK, SIDE or TOP
    horizontal: np.ndarray  # [P] `across` on FRONT/BACK, `along` on SIDE/TOP
    up: np.ndarray  # [P] 0 = ground .. 1 = top
    normals: np.ndarray  # [P, 3] outward normal of the face hit (global)


def body_frame(hits: np.ndarray, *, centers: np.ndarray, yaws: np.ndarray, lwh: np.ndarray) -> SurfaceHits:
    """Surface hits [P, 3] (global, on the bodies' surfaces) in the frame of the body each belongs to.

    centers [P, 3], yaws [P], lwh [P, 3]: that body. The face is the one the hit lies on: the axis along which
    the hit is furthest out relative to the half size (the bottom is never seen).
    """
    c, s = np.cos(yaws), np.sin(yaws)
    rel = hits - centers  # [P, 3]
    x = rel[:, 0] * c + rel[:, 1] * s  # along the heading
    y = -rel[:, 0] * s + rel[:, 1] * c
    along, across, up = x / (lwh[:, 0] / 2), y / (lwh[:, 1] / 2), rel[:, 2] / lwh[:, 2] + 0.5
    axis = np.argmax(np.stack([np.abs(along), np.abs(across), 2.0 * up - 1.0], axis=1), axis=1)  # [P]
    face = np.select([axis == 2, axis == 1, along > 0], [TOP, SIDE, FRONT], BACK)
    normals = np.zeros_like(rel)
    sign = np.where(axis == 0, np.sign(along), np.sign(across))
    heading = np.stack([c, s], axis=1)  # [P, 2]
    left = np.stack([-s, c], axis=1)
    normals[:, :2] = np.where((axis == 0)[:, None], heading, left) * sign[:, None]
    normals[axis == 2] = (0.0, 0.0, 1.0)
    horizontal = np.where(face <= BACK, np.abs(across), along)
    return SurfaceHits(face=face, horizontal=horizontal, up=up, normals=normals)


def paint(
    labels: np.ndarray, surface: SurfaceHits, *, colors: np.ndarray, reflectivity: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """(RGB [P, 3], reflectivity [P]) of P surface hits; labels [P] index CLASS_NAMES, colors [P, 3] and
    reflectivity [P] are each hit body's own (what a hit outside every patch shows)."""
    rgb = np.array(colors, dtype=np.float64)
    refl = np.array(reflectivity, dtype=np.float64)
    for label in np.unique(labels):
        of_class = labels == label
        for patch in LOOKS[CLASS_NAMES[label]]:
            inside = (
                of_class
                & (surface.face == patch.face)
                & (surface.horizontal >= patch.horizontal[0])
                & (surface.horizontal <= patch.horizontal[1])
                & (surface.up >= patch.up[0])
                & (surface.up <= patch.up[1])
            )
            color, intensity = patch.material
            rgb[inside] = color
            if intensity is not None:
                refl[inside] = intensity
    return rgb, refl
