"""Training options: one typed config, the single source of truth.

Every option is a dataclass field with its default and help text. The option groups
(model, data, optimizer and schedule, evaluation and I/O, system) build ``TrainConfig``;
the CLI's ``--help``, presets, TOML config files and validation are all derived from them.

Precedence, lowest first: field defaults < preset < ``--config FILE.toml`` < flags.

This module must stay importable without torch: ``nanogpt --help`` reads it.
"""

from __future__ import annotations

import dataclasses
import re
import sys
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from .errors import ConfigError

Activation = Literal["gelu", "gelu_tanh"]
DType = Literal["auto", "float32", "bfloat16", "float16"]
SaveFormat = Literal["separated", "unified", "model-only"]
TrackerName = Literal["none", "tensorboard", "wandb"]
Strategy = Literal["ddp", "fsdp"]
ResumeMode = Literal["no", "yes", "auto"]

DEFAULT_PRESET = "shakespeare-char"


def opt(default: Any, help: str, **meta: Any) -> Any:
    """A dataclass field carrying its ``--help`` text."""
    return field(default=default, metadata={"help": help, **meta})


@dataclass
class ModelConfig:
    """Shape of the GPT model. Recorded in every checkpoint."""

    n_layer: int = opt(12, "Number of transformer blocks.")
    n_head: int = opt(12, "Attention heads per block; must divide n_embd.")
    n_embd: int = opt(768, "Embedding (residual stream) width.")
    block_size: int = opt(1024, "Context length in tokens.")
    vocab_size: int | None = opt(
        None,
        "Vocabulary size; larger than the tokenizer's pads the embedding (e.g. 50304 for 50257).",
        default_text="the dataset's",
    )
    dropout: float = opt(0.0, "Dropout probability (0 for pretraining, 0.1+ for finetuning).")
    bias: bool = opt(False, "Use biases in Linear and LayerNorm layers, as GPT-2 does.")
    activation: Activation = opt(
        "gelu_tanh",
        "MLP activation: gelu_tanh (GPT-2's tanh approximation) or gelu (exact erf, as nanoGPT).",
    )


@dataclass
class DataConfig:
    """Which data to train on and how much of it per step."""

    dataset: str = opt(
        "openwebtext",
        "Prepared dataset name (see `nanogpt prepare`) or its directory.",
        complete="dataset",
    )
    data_dir: str | None = opt(
        None,
        "Directory that holds prepared datasets.",
        default_text="$NANOGPT_DATA_DIR or user data dir",
    )
    batch_size: int = opt(12, "Sequences per micro-batch, per process.")
    gradient_accumulation_steps: int = opt(
        40,
        "Micro-batches per optimizer step, over all processes (each of N processes runs 1/N "
        "of them, as in nanoGPT).",
    )
    total_batch_tokens: int | None = opt(
        None,
        "Tokens per optimizer step over all processes; sets gradient_accumulation_steps to "
        "total / (batch_size x block_size).",
        default_text="from gradient_accumulation_steps",
    )


@dataclass
class OptimConfig:
    """AdamW and the learning-rate schedule (linear warmup, cosine decay)."""

    learning_rate: float = opt(6e-4, "Peak learning rate.")
    max_iters: int = opt(600000, "Number of optimizer steps.")
    weight_decay: float = opt(0.1, "AdamW weight decay, applied to 2-D weights only.")
    beta1: float = opt(0.9, "AdamW beta1.")
    beta2: float = opt(0.95, "AdamW beta2.")
    grad_clip: float = opt(1.0, "Clip the gradient norm to this value; 0 disables clipping.")
    decay_lr: bool = opt(True, "Decay the learning rate with a cosine schedule.")
    warmup_iters: int = opt(2000, "Steps of linear learning-rate warmup.")
    lr_decay_iters: int = opt(600000, "Step at which the cosine decay reaches min_lr.")
    min_lr: float = opt(6e-5, "Learning rate at the end of the decay.")
    max_bad_steps: int = opt(
        10,
        "Steps with a non-finite loss or gradient are skipped; this many in a row stop the run.",
    )


