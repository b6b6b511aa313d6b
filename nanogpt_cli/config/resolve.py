"""One config from its layers: defaults < saved run < preset < config file < environment <
flags, validated once."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ..errors import ConfigError
from .files import read_config_file
from .presets import preset_values
from .schema import DEFAULT_PRESET, SHORTCUTS, SPECS, TrainConfig, option_flag
from .validate import (
    TypeProblem,
    canonical,
    check_value,
    config_warnings,
    suggest,
    validate,
)

# Options an environment variable sets (below the flags, above files and presets).
ENV_OPTIONS = {"cpu_kernels": "NANOGPT_CPU_KERNELS"}
# The variable NANOGPT_CPU_KERNELS replaced, and what its values meant.
LEGACY_ENV = ("NANOGPT_CPU_MATMUL", "cpu_kernels", {"auto": "auto", "onednn": "on", "blas": "off"})


def env_values() -> tuple[dict[str, Any], list[str]]:
    """Options set by environment variables; the problems found."""
    values: dict[str, Any] = {}
    problems: list[str] = []
    legacy, option, meaning = LEGACY_ENV
    if os.environ.get(legacy, "").strip() and not os.environ.get(ENV_OPTIONS[option], ""):
        raw = os.environ[legacy].strip().lower()
        if raw in meaning:
            values[option] = meaning[raw]
        else:
            problems.append(f"{legacy}={raw!r}: use one of {', '.join(meaning)}")
    for name, var in ENV_OPTIONS.items():
        raw = os.environ.get(var, "").strip().lower()
        if not raw:
            continue
        checked = check_value(SPECS[name], raw)
        if isinstance(checked, TypeProblem):
            problems.append(f"{var}: {checked.message}")
        else:
            values[name] = checked
    return values, problems


def build_config(
    preset: str | None = DEFAULT_PRESET,
    config_file: str | Path | None = None,
    overrides: Mapping[str, Any] | None = None,
    base: Mapping[str, Any] | None = None,
) -> TrainConfig:
    """Resolve defaults < base < preset < config file < environment < overrides, then
    validate.

    ``overrides`` maps option names (``batch_size``) to values; ``None`` values are ignored,
    so CLI flags that were not given pass straight through. ``base`` is a config saved with
    a run (``TrainConfig.to_dict()``), which a resumed run starts from; options it holds that
    this version does not know are ignored, whatever group they are under.
    """
    problems: list[str] = []
    values: dict[str, Any] = {}
    # A saved config's bad values, reported unless a layer above replaces them.
    base_problems: dict[str, str] = {}
    for group in (base or {}).values():
        for name, value in group.items() if isinstance(group, Mapping) else ():
            if name in SPECS:
                checked = check_value(SPECS[name], _alias(name, value))
                if isinstance(checked, TypeProblem):
                    base_problems[name] = f"{name} in the run's saved options: {checked.message}"
                else:
                    values[name] = checked
    if preset is not None:
        values.update(preset_values(preset))
    if config_file is not None:
        file_values, file_problems = read_config_file(config_file)
        values.update(file_values)
        problems += file_problems
    env, env_problems = env_values()
    values.update(env)
    problems += env_problems
    overrides = _expand_shortcuts(overrides or {}, problems)
    for name, value in overrides.items():
        if value is None:
            continue
        if name not in SPECS:
            problems.append(f"unknown option '{name}'{suggest(name, SPECS)}")
            continue
        values[name] = _alias(name, value)
    problems += [text for name, text in base_problems.items() if name not in values]
    cfg = apply_values(TrainConfig(), values)
    problems += validate(cfg)
    if problems:
        raise ConfigError("invalid configuration: " + "; ".join(problems))
    for warning in config_warnings(cfg):
        _warn_once(warning)
    return cfg


_warned: set[str] = set()  # warnings already logged by this process


def _warn_once(message: str) -> None:
    """Log ``message`` as a warning, the first time only: a command may build its config
    more than once (a resumed run builds the saved one too)."""
    from ..log import get_logger

    if message not in _warned:
        _warned.add(message)
        get_logger(__name__).warning(message)


def apply_values(cfg: TrainConfig, values: Mapping[str, Any]) -> TrainConfig:
    """Set options by name (``{"batch_size": 32}``) on ``cfg``, without validation."""
    for name, value in values.items():
        setattr(getattr(cfg, SPECS[name].group), name, value)
    return cfg


def _alias(name: str, value: Any) -> Any:
    """``value`` with a boolean spelled as its option's choice (``resume=True``: ``yes``),
    and another spelling of a choice as the choice (``dtype="bf16"``: ``bfloat16``)."""
    spec = SPECS.get(name)
    if spec is not None and spec.booleans is not None and isinstance(value, bool):
        return spec.booleans[value]
    return canonical(spec, value) if spec is not None else value


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
