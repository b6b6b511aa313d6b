"""CLI options shared between commands, and the training options built from the config.

The training options are generated from the dataclasses in ``config.py``: one option per
field, in a help panel per group, with the field's help text and type. Their CLI default is
``None`` ("not given"), so that a preset or config file can supply the value; the default
shown in ``--help`` is the value under the command's default preset.
"""

from __future__ import annotations

import functools
import inspect
import typing
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, Optional

import typer

from .. import config
from ..config import (
    DEFAULT_PRESET,
    GROUP_TITLES,
    SPECS,
    OptionSpec,
    TrainConfig,
    apply_values,
    device_problem,
    option_flag,
    option_specs,
    preset_values,
)
from ..config.dtypes import DTYPE_SPELLINGS, dtype_name
from ..config.validate import TypeProblem, check_type
from ..errors import ConfigError
from .complete import COMPLETERS, complete_checkpoint, complete_init_from, complete_preset
from .roothelp import HelpCommand


def _check_device(value: str | None) -> str | None:
    if value is not None and (problem := device_problem(value)) is not None:
        raise typer.BadParameter(problem)
    return value


def _dtype_checker(auto: bool) -> Callable[[Optional[str]], Optional[str]]:
    """The callback of a --dtype option: any spelling of config.dtypes (``bf16``,
    ``bfloat16``) as its canonical name; ``auto`` too if ``auto``."""

    def check(value: Optional[str]) -> Optional[str]:
        try:
            return None if value is None else dtype_name(value, auto=auto)
        except ConfigError as e:
            raise typer.BadParameter(str(e)) from None

    return check


def choices_metavar(spec: OptionSpec) -> str:
    """``a|b|c``: an option's choices, each in its shortest spelling (``auto|fp32|bf16``)."""
    spellings = [
        min((choice, *(a for a, c in spec.aliases if c == choice)), key=len)
        for choice in typing.get_args(spec.base_type)
    ]
    return "|".join(spellings)


# --device and --dtype of the commands that take no training options; the help texts are
# the training options' own.
Device = Annotated[str, typer.Option("--device", help=SPECS["device"].help, callback=_check_device)]
DTYPE_METAVAR = choices_metavar(SPECS["dtype"])
DType = Annotated[
    str,
    typer.Option(
        "--dtype", help=SPECS["dtype"].help, metavar=DTYPE_METAVAR, callback=_dtype_checker(True)
    ),
]
# --dtype of an export: the weights' stored dtype, so no auto.
ExportDType = Annotated[
    str,
    typer.Option(
        "--dtype",
        help=f"Weights' dtype in the export: {DTYPE_SPELLINGS}.",
        metavar=DTYPE_METAVAR.removeprefix("auto|"),
        callback=_dtype_checker(False),
    ),
]
# The same, unset by default: the value then comes from a saved run or a preset.
MaybeDevice = Annotated[
    Optional[str],
    typer.Option(
        "--device", help=SPECS["device"].help, callback=_check_device, show_default="auto"
    ),
]
MaybeDType = Annotated[
    Optional[str],
    typer.Option(
        "--dtype",
        help=SPECS["dtype"].help,
        metavar=DTYPE_METAVAR,
        callback=_dtype_checker(True),
        show_default="auto",
    ),
]
CpuKernels = Annotated[
    Optional[config.KernelMode],
    typer.Option(
        "--cpu-kernels",
        help=SPECS["cpu_kernels"].help,
        metavar="|".join(typing.get_args(config.KernelMode)),
        show_default="auto",
    ),
]
DataDir = Annotated[
    Optional[Path],
    typer.Option(
        "--data-dir", help=SPECS["data_dir"].help, show_default=SPECS["data_dir"].default_text
    ),
]

