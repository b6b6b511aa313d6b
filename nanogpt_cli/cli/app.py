"""The ``nanogpt`` Typer app: registers the commands and turns errors into one line."""

from __future__ import annotations

import contextlib
import gc
import importlib
import os
import sys
import typing
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Annotated, Any, Optional

import typer
import typer.core
import typer.main

from .. import __version__
from ..errors import NanoGPTError

DEBUG_ENV = "NANOGPT_DEBUG"


@dataclass(frozen=True)
class _Entry:
    """A command of the root: where it lives, and its line in ``nanogpt --help``."""

    module: str  # in nanogpt_cli.cli
    attr: str  # a Typer app (a group of subcommands) or a command function
    help: str  # the first paragraph of its own help (a test keeps them equal)
    hidden: bool = False


# The commands, loaded only when used: ``nanogpt --help`` and shell completion import none
# of them (docs/benchmarks.md, CLI start-up).
COMMANDS: dict[str, _Entry] = {
    "train": _Entry("train", "train", "Train a GPT model."),
    "train-worker": _Entry("train", "train_worker", "", hidden=True),
    "finetune": _Entry(
        "finetune", "finetune", "Finetune GPT-2 (or any checkpoint) on a prepared dataset."
    ),
    "sample": _Entry("sample", "sample", "Generate text from a checkpoint, streamed to stdout."),
    "serve": _Entry(
        "serve", "serve", "Serve a checkpoint over HTTP with OpenAI's completions API."
    ),
    "eval": _Entry(
        "eval",
        "evaluate",
        "Evaluate a checkpoint or a GPT-2 size: loss, perplexity, bits per byte, or tasks.",
    ),
    "plot": _Entry("plot", "plot", "Plot the losses of one or more runs."),
    "prepare": _Entry(
        "prepare",
        "app",
        "Download and tokenize a dataset into train.bin / val.bin + meta.json.",
    ),
    "bench": _Entry(
        "bench",
        "app",
        "Time the training step (nanogpt bench), generation (bench sample) and the batch "
        "loader (bench data).",
    ),
    "presets": _Entry(
        "presets", "app", "List presets, or show one as a TOML config file to save and edit."
    ),
    "convert-checkpoint": _Entry(
        "convert",
        "app",
        "Convert checkpoints between formats (unified ckpt.pt, separated, model-only, Hugging "
        "Face) and describe them. Alias: nanogpt convert.",
    ),
    "convert": _Entry("convert", "app", "", hidden=True),
}


def _load(name: str) -> typer.core.TyperGroup | typer.core.TyperCommand:
    """Command ``name`` as Typer builds it, importing its module now."""
    from .options import command
    from .roothelp import HelpGroup

    entry = COMMANDS[name]
    target = getattr(importlib.import_module(f"{__package__}.{entry.module}"), entry.attr)
    holder = typer.Typer(add_completion=False)
    if isinstance(target, typer.Typer):
        holder.add_typer(target, name=name, hidden=entry.hidden, cls=HelpGroup)
    else:
        command(holder, name, hidden=entry.hidden)(target)
    built = typer.main.get_command(holder)
    if isinstance(built, typer.core.TyperGroup) and name in built.commands:
        built = built.commands[name]  # the group around a sub-app
    return built  # type: ignore[return-value]


class _Root(typer.core.TyperGroup):
    """The root group: loads a command when it is asked for, draws its own help."""

    def list_commands(self, ctx: typer.Context) -> list[str]:
        return list(COMMANDS)

    _listing = False  # True while completing a command name: no command is imported

    def get_command(self, ctx: typer.Context, cmd_name: str) -> Any:
        if cmd_name not in self.commands and cmd_name in COMMANDS:
            entry = COMMANDS[cmd_name]
            if self._listing:  # its name and help line are all that is needed
                return typer.core.TyperCommand(cmd_name, help=entry.help, hidden=entry.hidden)
            self.commands[cmd_name] = _load(cmd_name)
        return self.commands.get(cmd_name)

    def shell_complete(self, ctx: typer.Context, incomplete: str) -> list[Any]:
        self._listing = True
        try:
            return super().shell_complete(ctx, incomplete)
        finally:
            self._listing = False

    def format_help(self, ctx: typer.Context, formatter: Any) -> None:
        from .roothelp import render

        options = []
        for param in self.get_params(ctx):
            if getattr(param, "hidden", False):
                continue
            names = [*param.opts, *param.secondary_opts]
            long = " / ".join(n for n in names if n.startswith("--"))
            short = " ".join(n for n in names if not n.startswith("--"))
            options.append((long, short, getattr(param, "help", None) or ""))
        usage = f"{ctx.command_path} {' '.join(self.collect_usage_pieces(ctx))}"
        commands = [(n, e.help) for n, e in COMMANDS.items() if not e.hidden]
        # Printed here, not returned, as Typer's rich help does: `nanogpt` alone shows it too.
        typer.echo(render(usage, self.help or "", options, commands), nl=False)


