"""benchmarks/time_to_target.py: the parsing of each side's evaluation lines and the arithmetic
on injected lines and timings, the process watcher on small scripted processes, and the
--dry-run on a tiny model (the original nanoGPT side where ../shared holds its checkout)."""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

import time_to_target as ttt  # noqa: E402

REFERENCE = ROOT.parent / "shared" / "reference" / "nanoGPT"


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        ("21:45:56 eval at iter 250: train loss 1.9012, val loss 1.9535 (best)", (250, 1.9535)),
        ("21:45:58 eval at iter 500: train loss 1.8, val loss 1.85", (500, 1.85)),
        ("step 2000: train loss 1.7620, val loss 1.8857", (2000, 1.8857)),
        ("step 0: train loss 4.2874, val loss 4.2823\n", (0, 4.2823)),
        ("21:45:58 iter 10: loss 3.5529, lr 9.90e-05, grad norm 0.82", None),
        ("iter 10: loss 3.5529, time 40.12ms, mfu -100.00%", None),  # the original's train line
        ("saving checkpoint to out-shakespeare-char", None),
        ("a line that says step 5: train loss 1, val loss 2 in the middle", None),
    ],
)
def test_parse_eval_reads_both_sides_eval_lines_only(
    line: str, expected: tuple[int, float] | None
) -> None:
    assert ttt.parse_eval(line) == expected


def test_parse_eval_keeps_a_nan_loss_which_never_reaches_a_target() -> None:
    parsed = ttt.parse_eval("eval at iter 30: train loss nan, val loss nan")
    assert parsed is not None and math.isnan(parsed[1])
    assert ttt.first_crossing([(1.0, parsed[1])], 10.0) is None


def test_first_crossing_is_the_first_eval_at_or_below_the_target() -> None:
    evals = [(2.0, 2.5), (4.0, 1.93), (6.5, 1.92), (8.0, 1.95), (9.0, 1.85)]
    assert ttt.first_crossing(evals, 1.92) == 6.5  # equal counts
    assert ttt.first_crossing(evals, 1.88) == 9.0
    assert ttt.first_crossing(evals, 3.0) == 2.0
    assert ttt.first_crossing(evals, 1.5) is None
    assert ttt.first_crossing([], 1.5) is None


def test_median_time_counts_not_reached_as_slowest() -> None:
    assert ttt.median_time([30.0, 10.0, 20.0]) == 20.0
    assert ttt.median_time([10.0, None, 20.0]) == 20.0
    assert ttt.median_time([None, None, 20.0]) is None
    assert ttt.median_time([10.0, 20.0]) == 15.0
    assert ttt.median_time([]) is None


def _side(name: str, runs: list[list[tuple[float, float]]], walls: list[float]) -> ttt.SideResult:
    return ttt.SideResult(name, [ttt.Run(e, w) for e, w in zip(runs, walls, strict=True)])


def test_summary_and_table_from_injected_runs() -> None:
    original = _side(
        "original",
        [[(5.0, 2.3), (50.0, 1.91), (80.0, 1.87)], [(6.0, 2.3), (60.0, 1.90), (90.0, 1.89)]],
        [81.0, 91.0],
    )
    fast = _side("speedrun", [[(5.0, 2.0), (22.0, 1.80)], [(4.0, 2.0), (20.0, 1.74)]], [23, 21])
    missing = ttt.SideResult("later-preset", skipped="preset not available")
    rows = [ttt.summarize(s, [1.92, 1.88]) for s in (original, fast, missing)]

    assert rows[0]["targets"]["1.92"] == {"each": [50.0, 60.0], "median": 55.0}
    assert rows[0]["targets"]["1.88"] == {"each": [80.0, None], "median": None}
    assert rows[0]["final_val"] == [1.87, 1.89]
    assert rows[1]["targets"]["1.92"]["median"] == 21.0
    assert rows[1]["wall_median"] == 22.0
    assert rows[2] == {"side": "later-preset", "skipped": "preset not available"}
    json.dumps(rows)  # the --json file holds these

    table = ttt.format_table(rows, [1.92, 1.88]).splitlines()
    assert table[0].startswith("| side | s to val <= 1.92 (median) | (each) | s to val <= 1.88")
    assert len({line.count("|") for line in table}) == 1  # every row has every column
    assert table[2].startswith("| original | 55.0 | 50.0, 60.0 | not reached | 80.0, not reached")
    assert "| 1.00x |" in table[2]
    speedrun = table[3]
    assert speedrun.startswith("| speedrun | 21.0 | 22.0, 20.0 | 21.0 | 22.0, 20.0 | 0.38x |")
    assert "1.8000, 1.7400" in speedrun
    assert table[4].startswith("| later-preset |") and table[4].endswith("preset not available |")


