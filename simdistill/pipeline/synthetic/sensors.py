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
from simdistill.pipeline.synthetic.raycast import ground_intersect, ray_box_intersect
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

# Ground materials: RGB and LiDAR reflectivity.
ASPHALT = (np.array([80.0, 80.0, 84.0]), 9.0)
MARKING = (np.array([226.0, 226.0, 214.0]), 90.0)
CENTRE_LINE = (np.array([222.0, 190.0, 70.0]), 80.0)
SIDEWALK = (np.array([152.0, 150.0, 143.0]), 25.0)
TERRAIN = (np.array([100.0, 118.0, 76.0]), 16.0)

DASHED_LINES = (-1.75, 5.25)  # lane separators, 3 m dashes every 9 m
SOLID_LINES = (ROAD_EDGES[0] + 0.2, ROAD_EDGES[1] - 0.2)
LINE_HALF_WIDTH = 0.075


@dataclass
class Boxes:
    """The objects of one key frame in the global frame."""

    centers: np.ndarray  # [N, 3]
    yaws: np.ndarray  # [N]
    lwh: np.ndarray  # [N, 3] length (along heading), width, height
    colors: np.ndarray  # [N, 3] RGB 0..255
    reflectivity: np.ndarray  # [N]

    def __len__(self) -> int:
        return len(self.yaws)

    def corners(self) -> np.ndarray:
        """[N, 8, 3] corners in the global frame (any order: callers take extents only)."""
        return box_corners(np.concatenate([self.centers, self.lwh, self.yaws[:, None]], axis=1))


def _cell_noise(x: np.ndarray, y: np.ndarray, cell: float) -> np.ndarray:
    """Deterministic value noise in [0, 1) on a square grid of `cell` metres in the global frame."""
    ix = np.floor(x / cell).astype(np.int64)
    iy = np.floor(y / cell).astype(np.int64)
    h = (ix * 73856093) ^ (iy * 19349663)
    h = (h ^ (h >> 13)) * 1274126177
    return ((h ^ (h >> 16)) & 0xFFFF).astype(np.float64) / 65536.0


