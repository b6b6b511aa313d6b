"""The ``nanogpt`` Typer app: registers the commands and turns errors into one line."""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence
from typing import Annotated, Optional

import typer

from .. import __version__
from ..errors import NanoGPTError
from . import bench, convert, eval, finetune, plot, prepare, presets, sample, train
from .options import command

DEBUG_ENV = "NANOGPT_DEBUG"

app = typer.Typer(
    name="nanogpt",
    help="Prepare data for, train, finetune, evaluate, sample and convert GPT models.\n\n"
    "First minutes: nanogpt prepare shakespeare-char, nanogpt train (on a CPU: --preset "
    "shakespeare-char-cpu), nanogpt sample.",
    no_args_is_help=True,
    # nanoGPT's spelling --batch_size=32 works as well as --batch-size 32.
    context_settings={
        "help_option_names": ["-h", "--help"],
        "token_normalize_func": lambda token: token.replace("_", "-"),
    },
    pretty_exceptions_show_locals=False,
)
app.add_typer(prepare.app, name="prepare")
command(app, "train")(train.train)
command(app, "train-worker", hidden=True)(train.train_worker)
command(app, "finetune")(finetune.finetune)
command(app, "sample")(sample.sample)
command(app, "eval")(eval.evaluate)
command(app, "plot")(plot.plot)
app.add_typer(bench.app, name="bench")
app.add_typer(presets.app, name="presets")
app.add_typer(convert.app, name="convert-checkpoint")
app.add_typer(convert.app, name="convert", hidden=True)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"nanogpt {__version__}")
        raise typer.Exit()


@app.callback()
def root(
    version: Annotated[
        Optional[bool],
        typer.Option(
            "--version", help="Show the version and exit.", callback=_version, is_eager=True
        ),
    ] = None,
) -> None:
    """The options every invocation takes; the commands do the work."""


def _is_usage_error(e: Exception) -> bool:
    # Typer's parser errors (unknown option, bad value) carry an exit code and a message;
    # they are matched by shape because their classes are not part of Typer's public API.
    return isinstance(getattr(e, "exit_code", None), int) and callable(
        getattr(e, "format_message", None)
    )


def _fail(message: str, code: int) -> None:
    """Print ``message`` as one line on stderr, then exit: "error:" in red on a terminal, a
    JSON record when logs are JSON (``--log-json``, ``LOG_FORMAT=json``)."""
    from .. import log

    line = " ".join(part.strip() for part in message.splitlines() if part.strip())
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:  # one of the processes of a run
        line = f"[process {os.environ.get('RANK', '?')}] {line}"
    if log.output_format() == "json":
        log.get_logger("nanogpt_cli.cli").error(line, exit_code=code)
    elif log.color_wanted():
        from rich.console import Console
        from rich.markup import escape

        Console(stderr=True, highlight=False, soft_wrap=True).print(
            f"[bold red]error:[/bold red] {escape(line)}"
        )
    else:
        typer.echo(f"error: {line}", err=True)
    sys.exit(code)


def _expand_bare_flags(args: list[str]) -> list[str]:
    """Give options that take an optional value theirs: ``--resume`` is ``--resume yes`` and
    ``--no-resume`` ``--resume no`` (Click options cannot have optional values)."""
    from ..config import bare_flags

    flags = bare_flags()
    out: list[str] = []
    for i, arg in enumerate(args):
        flag = arg.replace("_", "-")
        if flag in flags:
            bare, choices = flags[flag]
            out.append(flag)
            if i + 1 == len(args) or args[i + 1] not in choices:
                out.append(str(bare))
        elif flag.startswith("--no-") and "--" + flag[5:] in flags:
            out += ["--" + flag[5:], str(flags["--" + flag[5:]][1][0])]
        else:
            out.append(arg)
    return out


def main(argv: Sequence[str] | None = None) -> None:
    """Console entry point: run the app; our errors and usage errors print one line."""
    debug = os.environ.get(DEBUG_ENV, "") not in ("", "0")
    args = _expand_bare_flags(list(sys.argv[1:] if argv is None else argv))
    try:
        code = app(args=args, prog_name="nanogpt", standalone_mode=False)
    except NanoGPTError as e:
        if debug:
            raise
        _fail(str(e), e.exit_code)
    except KeyboardInterrupt:
        if debug:
            raise
        _fail("interrupted", 130)
    except typer.Abort:
        _fail("aborted", 1)
    except Exception as e:
        if not _is_usage_error(e) or debug:
            raise
        message = e.format_message()  # type: ignore[attr-defined]
        if not message:  # `nanogpt` or a group without a command: the help was shown
            sys.exit(0)
        ctx = getattr(e, "ctx", None)
        where = f"{ctx.command_path}: " if ctx is not None else ""
        hint = f" (see '{ctx.command_path} --help')" if ctx is not None else ""
        _fail(f"{where}{message}{hint}", e.exit_code)  # type: ignore[attr-defined]
    sys.exit(code if isinstance(code, int) else 0)