@dataclass
class EvalConfig:
    """Evaluation, logging and checkpoints."""

    out_dir: str = opt("out", "Directory for checkpoints and metrics.jsonl.", complete="checkpoint")
    eval_interval: int = opt(2000, "Evaluate train/val loss every this many steps.")
    eval_iters: int = opt(200, "Batches per split in each evaluation.")
    log_interval: int = opt(1, "Log training loss every this many steps.")
    eval_only: bool = opt(False, "Evaluate once and exit.")
    always_save_checkpoint: bool = opt(
        True, "Save at every evaluation, not only when val loss improves."
    )
    resume: ResumeMode = opt(
        "no",
        "Continue from out_dir's checkpoint and its options: yes (plain --resume), auto (if "
        "one exists) or no.",
        bare="yes",
        booleans=("no", "yes"),
    )
    init_from: str = opt(
        "scratch",
        "Start from: scratch, gpt2[-medium|-large|-xl] (hub), or a checkpoint/HF folder path.",
        complete="init_from",
    )
    save_format: SaveFormat = opt(
        "separated",
        "Checkpoint files: separated (safetensors + optimizer.pt), unified (nanoGPT's ckpt.pt) "
        "or model-only (cannot resume).",
        shortcuts={"save_separate_optimizer": "separated", "save_model_only": "model-only"},
    )
    tracker: TrackerName = opt(
        "none",
        "Also send metrics to tensorboard (out_dir/tensorboard) or wandb (Weights & Biases); "
        "each needs its extra: pip install 'nanogpt-cli[tensorboard]'.",
    )
    wandb_project: str = opt("nanogpt", "Weights & Biases project, with --tracker wandb.")
    wandb_run_name: str | None = opt(
        None, "Weights & Biases run name, with --tracker wandb.", default_text="out_dir's name"
    )


@dataclass
class SystemConfig:
    """Where and how the computation runs."""

    device: str = opt("auto", "auto (cuda > mps > cpu), cpu, cuda, cuda:N or mps.")
    dtype: DType = opt(
        "auto", "Precision (auto: bfloat16 on CUDA where supported, else float16; float32 on CPU)."
    )
    compile: bool | None = opt(
        None,
        "Compile the model with torch.compile (auto: on CUDA, off elsewhere).",
        default_text="auto",
    )
    seed: int = opt(1337, "Random seed for initialisation, batches and dropout.")
    nproc_per_node: int = opt(
        1,
        "Processes on this machine; more than 1 starts them with torchrun (one per GPU; "
        "gloo on CPU).",
    )
    strategy: Strategy = opt(
        "ddp",
        "Data parallelism: ddp (a whole model per process) or fsdp (parameters, gradients "
        "and optimizer state sharded per transformer block).",
    )
    dist_timeout: int = opt(
        300, "Seconds a process waits for the others before the run fails instead of hanging."
    )


@dataclass
class TrainConfig:
    """Every training option, grouped by concern."""

    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    system: SystemConfig = field(default_factory=SystemConfig)

    def to_dict(self) -> dict[str, dict[str, Any]]:
        """Nested plain dict, group name -> {option: value}."""
        return dataclasses.asdict(self)

    def flat(self) -> dict[str, Any]:
        """Flat plain dict, option -> value."""
        return {name: getattr(getattr(self, g), name) for name, g in _OWNER.items()}


GROUP_TITLES: dict[str, str] = {
    "model": "Model",
    "data": "Data",
    "optim": "Optimizer and schedule",
    "eval": "Evaluation and I/O",
    "system": "System",
}


@dataclass(frozen=True)
class OptionSpec:
    """One training option as the CLI and config files see it."""

    name: str
    group: str
    type: Any
    default: Any
    help: str
    default_text: str | None
    # Flags that set this option to a value: {"save_model_only": "model-only"}.
    shortcuts: tuple[tuple[str, Any], ...] = ()
    complete: str | None = None  # what shell completion offers: dataset, checkpoint, ...
    bare: Any = None  # the value of the flag given without one (--resume: yes)
    booleans: tuple[Any, Any] | None = None  # the values false and true stand for

    @property
    def flag(self) -> str:
        return option_flag(self.name)

    @property
    def base_type(self) -> Any:
        """The type without ``| None``."""
        args = [a for a in typing.get_args(self.type) if a is not type(None)]
        if typing.get_origin(self.type) in (typing.Union, _UnionType) and len(args) == 1:
            return args[0]
        return self.type


