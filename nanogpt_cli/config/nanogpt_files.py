"""nanoGPT's config files (``config/train_shakespeare_char.py``), read without running them.

nanoGPT runs a config file as Python over ``train.py``'s globals. Here it is parsed, never
run: only top-level assignments ``name = value`` of literals (numbers, strings, booleans,
None, tuples and lists of them) and arithmetic of literals (``5 * 8``, ``2**10``, ``-1e-3``)
are read; docstrings and comments are skipped, and ``import time`` only serves nanoGPT's
``wandb_run_name = 'ft-' + str(time.time())``. Anything else is a ``ConfigError`` naming the
file, the line and the statement.

The values start from ``train.py``'s defaults, as in nanoGPT, and its keys become this
project's options (``nanogpt_options``, through ``nanogpt_keys`` as on the command line):
``init_from='resume'`` resumes, ``wandb_log`` picks the W&B tracker,
``dataset='shakespeare_char'`` is ``shakespeare-char``.
"""

from __future__ import annotations

import ast
import operator
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from ..errors import ConfigError
from .nanogpt_keys import NANOGPT_KEYS, nanogpt_values
from .schema import SPECS
from .validate import TypeProblem, check_value, suggest

# nanoGPT's train.py globals with their defaults, as train.py spells them: what a nanoGPT
# config file starts from. train.py's device-dependent defaults are auto here, which makes
# the same choice on a CUDA machine: device 'cuda', dtype bfloat16 where CUDA supports it
# (else float16), compile True (auto compiles on CUDA only).
TRAIN_PY_DEFAULTS: dict[str, Any] = {
    "out_dir": "out",
    "eval_interval": 2000,
    "log_interval": 1,
    "eval_iters": 200,
    "eval_only": False,
    "always_save_checkpoint": True,
    "init_from": "scratch",
    "wandb_log": False,
    "wandb_project": "owt",
    "wandb_run_name": "gpt2",
    "dataset": "openwebtext",
    "gradient_accumulation_steps": 5 * 8,
    "batch_size": 12,
    "block_size": 1024,
    "n_layer": 12,
    "n_head": 12,
    "n_embd": 768,
    "dropout": 0.0,
    "bias": False,
    "learning_rate": 6e-4,
    "max_iters": 600000,
    "weight_decay": 1e-1,
    "beta1": 0.9,
    "beta2": 0.95,
    "grad_clip": 1.0,
    "decay_lr": True,
    "warmup_iters": 2000,
    "lr_decay_iters": 600000,
    "min_lr": 6e-5,
    "backend": "nccl",
    "device": "auto",
    "dtype": "auto",
    "compile": None,
}
# train.py's torch.distributed backends; here the device chooses (nccl on CUDA, gloo on CPU).
BACKENDS = ("nccl", "gloo")

_MAX_BITS = 4096  # the largest integer that arithmetic in a config file may make
_OPERATORS: dict[type[ast.operator], Callable[[Any, Any], Any]] = {
    ast.Add: operator.add,
    ast.Sub: operator.sub,
    ast.Mult: operator.mul,
    ast.Div: operator.truediv,
    ast.FloorDiv: operator.floordiv,
    ast.Mod: operator.mod,
    ast.Pow: operator.pow,
}
_WHAT_IS_READ = (
    "nothing in a nanoGPT config file is run: it may only assign numbers, strings, "
    "True/False/None, tuples or lists of them and arithmetic of them (name = 5000 * 2)"
)


def read_nanogpt_config(path: str | Path) -> tuple[dict[str, Any], list[str]]:
    """The options a nanoGPT config file sets, over ``train.py``'s defaults (as nanoGPT's
    ``train.py`` reads it); the problems found (unknown keys, wrong types)."""
    assignments, lines = parse_nanogpt_file(path)
    raw = {**TRAIN_PY_DEFAULTS, **assignments}
    return nanogpt_options(raw, str(path), lines)


