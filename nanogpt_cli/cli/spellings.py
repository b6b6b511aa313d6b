"""nanoGPT's and the fork README's command lines, read as nanogpt's own.

nanoGPT takes ``--batch_size=32`` and ``--compile=False``; the README this project grew out
of (a nanoGPT fork's) ``--devices 2``, ``--precision bf16-mixed`` and ``--compile_model``.
Before a command parses its arguments (``roothelp.HelpCommand.parse_args``), ``rewrite``
puts them in nanogpt's spelling, from the command's own options: every boolean flag takes
a value too (``--compile=False``, ``--bias true``; bare ``--bias`` and ``--no-bias`` as
ever), an option whose choices stand for false and true takes the booleans (``--resume
true``: ``yes``), and the keys of ``config.nanogpt_keys`` become the options they mean
(``--devices 2``: ``--nproc-per-node 2``). A command line that used any of them is logged
once in nanogpt's spelling when the command runs (``log_nanogpt_spelling``), at INFO:
``--quiet`` hides it.
"""

from __future__ import annotations

import shlex
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

_pending: list[str] = []  # the line the command about to run logs


@dataclass
class Rewrite:
    """A command's arguments in nanogpt's spelling."""

    parsed: list[str] = field(default_factory=list)  # what the command parses
    shown: list[str] = field(default_factory=list)  # the same as a user would type it
    foreign: bool = False  # a nanoGPT or fork README spelling was used

    def add(self, tokens: Sequence[str], shown: Sequence[str] | None = None) -> None:
        self.parsed += tokens
        self.shown += tokens if shown is None else shown


def _long(param: Any) -> str:
    return next((o for o in param.opts if o.startswith("--")), param.opts[0])


class _Options:
    """A command's options by flag (``--no-bias``) and by name (``bias``)."""

    def __init__(self, params: Iterable[Any]) -> None:
        self.flags: dict[str, tuple[Any, bool]] = {}  # boolean flag -> (option, its value)
        self.valued: dict[str, Any] = {}  # flag of an option that takes a value
        self.names: dict[str, Any] = {}
        for param in params:
            if getattr(param, "param_type_name", None) != "option":
                continue
            self.names[param.name] = param
            if getattr(param, "is_bool_flag", False):
                self.flags |= {o: (param, True) for o in param.opts}
                self.flags |= {o: (param, False) for o in param.secondary_opts}
            elif not getattr(param, "is_flag", False):
                self.valued |= {o: param for o in param.opts}

    def boolean(self, param: Any, on: bool) -> list[str]:
        if on:
            return [_long(param)]
        return param.secondary_opts[:1]  # nothing: a flag without a --no- form is off

    def tokens(self, values: dict[str, Any]) -> tuple[list[str], list[str]]:
        """Options set to values as arguments: to parse, and as shown (``--resume``)."""
        from ..config.schema import SPECS

        parsed: list[str] = []
        shown: list[str] = []
        for name, value in values.items():
            param = self.names[name]
            if getattr(param, "is_bool_flag", False):
                parsed += self.boolean(param, bool(value))
                shown += self.boolean(param, bool(value))
                continue
            parsed += [_long(param), str(value)]
            spec = SPECS.get(name)
            bare = spec is not None and spec.bare is not None and spec.bare == value
            shown += [_long(param)] if bare else [_long(param), str(value)]
        return parsed, shown


