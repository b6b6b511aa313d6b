"""TOML files of options: config files (``--config``), user presets, and a run's
``config.toml``, read and written."""

from __future__ import annotations

import json
import math
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ..errors import ConfigError
from .nanogpt_files import read_nanogpt_config
from .schema import GROUP_TITLES, LEGACY_GROUPS, SPECS, TrainConfig
from .validate import TypeProblem, check_value, suggest

PRESET_KEYS = ("description", "extends")  # what a preset file holds besides options


def _toml() -> Any:
    """The TOML reader, imported when a file is read (``nanogpt --help`` reads none)."""
    if sys.version_info >= (3, 11):
        import tomllib
    else:  # pragma: no cover - exercised on Python 3.10 only
        import tomli as tomllib
    return tomllib


def _load(path: Path, kind: str) -> dict[str, Any]:
    tomllib = _toml()
    try:
        return tomllib.loads(path.read_text(encoding="utf-8"))  # type: ignore[no-any-return]
    except FileNotFoundError:
        raise ConfigError(f"{kind} {path} does not exist") from None
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"{kind} {path} is not valid TOML: {e}") from None
    except (OSError, ValueError) as e:  # ValueError: undecodable, a NUL in the path
        raise ConfigError(f"cannot read {kind} {path}: {e}") from None


def read_config_file(path: str | Path) -> tuple[dict[str, Any], list[str]]:
    """Read a TOML file of options, flat (``batch_size = 32``) or grouped (``[data]``), or
    a nanoGPT config file (``.py``, read without running it: ``nanogpt_files``).

    Returns the values and the problems found (unknown keys, wrong types).
    """
    path = Path(path)
    if path.suffix == ".py":  # nanoGPT's config files: parsed, never run
        return read_nanogpt_config(path)
    return parse_options(_load(path, "config file"), str(path))


def read_preset_file(path: Path) -> dict[str, Any]:
    """A user's preset: a TOML file of options, plus ``description`` and ``extends``."""
    raw = _load(path, "preset file")
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


def parse_options(raw: Mapping[str, Any], where: str) -> tuple[dict[str, Any], list[str]]:
    """Options from a parsed TOML table, flat or grouped; the problems found."""
    flat: dict[str, Any] = {}
    problems: list[str] = []
    for key, value in raw.items():
        if key in GROUP_TITLES and isinstance(value, dict):
            for sub, subvalue in value.items():
                known = sub in SPECS and (
                    SPECS[sub].group == key or sub in LEGACY_GROUPS.get(key, ())
                )
                if known:
                    flat[sub] = subvalue
                else:
                    problems.append(
                        f"unknown option '{sub}' in [{key}] of {where}{suggest(sub, SPECS)}"
                    )
        elif key in SPECS:
            flat[key] = value
        else:
            problems.append(f"unknown option '{key}' in {where}{suggest(key, SPECS)}")
    values = {}
    for key, value in flat.items():
        checked = check_value(SPECS[key], value)
        if isinstance(checked, TypeProblem):
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
                shown = SPECS[name].default_text or "auto"
                lines.append(f"# {name}: not set ({shown})")
            else:
                lines.append(f"{name} = {toml_value(value)}")
    return "\n".join(lines) + "\n"


def toml_value(value: Any) -> str:
    """``value`` written as TOML."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if math.isnan(value) or math.isinf(value):
            return "nan" if math.isnan(value) else ("inf" if value > 0 else "-inf")
        return repr(value)
    return json.dumps(str(value), ensure_ascii=False)  # a TOML basic string
