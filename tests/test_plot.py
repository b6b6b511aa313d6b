"""``nanogpt plot``: reading metrics.jsonl, the terminal chart, the PNG and the command."""

from __future__ import annotations

import json
import math
import struct
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from nanogpt_cli.cli.app import app, main
from nanogpt_cli.errors import MetricsError
from nanogpt_cli.plot import MATPLOTLIB_HINT, Run, load_run, load_runs, render_chart, write_png

runner = CliRunner()
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def run_main(args: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as exit_info:
        main(args)
    out, err = capsys.readouterr()
    return int(exit_info.value.code or 0), out, err


def write_metrics(path: Path, records: list[dict[str, Any]], tail: str = "") -> Path:
    path.mkdir(parents=True, exist_ok=True)
    lines = "".join(json.dumps(r) + "\n" for r in records)
    (path / "metrics.jsonl").write_text(lines + tail, encoding="utf-8")
    return path


def train_record(it: int, loss: float | None, tokens: bool = True) -> dict[str, Any]:
    record: dict[str, Any] = {"kind": "train", "time": 1.0e9 + it, "iter": it, "loss": loss}
    record.update({"lr": 1e-3 * min(1.0, it / 20), "ms": 60.0, "tokens_per_s": 1e4, "mfu": None})
    if tokens:
        record.update({"tokens": it * 768, "grad_norm": 0.8, "clip_frac": 0.1})
    return record


def eval_record(it: int, val: float | None, tokens: bool = True) -> dict[str, Any]:
    record: dict[str, Any] = {"kind": "eval", "time": 1.0e9 + it, "iter": it}
    record.update({"train_loss": None if val is None else val - 0.05, "val_loss": val})
    record["lr"] = 1e-3 * min(1.0, it / 20)
    if tokens:
        record["tokens"] = it * 768
    return record


@pytest.fixture
def alpha(tmp_path: Path) -> Path:
    """A current run: tokens counted, a null (non-finite) loss, a last line being written."""
    records: list[dict[str, Any]] = []
    for it in range(0, 101, 10):
        if it % 50 == 0:
            records.append(eval_record(it, 4.2 - it * 0.02))
        if it:
            records.append(train_record(it, None if it == 30 else 4.0 - it * 0.02))
    return write_metrics(tmp_path / "alpha", records, tail='{"kind": "train", "iter": 11')


@pytest.fixture
def beta(tmp_path: Path) -> Path:
    """An older run: no tokens, grad_norm or clip_frac; a lower and shorter curve."""
    records = [eval_record(0, 4.3, tokens=False)]
    records += [train_record(it, 3.5 - it * 0.03, tokens=False) for it in range(10, 61, 10)]
    records += [eval_record(60, 1.7, tokens=False)]
    return write_metrics(tmp_path / "beta", records)


# -- loading ---------------------------------------------------------------------------------


def test_load_parses_records_nulls_and_skips_a_truncated_last_line(alpha: Path) -> None:
    run = load_run(alpha)
    assert run.name == "alpha" and run.path == alpha
    assert [p.iter for p in run.train] == list(range(10, 101, 10))
    assert [e.iter for e in run.evals] == [0, 50, 100]
    assert run.train[2].loss is None  # null in the file
    assert run.train[0].loss == pytest.approx(3.8) and run.train[0].tokens == 7680
    assert run.evals[1].val_loss == pytest.approx(3.2)
    assert run.evals[1].train_loss == pytest.approx(3.15)
    assert run.has_tokens and run.last_iter == 100
    assert run.best_val == (100, pytest.approx(2.2))


def test_load_accepts_the_metrics_file_itself_and_old_records_without_tokens(
    beta: Path,
) -> None:
    run = load_run(beta / "metrics.jsonl")
    assert run.name == "beta" and not run.has_tokens
    assert all(p.tokens is None for p in run.train)
    assert run.best_val == (60, pytest.approx(1.7))


def test_resumed_run_keeps_the_latest_record_of_each_iteration(tmp_path: Path) -> None:
    # Resumed from the checkpoint at iteration 20 after running to 30: 30 is logged again.
    records = [train_record(it, 3.0) for it in (10, 20, 30)]
    records += [train_record(30, 2.0), train_record(40, 1.9)]
    run = load_run(write_metrics(tmp_path / "resumed", records))
    assert [(p.iter, p.loss) for p in run.train] == [(10, 3.0), (20, 3.0), (30, 2.0), (40, 1.9)]


def test_nan_literal_and_unknown_kinds_are_tolerated(tmp_path: Path) -> None:
    path = write_metrics(tmp_path / "r", [train_record(10, 2.0), {"kind": "note", "text": "x"}])
    with open(path / "metrics.jsonl", "a", encoding="utf-8") as f:
        f.write('{"kind": "train", "iter": 20, "loss": NaN, "lr": Infinity}\n')
    run = load_run(path)
    assert [(p.iter, p.loss, p.lr) for p in run.train][1] == (20, None, None)


def test_duplicate_directory_names_are_told_apart_by_their_parent(tmp_path: Path) -> None:
    a = write_metrics(tmp_path / "small" / "out", [train_record(10, 2.0)])
    b = write_metrics(tmp_path / "large" / "out", [train_record(10, 1.0)])
    assert [r.name for r in load_runs([a, b])] == ["small/out", "large/out"]


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        ("", "no train or eval records in"),
        ('{"kind": "other"}\n', "no train or eval records in"),
        ('{"kind": "train", "iter": 1, "loss": 2}\n{"kind": "tr\n{"kind": "train"}\n', "line 2"),
        ('{"kind": "train", "iter": 1, "loss": 2}\n[1, 2]\n', "line 2 is not a JSON object"),
        ('{"kind": "train", "loss": 2}\n', "line 1: a train record without iter"),
        ('{"kind": "eval", "iter": 1, "val_loss": "low"}\n', "line 1: val_loss is 'low'"),
        ('{"kind": "eval", "iter": 1.5}\n', "line 1: iter is 1.5, not a whole number"),
    ],
    ids=["empty", "no-records", "corrupt", "array", "no-iter", "string", "fraction"],
)
def test_unreadable_metrics_raise_an_error_naming_the_file(
    tmp_path: Path, content: str, expected: str
) -> None:
    (tmp_path / "metrics.jsonl").write_text(content, encoding="utf-8")
    with pytest.raises(MetricsError, match=r"metrics\.jsonl") as info:
        load_run(tmp_path)
    assert expected in str(info.value)


