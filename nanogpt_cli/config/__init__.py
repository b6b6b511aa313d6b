"""Training options: one typed config, the single source of truth.

- ``schema``: the option groups as dataclasses (model, data, optimizer and schedule,
  evaluation, run and checkpoints, system), which build ``TrainConfig``;
- ``presets``: named sets of options, built in or the user's TOML files;
- ``files``: TOML config files read and written;
- ``nanogpt_files``: nanoGPT's config files (``.py``), parsed without running them;
- ``validate``: types and every problem with a config;
- ``resolve``: ``build_config``, which layers them;
- ``dtypes``: the spellings of a precision every ``--dtype`` accepts (``bf16``, ``bfloat16``).

Precedence, lowest first: field defaults < preset < ``--config FILE.toml`` < environment
(``NANOGPT_CPU_KERNELS``) < flags. The package imports without torch: ``nanogpt --help``
reads it.
"""

from .files import config_toml, parse_options, read_config_file, read_preset_file
from .presets import (
    PRESET_ALIASES,
    PRESETS,
    canonical_preset,
    get_preset,
    is_preset,
    preset_aliases,
    preset_names,
    preset_values,
    user_preset_files,
)
from .resolve import ENV_OPTIONS, apply_values, build_config, env_values
from .schema import (
    DEFAULT_PRESET,
    GROUP_TITLES,
    SPECS,
    Activation,
    DataConfig,
    DType,
    EvalConfig,
    KernelMode,
    ModelConfig,
    Norm,
    OptimConfig,
    OptionSpec,
    PosEmbedding,
    ResumeMode,
    RunConfig,
    SaveFormat,
    Strategy,
    SystemConfig,
    TrackerName,
    TrainConfig,
    opt,
    option_flag,
    option_specs,
)
from .validate import device_problem, validate

__all__ = [
    "DEFAULT_PRESET",
    "ENV_OPTIONS",
    "GROUP_TITLES",
    "PRESETS",
    "PRESET_ALIASES",
    "SPECS",
    "Activation",
    "DType",
    "DataConfig",
    "EvalConfig",
    "KernelMode",
    "ModelConfig",
    "Norm",
    "OptimConfig",
    "OptionSpec",
    "PosEmbedding",
    "ResumeMode",
    "RunConfig",
    "SaveFormat",
    "Strategy",
    "SystemConfig",
    "TrackerName",
    "TrainConfig",
    "apply_values",
    "build_config",
    "canonical_preset",
    "config_toml",
    "device_problem",
    "env_values",
    "get_preset",
    "is_preset",
    "opt",
    "option_flag",
    "option_specs",
    "parse_options",
    "preset_aliases",
    "preset_names",
    "preset_values",
    "read_config_file",
    "read_preset_file",
    "user_preset_files",
    "validate",
]