def ground_material(road: Road, x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(RGB [N, 3], LiDAR reflectivity [N]) of ground points: lanes, markings, sidewalks, terrain."""
    s, d = road.frame(x, y)
    color = np.empty((len(x), 3))
    refl = np.empty(len(x))

    def paint(mask: np.ndarray, material: tuple[np.ndarray, float]) -> None:
        color[mask] = material[0]
        refl[mask] = material[1]

    on_road = (d >= ROAD_EDGES[0]) & (d <= ROAD_EDGES[1])
    sidewalk = ~on_road & (d >= ROAD_EDGES[0] - SIDEWALK_WIDTH) & (d <= ROAD_EDGES[1] + SIDEWALK_WIDTH)
    terrain = ~on_road & ~sidewalk
    paint(on_road, ASPHALT)
    paint(sidewalk, SIDEWALK)
    paint(terrain, TERRAIN)
    checker = ((np.floor(x / 4.0) + np.floor(y / 4.0)) % 2 == 0) & terrain
    color[checker] *= 0.88
    joints = sidewalk & ((s % 1.5) < 0.06)
    color[joints] *= 0.75
    for line in SOLID_LINES:
        paint(on_road & (np.abs(d - line) < LINE_HALF_WIDTH), MARKING)
    paint(on_road & (np.abs(d - 1.75) < LINE_HALF_WIDTH), CENTRE_LINE)
    dash = (s % 9.0) < 3.0
    for line in DASHED_LINES:
        paint(on_road & dash & (np.abs(d - line) < LINE_HALF_WIDTH), MARKING)
    grain = _cell_noise(x, y, 0.4) - 0.5  # fine texture so that motion and perspective are visible
    color *= (1.0 + 0.18 * grain)[:, None]
    return color, refl


@dataclass
class CameraRender:
    image: np.ndarray  # [H, W, 3] uint8 RGB
    visible: np.ndarray  # [N] pixels where each object is the nearest surface
    projected: np.ndarray  # [N] pixels whose ray hits each object at all (occluded or not)


def render_camera(
    camera: Camera, *, ego2global: np.ndarray, road: Road, boxes: Boxes, rng: np.random.Generator
) -> CameraRender:
    cam2global = ego2global @ camera.camera2ego
    rot, origin = cam2global[:3, :3], cam2global[:3, 3]
    height, width = camera.height, camera.width
    rays = camera.rays @ rot.T  # [H, W, 3] global directions
    depth = ground_intersect(origin, rays.reshape(-1, 3)).reshape(height, width)  # [H, W]
    ids = np.where(np.isfinite(depth), -1, -2)  # -1 ground, -2 sky, k >= 0 object k
    normals = np.zeros((height, width, 3))
    projected = np.zeros(len(boxes), dtype=np.int64)

    corners = boxes.corners()  # [N, 8, 3]
    for k in range(len(boxes)):
        corners_cam = (corners[k] - origin) @ rot  # [8, 3] in the camera frame
        z = corners_cam[:, 2]
        if z.max() <= NEAR_PLANE:
            continue
        if z.min() <= NEAR_PLANE:  # straddles the image plane: test every pixel
            u0, u1, v0, v1 = 0, width, 0, height
        else:
            uvw = corners_cam @ camera.intrinsic.T
            u, v = uvw[:, 0] / uvw[:, 2], uvw[:, 1] / uvw[:, 2]
            u0, u1 = max(0, int(np.floor(u.min()))), min(width, int(np.ceil(u.max())) + 1)
            v0, v1 = max(0, int(np.floor(v.min()))), min(height, int(np.ceil(v.max())) + 1)
            if u0 >= u1 or v0 >= v1:
                continue
        sub = rays[v0:v1, u0:u1].reshape(-1, 3)
        t, normal = ray_box_intersect(
            origin, sub, center=boxes.centers[k], yaw=float(boxes.yaws[k]), half=boxes.lwh[k] / 2
        )
        projected[k] = int(np.isfinite(t).sum())
        t = t.reshape(v1 - v0, u1 - u0)
        closer = t < depth[v0:v1, u0:u1]
        depth[v0:v1, u0:u1][closer] = t[closer]
        ids[v0:v1, u0:u1][closer] = k
        normals[v0:v1, u0:u1][closer] = normal.reshape(v1 - v0, u1 - u0, 3)[closer]

    image = np.empty((height, width, 3))
    sky = ids == -2
    elevation = np.clip(rays[..., 2][sky] / 0.45, 0.0, 1.0)[:, None] ** 0.7
    image[sky] = SKY_HORIZON * (1.0 - elevation) + SKY_ZENITH * elevation
    ground = ids == -1
    hits = origin + depth[ground][:, None] * rays[ground]  # [G, 3]
    color, _ = ground_material(road, hits[:, 0], hits[:, 1])
    haze = 1.0 - np.exp(-depth[ground] / HAZE_DISTANCE)
    image[ground] = color * (1.0 - haze[:, None]) + SKY_HORIZON * haze[:, None]
    objects = ids >= 0
    shade = AMBIENT + (1.0 - AMBIENT) * np.clip(normals[objects] @ SUN, 0.0, 1.0)
    image[objects] = boxes.colors[ids[objects]] * shade[:, None]
    image += IMAGE_NOISE * rng.standard_normal(size=image.shape, dtype=np.float32)
    visible = np.bincount(ids[objects], minlength=len(boxes))
    return CameraRender(image=np.clip(np.rint(image), 0, 255).astype(np.uint8), visible=visible, projected=projected)


@dataclass
class LidarSweep:
    points: np.ndarray  # [P, 5] float32 (x, y, z, intensity, ring) in the LiDAR frame
    hit_ids: np.ndarray  # [P] int: object index hit by each point, -1 for the ground


def cast_lidar(
    lidar: Lidar, *, ego2global: np.ndarray, road: Road, boxes: Boxes, rng: np.random.Generator
) -> LidarSweep:
    lidar2global = ego2global @ lidar.lidar2ego
    rot, origin = lidar2global[:3, :3], lidar2global[:3, 3]
    beams, steps = lidar.rays.shape[:2]
    rays = lidar.rays @ rot.T  # [B, A, 3] global directions
    depth = ground_intersect(origin, rays.reshape(-1, 3)).reshape(beams, steps)
    ids = np.full((beams, steps), -1)
    normals = np.zeros((beams, steps, 3))
    normals[..., 2] = 1.0

    all_corners = boxes.corners()  # [N, 8, 3]
    for k in range(len(boxes)):
        corners = (all_corners[k] - origin) @ rot  # [8, 3] in the LiDAR frame
        center_az = np.arctan2(*(((boxes.centers[k] - origin) @ rot)[[1, 0]]))
        rel = wrap_angle(np.arctan2(corners[:, 1], corners[:, 0]) - center_az)
        col_rel = wrap_angle(lidar.azimuths - center_az)
        cols = np.nonzero((col_rel >= rel.min() - 1e-9) & (col_rel <= rel.max() + 1e-9))[0]
        if len(cols) == 0 or np.hypot(*(boxes.centers[k] - origin)[:2]) > lidar.max_range + boxes.lwh[k, :2].max():
            continue
        sub = rays[:, cols].reshape(-1, 3)
        t, normal = ray_box_intersect(
            origin, sub, center=boxes.centers[k], yaw=float(boxes.yaws[k]), half=boxes.lwh[k] / 2
        )
        t = t.reshape(beams, len(cols))
        view = depth[:, cols]
        closer = t < view
        view[closer] = t[closer]
        depth[:, cols] = view
        id_view = ids[:, cols]
        id_view[closer] = k
        ids[:, cols] = id_view
        n_view = normals[:, cols]
        n_view[closer] = normal.reshape(beams, len(cols), 3)[closer]
        normals[:, cols] = n_view

    noise = rng.normal(0.0, RANGE_NOISE, size=depth.shape)  # drawn for every ray: same stream whatever is hit
    keep = depth <= lidar.max_range
    rng_ = depth[keep] + noise[keep]
    ring = np.broadcast_to(np.arange(beams)[:, None], (beams, steps))[keep]
    hit_ids = ids[keep]
    local_rays = lidar.rays[keep]  # [P, 3] LiDAR frame
    xyz = local_rays * rng_[:, None]
    cos_inc = np.abs(np.sum(normals[keep] * rays[keep], axis=-1))
    refl = np.empty(len(hit_ids))
    on_ground = hit_ids < 0
    hits_global = origin + depth[keep][on_ground][:, None] * rays[keep][on_ground]
    _, refl[on_ground] = ground_material(road, hits_global[:, 0], hits_global[:, 1])
    refl[~on_ground] = boxes.reflectivity[hit_ids[~on_ground]]
    intensity = np.clip(np.rint(refl * (0.35 + 0.65 * cos_inc) + rng.normal(0.0, 2.0, size=len(refl))), 0, 255)
    points = np.concatenate([xyz, intensity[:, None], ring[:, None]], axis=1).astype(np.float32)
    return LidarSweep(points=points, hit_ids=hit_ids)