def nanogpt_options(
    raw: Mapping[str, Any], where: str, lines: Mapping[str, int] | None = None
) -> tuple[dict[str, Any], list[str]]:
    """nanoGPT's keys and values as this project's options; the problems found.

    nanoGPT's keys spelled otherwise here translate through ``nanogpt_keys`` (as on the
    command line): ``init_from='resume'`` is ``resume = yes`` (from no other weights),
    another ``init_from`` is no resume; ``wandb_log`` is ``tracker = wandb`` (or ``none``);
    ``dataset='shakespeare_char'`` is ``shakespeare-char``. ``backend`` is checked and left
    to the device. Every other key is an option of the same name (this project's own
    options are read too).
    """
    values: dict[str, Any] = {}
    problems: list[str] = []
    for key, value in raw.items():
        at = f"{where}, line {lines[key]}" if lines and key in lines else where
        if key == "backend":
            if value not in BACKENDS:
                problems.append(
                    f"backend in {at}: expected nccl or gloo, got {value!r} (the device "
                    "chooses it: nccl on CUDA, gloo on CPU)"
                )
            continue
        if key in NANOGPT_KEYS:
            try:
                options = nanogpt_values(key, value)
            except ConfigError as e:
                problems.append(f"{key} in {at}: {e}")
                continue
            if key == "init_from":  # train.py's one setting for both
                options = {"init_from": "scratch", "resume": "no", **options}
        elif key in SPECS:
            options = {key: value}
        else:
            known = [*SPECS, *TRAIN_PY_DEFAULTS]
            problems.append(f"unknown option '{key}' in {at}{suggest(key, known)}")
            continue
        for name, option_value in options.items():
            checked = check_value(SPECS[name], option_value)
            if isinstance(checked, TypeProblem):
                problems.append(f"{key} in {at}: {checked.message}")
            else:
                values[name] = checked
    return values, problems


def parse_nanogpt_file(path: str | Path) -> tuple[dict[str, Any], dict[str, int]]:
    """The names a nanoGPT config file assigns and their values, and the line of each,
    read with ``ast``: nothing in the file runs. Anything but a literal assignment, a
    docstring or ``import time`` is a ``ConfigError`` naming the line and the statement."""
    path = Path(path)
    try:
        source = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"config file {path} does not exist") from None
    except (OSError, ValueError) as e:  # ValueError: undecodable, a NUL in the path
        raise ConfigError(f"cannot read config file {path}: {e}") from None
    try:
        tree = ast.parse(source, filename=str(path))
    except SyntaxError as e:
        raise ConfigError(
            f"config file {path}, line {e.lineno}: not valid Python ({e.msg}); fix the line"
        ) from None
    except (ValueError, RecursionError, MemoryError) as e:
        raise ConfigError(f"config file {path} cannot be parsed: {e}") from None
    values: dict[str, Any] = {}
    lines: dict[str, int] = {}
    has_time = False  # `import time` seen: str(time.time()) is read as the time now
    for stmt in tree.body:
        if _is_docstring(stmt):
            continue
        if isinstance(stmt, ast.Import) and [(a.name, a.asname) for a in stmt.names] == [
            ("time", None)
        ]:
            has_time = True
            continue
        if isinstance(stmt, ast.Assign) and all(isinstance(t, ast.Name) for t in stmt.targets):
            try:
                value = _literal(stmt.value, has_time)
            except _NotLiteral as e:
                text = _text(source, e.node)
                why = f"`{text}` is not a literal{e.why}; {_WHAT_IS_READ}; write the value itself"
                raise ConfigError(_refusal(path, source, stmt, why)) from None
            except RecursionError:
                why = "the expression is nested too deeply; write the value itself"
                raise ConfigError(_refusal(path, source, stmt, why)) from None
            for target in stmt.targets:
                assert isinstance(target, ast.Name)
                values[target.id] = value
                lines[target.id] = stmt.lineno
                has_time = has_time and target.id != "time"
            continue
        if isinstance(stmt, (ast.Import, ast.ImportFrom)):
            why = f"only `import time` may be imported and {_WHAT_IS_READ}; remove the line"
        else:
            why = f"{_WHAT_IS_READ}; write the value itself, or pass it as a flag"
        raise ConfigError(_refusal(path, source, stmt, why))
    return values, lines