# Where a model to load comes from (sample, serve): a run directory, any checkpoint, a GPT-2
# size, and a nanoGPT character vocabulary.
CheckpointPath = Annotated[
    Optional[Path],
    typer.Option(
        "--checkpoint",
        help="Checkpoint directory or file, any format (nanoGPT's ckpt.pt and Hugging Face "
        "folders too); overrides --out-dir.",
        autocompletion=complete_checkpoint,
        show_default=False,
    ),
]
InitFrom = Annotated[
    Optional[str],
    typer.Option(
        "--init-from",
        help="A GPT-2 size (gpt2, gpt2-medium, gpt2-large, gpt2-xl; from the Hugging Face hub "
        "or its cache) or a path; overrides --out-dir.",
        autocompletion=complete_init_from,
        show_default=False,
    ),
]
MetaPath = Annotated[
    Optional[Path],
    typer.Option(
        "--meta",
        help="nanoGPT meta.pkl with the character vocabulary of a ckpt.pt (default: beside "
        "the checkpoint, or data/<dataset>/meta.pkl).",
        show_default=False,
    ),
]


def preset_option(default: str) -> Any:
    """The ``--preset`` option of a command whose default preset is ``default``."""
    return Annotated[
        Optional[str],
        typer.Option(
            "--preset",
            help="Named set of options to start from (see docs/configuration.md).",
            autocompletion=complete_preset,
            rich_help_panel="Configuration",
            show_default=default,
        ),
    ]


Preset = preset_option(DEFAULT_PRESET)


PrintConfig = Annotated[
    bool,
    typer.Option(
        "--print-config",
        help="Print the resolved options as TOML (a file --config reads) and exit.",
        rich_help_panel="Configuration",
    ),
]

ConfigFile = Annotated[
    Optional[Path],
    typer.Option(
        "--config",
        help="TOML file of options, or a nanoGPT config .py (read, never run); overrides the "
        "preset, flags override it.",
        rich_help_panel="Configuration",
        show_default=False,
    ),
]


def _shown_default(spec: OptionSpec, value: Any) -> str | bool:
    if spec.default_text is not None and value == spec.default:
        return spec.default_text
    if value is None:
        return False
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def _annotation(spec: OptionSpec, defaults: TrainConfig) -> Any:
    value = getattr(getattr(defaults, spec.group), spec.name)
    base = spec.base_type
    decls = [spec.flag]
    extra: dict[str, Any] = {}
    if base is bool:
        decls = [f"{spec.flag}/--no-{spec.flag[2:]}"]
    elif typing.get_origin(base) is typing.Literal:
        # Spelled out: the underscore-to-dash normalisation would show gelu_tanh as gelu-tanh.
        extra["metavar"] = choices_metavar(spec)
        if spec.aliases:  # other spellings too (bf16): checked here, not as a fixed choice
            base = str
            extra["callback"] = _choice_checker(spec)
    if spec.complete is not None:
        extra["autocompletion"] = COMPLETERS[spec.complete]
    return Annotated[
        Optional[base],
        typer.Option(
            *decls,
            help=spec.help,
            show_default=_shown_default(spec, value),
            rich_help_panel=GROUP_TITLES[spec.group],
            **extra,
        ),
    ]


def _choice_checker(spec: OptionSpec) -> Callable[[Optional[str]], Optional[str]]:
    """The callback of an option with other spellings of its choices: the value as one of
    the choices (``bf16``: ``bfloat16``)."""

    def check(value: Optional[str]) -> Optional[str]:
        if value is None:  # not given: a preset or config file sets it
            return None
        checked = check_type(spec, value)
        if isinstance(checked, TypeProblem):
            raise typer.BadParameter(checked.message)
        return checked  # type: ignore[no-any-return]

    return check


def _shortcut_annotation(spec: OptionSpec, name: str, value: Any) -> Any:
    return Annotated[
        bool,
        typer.Option(
            option_flag(name),
            help=f"Same as {spec.flag} {value}.",
            show_default=False,
            rich_help_panel=GROUP_TITLES[spec.group],
        ),
    ]