_UnionType = type(int | None)


def option_flag(name: str) -> str:
    """The CLI flag of an option: ``batch_size`` -> ``--batch-size``."""
    return "--" + name.replace("_", "-")


def option_specs() -> list[OptionSpec]:
    """All training options, in group order, from the dataclasses."""
    specs = []
    for group_field in dataclasses.fields(TrainConfig):
        cls = group_field.default_factory  # type: ignore[misc]
        hints = typing.get_type_hints(cls)
        for f in dataclasses.fields(cls):
            specs.append(
                OptionSpec(
                    name=f.name,
                    group=group_field.name,
                    type=hints[f.name],
                    default=f.default,
                    help=f.metadata["help"],
                    default_text=f.metadata.get("default_text"),
                    shortcuts=tuple(f.metadata.get("shortcuts", {}).items()),
                    complete=f.metadata.get("complete"),
                    bare=f.metadata.get("bare"),
                    booleans=f.metadata.get("booleans"),
                )
            )
    return specs


_SPECS: dict[str, OptionSpec] = {s.name: s for s in option_specs()}
_OWNER: dict[str, str] = {s.name: s.group for s in _SPECS.values()}
# Shortcut flag -> (option, value it sets).
SHORTCUTS: dict[str, tuple[str, Any]] = {
    short: (s.name, value) for s in _SPECS.values() for short, value in s.shortcuts
}

# ---------------------------------------------------------------------------------------------
# Presets: named deltas over the defaults above (which are nanoGPT's train.py defaults).

PRESETS: dict[str, dict[str, Any]] = {
    "shakespeare-char": {
        "description": "Baby GPT on character-level Shakespeare (nanoGPT).",
        "values": {
            "out_dir": "out-shakespeare-char",
            "eval_interval": 250,
            "eval_iters": 200,
            "log_interval": 10,
            "always_save_checkpoint": False,
            "dataset": "shakespeare-char",
            "gradient_accumulation_steps": 1,
            "batch_size": 64,
            "block_size": 256,
            "n_layer": 6,
            "n_head": 6,
            "n_embd": 384,
            "dropout": 0.2,
            "learning_rate": 1e-3,
            "max_iters": 5000,
            "lr_decay_iters": 5000,
            "min_lr": 1e-4,
            "beta2": 0.99,
            "warmup_iters": 100,
        },
    },
    "shakespeare-char-cpu": {
        "description": "Small character-level Shakespeare for a laptop CPU.",
        "extends": "shakespeare-char",
        "values": {
            "device": "cpu",
            "compile": False,
            "eval_iters": 20,
            "block_size": 64,
            "batch_size": 12,
            "n_layer": 4,
            "n_head": 4,
            "n_embd": 128,
            "max_iters": 2000,
            "lr_decay_iters": 2000,
            "dropout": 0.0,
        },
    },
    "gpt2-124m": {
        "description": "GPT-2 124M on OpenWebText (nanoGPT's train.py).",
        "values": {"out_dir": "out-gpt2-124m", "dataset": "openwebtext"},
    },
    # nanoGPT's config/finetune_shakespeare.py, one preset per GPT-2 size.
    "finetune-gpt2": {
        "description": "Finetune GPT-2 124M on Shakespeare (nanoGPT).",
        "values": {
            "init_from": "gpt2",
            "out_dir": "out-finetune-gpt2",
            "dataset": "shakespeare",
            "eval_interval": 5,
            "eval_iters": 40,
            "log_interval": 1,
            "always_save_checkpoint": False,
            "batch_size": 1,
            "gradient_accumulation_steps": 32,
            "max_iters": 20,
            "learning_rate": 3e-5,
            "decay_lr": False,
            "dropout": 0.0,
        },
    },
    **{
        f"finetune-{size}": {
            "description": f"Finetune {size} on Shakespeare.",
            "extends": "finetune-gpt2",
            "values": {"init_from": size, "out_dir": f"out-finetune-{size}"},
        }
        for size in ("gpt2-medium", "gpt2-large", "gpt2-xl")
    },
    # nanoGPT's config/eval_gpt2*.py: the loss of the released weights on OpenWebText.
    **{
        f"eval-{size}": {
            "description": f"Evaluate {size} on OpenWebText ({script}).",
            "values": {
                "init_from": size,
                "dataset": "openwebtext",
                "batch_size": 8,
                "eval_iters": 500,
                "eval_only": True,
                "out_dir": f"out-eval-{size}",
            },
        }
        for size, script in (
            ("gpt2", "eval_gpt2.py"),
            ("gpt2-medium", "eval_gpt2_medium.py"),
            ("gpt2-large", "eval_gpt2_large.py"),
            ("gpt2-xl", "eval_gpt2_xl.py"),
        )
    },
}