def _is_docstring(stmt: ast.stmt) -> bool:
    """Whether ``stmt`` is a string on its own (a docstring)."""
    value = stmt.value if isinstance(stmt, ast.Expr) else None
    return isinstance(value, ast.Constant) and isinstance(value.value, str)


class _NotLiteral(Exception):
    """An expression that is not a literal, or arithmetic of literals."""

    def __init__(self, node: ast.AST, why: str = "") -> None:
        super().__init__(why)
        self.node = node
        self.why = why


def _literal(node: ast.expr, has_time: bool) -> Any:
    """The value of a literal expression, computed without running any of the file."""
    if isinstance(node, ast.Constant):
        if node.value is None or isinstance(node.value, (bool, int, float, str)):
            return node.value
    elif isinstance(node, (ast.Tuple, ast.List)):
        items = [_literal(item, has_time) for item in node.elts]
        return tuple(items) if isinstance(node, ast.Tuple) else items
    elif isinstance(node, ast.UnaryOp) and isinstance(node.op, (ast.USub, ast.UAdd)):
        operand = _literal(node.operand, has_time)
        if _is_number(operand):
            return -operand if isinstance(node.op, ast.USub) else operand
    elif isinstance(node, ast.BinOp) and type(node.op) in _OPERATORS:
        left, right = _literal(node.left, has_time), _literal(node.right, has_time)
        return _arithmetic(node, left, right)
    elif has_time and _is_time_string(node):
        return str(time.time())  # nanoGPT's wandb_run_name = 'ft-' + str(time.time())
    raise _NotLiteral(node)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _arithmetic(node: ast.BinOp, left: Any, right: Any) -> Any:
    """``left op right`` for numbers, or ``+`` for strings; huge results are refused."""
    if isinstance(node.op, ast.Add) and isinstance(left, str) and isinstance(right, str):
        return left + right
    if not (_is_number(left) and _is_number(right)):
        raise _NotLiteral(node, " (arithmetic takes numbers, or strings joined with +)")
    if isinstance(node.op, ast.Pow) and _too_large_power(left, right):
        raise _NotLiteral(node, " (the result is too large)")
    try:
        result = _OPERATORS[type(node.op)](left, right)
    except (ArithmeticError, ValueError) as e:
        raise _NotLiteral(node, f" ({e})") from None
    if isinstance(result, int) and result.bit_length() > _MAX_BITS:
        raise _NotLiteral(node, " (the result is too large)")
    if not _is_number(result):  # a complex power: (-8) ** 0.5
        raise _NotLiteral(node, " (the result is not a real number)")
    return result


def _too_large_power(base: Any, exponent: Any) -> bool:
    """Whether ``base ** exponent`` of integers has more than ``_MAX_BITS`` bits."""
    if not (isinstance(base, int) and isinstance(exponent, int)) or abs(base) < 2:
        return False
    return abs(base).bit_length() * exponent > _MAX_BITS + exponent


def _is_time_string(node: ast.expr) -> bool:
    """Whether ``node`` is ``str(time.time())``, exactly."""
    if not (
        isinstance(node, ast.Call)
        and isinstance(node.func, ast.Name)
        and node.func.id == "str"
        and len(node.args) == 1
        and not node.keywords
    ):
        return False
    inner = node.args[0]
    return (
        isinstance(inner, ast.Call)
        and isinstance(inner.func, ast.Attribute)
        and isinstance(inner.func.value, ast.Name)
        and inner.func.value.id == "time"
        and inner.func.attr == "time"
        and not inner.args
        and not inner.keywords
    )


def _text(source: str, node: ast.AST, limit: int = 60) -> str:
    """The source of ``node`` on one line, cut to ``limit`` characters."""
    text = " ".join((ast.get_source_segment(source, node) or "").split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _refusal(path: Path, source: str, stmt: ast.stmt, why: str) -> str:
    return f"config file {path}, line {stmt.lineno}: refused `{_text(source, stmt)}`: {why}"
