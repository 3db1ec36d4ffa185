"""Typed configuration: one dataclass per section (`sections`), YAML + dotted overrides (`loading`), and the
rules on a whole config (`checks`). Import everything from here: `from simdistill.config import Config`."""

from simdistill.config.checks import (
    MACHINE_KEYS,
    PRETRAIN_CONTENT,
    STORE_CONTENT,
    STUDENT_CONTENT,
    TEACHER_CONTENT,
    WEIGHT_SCHEDULES,
    describe_difference,
    first_difference,
    flatten,
    run_content,
    validate,
)
from simdistill.config.files import DEFAULT_CONFIG_NAME, resolve_config, shipped_configs
from simdistill.config.loading import (
    apply_overrides,
    config_from_dict,
    load_config,
    parse_override,
)
from simdistill.config.sections import (
    BOX_CODE_SIZE,
    CAMERA_NAMES,
    CLASS_NAMES,
    DEFAULT_TASKS,
    DISTILL_LOSSES,
    MODEL_KINDS,
    STUDENT_VARIANTS,
    AugmentConfig,
    BackboneConfig,
    BEVConfig,
    ChannelsConfig,
    Config,
    DataConfig,
    DecoderConfig,
    DistillConfig,
    ExportConfig,
    GCMConfig,
    HeadConfig,
    ModelConfig,
    PretrainConfig,
    StoreFormatConfig,
    StudentTrainConfig,
    TeacherTrainConfig,
    TrainConfig,
    WorldConfig,
    config_to_dict,
)

__all__ = [
    "BOX_CODE_SIZE", "CAMERA_NAMES", "CLASS_NAMES", "DEFAULT_CONFIG_NAME", "DEFAULT_TASKS", "DISTILL_LOSSES",
    "MACHINE_KEYS", "MODEL_KINDS", "PRETRAIN_CONTENT", "STORE_CONTENT", "STUDENT_CONTENT", "STUDENT_VARIANTS",
    "TEACHER_CONTENT", "WEIGHT_SCHEDULES",
    "AugmentConfig", "BEVConfig", "BackboneConfig", "ChannelsConfig", "Config", "DataConfig", "DecoderConfig",
    "DistillConfig", "ExportConfig", "GCMConfig", "HeadConfig", "ModelConfig", "PretrainConfig", "StoreFormatConfig",
    "StudentTrainConfig", "TeacherTrainConfig", "TrainConfig", "WorldConfig",
    "apply_overrides", "config_from_dict", "config_to_dict", "describe_difference", "first_difference", "flatten",
    "load_config", "parse_override", "resolve_config", "run_content", "shipped_configs", "validate",
]
