"""Logging: levels and formats from the environment and the flags, structured records,
progress reporting, rank-0-only logging."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from nanogpt_cli.cli.app import main
from nanogpt_cli.log import configure_logging, get_logger
from nanogpt_cli.progress import progress

log = get_logger("tests.log")


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    for name in ("LOG_LEVEL", "LOG_FORMAT", "NO_COLOR", "RANK"):
        monkeypatch.delenv(name, raising=False)
    yield
    configure_logging()


def emit_all() -> None:
    log.debug("a debug line")
    log.info("an info line")
    log.warning("a warning line")
    log.error("an error line")


def lines_of(err: str) -> list[str]:
    return [line for line in err.splitlines() if line.strip()]


@pytest.mark.parametrize(
    ("level", "shown"),
    [
        ("DEBUG", ["debug", "info", "warning", "error"]),
        ("info", ["info", "warning", "error"]),
        ("WARNING", ["warning", "error"]),
        ("ERROR", ["error"]),
    ],
)
def test_log_level_from_the_environment(
    level: str,
    shown: list[str],
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setenv("LOG_LEVEL", level)
    configure_logging()
    emit_all()
    err = capsys.readouterr().err
    for word in ("debug", "info", "warning", "error"):
        assert (f"{'an' if word[0] in 'aeiou' else 'a'} {word} line" in err) == (word in shown)


def test_text_lines_have_a_time_and_label_warnings(capsys: pytest.CaptureFixture[str]) -> None:
    configure_logging()
    emit_all()
    lines = lines_of(capsys.readouterr().err)
    assert len(lines) == 3  # INFO by default
    assert all(line[2] == ":" and line[5] == ":" and line[8] == " " for line in lines)
    assert lines[0].endswith(" an info line")
    assert lines[1].endswith(" warning: a warning line")
    assert lines[2].endswith(" error: an error line")
    assert "\x1b[" not in "".join(lines)  # not a terminal: no colour codes


def test_json_format_from_the_environment_carries_the_fields(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from rich.table import Table

    monkeypatch.setenv("LOG_FORMAT", "json")
    configure_logging()
    log.info("hello", step=3)
    log.metric("loss", 1.25, "nats")
    log.progress("prepare", 30, 120, "docs")
    log.section("Evaluation")
    table = Table(title="losses")
    table.add_column("split")
    table.add_column("loss")
    table.add_row("train", "1.10")
    table.add_row("val", "1.20")
    log.table(table)
    records = [json.loads(line) for line in lines_of(capsys.readouterr().err)]
    assert len(records) == 5
    assert all({"time", "level", "logger", "message"} <= set(r) for r in records)
    assert records[0]["logger"] == "tests.log" and records[0]["step"] == 3
    assert records[1]["metric"] == "loss" and records[1]["value"] == 1.25
    assert records[1]["unit"] == "nats" and records[1]["message"] == "loss: 1.25 nats"
    assert records[2]["current"] == 30 and records[2]["total"] == 120
    assert records[2]["message"] == "prepare: 30/120 docs (25%)"
    assert records[3]["section"] == "Evaluation"
    assert records[4]["columns"] == ["split", "loss"]
    assert records[4]["rows"] == [["train", "1.10"], ["val", "1.20"]]


def test_tables_and_sections_are_drawn_in_text(capsys: pytest.CaptureFixture[str]) -> None:
    from rich.table import Table

    configure_logging()
    table = Table(title="losses")
    table.add_column("split")
    table.add_column("loss {nats}")  # braces and brackets are text, not format fields
    table.add_row("val", "<1.20>")
    table.add_row("test", "\\<x>")  # a backslash before a tag-like cell
    log.section("Results")
    log.table(table)
    err = capsys.readouterr().err
    assert "Results" in err and "─" in err
    assert "loss {nats}" in err and "<1.20>" in err and "┃" in err and "\\<x>" in err


@pytest.mark.parametrize(
    ("value", "level"),
    [
        ("warn", "WARNING"),
        ("Warning", "WARNING"),
        ("trace", "TRACE"),
        ("fatal", "CRITICAL"),
        ("CRITICAL", "CRITICAL"),
        ("success", "SUCCESS"),
        ("notset", "TRACE"),
        ("10", "DEBUG"),
        ("30", "WARNING"),
        ("15", "INFO"),  # between levels: the next one up, as logging's threshold works
        (" info ", "INFO"),
    ],
)
def test_log_level_takes_every_spelling_of_loguru_and_logging(
    value: str, level: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from nanogpt_cli.log import current_level

    monkeypatch.setenv("LOG_LEVEL", value)
    configure_logging()
    assert current_level() == level
    emit_all()
    err = capsys.readouterr().err
    assert ("an info line" in err) == (level in ("TRACE", "DEBUG", "INFO"))
    assert ("a warning line" in err) == (level != "CRITICAL") and "not a log level" not in err
    # the same words as an explicit level
    configure_logging(level=value)
    assert current_level() == level
    # and the command runs: `LOG_LEVEL=warn nanogpt presets list` failed once
    code, out, err = run(["presets", "list"], capsys)
    assert code == 0 and "shakespeare-char" in out and "not a log level" not in err


def test_an_unknown_log_level_is_one_warning_and_info(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from nanogpt_cli.errors import ConfigError
    from nanogpt_cli.log import current_level

    monkeypatch.setenv("LOG_LEVEL", "LOUDEST")
    code, out, err = run(["presets", "list"], capsys)
    assert code == 0 and "shakespeare-char" in out
    warnings = [line for line in lines_of(err) if "not a log level" in line]
    assert len(warnings) == 1 and "LOG_LEVEL='LOUDEST'" in warnings[0]
    assert "using INFO" in warnings[0] and current_level() == "INFO"
    configure_logging()  # configured again in the same process: not repeated
    emit_all()
    err = capsys.readouterr().err
    assert "not a log level" not in err and "an info line" in err
    for value in ("99", "-1"):
        monkeypatch.setenv("LOG_LEVEL", value)
        configure_logging()
        assert current_level() == "INFO" and "not a log level" in capsys.readouterr().err
    with pytest.raises(ConfigError, match="'LOUD' is not a log level"):
        configure_logging(level="LOUD")  # an explicit level is the caller's mistake


def test_bad_settings_are_clear_errors(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("LOG_FORMAT", "xml")
    code, _, err = run(["presets", "list"], capsys)
    assert code == 2 and err.startswith("error: LOG_FORMAT 'xml'") and len(lines_of(err)) == 1
    monkeypatch.delenv("LOG_FORMAT")
    code, _, err = run(["presets", "list", "--quiet", "--verbose"], capsys)
    assert code == 2 and "not both" in err


def test_only_rank_zero_logs_below_error(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("RANK", "1")
    configure_logging(level="DEBUG")
    emit_all()
    lines = lines_of(capsys.readouterr().err)
    assert len(lines) == 1 and lines[0].endswith("error: an error line")


def run(args: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    capsys.readouterr()
    with pytest.raises(SystemExit) as exit_info:
        main(args)
    out, err = capsys.readouterr()
    return int(exit_info.value.code or 0), out, err


def train_flags(tiny_options: dict[str, Any]) -> list[str]:
    from conftest import as_flags

    # (each run replaces the one before: --overwrite)
    options = {**tiny_options, "max_iters": 10, "eval_interval": 10, "overwrite": True}
    return ["train", *as_flags(options)]


def test_quiet_verbose_and_json_flags_on_a_command(
    tiny_options: dict[str, Any], capsys: pytest.CaptureFixture[str]
) -> None:
    code, _, normal = run(train_flags(tiny_options), capsys)
    assert code == 0
    assert "iter 5: loss" in normal and "eval at iter 10" in normal  # not a terminal: lines
    code, _, quiet = run([*train_flags(tiny_options), "--quiet"], capsys)
    assert code == 0 and quiet == ""
    code, _, verbose = run([*train_flags(tiny_options), "-v"], capsys)
    assert code == 0 and "AdamW" in verbose and "AdamW" not in normal  # a debug line
    code, _, as_json = run([*train_flags(tiny_options), "--log-json"], capsys)
    assert code == 0
    records = [json.loads(line) for line in lines_of(as_json)]
    assert any(r["message"].startswith("eval at iter 10") for r in records)
    # the numbers of a training line travel as fields, not only inside the message
    interval = next(r for r in records if r.get("iter") == 5 and "loss" in r)
    assert interval["loss"] > 0 and interval["tokens_per_s"] > 0
    assert {r["logger"] for r in records} >= {"nanogpt_cli.train.engine"}


def test_every_command_has_the_output_options(capsys: pytest.CaptureFixture[str]) -> None:
    from typer.main import get_command

    from nanogpt_cli.cli.app import app

    def leaves(cmd: Any, path: str) -> Iterator[tuple[str, Any]]:
        if not hasattr(cmd, "list_commands"):
            yield path, cmd
            return
        for name in cmd.list_commands(None):
            yield from leaves(cmd.get_command(None, name), f"{path} {name}")

    found = list(leaves(get_command(app), "nanogpt"))
    assert len(found) >= 15
    for path, cmd in found:
        flags = {opt for p in cmd.params for opt in p.opts}
        assert {"--quiet", "-q", "--verbose", "-v", "--log-json"} <= flags, path


class FakeTerminal:
    """A stderr that says it is a terminal, keeping what is written."""

    def __init__(self) -> None:
        self.parts: list[str] = []

    def write(self, text: str) -> int:
        self.parts.append(text)
        return len(text)

    def flush(self) -> None:
        pass

    def isatty(self) -> bool:
        return True

    def fileno(self) -> int:
        raise OSError("not a real terminal")

    @property
    def text(self) -> str:
        return "".join(self.parts)


def test_nested_live_bars_work_and_lines_still_print(monkeypatch: pytest.MonkeyPatch) -> None:
    terminal = FakeTerminal()
    monkeypatch.setattr("sys.stderr", terminal)
    configure_logging()
    with progress("outer", total=3) as outer:
        assert outer.live
        outer.advance()
        with progress("inner", total=2) as inner:  # an evaluation inside training
            assert inner.live
            inner.advance(2)
        log.info("a line while the bar is up")
        outer.status("loss 1.0")
        outer.advance(2)
    assert "a line while the bar is up" in terminal.text
    # file names in a bar's text are shown as they are, not read as rich markup
    with progress("read out[/b]", total=1) as bar:
        bar.describe("write [red]x")
        bar.advance()


def test_progress_off_a_terminal_is_lines_every_so_often(
    capsys: pytest.CaptureFixture[str],
) -> None:
    configure_logging()
    with progress("prepare", total=4, unit="docs", every=0.0) as bar:
        assert not bar.live
        bar.advance(2)
        bar.advance(2)
    lines = lines_of(capsys.readouterr().err)
    assert [line.split(" ", 1)[1] for line in lines] == [
        "prepare: 2/4 docs (50%)",
        "prepare: 4/4 docs (100%)",
    ]
    with progress("train", total=4, every=None) as bar:
        bar.advance(4)
    assert capsys.readouterr().err == ""


def test_library_code_never_prints() -> None:
    import re

    root = Path(__file__).resolve().parents[1] / "nanogpt_cli"
    offenders = []
    for path in root.rglob("*.py"):
        if path.parent.name == "cli":
            continue  # commands report to the user; the library logs
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            if re.search(r"(?<![\w.])print\(", line):
                offenders.append(f"{path.relative_to(root)}:{number}")
    assert offenders == []


def test_json_lines_are_strict_json_and_keep_their_keys(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("LOG_FORMAT", "json")
    configure_logging()
    log.info("odd fields", values=[1.0, float("inf")], level="X", path=Path("/tmp"))
    record = json.loads(lines_of(capsys.readouterr().err)[0])  # strict: no Infinity
    assert record["values"] == [1.0, None] and record["level"] == "INFO"
    assert record["level_"] == "X" and record["path"] == "/tmp"


def test_errors_are_json_under_log_json(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    args = ["train", "--dataset", "nothing-here", "--data-dir", str(tmp_path), "--log-json"]
    code, _, err = run(args, capsys)
    record = json.loads(lines_of(err)[-1])
    assert code == 1 and record["level"] == "ERROR" and record["exit_code"] == 1
    assert "is not prepared" in record["message"]