def rewrite(params: Iterable[Any], args: Sequence[str], group: bool = False) -> Rewrite:
    """``args`` of a command with options ``params`` in nanogpt's spelling. A group's
    (``group``) are rewritten up to its subcommand's name. A value with no equivalent here
    (``--precision 64``, ``--compile=maybe``) is a ``ConfigError``."""
    from ..config.nanogpt_keys import BOOLEAN_WORDS, NANOGPT_KEYS, nanogpt_values, parse_bool
    from ..config.schema import SPECS

    options = _Options(params)
    out = Rewrite()
    args = list(args)
    i = 0
    while i < len(args):
        arg = args[i]
        i += 1
        if arg == "--" or (group and not arg.startswith("-")):
            out.add(args[i - 1 :])  # the rest is not this command's options
            break
        if not arg.startswith("--"):
            preset = _preset_argument(options, arg)
            out.add([arg], None if preset is None else ["--preset", preset])
            out.foreign |= preset is not None
            continue
        name, eq, value = arg.partition("=")
        flag, key = name.replace("_", "-"), name[2:].replace("-", "_")
        nxt = args[i] if i < len(args) else None
        is_word = nxt is not None and nxt.strip().lower() in BOOLEAN_WORDS
        entry = NANOGPT_KEYS.get(key)
        if entry is not None and all(o in options.names for o in entry.options):
            if eq:
                given: Any = value
            elif entry.boolean:
                given, i = (nxt, i + 1) if is_word else (True, i)
            elif nxt is not None:
                given, i = nxt, i + 1
            else:
                out.add([arg])  # no value: the command says so
                continue
            values = nanogpt_values(key, given)
            out.add(*options.tokens(values))
            out.foreign |= "_" in name or values != {key: given}
        elif flag in options.flags:
            param, meaning = options.flags[flag]
            if eq or is_word:
                given, i = (value, i) if eq else (nxt, i + 1)
                out.add(options.boolean(param, parse_bool(given, flag) == meaning))
                out.foreign = True
            else:
                out.add([flag])
                out.foreign |= "_" in name
        elif flag in options.valued and (eq or (nxt is not None and not nxt.startswith("--"))):
            given, i = (value, i) if eq else (nxt, i + 1)
            spec = SPECS.get(options.valued[flag].name)
            booleans = () if spec is None or spec.booleans is None else spec.booleans
            word = given.strip().lower()
            if booleans and given not in booleans and word in BOOLEAN_WORDS:
                given = booleans[BOOLEAN_WORDS[word]]  # --resume=True: yes
                out.foreign = True
            shown = [flag] if spec is not None and spec.bare == given else [flag, given]
            if options.valued[flag].name == "preset" and _alias(given) is not None:
                shown, out.foreign = [flag, _alias(given)], True  # train_gpt2: gpt2-124m
            out.add([f"{flag}={given}"] if eq else [flag, given], shown)
            out.foreign |= "_" in name
        else:
            out.add([arg])  # not an option here, or a value missing: the command says so
    return out


def _alias(name: str) -> str | None:
    """The built-in preset that ``name`` is another spelling of (nanoGPT's and the fork
    README's preset names: ``eval_gpt2``), or None."""
    from ..config.presets import PRESETS, canonical_preset, user_preset_files

    preset = canonical_preset(name)
    if preset == name or preset not in PRESETS or name in user_preset_files():
        return None
    return preset


def _preset_argument(options: _Options, arg: str) -> str | None:
    """The preset that the argument of a command taking a config file or preset names
    (``nanogpt train eval_gpt2``, nanoGPT's early README), as a user would type it."""
    from ..config.presets import is_preset

    if "preset" not in options.names or arg.startswith("-"):
        return None
    try:
        if Path(arg).is_file() or not is_preset(arg):
            return None
    except (OSError, ValueError):
        return None
    return _alias(arg) or arg


def parse_args_hook(command: Any, ctx: Any, args: list[str], group: bool = False) -> list[str]:
    """``args`` rewritten for ``command`` (see ``rewrite``), and the line to log noted;
    shell completion (a resilient parse) sees them as typed."""
    if ctx.resilient_parsing:
        return args
    done = rewrite(command.get_params(ctx), args, group)
    _pending[:] = [shlex.join([*ctx.command_path.split(), *done.shown])] if done.foreign else []
    return done.parsed


def log_nanogpt_spelling() -> None:
    """Log the command line in nanogpt's spelling, if it was typed otherwise (once)."""
    if _pending:
        from ..log import get_logger

        line = _pending.pop()
        get_logger(__name__).info(f"in nanogpt's spelling: {line}")