def test_a_corrupt_last_line_with_its_newline_is_an_error(tmp_path: Path) -> None:
    # Only a line without its newline can be one being written; this one was finished.
    write_metrics(tmp_path, [train_record(10, 2.0)], tail='{"kind": "tr\n')
    with pytest.raises(MetricsError, match="line 2 is not valid JSON"):
        load_run(tmp_path)


def test_a_directory_without_metrics_says_what_plot_takes(tmp_path: Path) -> None:
    with pytest.raises(MetricsError, match=r"no metrics\.jsonl in .*the --out-dir of nanogpt"):
        load_run(tmp_path)
    with pytest.raises(MetricsError, match="does not exist"):
        load_run(tmp_path / "missing")


# -- terminal chart --------------------------------------------------------------------------


def y_labels(lines: list[str]) -> list[float]:
    return [float(line.split("┤")[0]) for line in lines if "┤" in line]


@pytest.mark.parametrize(("width", "height"), [(40, 8), (72, 16), (100, 25)])
def test_chart_fits_its_size_and_its_labels_cover_the_data(
    alpha: Path, beta: Path, width: int, height: int
) -> None:
    runs = load_runs([alpha, beta])
    lines = render_chart(runs, width=width, height=height).plain.split("\n")
    # plot rows, the axis, the iteration labels, then train + val legend lines per run
    assert len(lines) == height + 2 + 4
    assert max(len(line) for line in lines) <= width
    labels = y_labels(lines)
    assert 3 <= len(labels) <= 5 and labels == sorted(labels, reverse=True)
    assert labels[0] == pytest.approx(4.3, abs=0.01)  # beta's first val loss, the highest
    assert labels[-1] == pytest.approx(1.7, abs=0.01)  # beta's last val loss, the lowest
    # the plot area starts one column right of the axis on every row
    axis = {line.index("┤") if "┤" in line else line.index("│") for line in lines[:height]}
    assert axis == {lines[height].index("└")}
    assert lines[height + 1].split()[0] == "0" and lines[height + 1].split()[-1] == "100"
    legend = lines[height + 2 :]
    assert [line.split()[1] for line in legend] == ["alpha", "alpha", "beta", "beta"]
    assert "last 2.2000" in legend[1] and "last 1.7000" in legend[3]


