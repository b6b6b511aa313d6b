"""benchmarks/gpu_check.sh: its --dry-run runs every step of the GPU check with tiny sizes on
the CPU and prints one table with a row per measurement; presets that do not exist yet are
rows that say so."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "benchmarks" / "gpu_check.sh"

pytestmark = pytest.mark.skipif(
    shutil.which("bash") is None or shutil.which("timeout") is None,
    reason="gpu_check.sh needs bash and coreutils' timeout",
)


def _run(args: list[str], env: dict[str, str], timeout: float) -> subprocess.CompletedProcess:
    return subprocess.run(
        ["bash", str(SCRIPT), *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def _rows(table: str) -> dict[tuple[str, str], list[str]]:
    """The table's rows by (measurement, preset): the cells after those two."""
    rows = {}
    for line in table.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if line.startswith("| ") and len(cells) == 5 and cells[0] != "measurement":
            rows[(cells[0], cells[1])] = cells[2:]
    return rows


def _is_preset(name: str) -> bool:
    from nanogpt_cli.config.presets import is_preset

    return is_preset(name)


def test_dry_run_prints_a_row_per_measurement(data_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "results"
    env = {**os.environ, "PYTHON": sys.executable, "NANOGPT_DATA_DIR": str(data_dir)}
    proc = _run(["--dry-run", "--out", str(out)], env, timeout=400)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.startswith("gpu_check --dry-run: CPU, torch ")
    assert (out / "table.md").read_text() == proc.stdout
    rows = _rows(proc.stdout)
    assert list(rows) == [
        ("time to val <= 1.47", "shakespeare-char"),
        ("time to val <= 1.47", "shakespeare-char-speedrun"),
        ("train step (bench)", "gpt2-124m"),
        ("train step (bench)", "gpt2-124m-speedrun"),
        ("sampling (bench sample)", "gpt2-124m"),
        ("sampling (bench sample)", "gpt2-124m-speedrun"),
    ]
    # a tiny model after a few steps: far from 1.47, and the time-to-target side says so
    result, detail, status = rows[("time to val <= 1.47", "shakespeare-char")]
    assert (result, status) == ("not reached", "ok") and detail.startswith("last val 3.")
    for measurement in ("train step (bench)", "sampling (bench sample)"):
        result, detail, status = rows[(measurement, "gpt2-124m")]
        assert status == "ok" and result.endswith("tok/s" if "sampl" in measurement else "n/a")
        assert "float32, eager" in detail
    assert "MFU n/a" in rows[("train step (bench)", "gpt2-124m")][0]  # no GPU peak on a CPU
    for measurement, preset in rows:
        if preset.endswith("-speedrun") and not _is_preset(preset):
            assert rows[(measurement, preset)][2] == "skipped: preset not available"
        else:
            assert "ok" in rows[(measurement, preset)][2]


def test_unknown_argument_is_refused(tmp_path: Path) -> None:
    out = tmp_path / "results"
    proc = _run(["--out", str(out), "--bogus"], {**os.environ, "PYTHON": sys.executable}, 30)
    assert proc.returncode == 2
    assert proc.stderr.strip() == "error: unknown argument '--bogus' (see --help)"
    assert not out.exists()  # refused before anything ran or was written
