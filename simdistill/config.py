"""Typed configuration: one dataclass per section, loaded from YAML with dotted CLI overrides.

`load_config("configs/demo.yaml", ["model.channels.cam=32"])` returns a validated `Config`.
Unknown keys, wrong types and malformed overrides raise `ConfigError` naming the key and the fix.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from simdistill.errors import ConfigError

CLASS_NAMES: tuple[str, ...] = (
    "car",
    "truck",
    "construction_vehicle",
    "bus",
    "trailer",
    "barrier",
    "motorcycle",
    "bicycle",
    "pedestrian",
    "traffic_cone",
)
"""The 10 nuScenes detection classes, in the order class indices refer to."""

CAMERA_NAMES: tuple[str, ...] = (
    "CAM_FRONT",
    "CAM_FRONT_RIGHT",
    "CAM_FRONT_LEFT",
    "CAM_BACK",
    "CAM_BACK_LEFT",
    "CAM_BACK_RIGHT",
)

DEFAULT_TASKS: tuple[tuple[str, ...], ...] = (
    ("car",),
    ("truck", "construction_vehicle"),
    ("bus", "trailer"),
    ("barrier",),
    ("motorcycle", "bicycle"),
    ("pedestrian", "traffic_cone"),
)


@dataclass
class DataConfig:
    dataroot: str = "data/demo"  # nuScenes v1.0 dataroot (real or synthetic)
    version: str = "v1.0-mini"  # v1.0-mini | v1.0-trainval
    train_split: str = "mini_train"  # a devkit split name (create_splits_scenes)
    val_split: str = "mini_val"
    sweeps: int = 1  # LiDAR sweeps merged per sample (1 = key frame only; BEVFusion uses 10)
    max_points: int = 0  # 0 = keep all points; else subsample to this many (seeded by params)
    # mmdet3d v1.x info pickles (nuscenes_infos_train.pkl / _val.pkl) for train_split / val_split, read
    # instead of the devkit tables (images and points still come from dataroot); "" = read the tables.
    infos_train: str = ""
    infos_val: str = ""


@dataclass
class WorldConfig:
    """The synthetic nuScenes world written by `make-demo-data`."""

    seed: int = 0
    version: str = "v1.0-mini"
    scenes: int = 10  # v1.0-mini allows at most 10 (the devkit's mini scene names)
    val_scenes: int = 0  # scenes with val names; 0 = a fifth of the scenes (at most 2 on v1.0-mini)
    samples_per_scene: int = 12  # key frames, 0.5 s apart
    image_width: int = 400  # rendered camera resolution (nuScenes itself is 1600x900)
    image_height: int = 225
    objects_per_scene: int = 24  # annotated objects alive in each scene
    max_range: float = 40.0  # objects are placed within this distance of the ego path [m]
    lidar_beams: int = 32
    lidar_azimuth_steps: int = 1084  # horizontal rays per revolution
    lidar_hz: int = 20  # LIDAR_TOP rate: lidar_hz / 2 - 1 non-key-frame sweeps between key frames (nuScenes: 20)


@dataclass
class AugmentConfig:
    """Augmentation policy (BEVFusion's nuScenes camera settings by default)."""

    final_height: int = 256  # network input height after resize + crop
    final_width: int = 704
    resize_lim: tuple[float, float] = (0.38, 0.55)  # train-time resize range, relative to the raw image
    test_resize: float = 0.0  # 0 = mean(resize_lim)
    bot_pct_lim: tuple[float, float] = (0.0, 0.0)  # fraction of the bottom cropped away
    rot_lim_deg: tuple[float, float] = (-5.4, 5.4)
    rand_flip: bool = True
    bev_rot_lim: tuple[float, float] = (-0.3925, 0.3925)  # [rad]
    bev_scale_lim: tuple[float, float] = (0.95, 1.05)
    bev_trans_std: tuple[float, float, float] = (0.0, 0.0, 0.0)  # [m]
    bev_flip: bool = True


@dataclass
class BackboneConfig:
    """ResNet-style image backbone + FPN neck written here (no timm / torchvision needed)."""

    stem_channels: int = 64
    stage_channels: tuple[int, ...] = (64, 128, 256, 512)
    stage_blocks: tuple[int, ...] = (2, 2, 2, 2)
    neck_channels: int = 256
    feature_stride: int = 8  # stride of the feature map the view transform lifts (8 or 16)


@dataclass
class BEVConfig:
    """BEV geometry shared by teacher, student and the store (names follow BEVFusion)."""

    xbound: tuple[float, float, float] = (-54.0, 54.0, 0.6)  # (min, max, step) of every stored BEV map [m]
    ybound: tuple[float, float, float] = (-54.0, 54.0, 0.6)
    zbound: tuple[float, float, float] = (-10.0, 10.0, 20.0)
    dbound: tuple[float, float, float] = (1.0, 60.0, 0.5)  # LSS depth bins (min, max, step) [m]
    lss_downsample: int = 2  # LSS pools at step/lss_downsample, then a stride-2 conv
    pillar_downsample: int = 2  # pillars at step/pillar_downsample, LiDAR encoder strides back

    @property
    def grid_size(self) -> tuple[int, int]:
        """(H, W) = (ny, nx) of every stored BEV map."""
        nx = round((self.xbound[1] - self.xbound[0]) / self.xbound[2])
        ny = round((self.ybound[1] - self.ybound[0]) / self.ybound[2])
        return ny, nx


@dataclass
class ChannelsConfig:
    cam: int = 80  # camera BEV channels (teacher cam_bev, student cam_bev and sim_lidar_bev)
    lidar: int = 256  # LiDAR BEV channels
    fused: int = 256  # fused BEV channels (ConvFuser output)
    pillar: int = 64  # pillar feature net channels


@dataclass
class DecoderConfig:
    """SECOND-style BEV backbone + FPN neck."""

    layer_nums: tuple[int, ...] = (5, 5)
    layer_strides: tuple[int, ...] = (1, 2)
    out_channels: tuple[int, ...] = (128, 256)
    upsample_channels: tuple[int, ...] = (256, 256)


@dataclass
class HeadConfig:
    tasks: tuple[tuple[str, ...], ...] = DEFAULT_TASKS
    shared_channels: int = 64
    head_conv: int = 64
    gaussian_overlap: float = 0.1
    min_radius: int = 2
    max_objs: int = 500
    code_weights: tuple[float, ...] = (1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 0.2, 0.2)
    loss_bbox_weight: float = 0.25
    score_threshold: float = 0.1
    # circle-NMS radius per task [m] on centre distance: the square roots of CenterPoint's nuScenes
    # min_radius (4, 12, 10, 1, 0.85, 0.175), which CenterPoint compares with the SQUARED distance.
    nms_radius: tuple[float, ...] = (2.0, 3.464, 3.162, 1.0, 0.922, 0.418)
    max_detections: int = 500
    pre_max_size: int = 1000


@dataclass
class GCMConfig:
    """Geometry Compensation Module: one deformable self-attention layer on sim_lidar_bev."""

    enabled: bool = True
    heads: int = 8
    points: int = 20
    ffn_channels: int = 0  # 0 = no feed-forward after the attention


@dataclass
class ModelConfig:
    backbone: BackboneConfig = field(default_factory=BackboneConfig)
    bev: BEVConfig = field(default_factory=BEVConfig)
    channels: ChannelsConfig = field(default_factory=ChannelsConfig)
    decoder: DecoderConfig = field(default_factory=DecoderConfig)
    head: HeadConfig = field(default_factory=HeadConfig)
    gcm: GCMConfig = field(default_factory=GCMConfig)
    max_points_per_pillar: int = 32


@dataclass
class TeacherTrainConfig:
    epochs: int = 20
    batch_size: int = 4
    lr: float = 2e-4
    weight_decay: float = 0.01
    grad_clip: float = 35.0
    num_workers: int = 0
    checkpoint_every: int = 200  # steps
    log_every: int = 10


@dataclass
class DistillConfig:
    """Which distillation terms are on and their weights (DESIGN.md §6)."""

    losses: tuple[str, ...] = ("imd", "cmd", "mmd_f", "mmd_p")
    imd_weight: float = 1.0
    cmd_weight: float = 100.0
    mmd_f_weight: float = 1.0
    mmd_p_heatmap_weight: float = 0.25
    mmd_p_box_weight: float = 0.25
    qfl_threshold: float = 0.1  # teacher cells above this count toward the QFL normaliser


@dataclass
class StudentTrainConfig:
    variant: str = "simdistill"  # simdistill | baseline
    epochs: int = 20
    batch_size: int = 4
    lr: float = 2e-4
    weight_decay: float = 0.01
    grad_clip: float = 35.0
    checkpoint_every: int = 200
    log_every: int = 10
    prefetch_batches: int = 2  # batches read ahead by the Dask loader
    loader: str = "dask"  # dask (read-ahead tasks) | direct (synchronous Zarr reads; for comparison)
    deterministic: bool = True


@dataclass
class StoreConfig:
    """Zarr v3 feature store codecs (DESIGN.md §5)."""

    zstd_level: int = 3
    shuffle: bool = True  # byte-shuffle before zstd
    sharding: bool = False  # shard views along V (object storage, file counts)
    views_per_shard: int = 16
    lossy: bool = False  # BitRound on lossy_arrays; off unless asked for
    lossy_keepbits: int = 7
    # lidar_bev stays lossless: CMD compares only its (large) foreground values, where 7-bit rounding moved the
    # loss of a near-converged student by ~10 % (benchmarks/store_io.py); it is ~1 bit/value lossless anyway.
    lossy_arrays: tuple[str, ...] = ("cam_bev", "fused_bev")
    compact_boxes: bool = True  # keep box regressions only at GT centres (all MMD-P reads)


@dataclass
class ExportConfig:
    views_per_sample: int = 1
    split: str = "train"  # train | val (the data section's split names)
    views_per_task: int = 8  # a Dask task exports this many consecutive views
    workers: int = 1
    threads_per_worker: int = 1
    write_queue: int = 4  # bounded queue between teacher forward and the writer thread
    # Which teacher fills the store: "simdistill" (a train-teacher checkpoint) or "mmdet3d" (an mmdetection3d
    # detector built from `teacher_config`, its BEV maps tapped by module path; needs simdistill[mmdet3d]).
    teacher: str = "simdistill"
    teacher_config: str = ""  # the mmdet3d model config (.py) when teacher = mmdet3d
    tap_family: str = "bevfusion"  # module layout of the mmdet3d teacher (interop.tapped_teacher.FAMILIES)
    taps: tuple[str, ...] = ()  # per-map overrides NAME=module.path (cam_bev, lidar_bev, fused_bev, head)


@dataclass
class Config:
    seed: int = 0
    device: str = "cpu"  # cpu | cuda | cuda:N
    threads: int = 0  # torch CPU threads for training/evaluation (0 = torch's default: one per core)
    data: DataConfig = field(default_factory=DataConfig)
    world: WorldConfig = field(default_factory=WorldConfig)
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    teacher_train: TeacherTrainConfig = field(default_factory=TeacherTrainConfig)
    student_train: StudentTrainConfig = field(default_factory=StudentTrainConfig)
    distill: DistillConfig = field(default_factory=DistillConfig)
    store: StoreConfig = field(default_factory=StoreConfig)
    export: ExportConfig = field(default_factory=ExportConfig)

    @property
    def class_names(self) -> tuple[str, ...]:
        return CLASS_NAMES


# --------------------------------------------------------------------------------------------------
# Loading and validation


def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", str(tp))


def _coerce(value: Any, tp: Any, key: str) -> Any:
    """Check `value` against the annotation `tp` and convert lists to tuples; raise ConfigError."""
    origin = typing.get_origin(tp)
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise ConfigError(f"config key '{key}' must be a mapping of {_type_name(tp)} fields, got {value!r}")
        return _build(tp, value, key)
    if origin is tuple:
        args = typing.get_args(tp)
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"config key '{key}' must be a list, got {value!r}")
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_coerce(v, args[0], f"{key}[{i}]") for i, v in enumerate(value))
        if len(value) != len(args):
            raise ConfigError(f"config key '{key}' must have {len(args)} entries, got {len(value)}: {value!r}")
        return tuple(_coerce(v, a, f"{key}[{i}]") for i, (v, a) in enumerate(zip(value, args)))
    if origin in (typing.Union, types.UnionType):
        for arg in typing.get_args(tp):
            try:
                return _coerce(value, arg, key)
            except ConfigError:
                continue
        raise ConfigError(f"config key '{key}' has the wrong type: {value!r}")
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"config key '{key}' must be true or false, got {value!r}")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"config key '{key}' must be an integer, got {value!r}")
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"config key '{key}' must be a number, got {value!r}")
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(f"config key '{key}' must be a string, got {value!r}")
        return value
    raise ConfigError(f"config key '{key}' has an unsupported type {tp!r}")  # pragma: no cover