def test_chart_legend_gives_last_and_best_values_and_markers_per_run(
    alpha: Path, beta: Path
) -> None:
    text = render_chart(load_runs([alpha, beta]), width=100, height=16)
    lines = text.plain.split("\n")
    assert lines[-4].startswith("⠒⠒ alpha") and "train loss  last 2.0000" in lines[-4]
    assert lines[-3].startswith("o  alpha") and "best 2.2000 at iter 100" in lines[-3]
    assert lines[-1].startswith("x  beta") and "best 1.7000 at iter 60" in lines[-1]
    plot = "\n".join(lines[:16])
    assert plot.count("o") == 3 and plot.count("x") == 2  # one marker per evaluation
    assert any("\u2801" <= ch <= "\u28ff" for ch in plot)  # training loss in braille dots
    assert {span.style for span in text.spans} >= {"bold cyan", "bold magenta"}


def test_chart_without_any_finite_loss_is_an_error(tmp_path: Path) -> None:
    run = load_run(write_metrics(tmp_path / "nan", [train_record(10, None)]))
    with pytest.raises(MetricsError, match="nothing to plot"):
        render_chart([run], width=72)


def test_chart_of_a_flat_line_and_of_a_single_point(tmp_path: Path) -> None:
    run = load_run(write_metrics(tmp_path / "flat", [train_record(10, 2.0)]))
    lines = render_chart([run], width=50, height=5).plain.split("\n")
    labels = y_labels(lines)
    assert labels[0] > 2.0 > labels[-1]
    assert max(len(line) for line in lines) <= 50


# -- PNG -------------------------------------------------------------------------------------


def png_size(path: Path) -> tuple[int, int]:
    data = path.read_bytes()
    assert data[:8] == PNG_SIGNATURE and data[12:16] == b"IHDR"
    width, height = struct.unpack(">II", data[16:24])
    return width, height


def test_png_is_written_with_the_asked_size_and_notes_runs_without_tokens(
    alpha: Path, beta: Path, tmp_path: Path
) -> None:
    out = tmp_path / "plots" / "loss.png"  # a missing folder is created
    notes = write_png(load_runs([alpha, beta]), out)
    assert png_size(out) == (1200, 800)
    assert len(notes) == 1 and "beta has no token counts" in notes[0]
    from matplotlib.image import imread

    image = imread(out)
    assert image.shape[:2] == (800, 1200)
    assert image.std() > 0.05  # drawn on, not a blank canvas


def test_png_of_runs_without_tokens_and_other_formats(beta: Path, tmp_path: Path) -> None:
    write_png([load_run(beta)], tmp_path / "small.png", size=(6, 4), dpi=50)
    assert png_size(tmp_path / "small.png") == (300, 200)
    write_png([load_run(beta)], tmp_path / "loss.svg")
    assert (tmp_path / "loss.svg").read_text(encoding="utf-8").lstrip().startswith("<?xml")
    with pytest.raises(MetricsError, match=r"ending in \.png"):
        write_png([load_run(beta)], tmp_path / "loss.txt")


