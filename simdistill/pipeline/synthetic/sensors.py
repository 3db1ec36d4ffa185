"""Ray casting of the synthetic world: camera images with a real z-buffer, and LiDAR sweeps.

Both sensors intersect their rays with the ground plane (z = 0) and every object's oriented box
(exact slab test, nearest hit wins). Objects are culled per sensor: by their projected bounding
rectangle for a camera, by their azimuth interval for the LiDAR, so each object only costs the rays
that can actually reach it.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from simdistill.pipeline.geometry import box_corners, wrap_angle
from simdistill.pipeline.synthetic.looks import body_frame, paint
from simdistill.pipeline.synthetic.raycast import ground_intersect, ray_box_distance
from simdistill.pipeline.synthetic.rig import Camera, Lidar
from simdistill.pipeline.synthetic.world import ROAD_EDGES, SIDEWALK_WIDTH, Road

SUN = np.array([0.45, 0.3, 0.84]) / np.linalg.norm([0.45, 0.3, 0.84])  # direction towards the sun (global)
AMBIENT = 0.42  # share of light every face gets; the rest is Lambertian
SKY_HORIZON = np.array([205.0, 216.0, 228.0])
SKY_ZENITH = np.array([88.0, 138.0, 206.0])
HAZE_DISTANCE = 180.0  # [m] distance at which the ground has faded 63% into the horizon colour
IMAGE_NOISE = 2.0  # std of additive pixel noise (0..255)
RANGE_NOISE = 0.015  # std of LiDAR range noise [m]
NEAR_PLANE = 0.05  # [m]

# Ground materials: RGB and LiDAR reflectivity, by index.
GROUND: dict[str, tuple[tuple[float, float, float], float]] = {
    "asphalt": ((80.0, 80.0, 84.0), 9.0),
    "marking": ((226.0, 226.0, 214.0), 90.0),
    "centre_line": ((222.0, 190.0, 70.0), 80.0),
    "sidewalk": ((152.0, 150.0, 143.0), 25.0),
    "terrain": ((100.0, 118.0, 76.0), 16.0),
}
ASPHALT, MARKING, CENTRE_LINE, SIDEWALK, TERRAIN = range(len(GROUND))
GROUND_RGB = np.array([rgb for rgb, _ in GROUND.values()])  # [5, 3]
GROUND_REFLECTIVITY = np.array([refl for _, refl in GROUND.values()])  # [5]

DASHED_LINES = (-1.75, 5.25)  # lane separators, 3 m dashes every 9 m
SOLID_LINES = (ROAD_EDGES[0] + 0.2, ROAD_EDGES[1] - 0.2)
LINE_HALF_WIDTH = 0.075


@dataclass
class Boxes:
    """The objects' bodies at one instant in the global frame (each is smaller than its annotation box)."""

    centers: np.ndarray  # [N, 3]
    yaws: np.ndarray  # [N]
    lwh: np.ndarray  # [N, 3] length (along heading), width, height
    colors: np.ndarray  # [N, 3] RGB 0..255
    reflectivity: np.ndarray  # [N]
    labels: np.ndarray  # [N] index into CLASS_NAMES (selects the look)

    def __len__(self) -> int:
        return len(self.yaws)

    def corners(self) -> np.ndarray:
        """[N, 8, 3] corners in the global frame (any order: callers take extents only)."""
        return box_corners(np.concatenate([self.centers, self.lwh, self.yaws[:, None]], axis=1))

    def surface(self, ids: np.ndarray, hits: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(RGB [P, 3], reflectivity [P], outward normals [P, 3]) where P rays hit bodies `ids` [P] at `hits` [P, 3]."""
        surface = body_frame(hits, centers=self.centers[ids], yaws=self.yaws[ids], lwh=self.lwh[ids])
        rgb, refl = paint(self.labels[ids], surface, colors=self.colors[ids], reflectivity=self.reflectivity[ids])
        return rgb, refl, surface.normals


@dataclass
class ZBuffer:
    """Nearest surface per ray, flattened: ids -1 = ground, -2 = nothing (sky), k >= 0 = body k."""

    depth: np.ndarray  # [R] distance along the ray (inf = no hit)
    ids: np.ndarray  # [R] int

    @classmethod
    def over_ground(cls, origin: np.ndarray, rays: np.ndarray) -> ZBuffer:
        depth = ground_intersect(origin, rays)  # [R]
        return cls(depth=depth, ids=np.where(np.isfinite(depth), -1, -2))

    def add_body(self, boxes: Boxes, k: int, *, origin: np.ndarray, rays: np.ndarray, candidates: np.ndarray) -> int:
        """Intersect body k with the `candidates` [C] (flat ray indices) of `rays` [R, 3]; returns its hits."""
        t = ray_box_distance(
            origin, rays[candidates], center=boxes.centers[k], yaw=float(boxes.yaws[k]), half=boxes.lwh[k] / 2
        )
        closer = t < self.depth[candidates]
        chosen = candidates[closer]
        self.depth[chosen] = t[closer]
        self.ids[chosen] = k
        return int(np.isfinite(t).sum())


def _cell_noise(x: np.ndarray, y: np.ndarray, cell: float) -> np.ndarray:
    """Deterministic value noise in [0, 1) on a square grid of `cell` metres in the global frame."""
    ix = np.floor(x / cell).astype(np.int64)
    iy = np.floor(y / cell).astype(np.int64)
    h = (ix * 73856093) ^ (iy * 19349663)
    h = (h ^ (h >> 13)) * 1274126177
    return ((h ^ (h >> 16)) & 0xFFFF).astype(np.float64) / 65536.0


def _ground_materials(road: Road, x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(index [N] into GROUND, road coordinates s [N] and d [N]) of ground points."""
    s, d = road.frame(x, y)
    on_road = (d >= ROAD_EDGES[0]) & (d <= ROAD_EDGES[1])
    sidewalk = ~on_road & (d >= ROAD_EDGES[0] - SIDEWALK_WIDTH) & (d <= ROAD_EDGES[1] + SIDEWALK_WIDTH)
    index = np.select([on_road, sidewalk], [ASPHALT, SIDEWALK], TERRAIN)
    dash = (s % 9.0) < 3.0
    lines = [(line, MARKING, True) for line in SOLID_LINES] + [(1.75, CENTRE_LINE, True)]
    lines += [(line, MARKING, dash) for line in DASHED_LINES]
    for line, material, where in lines:
        index[on_road & where & (np.abs(d - line) < LINE_HALF_WIDTH)] = material
    return index, s, d


def ground_reflectivity(road: Road, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """LiDAR reflectivity [N] of ground points [N] (x, y global)."""
    return GROUND_REFLECTIVITY[_ground_materials(road, x, y)[0]]


def ground_color(road: Road, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """RGB [N, 3] of ground points: lanes, markings, sidewalks (with joints), terrain (checkered), fine grain."""
    index, s, _ = _ground_materials(road, x, y)
    color = GROUND_RGB[index]  # [N, 3], a copy
    color[(index == TERRAIN) & ((np.floor(x / 4.0) + np.floor(y / 4.0)) % 2 == 0)] *= 0.88
    color[(index == SIDEWALK) & ((s % 1.5) < 0.06)] *= 0.75
    grain = _cell_noise(x, y, 0.4) - 0.5  # fine texture so that motion and perspective are visible
    return color * (1.0 + 0.18 * grain)[:, None]


@dataclass
class CameraRender:
    image: np.ndarray  # [H, W, 3] uint8 RGB
    visible: np.ndarray  # [N] pixels where each object is the nearest surface
    projected: np.ndarray  # [N] pixels whose ray hits each object at all (occluded or not)


def _pixel_window(camera: Camera, corners_cam: np.ndarray) -> tuple[int, int, int, int] | None:
    """(u0, u1, v0, v1) pixel rectangle that can see a body with corners [8, 3] in the camera frame, or None."""
    z = corners_cam[:, 2]
    if z.max() <= NEAR_PLANE:
        return None
    if z.min() <= NEAR_PLANE:  # straddles the image plane: test every pixel
        return 0, camera.width, 0, camera.height
    uvw = corners_cam @ camera.intrinsic.T
    u, v = uvw[:, 0] / uvw[:, 2], uvw[:, 1] / uvw[:, 2]
    u0, u1 = max(0, int(np.floor(u.min()))), min(camera.width, int(np.ceil(u.max())) + 1)
    v0, v1 = max(0, int(np.floor(v.min()))), min(camera.height, int(np.ceil(v.max())) + 1)
    return (u0, u1, v0, v1) if u0 < u1 and v0 < v1 else None


def render_camera(
    camera: Camera, *, ego2global: np.ndarray, road: Road, boxes: Boxes, rng: np.random.Generator
) -> CameraRender:
    cam2global = ego2global @ camera.camera2ego
    rot, origin = cam2global[:3, :3], cam2global[:3, 3]
    height, width = camera.height, camera.width
    rays = (camera.rays @ rot.T).reshape(-1, 3)  # [H*W, 3] global directions
    zbuf = ZBuffer.over_ground(origin, rays)
    projected = np.zeros(len(boxes), dtype=np.int64)
    for k, corners in enumerate(boxes.corners()):
        window = _pixel_window(camera, (corners - origin) @ rot)
        if window is None:
            continue
        u0, u1, v0, v1 = window
        pixels = (np.arange(v0, v1)[:, None] * width + np.arange(u0, u1)[None]).ravel()
        projected[k] = zbuf.add_body(boxes, k, origin=origin, rays=rays, candidates=pixels)

    image = np.empty((height * width, 3))
    sky = zbuf.ids == -2
    elevation = np.clip(rays[sky, 2] / 0.45, 0.0, 1.0)[:, None] ** 0.7
    image[sky] = SKY_HORIZON * (1.0 - elevation) + SKY_ZENITH * elevation
    ground = zbuf.ids == -1
    hits = origin + zbuf.depth[ground][:, None] * rays[ground]  # [G, 3]
    haze = 1.0 - np.exp(-zbuf.depth[ground] / HAZE_DISTANCE)
    image[ground] = ground_color(road, hits[:, 0], hits[:, 1]) * (1.0 - haze[:, None]) + SKY_HORIZON * haze[:, None]
    objects = zbuf.ids >= 0
    ids = zbuf.ids[objects]
    color, _, normals = boxes.surface(ids, origin + zbuf.depth[objects][:, None] * rays[objects])
    shade = AMBIENT + (1.0 - AMBIENT) * np.clip(normals @ SUN, 0.0, 1.0)
    image[objects] = color * shade[:, None]
    noise = IMAGE_NOISE * rng.standard_normal(size=(height, width, 3), dtype=np.float32)
    image = image.reshape(height, width, 3) + noise
    visible = np.bincount(ids, minlength=len(boxes))
    return CameraRender(image=np.clip(np.rint(image), 0, 255).astype(np.uint8), visible=visible, projected=projected)


@dataclass
class LidarSweep:
    points: np.ndarray  # [P, 5] float32 (x, y, z, intensity, ring) in the LiDAR frame
    hit_ids: np.ndarray  # [P] int: object index hit by each point, -1 for the ground


def _azimuth_columns(lidar: Lidar, corners_lidar: np.ndarray, center_lidar: np.ndarray) -> np.ndarray:
    """Firing columns [C] whose azimuth falls inside a body's azimuth interval (corners [8, 3], LiDAR frame)."""
    center_az = np.arctan2(center_lidar[1], center_lidar[0])
    rel = wrap_angle(np.arctan2(corners_lidar[:, 1], corners_lidar[:, 0]) - center_az)
    col_rel = wrap_angle(lidar.azimuths - center_az)
    return np.nonzero((col_rel >= rel.min() - 1e-9) & (col_rel <= rel.max() + 1e-9))[0]


def cast_lidar(
    lidar: Lidar, *, ego2global: np.ndarray, road: Road, boxes: Boxes, rng: np.random.Generator
) -> LidarSweep:
    lidar2global = ego2global @ lidar.lidar2ego
    rot, origin = lidar2global[:3, :3], lidar2global[:3, 3]
    beams, steps = lidar.rays.shape[:2]
    rays = (lidar.rays @ rot.T).reshape(-1, 3)  # [B*A, 3] global directions
    zbuf = ZBuffer.over_ground(origin, rays)
    for k, corners in enumerate(boxes.corners()):
        if np.hypot(*(boxes.centers[k] - origin)[:2]) > lidar.max_range + boxes.lwh[k, :2].max():
            continue
        cols = _azimuth_columns(lidar, (corners - origin) @ rot, (boxes.centers[k] - origin) @ rot)
        if len(cols):
            candidates = (np.arange(beams)[:, None] * steps + cols[None]).ravel()
            zbuf.add_body(boxes, k, origin=origin, rays=rays, candidates=candidates)

    noise = rng.normal(0.0, RANGE_NOISE, size=len(rays))  # drawn for every ray: same stream whatever is hit
    keep = zbuf.depth <= lidar.max_range
    depth, hit_ids, global_rays = zbuf.depth[keep], zbuf.ids[keep], rays[keep]
    ring = np.repeat(np.arange(beams), steps)[keep]
    xyz = lidar.rays.reshape(-1, 3)[keep] * (depth + noise[keep])[:, None]  # [P, 3] LiDAR frame
    hits = origin + depth[:, None] * global_rays  # [P, 3] true surface points (global)
    refl, normals = np.empty(len(hit_ids)), np.zeros((len(hit_ids), 3))
    on_ground = hit_ids < 0
    refl[on_ground] = ground_reflectivity(road, hits[on_ground, 0], hits[on_ground, 1])
    normals[on_ground, 2] = 1.0
    _, refl[~on_ground], normals[~on_ground] = boxes.surface(hit_ids[~on_ground], hits[~on_ground])
    cos_inc = np.abs(np.sum(normals * global_rays, axis=-1))
    intensity = np.clip(np.rint(refl * (0.35 + 0.65 * cos_inc) + rng.normal(0.0, 2.0, size=len(refl))), 0, 255)
    points = np.concatenate([xyz, intensity[:, None], ring[:, None]], axis=1).astype(np.float32)
    return LidarSweep(points=points, hit_ids=hit_ids)
