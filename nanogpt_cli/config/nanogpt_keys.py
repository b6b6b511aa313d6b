"""nanoGPT's keys, and the fork README's flags, that nanogpt spells otherwise: one table.

nanoGPT's ``train.py`` takes its settings as ``--key=value`` flags and as config files of
``key = value`` lines; the README this project grew out of (a nanoGPT fork's) added flags
of its own (``--devices``, ``--precision``, ``--compile_model``). Most of their keys are
nanogpt's options already (``batch_size`` is ``--batch-size``); ``NANOGPT_KEYS`` holds the
others, each with the options it sets here. The command line (``cli.spellings``) and the
reader of nanoGPT's config files both translate through ``nanogpt_values``. Importable
without torch.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ..errors import ConfigError

# The words a boolean may be spelled with, in any case: --compile=False, --bias yes.
BOOLEAN_WORDS = {"true": True, "false": False, "yes": True, "no": False, "1": True, "0": False}


def parse_bool(value: Any, key: str) -> bool:
    """``value`` (a bool, or one of ``BOOLEAN_WORDS``) as a bool; anything else is a
    ``ConfigError`` naming ``key``."""
    if isinstance(value, bool):
        return value
    word = str(value).strip().lower()
    if word not in BOOLEAN_WORDS:
        raise ConfigError(f"{key} takes true or false (or yes/no, 1/0), not {value!r}")
    return BOOLEAN_WORDS[word]


# The fork README's --precision (Lightning's names) -> the dtype here; "mixed" is what
# nanogpt's dtypes do (float32 weights, the products in the lower precision).
PRECISIONS = {
    "32": "float32",
    "32-true": "float32",
    "16": "float16",
    "16-mixed": "float16",
    "bf16": "bfloat16",
    "bf16-mixed": "bfloat16",
}
# Those with no equivalent here, and what to use instead.
_NO_PRECISION = {
    "bf16-true": "bfloat16 weights are not supported (weights stay float32); use --precision "
    "bf16-mixed (--dtype bf16) instead",
    "16-true": "float16 weights are not supported (weights stay float32); use --precision "
    "16-mixed (--dtype fp16) instead",
    "64": "float64 is not supported; use --precision 32 (--dtype fp32) instead",
    "64-true": "float64 is not supported; use --precision 32 (--dtype fp32) instead",
}


def _precision(value: Any) -> dict[str, Any]:
    key = str(value).strip().lower()
    if key in PRECISIONS:
        return {"dtype": PRECISIONS[key]}
    why = _NO_PRECISION.get(key, "unknown precision; use 32, 16-mixed or bf16-mixed (or --dtype)")
    raise ConfigError(f"--precision {value}: {why}")


def _devices(value: Any) -> dict[str, Any]:
    if isinstance(value, int) or str(value).strip().isdigit():
        return {"nproc_per_node": value}
    raise ConfigError(
        f"--devices {value}: give the number of processes on this machine (as --nproc-per-node N)"
    )


def _init_from(value: Any) -> dict[str, Any]:
    return {"resume": "yes"} if value == "resume" else {"init_from": value}


def _dataset(value: Any) -> dict[str, Any]:
    """nanoGPT's dataset folder names (``shakespeare_char``) as nanogpt's dataset names."""
    from ..data.dataset import PREPARE_HINTS  # the datasets nanogpt knows

    dashed = str(value).replace("_", "-")
    return {"dataset": dashed if dashed != value and dashed in PREPARE_HINTS else value}


@dataclass(frozen=True)
class NanoGPTKey:
    """A key of nanoGPT's or of the fork README's that means other options here."""

    source: str  # "nanoGPT" or "fork README"
    options: tuple[str, ...]  # the options it may set
    values: Callable[[Any], dict[str, Any]]  # its value -> those options' values
    boolean: bool = False  # takes true or false; the bare flag means true


NANOGPT_KEYS: dict[str, NanoGPTKey] = {
    "init_from": NanoGPTKey("nanoGPT", ("init_from", "resume"), _init_from),
    "wandb_log": NanoGPTKey(
        "nanoGPT",
        ("tracker",),
        lambda v: {"tracker": "wandb" if parse_bool(v, "wandb_log") else "none"},
        boolean=True,
    ),
    "dataset": NanoGPTKey("nanoGPT", ("dataset",), _dataset),
    "devices": NanoGPTKey("fork README", ("nproc_per_node",), _devices),
    "precision": NanoGPTKey("fork README", ("dtype",), _precision),
    "compile_model": NanoGPTKey(
        "fork README",
        ("compile",),
        lambda v: {"compile": parse_bool(v, "compile_model")},
        boolean=True,
    ),
}


def nanogpt_values(key: str, value: Any) -> dict[str, Any]:
    """nanogpt's options for nanoGPT's (or the fork README's) ``key = value``:
    ``init_from='resume'`` is ``{"resume": "yes"}``, ``wandb_log=True`` ``{"tracker":
    "wandb"}``, ``precision=32`` ``{"dtype": "float32"}``; a key of nanogpt's own stays as it
    is (``{"batch_size": 32}``). A value with no equivalent is a ``ConfigError``."""
    entry = NANOGPT_KEYS.get(key)
    return {key: value} if entry is None else entry.values(value)
