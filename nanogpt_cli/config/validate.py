"""Validation: the type of each value, and every problem with a whole config at once."""

from __future__ import annotations

import re
import typing
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

from .schema import SPECS, OptionSpec, TrainConfig


@dataclass
class TypeProblem:
    message: str


def canonical(spec: OptionSpec, value: Any) -> Any:
    """``value`` as its option spells it: another spelling of a choice (``bf16``, ``FP32``)
    becomes the choice (``bfloat16``, ``float32``)."""
    if spec.aliases and isinstance(value, str):
        key = value.strip().lower()
        return dict(spec.aliases).get(key, key)
    return value


def check_type(spec: OptionSpec, value: Any) -> Any:
    """``value`` checked against the option's type (ints widen to floats, other spellings
    of a choice become the choice), or a ``TypeProblem`` saying what was expected."""
    base = spec.base_type
    if value is None and base is not spec.type:
        return None
    if typing.get_origin(base) is Literal:
        choices = typing.get_args(base)
        value = canonical(spec, value)
        if isinstance(value, bool) and spec.booleans is not None:
            return spec.booleans[value]  # resume = true in a file, resume=True from Python
        if value in choices:
            return value
        others = f" (or {', '.join(a for a, _ in spec.aliases)})" if spec.aliases else ""
        return TypeProblem(f"expected one of {', '.join(choices)}{others}, got {value!r}")
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
    return TypeProblem(f"expected {base.__name__}, got {value!r}")


_DEVICE_RE = re.compile(r"^(auto|cpu|mps|cuda(:\d+)?)$")


def device_problem(device: str) -> str | None:
    """Why ``device`` is not a device name nanogpt knows, or None if it is one."""
    if _DEVICE_RE.match(device):
        return None
    return f"unknown device '{device}'; use auto, cpu, cuda, cuda:N or mps"


# Options that must be above zero.
POSITIVE = (
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
)


def validate(cfg: TrainConfig) -> list[str]:
    """Every problem with a config, each naming the options involved."""
    problems: list[str] = []
    m, d, o, s = cfg.model, cfg.data, cfg.optim, cfg.system

    def flag(name: str) -> str:
        return SPECS[name].flag

    # Values that came from Python code rather than the CLI or a file.
    values = cfg.flat()
    for name, value in values.items():
        checked = check_type(SPECS[name], value)
        if isinstance(checked, TypeProblem):
            problems.append(f"{flag(name)}: {checked.message}")
    if problems:
        return problems

    for name in POSITIVE:
        if values[name] <= 0:
            problems.append(f"{flag(name)} must be positive (got {values[name]})")
    if m.vocab_size is not None and m.vocab_size <= 0:
        problems.append(f"--vocab-size must be positive (got {m.vocab_size})")
    if m.n_head > 0 and m.n_embd > 0 and m.n_embd % m.n_head != 0:
        problems.append(f"--n-embd ({m.n_embd}) must be divisible by --n-head ({m.n_head})")
    if not 0.0 <= m.dropout < 1.0:
        problems.append(f"--dropout must be in [0, 1) (got {m.dropout})")
    for name in ("max_iters", "warmup_iters", "lr_decay_iters"):
        if values[name] < 0:
            problems.append(f"{flag(name)} must not be negative (got {values[name]})")
    if o.learning_rate <= 0:
        problems.append(f"--learning-rate must be positive (got {o.learning_rate})")
    if o.min_lr < 0:
        problems.append(f"--min-lr must not be negative (got {o.min_lr})")
    for name in ("beta1", "beta2"):
        if not 0.0 <= values[name] < 1.0:
            problems.append(f"{flag(name)} must be in [0, 1) (got {values[name]})")
    if o.weight_decay < 0:
        problems.append(f"--weight-decay must not be negative (got {o.weight_decay})")
    if o.grad_clip < 0:
        problems.append(f"--grad-clip must not be negative (got {o.grad_clip})")
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
    if not cfg.run.out_dir:
        problems.append("--out-dir must not be empty")
    return problems


def config_warnings(cfg: TrainConfig) -> list[str]:
    """What a valid config does that was likely not meant, each naming the options
    involved (``build_config`` logs them)."""
    warnings: list[str] = []
    o = cfg.optim
    if o.decay_lr and o.lr_decay_iters < o.warmup_iters:
        # nanoGPT's get_lr: the warmup, then past lr_decay_iters the minimum rate.
        warnings.append(
            f"--lr-decay-iters ({o.lr_decay_iters}) is below --warmup-iters "
            f"({o.warmup_iters}): the learning rate warms up for {o.warmup_iters} steps, then "
            f"stays at --min-lr ({o.min_lr:g}), as nanoGPT's schedule does; set "
            "--lr-decay-iters above --warmup-iters for a cosine decay"
        )
    return warnings


def suggest(word: str, candidates: Mapping[str, Any] | list[str]) -> str:
    """ "; did you mean 'x'?" for the closest candidate, or nothing."""
    import difflib

    close = difflib.get_close_matches(word, list(candidates), n=1)
    return f"; did you mean '{close[0]}'?" if close else ""