def test_png_without_matplotlib_says_how_to_get_it(
    beta: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    with pytest.raises(MetricsError) as info:
        write_png([load_run(beta)], tmp_path / "loss.png")
    assert str(info.value) == MATPLOTLIB_HINT
    assert "pip install 'nanogpt-cli[plot]'" in MATPLOTLIB_HINT
    assert not (tmp_path / "loss.png").exists()


# -- the command -----------------------------------------------------------------------------


def test_cli_draws_the_chart_without_colours_when_piped(alpha: Path, beta: Path) -> None:
    result = runner.invoke(app, ["plot", str(alpha), str(beta), "--width", "60"])
    assert result.exit_code == 0, result.output
    assert "\x1b[" not in result.stdout
    lines = result.stdout.rstrip("\n").split("\n")
    assert len(lines) == 16 + 2 + 4 and max(len(line) for line in lines) <= 60
    assert "alpha" in lines[-4] and "beta" in lines[-1]


def test_cli_writes_a_png_and_logs_its_path(alpha: Path, beta: Path, tmp_path: Path) -> None:
    out = tmp_path / "loss.png"
    result = runner.invoke(app, ["plot", str(alpha), str(beta), "-o", str(out)])
    assert result.exit_code == 0, result.output
    assert png_size(out) == (1200, 800)
    assert f"wrote {out}" in result.stderr and "beta has no token counts" in result.stderr
    assert result.stdout == ""


def test_cli_needs_a_run_directory(capsys: pytest.CaptureFixture[str]) -> None:
    status, _, err = run_main(["plot"], capsys)
    assert status == 2 and err.startswith("error: ") and "run_dirs" in err.lower()


def test_cli_error_for_a_directory_that_is_not_a_run(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    status, out, err = run_main(["plot", str(tmp_path)], capsys)
    assert status == 1 and out == ""
    assert err.startswith(f"error: no metrics.jsonl in {tmp_path}: plot takes run directories")
    assert err.count("\n") == 1 and "Traceback" not in err


def test_cli_error_without_matplotlib_is_one_line(
    beta: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    status, _, err = run_main(["plot", str(beta), "-o", str(tmp_path / "x.png")], capsys)
    assert status == 1 and err == f"error: {MATPLOTLIB_HINT}\n"


def test_plot_loads_neither_torch_nor_matplotlib_for_a_terminal_chart(beta: Path) -> None:
    code = (
        "import sys\nfrom nanogpt_cli.cli.app import main\n"
        f"try:\n    main(['plot', {str(beta)!r}])\nexcept SystemExit:\n    pass\n"
        "print([m for m in ('torch', 'matplotlib') if m in sys.modules])\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip().endswith("[]") and "beta" in out.stdout


# -- a real run ------------------------------------------------------------------------------


def test_plot_of_a_real_tiny_training_run(tiny_options: dict[str, Any], tmp_path: Path) -> None:
    from nanogpt_cli.config import build_config
    from nanogpt_cli.train import train

    train(build_config("shakespeare-char", overrides=tiny_options))
    out_dir = Path(tiny_options["out_dir"])
    run: Run = load_run(out_dir)
    assert [e.iter for e in run.evals] == [0, 20, 40] and run.has_tokens
    assert run.train[-1].iter == 40 and all(math.isfinite(p.loss or math.nan) for p in run.train)
    lines = render_chart([run], width=72, height=16).plain.split("\n")
    assert len(lines) == 16 + 2 + 2 and lines[-1].startswith("o  out  val loss")
    assert lines[17].split()[-1] == "40"
    assert write_png([run], out_dir / "loss.png") == []
    assert png_size(out_dir / "loss.png") == (1200, 800)
