"""The config sections: one dataclass per stage, a comment per field, and the names shared across stages.

Every field is read somewhere; `simdistill.config.checks.validate` holds the cross-field rules.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

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

BOX_CODE_SIZE = 10
"""Values a CenterHead regresses per cell: offset 2, height 1, log-dims 3, sin/cos 2, velocity 2 (the head and the
store's `boxes` array share it)."""

DISTILL_LOSSES: tuple[str, ...] = ("imd", "cmd", "mmd_f", "mmd_p")
"""The four distillation terms (docs/design.md, "Losses"), in the order they are listed everywhere."""

STUDENT_VARIANTS: tuple[str, ...] = ("simdistill", "baseline")
"""Camera-only students: SimDistill (two branches, GCM) and the BEVFusion-C baseline."""

MODEL_KINDS: tuple[str, ...] = ("teacher", *STUDENT_VARIANTS)
"""Every model `build_model` makes; also the `kind` a checkpoint records."""


@dataclass
class DataConfig:
    dataroot: str = "data/demo"  # nuScenes v1.0 dataroot (real or synthetic)
    version: str = "v1.0-mini"  # v1.0-mini | v1.0-trainval
    train_split: str = "mini_train"  # a devkit split name (create_splits_scenes)
    val_split: str = "mini_val"
    sweeps: int = 1  # LiDAR sweeps merged per sample (1 = key frame only; BEVFusion uses 10)
    max_points: int = 0  # 0 = keep all points; else subsample each view to this many (seeded by its params)
    # mmdet3d v1.x info pickles (nuscenes_infos_train.pkl / _val.pkl) for train_split / val_split, read
    # instead of the devkit tables (images and points still come from dataroot); "" = read the tables.
    infos_train: str = ""
    infos_val: str = ""
    # A dev split carved out of train_split: its last `dev_scenes` scenes (by name) form the split "dev", and
    # "train" then means the rest. Every choice (run length, weights, schedule) is made on dev; val is kept for
    # the final tables. 0 = no dev split.
    dev_scenes: int = 0
    eval_split: str = "val"  # what training's learning curves and final evaluation score: val | dev


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
    # Where the image backbone starts: "" = random weights; a backbone.pt written by `simdistill pretrain-backbone`
    # (or converted from a user's checkpoint); "builtin:NAME" = one shipped in simdistill/weights/. Teacher and
    # every student start from the same weights; a resumed or evaluated run reads its own checkpoint instead.
    pretrained: str = ""


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
    points: int = 20  # sampling points per head (the official GCM: 20)
    # How far the initial sampling points reach [m]: point k of P starts k/P of the way out. The official GCM's
    # 20 points one 0.6 m cell apart reach 12 m; counting in cells instead would reach twice as far on 1.2 m cells.
    reach: float = 12.0
    zero_init_output: bool = False  # output projection starts at zero, so the GCM starts as the identity


@dataclass
class ModelConfig:
    backbone: BackboneConfig = field(default_factory=BackboneConfig)
    bev: BEVConfig = field(default_factory=BEVConfig)
    channels: ChannelsConfig = field(default_factory=ChannelsConfig)
    decoder: DecoderConfig = field(default_factory=DecoderConfig)
    head: HeadConfig = field(default_factory=HeadConfig)
    gcm: GCMConfig = field(default_factory=GCMConfig)
    max_points_per_pillar: int = 32
    # The teacher lifts its camera features with the view's LiDAR depth (BEVFusion's DepthLSSTransform in its
    # LiDAR-camera model), so its camera BEV is geometric; students never see LiDAR.
    teacher_depth_input: bool = True
    # SimDistill student: one view transform (depth net + splat) for both branches, which then differ only by the
    # GCM and the adapter, as the official code calls one transform twice; False = two independent lifts.
    shared_lift: bool = False
    # NOT camera-only: the student's lift(s) read the view's LiDAR depth too, at training and at test, as the
    # released SimDistill code builds its student from the teacher's DepthLSSTransform. Only for the labelled row
    # that shows what the paper's number includes; the deployed camera-only student keeps this False.
    student_depth_input: bool = False


@dataclass
class TrainConfig:
    """What every training run (teacher or student) sets: schedule, optimiser, checkpoints."""

    epochs: int = 20
    batch_size: int = 4
    lr: float = 2e-4  # peak of the one-cycle schedule
    weight_decay: float = 0.01
    grad_clip: float = 35.0  # max global gradient norm
    checkpoint_every: int = 200  # steps between writes of last.pt
    deterministic: bool = True  # torch.use_deterministic_algorithms (warn-only where an op has none)
    eval_every: int = 0  # steps between val evaluations during training (a learning curve); 0 = only at the end
    grad_norms_every: int = 0  # steps between logging each loss term's gradient norm on the shared image/lift
    #                            parameters (train_log.jsonl `grad_norm/<term>`); 0 = never


@dataclass
class TeacherTrainConfig(TrainConfig):
    """`train-teacher`: the LiDAR-camera teacher on the train split."""


@dataclass
class PretrainConfig(TrainConfig):
    """`pretrain-backbone`: the image backbone on 2D detection of the train split's camera images (the analogue of
    the nuImages pretraining BEVFusion-C and SimDistill start from); 2D boxes are the projected 3D boxes."""

    min_box_pixels: float = 2.0  # projected boxes narrower or lower than this (augmented image pixels) are dropped
    box_weight: float = 0.1  # CenterNet's weight of the L1 box-code term against the heatmap focal loss


@dataclass
class StudentTrainConfig(TrainConfig):
    """`train-student`: a camera-only student from the store, an online teacher, or GT only."""

    variant: str = "simdistill"  # one of STUDENT_VARIANTS
    prefetch_batches: int = 2  # batches read ahead by the Dask loader
    # dask (read-ahead tasks) | direct (synchronous Zarr reads; for comparison) | memory (every view's targets read
    # once into RAM before the first step: the loader's physical limit, for small stores and benchmarks)
    loader: str = "dask"
    loader_threads: int = 2  # batches the local Dask loader reads at once (each decodes its chunks in parallel)
    # Train-time only: supervise every depth net of the student with the view's key-frame LiDAR depth (BEVDepth's
    # BCE on the nearest point per feature patch). The same for baseline and SimDistill; the deployed student
    # still takes images and calibration only.
    depth_supervision: bool = False
    depth_loss_weight: float = 3.0
    # --online-teacher targets: "raw" float32, as the published code computes them, or "store": view by view through
    # the store's own encoding (masking, float16, lossy rounding), which makes an online run bit-identical to a
    # run from a store exported with the same settings.
    online_encoding: str = "raw"


@dataclass
class DistillConfig:
    """Which distillation terms are on and their weights (docs/design.md, "Losses")."""

    losses: tuple[str, ...] = DISTILL_LOSSES
    # IMD and MMD-F over the whole grid ("mean", the paper's) or weighted by the GT foreground mask and divided by
    # its mass ("foreground", BEVDistill's normalisation): background holds most of the error of a plain mean.
    feature_normalization: str = "mean"
    imd_weight: float = 1.0
    cmd_weight: float = 100.0
    mmd_f_weight: float = 1.0
    mmd_p_heatmap_weight: float = 0.25
    mmd_p_box_weight: float = 0.25
    qfl_threshold: float = 0.1  # teacher cells above this count toward the QFL normaliser
    # Divide IMD's, CMD's and MMD-F's squared errors per channel by the teacher's variance σ_c² (PKD-style: the
    # teacher's channel stds differ 5-13×, so a plain MSE follows a few channels). σ_c comes from the store's
    # `channel_stats` attribute (`simdistill store stats STORE`); needs --store, not an online teacher.
    channel_standardization: bool = False
    # A factor on every distillation term by training progress: constant (1), ramp_up (0 to 1 over the LR
    # warm-up) or decay (1 to 0 over the run). The log keeps the unscaled terms and records distill_factor.
    weight_schedule: str = "constant"


@dataclass
class StoreFormatConfig:
    """How the feature store encodes what it holds (docs/store-format.md): codecs, sharding, storage transforms."""

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
    # Per-plane integer quantisation (codecs.PlaneQuantizeCodec): 0 = off; else every H×W plane of quantize_arrays
    # is stored as `quantize_bits`-bit codes with its own scale and zero point (error <= half a step).
    quantize_bits: int = 0
    # The step: 0 = each plane's range / (2^bits - 1); > 0 = this × the std of the view's array, for every plane
    # (equal error per channel: adds ~step²/12 of the variance to an MSE; widened only where a plane's codes would
    # overflow quantize_bits, so use 16 bits with it).
    quantize_step: float = 0.0
    quantize_arrays: tuple[str, ...] = ("cam_bev", "fused_bev", "heatmap")


@dataclass
class ExportConfig:
    views_per_sample: int = 1
    split: str = "train"  # train | val (the data section's split names)
    views_per_task: int = 8  # a Dask task exports this many consecutive views
    workers: int = 1
    threads_per_worker: int = 1
    write_queue: int = 4  # bounded queue between teacher forward and the writer thread
    # Which teacher fills the store: "simdistill" (a train-teacher checkpoint), "mmdet3d" (an mmdetection3d
    # detector built from `teacher_config`, its BEV maps tapped by module path; needs simdistill[mmdet3d]) or
    # "python" (any torch module that `teacher_factory` builds; docs/own-teacher.md).
    teacher: str = "simdistill"
    teacher_config: str = ""  # the mmdet3d model config (.py) when teacher = mmdet3d
    # When teacher = python: "package.module:function" or "path/to/file.py:function", called in every export
    # process as function(model_cfg, checkpoint_path) and returning the teacher module (docs/own-teacher.md).
    teacher_factory: str = ""
    # Module layout of the mmdet3d teacher (interop.tapped_teacher.FAMILIES): bevfusion (a CenterHead) or
    # bevfusion-transfusion (projects/BEVFusion's TransFusionHead)
    tap_family: str = "bevfusion"
    taps: tuple[str, ...] = ()  # per-map overrides NAME=module.path (cam_bev, lidar_bev, fused_bev, head)
    log_dir: str = ""  # local Dask workers' log folder; "" = STORE.logs beside a local store, else ./simdistill-logs
    dashboard: bool = False  # local cluster only: serve Dask's dashboard on 127.0.0.1:8787 (needs bokeh)


@dataclass
class Config:
    seed: int = 0
    device: str = "cpu"  # cpu | cuda | cuda:N
    # torch CPU threads for training/evaluation (0 = torch's default: one per core). Bit-reproducible runs (same
    # seed, config and data → the same checkpoint) are promised for threads: 1 on the CPU; more threads are not
    # promised to be (docs/reproducibility.md).
    threads: int = 0
    data: DataConfig = field(default_factory=DataConfig)
    world: WorldConfig = field(default_factory=WorldConfig)
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    pretrain: PretrainConfig = field(default_factory=PretrainConfig)
    teacher_train: TeacherTrainConfig = field(default_factory=TeacherTrainConfig)
    student_train: StudentTrainConfig = field(default_factory=StudentTrainConfig)
    distill: DistillConfig = field(default_factory=DistillConfig)
    store_format: StoreFormatConfig = field(default_factory=StoreFormatConfig)
    export: ExportConfig = field(default_factory=ExportConfig)
    # fsspec options per protocol for remote store URLs, as in fsspec's own config files, e.g.
    # {s3: {endpoint_url: "http://127.0.0.1:9000"}}. Not credentials: this config is copied into stores and
    # checkpoints, so keys and secrets come from the environment (AWS_ACCESS_KEY_ID, ...). Not compared on resume.
    storage_options: dict[str, dict[str, Any]] = field(default_factory=dict)

    @property
    def class_names(self) -> tuple[str, ...]:
        return CLASS_NAMES


def config_to_dict(cfg: Any) -> dict[str, Any]:
    """Plain nested dict (tuples as lists) suitable for YAML / JSON / Zarr attributes."""

    def convert(v: Any) -> Any:
        if dataclasses.is_dataclass(v):
            return {f.name: convert(getattr(v, f.name)) for f in dataclasses.fields(v)}
        if isinstance(v, (list, tuple)):
            return [convert(x) for x in v]
        if isinstance(v, dict):
            return {k: convert(x) for k, x in v.items()}
        return v

    return convert(cfg)
