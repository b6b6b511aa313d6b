"""``nanogpt sample --interactive``: a prompt loop over one loaded model.

Each line is a prompt; the prompt and its continuation stream back. Lines that start with
``/`` are commands that change the settings for the next prompts (``/temperature 0.5``,
``/top-k 50``, ``/help``). Ctrl-C stops the generation under way and returns to the
prompt; Ctrl-D (end of input) leaves. On a terminal, lines are read with ``readline``
(editing, and a history kept across sessions); elsewhere, from the input stream as it is,
so a script or a test can drive the loop.
"""

from __future__ import annotations

import builtins
import contextlib
import sys
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, TextIO

import torch

from .errors import ConfigError, NanoGPTError
from .paths import APP_NAME
from .sample import SEED_MAX, Sampler
from .sampling import SamplingSettings, unescape

HELP = """\
Type a prompt and press Enter: the prompt and its continuation stream back.
In a prompt, \\n stands for a newline and \\t for a tab; start it with // for a leading /.
Commands (- or _ alike; "off" turns a filter off):
  /temperature 0.5         sampling temperature; 0 is greedy
  /top_k 50                sample from the 50 most likely tokens only
  /top_p 0.9               nucleus sampling: the most likely tokens up to 90% probability
  /min_p 0.05              drop tokens below 5% of the most likely one's probability
  /repetition_penalty 1.2  penalise tokens already in the text (1: none)
  /max_tokens 200          tokens to generate per prompt
  /max_time 10             stop a generation after 10 seconds ("off": no limit)
  /seed 1                  restart the random draws from this seed
  /stop TEXT               end each generation at TEXT (not shown); /stop alone: none
  /settings                show the settings
  /help                    this help
  /quit                    leave (Ctrl-D too); Ctrl-C stops a generation
"""

HISTORY_LENGTH = 1000
# Settings of SamplingSettings that a command changes, and those of the session.
_FILTERS = {"top_k": int, "top_p": float, "min_p": float}
_ALIASES = {"max_new_tokens": "max_tokens", "exit": "quit", "show": "settings", "h": "help"}


@dataclass
class Session:
    """The settings of an interactive session; the random draws go on from one prompt to
    the next, so the same prompt twice gives two continuations (``/seed`` restarts them)."""

    settings: SamplingSettings
    max_tokens: int = 500
    seed: int = 1337
    stop: tuple[str, ...] = ()
    max_time: float | None = None
    device: torch.device | str = "cpu"  # the model's: where the random draws are made
    generator: torch.Generator = field(init=False)

    def __post_init__(self) -> None:
        self.generator = torch.Generator(device=self.device).manual_seed(self.seed)

    def describe(self) -> str:
        s = self.settings
        stops = ", ".join(repr(t) for t in self.stop) or "none"
        return (
            f"temperature {s.temperature:g}, top_k {_off(s.top_k)}, top_p {_off(s.top_p)}, "
            f"min_p {_off(s.min_p)}, repetition_penalty {s.repetition_penalty:g}, "
            f"max_tokens {self.max_tokens}, max_time {_off(self.max_time)}, seed {self.seed}, "
            f"stop {stops}"
        )

    def command(self, line: str) -> str:
        """Apply the command ``line`` (``/name value``) and say what it did; raises
        ``ConfigError`` for an unknown command or a value out of range (nothing changes)."""
        name, _, value = line[1:].strip().partition(" ")
        name = name.lower().replace("-", "_")
        name = _ALIASES.get(name, name)
        value = value.strip()
        if name == "help":
            return HELP.rstrip("\n")
        if name == "settings":
            return self.describe()
        if name == "stop":
            self.stop = (unescape(value),) if value else ()
            return f"stop: {repr(self.stop[0]) if self.stop else 'none'}"
        if not value:
            raise ConfigError(f"/{name} needs a value, e.g. /{name} {_EXAMPLES.get(name, 1)}")
        if name in ("temperature", "repetition_penalty", *_FILTERS):
            convert = _FILTERS.get(name, float)
            number = None if name in _FILTERS and _is_off(value) else _number(name, value, convert)
            settings = replace(self.settings, **{name: number})
            try:
                settings.check()
            except ConfigError as e:
                flag = f"--{name.replace('_', '-')}"
                raise ConfigError(str(e).replace(flag, f"/{name}")) from None
            self.settings = settings
            return f"{name}: {_off(number)}"
        if name == "max_tokens":
            tokens = _number(name, value, int)
            if tokens < 1:
                raise ConfigError(f"/max_tokens must be at least 1 (got {tokens})")
            self.max_tokens = tokens
            return f"max_tokens: {tokens}"
        if name == "max_time":
            seconds = None if _is_off(value) else _number(name, value, float)
            if seconds is not None and not 0 <= seconds < float("inf"):
                raise ConfigError(f"/max_time must be a number of seconds, 0 or more ({value})")
            self.max_time = seconds
            return f"max_time: {_off(seconds)}"
        if name == "seed":
            seed = _number(name, value, int)
            if not 0 <= seed <= SEED_MAX:
                raise ConfigError(f"/seed must be between 0 and {SEED_MAX} (got {seed})")
            self.seed = seed
            self.generator.manual_seed(seed)
            return f"seed: {seed}"
        raise ConfigError(f"unknown command /{name}; /help lists the commands")