def _build(cls: type, raw: dict[str, Any], prefix: str) -> Any:
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(raw) - names)
    if unknown:
        where = f"'{prefix}'" if prefix else "the top level"
        raise ConfigError(
            f"unknown config key '{_join(prefix, unknown[0])}' in {where}; valid keys: {', '.join(sorted(names))}"
        )
    kwargs = {k: _coerce(v, hints[k], _join(prefix, k)) for k, v in raw.items()}
    return cls(**kwargs)


def _join(prefix: str, key: str) -> str:
    return f"{prefix}.{key}" if prefix else key


def config_to_dict(cfg: Any) -> dict[str, Any]:
    """Plain nested dict (tuples as lists) suitable for YAML / JSON / Zarr attributes."""

    def convert(v: Any) -> Any:
        if dataclasses.is_dataclass(v):
            return {f.name: convert(getattr(v, f.name)) for f in dataclasses.fields(v)}
        if isinstance(v, (list, tuple)):
            return [convert(x) for x in v]
        return v

    return convert(cfg)


def first_difference(a: Any, b: Any, prefix: str = "") -> tuple[str, Any, Any] | None:
    """(dotted key, a's value, b's value) of the first difference between two nested dicts, or None."""
    if isinstance(a, dict) and isinstance(b, dict):
        for key in sorted(set(a) | set(b)):
            diff = first_difference(a.get(key), b.get(key), f"{prefix}.{key}" if prefix else key)
            if diff:
                return diff
        return None
    return None if a == b else (prefix, a, b)