app = typer.Typer(
    name="nanogpt",
    cls=_Root,
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
    if not any(arg.startswith("--") for arg in args if arg not in ("--help", "--version")):
        return args
    from ..config import SPECS
    from ..config.nanogpt_keys import BOOLEAN_WORDS

    # flag -> (its value when given bare, the choices)
    flags = {
        s.flag: (s.bare, typing.get_args(s.base_type)) for s in SPECS.values() if s.bare is not None
    }
    out: list[str] = []
    for i, arg in enumerate(args):
        flag = arg.replace("_", "-")
        if flag in flags:
            bare, choices = flags[flag]
            out.append(flag)
            given = args[i + 1] if i + 1 < len(args) else ""
            if given not in choices and given.lower() not in BOOLEAN_WORDS:  # --resume true
                out.append(str(bare))
        elif flag.startswith("--no-") and "--" + flag[5:] in flags:
            out += ["--" + flag[5:], str(flags["--" + flag[5:]][1][0])]
        else:
            out.append(arg)
    return out


def main(argv: Sequence[str] | None = None) -> None:
    """Console entry point: run the app; our errors and usage errors print one line.

    ``argv`` None means the process's own arguments: then this is the process's entry
    point (``nanogpt``, ``python -m nanogpt_cli``), and on the way out every object still
    alive is exempted from the interpreter's final garbage collection (``gc.freeze``). That
    pass walks all of torch's objects, a noticeable wait at the end of a short run on a
    small CPU; files and handlers are closed before this point. Not where triton is loaded:
    its nanobind objects, never collected, would each be reported as leaked at exit.
    """
    if argv is not None:
        _main(argv)
        return
    try:
        _main(sys.argv[1:])
    except BaseException as e:
        if _was_distributed():
            _exit_now(e)
        raise
    finally:
        if "triton" not in sys.modules:
            gc.freeze()


def _was_distributed() -> bool:
    # Only a run that imported the distributed module can have joined a process group.
    module = sys.modules.get("nanogpt_cli.train.distributed")
    return module is not None and bool(module.joined_process_group())


def _exit_now(ending: BaseException) -> None:
    """End a process of a distributed run without finalizing the interpreter, with the
    status its ``ending`` (``SystemExit`` or an uncaught exception) would have given.

    c10d's worker threads (gloo) release a finished collective's tensors after the caller
    has moved on; if that happens while the interpreter finalizes, Python ends the thread
    mid-release and the process aborts ("terminate called without an active exception").
    It hit rank 1 of 2-process FSDP runs on gloo now and then (the rank that has nothing
    to write after the final save). The run's files are closed by then (the
    trainer closes them whatever happens); the streams are flushed here.
    """
    if isinstance(ending, SystemExit):
        code = ending.code
        if code is None:
            status = 0
        elif isinstance(code, int):
            status = code
        else:  # sys.exit("message") prints the message and exits with 1
            print(code, file=sys.stderr)
            status = 1
    else:
        import traceback

        traceback.print_exception(ending)
        status = 130 if isinstance(ending, KeyboardInterrupt) else 1
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(OSError, ValueError):  # a closed pipe: nothing more to say
            stream.flush()
    os._exit(status)


def _main(argv: Sequence[str]) -> None:
    debug = os.environ.get(DEBUG_ENV, "") not in ("", "0")
    args = _expand_bare_flags(list(argv))
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