_EXAMPLES = {"temperature": 0.8, "top_k": 50, "top_p": 0.9, "min_p": 0.05, "max_time": 10}


def _number(name: str, value: str, convert: type[int] | type[float]) -> Any:
    try:
        return convert(value)
    except ValueError:
        kind = "a whole number" if convert is int else "a number"
        raise ConfigError(f"/{name} takes {kind}, not {value!r}") from None


def _is_off(value: str) -> bool:
    return value.lower() in ("off", "none")


def _off(value: float | None) -> str:
    return "off" if value is None else f"{value:g}"


def prompt_loop(
    sampler: Sampler,
    session: Session,
    *,
    input: TextIO | None = None,
    output: TextIO | None = None,
    prompt: str = "> ",
    history: Path | None = None,
    **stream_options: Any,
) -> None:
    """Read prompts and commands from ``input`` (standard input by default) until its end
    or ``/quit``, writing to ``output`` (standard output by default).

    On a terminal (standard input and output, both the process's own), lines are read
    through ``readline``, with ``history`` (a file) loaded first and saved at the end.
    ``stream_options`` go to ``Sampler.stream_text`` (``use_cache``, ``compile``, ...).
    """
    input = input or sys.stdin
    output = output or sys.stdout
    terminal = input is sys.stdin and output is sys.stdout and input.isatty()
    read = _terminal_reader(prompt, history) if terminal else _stream_reader(input, output, prompt)

    def say(text: str) -> None:
        output.write(text + "\n")
        output.flush()

    say("Type a prompt and press Enter; /help lists the commands; Ctrl-D leaves.")
    try:
        while True:
            try:
                line = read()
            except KeyboardInterrupt:  # Ctrl-C at the prompt: a new, empty prompt
                say("")
                continue
            except EOFError:  # Ctrl-D
                say("")
                return
            try:
                if line.startswith("/") and not line.startswith("//"):
                    if line[1:].strip().lower() in ("quit", "exit", "q"):
                        return
                    say(session.command(line))
                elif line.strip():
                    text = unescape(line.removeprefix("/"))
                    _complete(sampler, session, text, output, **stream_options)
            except KeyboardInterrupt:  # Ctrl-C while generating: back to the prompt
                say("\n[stopped]")
            except NanoGPTError as e:
                say(f"error: {e}")
    finally:
        if terminal and history is not None:
            _save_history(history)


def _complete(
    sampler: Sampler, session: Session, text: str, output: TextIO, **stream_options: Any
) -> None:
    """Stream ``text`` and its continuation to ``output``."""
    stream = sampler.stream_text(
        text,
        session.max_tokens,
        settings=session.settings,
        stop=session.stop,
        max_time=session.max_time,
        generator=session.generator,
        **stream_options,
    )
    output.write(text)
    output.flush()
    for pieces in stream:
        output.write(pieces[0])
        output.flush()
    end = stream.samples[0]
    tail = "" if (text + end.text).endswith("\n") else "\n"
    if end.finish == "time":
        tail += f"[stopped: {session.max_time:g} s passed]\n"
    output.write(tail)
    output.flush()


def _stream_reader(input: TextIO, output: TextIO, prompt: str) -> Callable[[], str]:
    def read() -> str:
        output.write(prompt)
        output.flush()
        line = input.readline()
        if not line:
            raise EOFError
        return line.removesuffix("\n").removesuffix("\r")

    return read


def _terminal_reader(prompt: str, history: Path | None) -> Callable[[], str]:
    try:
        import readline  # input() edits lines and keeps a history once this is loaded
    except ImportError:  # Windows without pyreadline: plain input()
        return lambda: builtins.input(prompt)
    readline.set_history_length(HISTORY_LENGTH)
    if history is not None and history.is_file():
        with contextlib.suppress(OSError):  # an unreadable history only loses the history
            readline.read_history_file(history)
    return lambda: builtins.input(prompt)


def _save_history(history: Path) -> None:
    try:
        import readline
    except ImportError:
        return
    with contextlib.suppress(OSError):  # a read-only home: the session worked, no history
        history.parent.mkdir(parents=True, exist_ok=True)
        readline.write_history_file(history)


def history_path() -> Path:
    """Where the prompts of ``nanogpt sample --interactive`` are kept between sessions: the
    user state directory (``~/.local/state/nanogpt`` on Linux)."""
    import platformdirs

    return platformdirs.user_state_path(APP_NAME) / "sample_history"
