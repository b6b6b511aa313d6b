"""Validation: the type of each value, and every problem with a whole config at once."""

from __future__ import annotations

import math
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
        if ok and isinstance(value, int) and not -(2**1000) < value < 2**1000:
            return TypeProblem(
                f"expected a number of float range, got one of {len(str(value))} digits"
            )
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


INT64_MAX = 2**63 - 1

# The range of each integer option, both ends included. The maxima lie far beyond any real
# run; they turn a mistyped value (10**30) into one line here instead of an overflow or an
# allocation that never ends.
INT_RANGES: dict[str, tuple[int, int]] = {
    "n_layer": (1, 4096),
    "n_head": (1, 4096),
    "n_embd": (1, 2**20),
    "block_size": (1, 2**24),
    "vocab_size": (1, 2**24),
    "batch_size": (1, 2**24),
    "gradient_accumulation_steps": (1, 2**24),
    "total_batch_tokens": (1, 2**48),
    "max_iters": (0, 2**48),
    "warmup_iters": (0, 2**48),
    "lr_decay_iters": (0, 2**48),
    "max_bad_steps": (1, 2**31 - 1),
    "eval_interval": (1, 2**48),
    "eval_iters": (1, 2**31 - 1),
    "eval_tasks_limit": (1, 2**31 - 1),
    "eval_tasks_every": (1, 2**31 - 1),
    "log_interval": (1, 2**48),
    "seed": (0, INT64_MAX),
    "nproc_per_node": (1, 4096),
    "dist_timeout": (1, 10**9),  # seconds: about 31 years
}

# The tokens an evaluation draws at once, per split (8 bytes each): 8 GiB.
MAX_EVAL_TOKENS = 2**30

# The range of each float option: lowest, highest, and whether each end is allowed. NaN and
# infinity are refused: none of these options means anything by them (a NaN --grad-clip
# silently turned clipping off, a NaN --min-lr made NaN weights).
FLOAT_RANGES: dict[str, tuple[float, float, bool, bool]] = {
    "learning_rate": (0.0, math.inf, False, False),
    "min_lr": (0.0, math.inf, True, False),
    "weight_decay": (0.0, math.inf, True, False),
    "grad_clip": (0.0, math.inf, True, False),
    "beta1": (0.0, 1.0, True, False),
    "beta2": (0.0, 1.0, True, False),
    "muon_lr": (0.0, math.inf, False, False),
    "muon_momentum": (0.0, 1.0, True, False),
    "dropout": (0.0, 1.0, True, False),
    "rope_base": (0.0, math.inf, False, False),
    "logit_softcap": (0.0, math.inf, True, False),
}


def int_problem(value: int, low: int, high: int) -> str | None:
    """Why ``value`` is outside ``low..high``, naming the range ("must be ..."); or None."""
    if low <= value <= high:
        return None
    if value > high:
        return f"must be at most {high} (got {value})"
    if low == 1:
        return f"must be positive (got {value})"
    if low == 0:
        return f"must not be negative (got {value})"
    return f"must be between {low} and {high} (got {value})"


def float_problem(
    value: float,
    low: float = -math.inf,
    high: float = math.inf,
    low_in: bool = True,
    high_in: bool = True,
) -> str | None:
    """Why ``value`` is not a finite number within the range, naming it ("must be ...");
    or None."""
    above = value >= low if low_in else value > low
    below = value <= high if high_in else value < high
    if math.isfinite(value) and above and below:
        return None
    if not math.isinf(high):
        span = ("[" if low_in else "(") + f"{low:g}, {high:g}" + ("]" if high_in else ")")
        return f"must be a finite number in {span} (got {value})"
    if low == 0:
        what = ", not negative" if low_in else " above 0"
    else:
        what = "" if math.isinf(low) else f" of at least {low:g}"
    return f"must be a finite number{what} (got {value})"


def range_problem(name: str, value: Any) -> str | None:
    """Why option ``name``'s ``value`` (of the option's type) is outside its range, naming
    the range ("must be ..."); or None."""
    if value is None or isinstance(value, bool):
        return None
    if name in INT_RANGES and isinstance(value, int):
        return int_problem(value, *INT_RANGES[name])
    if name in FLOAT_RANGES and isinstance(value, (int, float)):
        return float_problem(value, *FLOAT_RANGES[name])
    return None


def check_value(spec: OptionSpec, value: Any) -> Any:
    """``value`` checked against the option's type and range (``check_type``, then
    ``range_problem``), or a ``TypeProblem`` saying what is wrong."""
    checked = check_type(spec, value)
    if isinstance(checked, TypeProblem):
        return checked
    problem = range_problem(spec.name, checked)
    return checked if problem is None else TypeProblem(problem)


def validate(cfg: TrainConfig) -> list[str]:
    """Every problem with a config, each naming the options involved."""
    problems: list[str] = []
    m, d, s = cfg.model, cfg.data, cfg.system

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

    for name, value in values.items():
        if (problem := range_problem(name, value)) is not None:
            problems.append(f"{flag(name)} {problem}")
    if m.n_head > 0 and m.n_embd > 0 and m.n_embd % m.n_head != 0:
        problems.append(f"--n-embd ({m.n_embd}) must be divisible by --n-head ({m.n_head})")
    elif m.pos_embedding == "rope" and (m.n_embd // max(m.n_head, 1)) % 2:
        # rotary embeddings turn pairs of a head's features
        problems.append(
            f"--pos-embedding rope needs an even head size; --n-embd / --n-head is "
            f"{m.n_embd // max(m.n_head, 1)}"
        )
    window_tokens = cfg.eval.eval_iters * d.batch_size * (m.block_size + 1)
    if window_tokens > MAX_EVAL_TOKENS:
        problems.append(
            f"--eval-iters x --batch-size x (--block-size + 1) is {window_tokens:,} tokens, more "
            f"than the {MAX_EVAL_TOKENS:,} an evaluation holds in memory; lower --eval-iters"
        )
    if d.total_batch_tokens is not None:
        micro = d.batch_size * m.block_size
        if d.total_batch_tokens <= 0 or micro <= 0 or d.total_batch_tokens % micro:
            problems.append(
                f"--total-batch-tokens ({d.total_batch_tokens}) must be a positive multiple of "
                f"--batch-size x --block-size ({micro})"
            )
    if cfg.optim.optimizer == "muon" and s.strategy == "fsdp":
        # torch.optim.Muon orthogonalises whole matrices; FSDP hands it row shards.
        problems.append(
            "--optimizer muon does not run with --strategy fsdp (Muon needs whole weight "
            "matrices, FSDP shards them); use --strategy ddp or --optimizer adamw"
        )
    if cfg.eval.eval_tasks and s.strategy == "fsdp":
        # rank 0 runs the tasks alone; an FSDP model needs every rank for a forward pass
        problems.append(
            "--eval-tasks does not run with --strategy fsdp (rank 0 scores the tasks "
            "alone, FSDP needs every process); use --strategy ddp, or run nanogpt eval "
            "--tasks on the checkpoints"
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