def config_from_dict(raw: dict[str, Any]) -> Config:
    cfg = _build(Config, raw, "")
    validate(cfg)
    return cfg


def parse_override(text: str) -> tuple[list[str], Any]:
    """'model.channels.cam=32' -> (['model', 'channels', 'cam'], 32) with the value read as YAML."""
    if "=" not in text:
        raise ConfigError(f"override '{text}' must look like section.key=value, e.g. model.channels.cam=32")
    key, value = text.split("=", 1)
    parts = [p for p in key.strip().split(".") if p]
    if not parts:
        raise ConfigError(f"override '{text}' has an empty key")
    try:
        parsed = yaml.safe_load(value) if value.strip() else ""
    except yaml.YAMLError as exc:
        raise ConfigError(f"override '{text}': value is not valid YAML ({exc.__class__.__name__})") from None
    return parts, parsed


def apply_overrides(raw: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    for text in overrides:
        parts, value = parse_override(text)
        node = raw
        for p in parts[:-1]:
            child = node.setdefault(p, {})
            if not isinstance(child, dict):
                raise ConfigError(f"override '{text}': '{p}' is a value, not a section")
            node = child
        node[parts[-1]] = value
    return raw


def load_config(path: str | Path | None = None, overrides: list[str] | None = None) -> Config:
    """Load a YAML config (None = the built-in defaults, i.e. paper sizes) and apply overrides."""
    raw: dict[str, Any] = {}
    if path is not None:
        p = Path(path)
        if not p.is_file():
            raise ConfigError(f"config file '{p}' does not exist; pass --config configs/demo.yaml or another YAML file")
        try:
            loaded = yaml.safe_load(p.read_text())
        except yaml.YAMLError as exc:
            raise ConfigError(f"config file '{p}' is not valid YAML: {str(exc).splitlines()[0]}") from None
        if loaded is None:
            loaded = {}
        if not isinstance(loaded, dict):
            raise ConfigError(f"config file '{p}' must hold a mapping of sections at the top level")
        raw = loaded
    raw = apply_overrides(raw, list(overrides or []))
    return config_from_dict(raw)


def validate(cfg: Config) -> None:
    """Cross-field checks that a type check cannot express."""
    if cfg.data.version not in ("v1.0-mini", "v1.0-trainval", "v1.0-test"):
        raise ConfigError(f"data.version '{cfg.data.version}' is unknown; use v1.0-mini or v1.0-trainval")
    if cfg.world.version not in ("v1.0-mini", "v1.0-trainval"):
        raise ConfigError(f"world.version '{cfg.world.version}' is unknown; use v1.0-mini or v1.0-trainval")
    if cfg.data.sweeps < 1:
        raise ConfigError(f"data.sweeps must be >= 1, got {cfg.data.sweeps}")
    for name in ("xbound", "ybound"):
        lo, hi, step = getattr(cfg.model.bev, name)
        if not (hi > lo and step > 0):
            raise ConfigError(f"model.bev.{name} must be (min, max, step) with max > min and step > 0")
    seen: set[str] = set()
    for task in cfg.model.head.tasks:
        for c in task:
            if c not in CLASS_NAMES:
                raise ConfigError(f"model.head.tasks names unknown class '{c}'; classes: {', '.join(CLASS_NAMES)}")
            seen.add(c)
    if seen != set(CLASS_NAMES):
        missing = sorted(set(CLASS_NAMES) - seen)
        raise ConfigError(f"model.head.tasks must cover every class exactly once; missing: {', '.join(missing)}")
    if len(cfg.model.head.nms_radius) != len(cfg.model.head.tasks):
        raise ConfigError("model.head.nms_radius needs one radius per task")
    for loss in cfg.distill.losses:
        if loss not in ("imd", "cmd", "mmd_f", "mmd_p"):
            raise ConfigError(f"distill.losses has unknown loss '{loss}'; choose from imd, cmd, mmd_f, mmd_p")
    if cfg.student_train.loader not in ("dask", "direct"):
        raise ConfigError(f"student_train.loader '{cfg.student_train.loader}' is unknown; use dask or direct")
    if cfg.student_train.variant not in ("simdistill", "baseline"):
        raise ConfigError(f"student_train.variant '{cfg.student_train.variant}' is unknown; use simdistill or baseline")
    if cfg.export.teacher not in ("simdistill", "mmdet3d"):
        raise ConfigError(f"export.teacher '{cfg.export.teacher}' is unknown; use simdistill or mmdet3d")
    if cfg.export.teacher == "simdistill" and (cfg.export.taps or cfg.export.teacher_config):
        raise ConfigError("--tap and --teacher-config apply to an mmdet3d teacher; add --teacher mmdet3d or drop them")
    if cfg.export.teacher == "mmdet3d" and not cfg.export.teacher_config:
        raise ConfigError("export.teacher is mmdet3d but no model config is given; pass --teacher-config CFG.py")
    if cfg.model.backbone.feature_stride not in (8, 16):
        raise ConfigError(f"model.backbone.feature_stride must be 8 or 16, got {cfg.model.backbone.feature_stride}")