PRESET_KEYS = ("description", "extends")  # what a preset file holds besides options


def _toml() -> Any:
    """The TOML reader, imported when a file is read (``nanogpt --help`` reads none)."""
    if sys.version_info >= (3, 11):
        import tomllib
    else:  # pragma: no cover - exercised on Python 3.10 only
        import tomli as tomllib
    return tomllib


def read_preset_file(path: Path) -> dict[str, Any]:
    """A user's preset: a TOML file of options, plus ``description`` and ``extends``."""
    tomllib = _toml()
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError(f"cannot read preset file {path}: {e}") from None
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"preset file {path} is not valid TOML: {e}") from None
    meta = {key: raw.pop(key) for key in PRESET_KEYS if key in raw}
    for key, value in meta.items():
        if not isinstance(value, str):
            raise ConfigError(f"{key} in preset file {path} must be a string")
    values, problems = parse_options(raw, str(path))
    if problems:
        raise ConfigError(f"invalid preset file {path}: " + "; ".join(problems))
    return {
        "description": meta.get("description", f"user preset ({path})"),
        "extends": meta.get("extends"),
        "values": values,
        "file": str(path),
    }


def user_preset_files() -> dict[str, Path]:
    """``NAME.toml`` files in the user's presets directory, by preset name."""
    from .paths import user_presets_dir

    folder = user_presets_dir()
    try:
        return {p.stem: p for p in sorted(folder.glob("*.toml")) if p.is_file()}
    except OSError:
        return {}


def preset_names() -> list[str]:
    """Built-in presets, then the user's (a user file may replace a built-in preset)."""
    names = list(PRESETS)
    names += [n for n in user_preset_files() if n not in PRESETS]
    return names


def get_preset(name: str) -> dict[str, Any]:
    """A preset's definition: the user's file of that name if there is one, else built-in."""
    files = user_preset_files()
    if name in files:
        return read_preset_file(files[name])
    if name in PRESETS:
        return PRESETS[name]
    raise ConfigError(f"unknown preset '{name}'{_suggest(name, preset_names())}")


def preset_values(name: str) -> dict[str, Any]:
    """The flat option values a preset sets, its ``extends`` chain included."""
    chain: list[str] = []
    definitions: list[dict[str, Any]] = []
    current: str | None = name
    while current is not None:
        if current in chain:
            raise ConfigError(
                f"preset '{name}' extends itself through {' -> '.join([*chain, current])}"
            )
        chain.append(current)
        definitions.append(get_preset(current))
        current = definitions[-1].get("extends")
    values: dict[str, Any] = {}
    for definition in reversed(definitions):
        values.update(definition["values"])
    return values


# ---------------------------------------------------------------------------------------------
# Building and validating a config.


