"""`nanogpt sample --interactive` (issue 25): the prompt loop driven through its library
function with scripted streams, and once for real on a pseudo-terminal."""

from __future__ import annotations

import io
import os
import select
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from test_sample import train_tiny

from nanogpt_cli.interactive import Session, prompt_loop
from nanogpt_cli.sample import Sampler
from nanogpt_cli.sampling import SamplingSettings

GREETING = "Type a prompt and press Enter; /help lists the commands; Ctrl-D leaves.\n"


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny character model trained for a few steps (block size 16)."""
    return train_tiny(tmp_path_factory.mktemp("interactive"), max_iters=30)


@pytest.fixture(scope="module")
def sampler(checkpoint: Path) -> Sampler:
    return Sampler.from_checkpoint(checkpoint, device="cpu")


def run(sampler: Sampler, lines: str, session: Session | None = None, **kwargs: object) -> str:
    output = io.StringIO()
    session = session or Session(SamplingSettings(), max_tokens=20)
    prompt_loop(sampler, session, input=io.StringIO(lines), output=output, **kwargs)
    return output.getvalue()


def text(sampler: Sampler, prompt: str, tokens: int, **kwargs: object) -> str:
    """The continuation ``Sampler.stream_text`` gives, and the end of line the loop adds."""
    stream = sampler.stream_text(prompt, tokens, **kwargs)
    list(stream)
    shown = stream.samples[0].text
    return shown if (prompt + shown).endswith("\n") else shown + "\n"


def test_each_line_is_a_prompt_and_commands_change_the_settings(sampler: Sampler) -> None:
    session = Session(SamplingSettings(), max_tokens=20, seed=3)
    out = run(sampler, "ROMEO:\n/max-tokens 7\n/top_p 0.5\n/temperature 1.5\nJULIET:\n", session)
    draws = torch.Generator().manual_seed(3)  # one stream of draws, prompt after prompt
    romeo = text(sampler, "ROMEO:", 20, generator=draws)
    juliet = text(sampler, "JULIET:", 7, temperature=1.5, top_p=0.5, generator=draws)
    p = "> "
    assert out == (
        f"{GREETING}{p}ROMEO:{romeo}{p}max_tokens: 7\n{p}top_p: 0.5\n{p}temperature: 1.5\n"
        f"{p}JULIET:{juliet}{p}\n"
    )


def test_seed_restarts_the_draws_and_they_go_on_between_prompts(sampler: Sampler) -> None:
    out = run(sampler, "/seed 5\nROMEO:\nROMEO:\n")
    first = text(sampler, "ROMEO:", 20, seed=5)  # what `nanogpt sample --seed 5` prints
    answers = [line for line in out.split("> ") if line.startswith("ROMEO:")]
    assert answers[0] == f"ROMEO:{first}"
    assert answers[1] != answers[0]  # the same prompt again: a new draw, not a replay


def test_bad_commands_say_so_and_change_nothing(sampler: Sampler) -> None:
    session = Session(SamplingSettings(temperature=0.0), max_tokens=5)
    lines = "/top-p 2\n/top_k ten\n/bogus 1\n/temperature\n/seed -1\n/max_tokens 0\n"
    out = run(sampler, lines + "/settings\n/help\n", session)
    errors = [line for line in out.splitlines() if "error:" in line]
    assert len(errors) == 6, out
    assert "/top_p must be above 0 and at most 1" in errors[0]
    assert "/top_k takes a whole number, not 'ten'" in errors[1]
    assert "unknown command /bogus; /help lists the commands" in errors[2]
    assert "/temperature needs a value" in errors[3]
    assert "/seed must be between 0" in errors[4] and "/max_tokens must be at least 1" in errors[5]
    assert "temperature 0, top_k 200, top_p off, min_p off" in out  # /settings: unchanged
    assert "/repetition_penalty 1.2" in out  # /help
    assert session.settings == SamplingSettings(temperature=0.0) and session.max_tokens == 5


def test_filters_turn_off_and_stop_applies(sampler: Sampler) -> None:
    session = Session(SamplingSettings(), max_tokens=40, seed=3)
    full = text(sampler, "ROMEO:", 40, seed=3, top_k=None, min_p=0.2)
    stop = full[10:12]
    escaped = stop.replace("\n", "\\n")
    out = run(sampler, f"/top-k off\n/min_p 0.2\n/stop {escaped}\nROMEO:\n/stop\n", session)
    cut = full[: full.find(stop)]
    assert f"> ROMEO:{cut if cut.endswith(chr(10)) else cut + chr(10)}> " in out
    assert "top_k: off" in out and "min_p: 0.2" in out and "stop: none" in out
    assert session.settings.top_k is None and session.stop == ()


def test_errors_of_a_prompt_leave_the_loop_running(sampler: Sampler) -> None:
    out = run(sampler, "ROMEO: \u2603\n/temperature 0\nROMEO:\n")
    assert "error: character '\u2603' is not in this model's vocabulary" in out
    assert out.endswith(f"> ROMEO:{text(sampler, 'ROMEO:', 20, temperature=0.0)}> \n")


def test_escapes_and_quit(sampler: Sampler) -> None:
    session = Session(SamplingSettings(temperature=0.0), max_tokens=5)
    out = run(sampler, "ROMEO:\\nthe\n/quit\nJULIET:\n", session)
    assert f"> ROMEO:\nthe{text(sampler, 'ROMEO:' + chr(10) + 'the', 5, temperature=0.0)}> " in out
    assert "JULIET" not in out  # /quit left before it


class InterruptingOutput(io.StringIO):
    """An output where the user presses Ctrl-C at its ``at``-th write."""

    def __init__(self, at: int) -> None:
        super().__init__()
        self.writes, self.at = 0, at

    def write(self, s: str) -> int:
        self.writes += 1
        if self.writes == self.at:
            raise KeyboardInterrupt
        return super().write(s)


class InterruptingInput(io.StringIO):
    """An input where the user presses Ctrl-C at the first prompt."""

    def __init__(self, text: str) -> None:
        super().__init__(text)
        self.interrupted = False

    def readline(self, size: int | None = -1) -> str:
        if not self.interrupted:
            self.interrupted = True
            raise KeyboardInterrupt
        return super().readline()


def test_ctrl_c_stops_a_generation_not_the_loop(sampler: Sampler) -> None:
    session = Session(SamplingSettings(temperature=0.0), max_tokens=200)
    # writes: the greeting, "> " (Ctrl-C there), "\n", "> ", the prompt, two pieces, Ctrl-C
    output = InterruptingOutput(at=8)
    lines = InterruptingInput("ROMEO:\n/max_tokens 3\nJULIET:\n")
    prompt_loop(sampler, session, input=lines, output=output)
    out = output.getvalue()
    after_ctrl_c = f"{GREETING}> \n> ROMEO:"
    assert out.startswith(after_ctrl_c)
    stopped = out[len(after_ctrl_c) :]
    assert stopped.index("\n[stopped]\n") == 2  # two pieces, one character each
    assert out.endswith(f"> JULIET:{text(sampler, 'JULIET:', 3, temperature=0.0)}> \n")


def read_until(fd: int, seen: bytearray, done: Callable[[], bool], what: str) -> None:
    """Read the pseudo-terminal into ``seen`` until ``done()``; the generous timeout is only
    for a child that never answers."""
    deadline = time.monotonic() + 120
    while not done():
        left = deadline - time.monotonic()
        if left <= 0:
            raise AssertionError(f"no {what} from the child; it wrote {bytes(seen)!r}")
        ready, _, _ = select.select([fd], [], [], left)
        if ready:
            try:
                chunk = os.read(fd, 4096)
            except OSError:  # the child closed the terminal
                chunk = b""
            if not chunk:
                raise AssertionError(f"the child ended before {what}: {bytes(seen)!r}")
            seen += chunk


@pytest.mark.skipif(sys.platform == "win32", reason="pseudo-terminals are POSIX")
def test_on_a_terminal_ctrl_c_stops_and_ctrl_d_leaves(checkpoint: Path, tmp_path: Path) -> None:
    import pty

    env = {**os.environ, "XDG_STATE_HOME": str(tmp_path / "state"), "TERM": "dumb"}
    env["NO_COLOR"] = "1"
    args = [sys.executable, "-m", "nanogpt_cli", "sample", "--interactive", "-q"]
    args += ["--checkpoint", str(checkpoint), "--device", "cpu", "--max-new-tokens", "1000000"]
    pid, fd = pty.fork()
    if pid == 0:  # the child: a session of its own, the terminal its controlling one
        os.execve(sys.executable, args, env)
    seen = bytearray()

    def after(mark: int, text: bytes, count: int = 1, then: int = 0) -> Callable[[], bool]:
        """``text`` seen ``count`` times past ``mark``, and ``then`` more bytes after it."""

        def done() -> bool:
            if seen.count(text, mark) < count:
                return False
            return len(seen) - seen.rfind(text) - len(text) >= then

        return done

    try:
        read_until(fd, seen, after(0, b"> "), "first prompt")
        mark = len(seen)
        os.write(fd, b"/temperature 0.9\r")
        read_until(fd, seen, after(mark, b"> "), "answer to /temperature")
        assert b"temperature: 0.9" in seen[mark:]
        mark = len(seen)
        os.write(fd, b"ROMEO:\r")
        # the terminal echoes the line, the loop the prompt, then the continuation streams;
        # with a million tokens to go, it is still generating when Ctrl-C comes
        read_until(fd, seen, after(mark, b"ROMEO:", count=2, then=30), "a continuation")
        mark = len(seen)
        os.write(fd, b"\x03")  # Ctrl-C, through the terminal's line discipline: SIGINT
        read_until(fd, seen, after(mark, b"[stopped]"), "[stopped]")
        read_until(fd, seen, after(seen.rfind(b"[stopped]"), b"> "), "a prompt after Ctrl-C")
        os.write(fd, b"\x04")  # Ctrl-D at an empty prompt: leave
        _, status = os.waitpid(pid, 0)
        pid = 0
    finally:
        if pid:
            os.kill(pid, 9)
            os.waitpid(pid, 0)
        os.close(fd)
    assert os.waitstatus_to_exitcode(status) == 0, bytes(seen)
    history = tmp_path / "state" / "nanogpt" / "sample_history"
    assert history.read_text().splitlines()[-2:] == ["/temperature 0.9", "ROMEO:"]