def _script(tmp_path: Path, body: str) -> list[str]:
    path = tmp_path / "side.py"
    path.write_text(body)
    return [sys.executable, str(path)]


def test_watch_times_each_eval_line_of_a_process(tmp_path: Path) -> None:
    cmd = _script(
        tmp_path,
        "print('starting')\n"
        "for i, v in enumerate([3.0, 2.0, 1.5]):\n"
        "    print(f'step {i * 10}: train loss {v}, val loss {v}', flush=True)\n"
        "    print(f'iter {i * 10}: loss {v}', flush=True)\n",
    )
    run = ttt.watch(cmd, None, [1.6], timeout=None, stop_at_targets=False)
    assert run.status == "ok"
    assert [v for _, v in run.evals] == [3.0, 2.0, 1.5]
    times = [t for t, _ in run.evals]
    assert 0 < times[0] <= times[1] <= times[2] <= run.wall
    assert run.final_val == 1.5


def test_watch_stops_a_side_at_its_targets_and_kills_one_past_its_timeout(
    tmp_path: Path,
) -> None:
    cmd = _script(
        tmp_path,
        "import time\n"
        "print('eval at iter 0: train loss 1.2, val loss 1.1', flush=True)\n"
        "time.sleep(120)\n"
        "print('eval at iter 9: train loss 1.0, val loss 1.0', flush=True)\n",
    )
    stopped = ttt.watch(cmd, None, [1.4], timeout=None, stop_at_targets=True)
    assert stopped.status == "stopped at targets"
    assert stopped.evals and stopped.final_val == 1.1 and stopped.wall < 100
    timed_out = ttt.watch(cmd, None, [0.5], timeout=1.0, stop_at_targets=True)
    assert timed_out.status == "timed out"
    assert timed_out.final_val == 1.1 and timed_out.wall < 100


def test_watch_reports_a_failed_side(tmp_path: Path) -> None:
    run = ttt.watch(_script(tmp_path, "raise SystemExit(3)\n"), None, [1.0], None, False)
    assert run.status == "failed (exit 3)" and run.final_val is None


def test_dry_run_times_every_side_on_a_tiny_model(
    data_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    result = tmp_path / "result.json"
    argv = ["--dry-run", "--data-dir", str(data_dir), "--targets", "3.7,1.0"]
    argv += ["--nanogpt-repo", str(REFERENCE), "--json", str(result)]
    assert ttt.main(argv) == 0
    sides = {row["side"]: row for row in json.loads(result.read_text())["sides"]}
    assert list(sides) == ["original", "shakespeare-char-cpu", "shakespeare-char-speedrun-cpu"]
    ran = [sides["shakespeare-char-cpu"]]
    if REFERENCE.exists():
        ran.append(sides["original"])
    else:
        assert sides["original"]["skipped"].startswith("no nanoGPT checkout")
    speedrun = sides["shakespeare-char-speedrun-cpu"]
    if "skipped" in speedrun:
        assert speedrun["skipped"] == "preset not available"
    else:
        ran.append(speedrun)
    for row in ran:
        # a fresh model's loss, ln(vocab) ~ 3.56 here, is under 3.7 from the first evaluation
        reached = row["targets"]["3.7"]
        assert reached["median"] is not None and 0 < reached["median"] <= row["wall_median"]
        assert row["targets"]["1"] == {"each": [None], "median": None}
        assert row["status"] == ["ok"] and 2.0 < row["final_val"][0] < 3.7
    table = capsys.readouterr().out
    assert "| shakespeare-char-cpu |" in table and "not reached" in table