def build_config(
    preset: str | None = DEFAULT_PRESET,
    config_file: str | Path | None = None,
    overrides: Mapping[str, Any] | None = None,
    base: Mapping[str, Any] | None = None,
) -> TrainConfig:
    """Resolve defaults < base < preset < config file < overrides, then validate.

    ``overrides`` maps option names (``batch_size``) to values; ``None`` values are ignored,
    so CLI flags that were not given pass straight through. ``base`` is a config saved with
    a run (``TrainConfig.to_dict()``), which a resumed run starts from; options it holds that
    this version does not know are ignored.
    """
    problems: list[str] = []
    values: dict[str, Any] = {}
    for group in (base or {}).values():
        for name, value in group.items() if isinstance(group, Mapping) else ():
            if name in _SPECS:
                values[name] = _alias(name, value)
    if preset is not None:
        values.update(preset_values(preset))
    if config_file is not None:
        file_values, file_problems = read_config_file(config_file)
        values.update(file_values)
        problems += file_problems
    overrides = _expand_shortcuts(overrides or {}, problems)
    for name, value in overrides.items():
        if value is None:
            continue
        if name not in _SPECS:
            problems.append(f"unknown option '{name}'{_suggest(name, _SPECS)}")
            continue
        values[name] = _alias(name, value)
    cfg = apply_values(TrainConfig(), values)
    problems += validate(cfg)
    if problems:
        raise ConfigError("invalid configuration: " + "; ".join(problems))
    return cfg


def _alias(name: str, value: Any) -> Any:
    """``value`` with a boolean spelled as its option's choice (``resume=True``: ``yes``)."""
    spec = _SPECS.get(name)
    if spec is not None and spec.booleans is not None and isinstance(value, bool):
        return spec.booleans[value]
    return value


def bare_flags() -> dict[str, tuple[Any, tuple[Any, ...]]]:
    """Flags that may be given without a value: flag -> (that value, the choices)."""
    return {
        s.flag: (s.bare, typing.get_args(s.base_type))
        for s in _SPECS.values()
        if s.bare is not None
    }


def _expand_shortcuts(overrides: Mapping[str, Any], problems: list[str]) -> dict[str, Any]:
    """Replace shortcut flags (``save_model_only=True``) by the option they set."""
    out = {k: v for k, v in overrides.items() if k not in SHORTCUTS}
    given: dict[str, str] = {}  # option -> flag that set it
    for name, value in overrides.items():
        if name not in SHORTCUTS or not value:
            continue
        target, target_value = SHORTCUTS[name]
        flag = option_flag(name)
        if target in given or out.get(target) not in (None, target_value):
            other = given.get(target) or f"{option_flag(target)} {out[target]}"
            problems.append(f"{flag} conflicts with {other}")
            continue
        given[target] = flag
        out[target] = target_value
    return out


def apply_values(cfg: TrainConfig, values: Mapping[str, Any]) -> TrainConfig:
    """Set options by name (``{"batch_size": 32}``) on ``cfg``, without validation."""
    for name, value in values.items():
        setattr(getattr(cfg, _OWNER[name]), name, value)
    return cfg


def read_config_file(path: str | Path) -> tuple[dict[str, Any], list[str]]:
    """Read a TOML file of options, flat (``batch_size = 32``) or grouped (``[data]``).

    Returns the values and the problems found (unknown keys, wrong types).
    """
    path = Path(path)
    tomllib = _toml()
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"config file {path} does not exist") from None
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError(f"cannot read config file {path}: {e}") from None
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"config file {path} is not valid TOML: {e}") from None
    return parse_options(raw, str(path))


def parse_options(raw: Mapping[str, Any], where: str) -> tuple[dict[str, Any], list[str]]:
    """Options from a parsed TOML table, flat or grouped; the problems found."""
    flat: dict[str, Any] = {}
    problems: list[str] = []
    for key, value in raw.items():
        if key in GROUP_TITLES and isinstance(value, dict):
            for sub, subvalue in value.items():
                if sub not in _SPECS or _SPECS[sub].group != key:
                    problems.append(
                        f"unknown option '{sub}' in [{key}] of {where}{_suggest(sub, _SPECS)}"
                    )
                else:
                    flat[sub] = subvalue
        elif key in _SPECS:
            flat[key] = value
        else:
            problems.append(f"unknown option '{key}' in {where}{_suggest(key, _SPECS)}")
    values = {}
    for key, value in flat.items():
        checked = _check_type(_SPECS[key], value)
        if isinstance(checked, _TypeProblem):
            problems.append(f"{key} in {where}: {checked.message}")
        else:
            values[key] = checked
    return values, problems


