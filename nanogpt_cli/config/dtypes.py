"""The dtype vocabulary: every spelling of a precision that nanogpt accepts, in one place.

Every command and function that takes a dtype (``train --dtype``, ``sample``, ``eval``,
``bench``, ``convert-checkpoint``, ``Sampler.from_checkpoint``, ``convert_checkpoint``)
accepts each spelling here, in any case, and works with the canonical name (``float32``,
``bfloat16``, ``float16``; ``auto`` where the device chooses). Importable without torch.
"""

from __future__ import annotations

from ..errors import ConfigError

DTYPE_NAMES = ("float32", "bfloat16", "float16")  # the canonical names
DTYPE_ALIASES = {"fp32": "float32", "bf16": "bfloat16", "fp16": "float16"}
# How help texts and errors list them.
DTYPE_SPELLINGS = "fp32|float32, bf16|bfloat16 or fp16|float16"


def dtype_name(value: str, *, auto: bool = True) -> str:
    """The canonical name of dtype ``value`` (``bf16``, ``BFloat16`` -> ``bfloat16``);
    ``auto`` stays ``auto`` where ``auto`` is allowed. Anything else is a ``ConfigError``."""
    key = str(value).strip().lower()
    key = DTYPE_ALIASES.get(key, key)
    if key in DTYPE_NAMES or (auto and key == "auto"):
        return key
    choices = ("auto, " if auto else "") + DTYPE_SPELLINGS
    raise ConfigError(f"unknown dtype {value!r}; use {choices}")