def training_parameters(preset: str = DEFAULT_PRESET) -> list[inspect.Parameter]:
    """One keyword parameter per training option (and per shortcut flag), for a Typer
    command's signature."""
    defaults = apply_values(TrainConfig(), preset_values(preset))
    params = []
    for spec in option_specs():
        params.append(
            inspect.Parameter(
                spec.name,
                inspect.Parameter.KEYWORD_ONLY,
                default=None,
                annotation=_annotation(spec, defaults),
            )
        )
        for name, value in spec.shortcuts:
            params.append(
                inspect.Parameter(
                    name,
                    inspect.Parameter.KEYWORD_ONLY,
                    default=False,
                    annotation=_shortcut_annotation(spec, name, value),
                )
            )
    return params


def with_training_options(
    func: Callable[..., Any], preset: str = DEFAULT_PRESET
) -> Callable[..., Any]:
    """Give ``func(..., **options)`` a signature listing every training option.

    ``func``'s own parameters come first; the training options arrive in ``**options``.
    """
    _set_parameters(func, _own_parameters(func) + training_parameters(preset))
    return func


def _own_parameters(func: Callable[..., Any]) -> list[inspect.Parameter]:
    """``func``'s parameters but ``**kwargs``, with their annotations resolved (Typer reads
    them; a generated signature must not depend on the defining module's globals)."""
    hints = typing.get_type_hints(func, include_extras=True)
    return [
        p.replace(annotation=hints.get(p.name, p.annotation))
        for p in inspect.signature(func).parameters.values()
        if p.kind is not inspect.Parameter.VAR_KEYWORD
    ]


def _set_parameters(func: Callable[..., Any], params: list[inspect.Parameter]) -> None:
    """Make ``params`` the signature Typer sees for ``func``."""
    func.__signature__ = inspect.Signature(params)  # type: ignore[attr-defined]
    func.__annotations__ = {p.name: p.annotation for p in params}


# -- output options, on every command ---------------------------------------------------------

Quiet = Annotated[
    bool,
    typer.Option(
        "--quiet",
        "-q",
        help="Show warnings and errors only, no progress bars.",
        rich_help_panel="Output",
    ),
]
Verbose = Annotated[
    bool,
    typer.Option("--verbose", "-v", help="Show debug messages too.", rich_help_panel="Output"),
]
LogJson = Annotated[
    bool,
    typer.Option(
        "--log-json",
        help="Log one JSON object per line, for machines (as LOG_FORMAT=json).",
        rich_help_panel="Output",
    ),
]
_OUTPUT_OPTIONS = {"quiet": Quiet, "verbose": Verbose, "log_json": LogJson}


def with_output_options(func: Callable[..., Any]) -> Callable[..., Any]:
    """``func`` with ``--quiet``, ``--verbose`` and ``--log-json``, which configure logging
    before it runs."""
    own = _own_parameters(func)
    extra = [
        inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=False, annotation=hint)
        for name, hint in _OUTPUT_OPTIONS.items()
    ]

    @functools.wraps(func)
    def run(*args: Any, **kwargs: Any) -> Any:
        from ..log import configure_logging
        from .spellings import log_nanogpt_spelling

        quiet, verbose, log_json = (kwargs.pop(name, False) for name in _OUTPUT_OPTIONS)
        configure_logging(quiet=quiet, verbose=verbose, json_lines=True if log_json else None)
        log_nanogpt_spelling()  # --batch_size=32: once, as --batch-size 32
        try:
            return func(*args, **kwargs)
        except KeyboardInterrupt as e:
            # Typer would end it as a silent exit 130: one line instead, the stop's own when
            # nanogpt's signal handling raised it (train.signals.StopNow, 128 + the signal).
            from ..errors import NanoGPTError

            error = NanoGPTError(str(e) or "interrupted")
            error.exit_code = getattr(e, "exit_code", 130)
            raise error from e

    _set_parameters(run, own + extra)
    return run


def command(app: typer.Typer, name: str, **kwargs: Any) -> Callable[[Callable[..., Any]], Any]:
    """Register a function as command ``name`` of ``app``, with the output options."""

    def register(func: Callable[..., Any]) -> Callable[..., Any]:
        app.command(name, cls=HelpCommand, **kwargs)(with_output_options(func))
        return func

    return register