def config_toml(cfg: TrainConfig, header: str | None = None) -> str:
    """``cfg`` as a TOML config file, grouped by section; ``--config`` reads it back to the
    same config. Options without a value (``None``) are written as comments."""
    lines = [f"# {line}" for line in (header or "").splitlines()]
    for group, values in cfg.to_dict().items():
        if lines:
            lines.append("")
        lines.append(f"[{group}]  # {GROUP_TITLES[group]}")
        for name, value in values.items():
            if value is None:
                shown = _SPECS[name].default_text or "auto"
                lines.append(f"# {name}: not set ({shown})")
            else:
                lines.append(f"{name} = {_toml_value(value)}")
    return "\n".join(lines) + "\n"


def _toml_value(value: Any) -> str:
    import json
    import math

    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if math.isnan(value) or math.isinf(value):
            return "nan" if math.isnan(value) else ("inf" if value > 0 else "-inf")
        return repr(value)
    return json.dumps(str(value), ensure_ascii=False)  # a TOML basic string


@dataclass
class _TypeProblem:
    message: str


def _check_type(spec: OptionSpec, value: Any) -> Any:
    """Check a value read from a file against the option's type; ints widen to floats."""
    base = spec.base_type
    if value is None and base is not spec.type:
        return None
    if typing.get_origin(base) is Literal:
        choices = typing.get_args(base)
        if isinstance(value, bool) and spec.booleans is not None:
            return spec.booleans[value]  # resume = true in a file, resume=True from Python
        if value in choices:
            return value
        return _TypeProblem(f"expected one of {', '.join(choices)}, got {value!r}")
    if base is bool:
        ok = isinstance(value, bool)
    elif base is int:
        ok = isinstance(value, int) and not isinstance(value, bool)
    elif base is float:
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
        value = float(value) if ok else value
    else:
        ok = isinstance(value, base)
    if ok:
        return value
    return _TypeProblem(f"expected {base.__name__}, got {value!r}")


_DEVICE_RE = re.compile(r"^(auto|cpu|mps|cuda(:\d+)?)$")


def device_problem(device: str) -> str | None:
    """Why ``device`` is not a device name nanogpt knows, or None if it is one."""
    if _DEVICE_RE.match(device):
        return None
    return f"unknown device '{device}'; use auto, cpu, cuda, cuda:N or mps"


def validate(cfg: TrainConfig) -> list[str]:
    """Every problem with a config, each naming the options involved."""
    problems: list[str] = []
    m, d, o, e, s = cfg.model, cfg.data, cfg.optim, cfg.eval, cfg.system

    def flag(name: str) -> str:
        return _SPECS[name].flag

    # Values that came from Python code rather than the CLI or a file.
    for name, value in cfg.flat().items():
        checked = _check_type(_SPECS[name], value)
        if isinstance(checked, _TypeProblem):
            problems.append(f"{flag(name)}: {checked.message}")
    if problems:
        return problems

    positive = [
        "n_layer",
        "n_head",
        "n_embd",
        "block_size",
        "batch_size",
        "gradient_accumulation_steps",
        "eval_interval",
        "eval_iters",
        "log_interval",
        "nproc_per_node",
        "dist_timeout",
        "max_bad_steps",
    ]
    for name in positive:
        value = getattr(getattr(cfg, _OWNER[name]), name)
        if value <= 0:
            problems.append(f"{flag(name)} must be positive (got {value})")
    if m.vocab_size is not None and m.vocab_size <= 0:
        problems.append(f"--vocab-size must be positive (got {m.vocab_size})")
    if m.n_head > 0 and m.n_embd > 0 and m.n_embd % m.n_head != 0:
        problems.append(f"--n-embd ({m.n_embd}) must be divisible by --n-head ({m.n_head})")
    if not 0.0 <= m.dropout < 1.0:
        problems.append(f"--dropout must be in [0, 1) (got {m.dropout})")
    for name in ("max_iters", "warmup_iters", "lr_decay_iters"):
        value = getattr(o, name)
        if value < 0:
            problems.append(f"{flag(name)} must not be negative (got {value})")
    if o.learning_rate <= 0:
        problems.append(f"--learning-rate must be positive (got {o.learning_rate})")
    if o.min_lr < 0:
        problems.append(f"--min-lr must not be negative (got {o.min_lr})")
    for name in ("beta1", "beta2"):
        value = getattr(o, name)
        if not 0.0 <= value < 1.0:
            problems.append(f"{flag(name)} must be in [0, 1) (got {value})")
    if o.weight_decay < 0:
        problems.append(f"--weight-decay must not be negative (got {o.weight_decay})")
    if o.grad_clip < 0:
        problems.append(f"--grad-clip must not be negative (got {o.grad_clip})")
    if o.decay_lr and o.lr_decay_iters < o.warmup_iters:
        problems.append(
            f"--lr-decay-iters ({o.lr_decay_iters}) must be at least "
            f"--warmup-iters ({o.warmup_iters})"
        )
    if d.total_batch_tokens is not None:
        micro = d.batch_size * m.block_size
        if d.total_batch_tokens <= 0 or micro <= 0 or d.total_batch_tokens % micro:
            problems.append(
                f"--total-batch-tokens ({d.total_batch_tokens}) must be a positive multiple of "
                f"--batch-size x --block-size ({micro})"
            )
    if (problem := device_problem(s.device)) is not None:
        problems.append(f"--device: {problem}")
    if not d.dataset:
        problems.append("--dataset must not be empty")
    if not e.out_dir:
        problems.append("--out-dir must not be empty")
    return problems


def _suggest(word: str, candidates: Mapping[str, Any] | list[str]) -> str:
    import difflib

    close = difflib.get_close_matches(word, list(candidates), n=1)
    return f"; did you mean '{close[0]}'?" if close else ""


def options_reference() -> str:
    """Markdown tables of every option by group: flag, type, default and help text.

    docs/configuration.md carries this between markers (docs/update_options.py writes it,
    a test checks it), so the reference cannot drift from the dataclasses.
    """

    def cell(text: str) -> str:
        return text.replace("|", "\\|")

    lines: list[str] = []
    for group, title in GROUP_TITLES.items():
        lines += [f"### {title}", "", "| option | type | default | description |"]
        lines.append("| --- | --- | --- | --- |")
        for spec in (s for s in _SPECS.values() if s.group == group):
            base = spec.base_type
            if base is bool:
                flag, kind = f"`{spec.flag}` / `--no-{spec.flag[2:]}`", "switch"
            else:
                flag = f"`{spec.flag}`"
                if typing.get_origin(base) is Literal:
                    kind = " \\| ".join(f"`{c}`" for c in typing.get_args(base))
                else:
                    kind = base.__name__
            if spec.default_text is not None:
                default = spec.default_text
            elif spec.default is None:
                default = "unset"
            else:
                default = f"`{_toml_value(spec.default)}`"
            lines.append(f"| {flag} | {kind} | {cell(default)} | {cell(spec.help)} |")
            for short, value in spec.shortcuts:
                lines.append(
                    f"| `{option_flag(short)}` | switch | | same as `{spec.flag} {value}` |"
                )
        lines.append("")
    return "\n".join(lines).rstrip() + "\n"


def micro_batches_per_step(cfg: TrainConfig) -> int:
    """Micro-batches in one optimizer step over all processes: from ``total_batch_tokens``
    when it is set, else ``gradient_accumulation_steps``."""
    if cfg.data.total_batch_tokens is not None:
        return cfg.data.total_batch_tokens // (cfg.data.batch_size * cfg.model.block_size)
    return cfg.data.gradient_accumulation_steps
