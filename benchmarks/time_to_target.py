"""Seconds from launch to a target val loss: the original nanoGPT's train.py (its README's CPU
line), `nanogpt train --preset shakespeare-char-cpu` and `nanogpt train --preset
shakespeare-char-speedrun-cpu`, side by side on the same prepared tokens.

Each side runs as a whole process (start-up included), the order rotating from round to
round. The script reads each process's output line by line and notes, for every evaluation
line, the seconds since it launched the process; a side's time to a target is that of its
first evaluation with val loss <= the target. Every side evaluates at the same interval on
the same number of batches (--eval-interval, --eval-iters: 20 batches, as the CPU line). The
original runs in a scratch directory holding links to the checkout's scripts and this dataset
in nanoGPT's layout (benchmarks/train_cpu_preset.py); the checkout is not changed. A side
whose preset does not exist, or the original without a checkout, is reported and skipped.

Usage:
  nanogpt prepare shakespeare-char            # once
  python benchmarks/time_to_target.py [--rounds 3] [--targets 1.92,1.88]
      [--sides original,shakespeare-char-cpu,shakespeare-char-speedrun-cpu]
      [--nanogpt-repo DIR] [--data-dir DIR] [--eval-interval 100] [--eval-iters 20]
      [--max-iters N] [--timeout S] [--stop-at-targets] [--json FILE] [--dry-run]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import shlex
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
sys.path.insert(0, str(HERE))

from train_cpu_preset import ORIGINAL_FLAGS, original_workdir  # noqa: E402

ORIGINAL = "original"
DEFAULT_SIDES = "original,shakespeare-char-cpu,shakespeare-char-speedrun-cpu"
DEFAULT_REPO = HERE.parent.parent / "shared" / "reference" / "nanoGPT"
ORIGINAL_MAX_ITERS = 2000  # the README's CPU line

# --dry-run: a tiny model and a few steps, so that every side runs in seconds on a CPU.
DRY_ITERS, DRY_EVAL_INTERVAL, DRY_EVAL_ITERS = 20, 10, 2
DRY_MODEL = {"n_layer": 1, "n_head": 2, "n_embd": 32, "block_size": 32, "batch_size": 4}

# nanogpt: "12:00:01 eval at iter 250: train loss 1.9, val loss 1.95 (best)";
# nanoGPT's train.py: "step 250: train loss 1.9, val loss 1.95".
EVAL_LINE = re.compile(r"(?:^step|\beval at iter) (\d+): train loss \S+, val loss ([^\s,()]+)")


def parse_eval(line: str) -> tuple[int, float] | None:
    """(iteration, val loss) of an evaluation line of either side; None for any other line."""
    m = EVAL_LINE.search(line)
    if m is None:
        return None
    try:
        return int(m.group(1)), float(m.group(2))
    except ValueError:
        return None


def first_crossing(evals: Sequence[tuple[float, float]], target: float) -> float | None:
    """Seconds since launch of the first evaluation, of (seconds, val loss) pairs in order,
    with val loss <= target; None if none reached it (a NaN loss never does)."""
    for seconds, val in evals:
        if val <= target:
            return seconds
    return None


def median_time(times: Sequence[float | None]) -> float | None:
    """Median over rounds of a time to target, a round that never reached it counting as
    slower than any that did: None when the median itself is "not reached"."""
    if not times:
        return None
    med = statistics.median(float("inf") if t is None else t for t in times)
    return None if med == float("inf") else med


@dataclass
class Run:
    """One process: its evaluations as (seconds since launch, val loss), wall seconds, and
    how it ended ("ok", "stopped at targets", "timed out", "failed (exit N)")."""

    evals: list[tuple[float, float]] = field(default_factory=list)
    wall: float = 0.0
    status: str = "ok"

    @property
    def final_val(self) -> float | None:
        return self.evals[-1][1] if self.evals else None


@dataclass
class SideResult:
    name: str
    runs: list[Run] = field(default_factory=list)
    skipped: str | None = None  # why the side did not run


def summarize(side: SideResult, targets: Sequence[float]) -> dict:
    """A side's numbers for the table and the JSON: per target the time of each round and
    the median, the final val losses, the wall times and how each run ended."""
    if side.skipped is not None:
        return {"side": side.name, "skipped": side.skipped}
    per_target = {}
    for target in targets:
        each = [first_crossing(r.evals, target) for r in side.runs]
        per_target[f"{target:g}"] = {"each": each, "median": median_time(each)}
    finals = [r.final_val for r in side.runs]
    known = [v for v in finals if v is not None]
    return {
        "side": side.name,
        "targets": per_target,
        "final_val": finals,
        "final_val_median": statistics.median(known) if known else None,
        "wall": [r.wall for r in side.runs],
        "wall_median": statistics.median(r.wall for r in side.runs) if side.runs else None,
        "status": [r.status for r in side.runs],
    }


def _seconds(t: float | None) -> str:
    return "not reached" if t is None else f"{t:.1f}"


def format_table(rows: Sequence[dict], targets: Sequence[float]) -> str:
    """One markdown table: a row per side, for each target the median seconds to it and
    every round's, then the final val loss and the wall time; against the first side that
    ran, the ratio of the median times to the first target."""
    ran = [r for r in rows if "skipped" not in r]
    ref = ran[0]["targets"][f"{targets[0]:g}"]["median"] if ran else None
    head = ["side"]
    for t in targets:
        head += [f"s to val <= {t:g} (median)", "(each)"]
    head += [f"vs {ran[0]['side'] if ran else '-'} at {targets[0]:g}", "final val loss (each)"]
    head += ["wall s (median)", "runs"]
    lines = ["| " + " | ".join(head) + " |", "|---" + "|---:" * (len(head) - 1) + "|"]
    for row in rows:
        if "skipped" in row:
            cells = [row["side"]] + ["-"] * (len(head) - 2) + [row["skipped"]]
            lines.append("| " + " | ".join(cells) + " |")
            continue
        cells = [row["side"]]
        for t in targets:
            times = row["targets"][f"{t:g}"]
            cells += [_seconds(times["median"]), ", ".join(_seconds(x) for x in times["each"])]
        mine = row["targets"][f"{targets[0]:g}"]["median"]
        cells.append("-" if mine is None or not ref else f"{mine / ref:.2f}x")
        cells.append(", ".join("-" if v is None else f"{v:.4f}" for v in row["final_val"]))
        cells.append(f"{row['wall_median']:.1f}")
        statuses = sorted(set(row["status"]))
        cells.append(", ".join(statuses))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def watch(
    cmd: list[str],
    cwd: Path | None,
    targets: Sequence[float],
    timeout: float | None,
    stop_at_targets: bool,
) -> Run:
    """Run ``cmd``, timing each evaluation line as it appears on its output."""
    run = Run()
    tail: deque[str] = deque(maxlen=20)
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    launch = time.perf_counter()
    proc = subprocess.Popen(
        cmd, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    timed_out = threading.Event()

    def on_timeout() -> None:
        timed_out.set()
        proc.kill()

    timer = threading.Timer(timeout, on_timeout) if timeout else None
    if timer is not None:
        timer.start()
    stopping = False
    try:
        assert proc.stdout is not None
        for line in proc.stdout:
            now = time.perf_counter() - launch
            tail.append(line.rstrip())
            parsed = parse_eval(line)
            if parsed is None:
                continue
            run.evals.append((now, parsed[1]))
            reached = all(first_crossing(run.evals, t) is not None for t in targets)
            if stop_at_targets and reached and not stopping:
                stopping = True  # the rest of the run measures nothing asked for
                proc.terminate()
        proc.wait()
    finally:
        if timer is not None:
            timer.cancel()
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    run.wall = time.perf_counter() - launch
    if timed_out.is_set():
        run.status = "timed out"
    elif stopping:
        run.status = "stopped at targets"
    elif proc.returncode != 0 or not run.evals:
        run.status = f"failed (exit {proc.returncode})"
        print("\n".join(tail), file=sys.stderr)
    return run


def ours_command(preset: str, data: Path, out: Path, args: argparse.Namespace) -> list[str]:
    cmd = [sys.executable, "-m", "nanogpt_cli", "train", "--preset", preset]
    cmd += ["--data-dir", str(data.parent), "--dataset", data.name, "--out-dir", str(out)]
    cmd += ["--eval-interval", str(args.eval_interval), "--eval-iters", str(args.eval_iters)]
    cmd += ["--no-sample-at-end"]  # the original trains and stops: the same work on all sides
    if args.max_iters is not None:
        cmd += ["--max-iters", str(args.max_iters), "--lr-decay-iters", str(args.max_iters)]
    if args.dry_run:
        for key, value in DRY_MODEL.items():
            cmd += ["--" + key.replace("_", "-"), str(value)]
        cmd += ["--device", "cpu"]
    return cmd + shlex.split(args.extra)


def original_command(out: Path, args: argparse.Namespace) -> list[str]:
    iters = args.max_iters if args.max_iters is not None else ORIGINAL_MAX_ITERS
    cmd = [sys.executable, "-u", "train.py", "config/train_shakespeare_char.py", *ORIGINAL_FLAGS]
    # the configurator applies flags in order: these come after the CPU line's own
    cmd += [f"--max_iters={iters}", f"--lr_decay_iters={iters}", f"--out_dir={out}"]
    cmd += [f"--eval_interval={args.eval_interval}", f"--eval_iters={args.eval_iters}"]
    if args.dry_run:
        cmd += [f"--{key}={value}" for key, value in DRY_MODEL.items()]
    return cmd


def side_note(side: str, repo: Path) -> str | None:
    """Why ``side`` cannot run here, or None."""
    if side == ORIGINAL:
        missing = [
            n
            for n in ("train.py", "model.py", "configurator.py", "config")
            if not (repo / n).exists()
        ]
        return f"no nanoGPT checkout at {repo}" if missing else None
    from nanogpt_cli.config.presets import is_preset

    return None if is_preset(side) else "preset not available"


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--sides", default=DEFAULT_SIDES, help="'original' and/or preset names")
    ap.add_argument("--targets", default="1.92,1.88", help="val losses, comma-separated")
    ap.add_argument("--rounds", type=int, default=1)
    ap.add_argument("--nanogpt-repo", type=Path, default=DEFAULT_REPO)
    ap.add_argument("--data-dir", default=None, help="datasets directory (default: nanogpt's)")
    ap.add_argument("--eval-interval", type=int, default=100)
    ap.add_argument("--eval-iters", type=int, default=20, help="batches per evaluation")
    ap.add_argument(
        "--max-iters",
        type=int,
        default=None,
        help="steps for every side (default: each preset's own; 2000 for the original)",
    )
    ap.add_argument("--timeout", type=float, default=None, help="seconds per process")
    ap.add_argument(
        "--stop-at-targets",
        action="store_true",
        help="stop a side once it reached every target (its final val loss is then that one)",
    )
    ap.add_argument("--extra", default="", help="more flags for every nanogpt side")
    ap.add_argument("--json", type=Path, default=None, help="also write the results here")
    ap.add_argument("--dry-run", action="store_true", help="a tiny model, a few steps, CPU")
    args = ap.parse_args(argv)
    if args.dry_run:
        args.max_iters = args.max_iters or DRY_ITERS
        args.eval_interval, args.eval_iters = DRY_EVAL_INTERVAL, DRY_EVAL_ITERS
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    from nanogpt_cli.paths import dataset_dir

    targets = [float(t) for t in args.targets.split(",")]
    data = dataset_dir("shakespeare-char", args.data_dir)
    if not (data / "meta.json").exists():
        sys.exit(f"{data} is not prepared; run `nanogpt prepare shakespeare-char` first")
    sides = [s.strip() for s in args.sides.split(",") if s.strip()]
    results = {s: SideResult(s, skipped=side_note(s, args.nanogpt_repo)) for s in sides}
    runnable = [s for s in sides if results[s].skipped is None]
    with tempfile.TemporaryDirectory() as tmp:
        workdir = None
        if ORIGINAL in runnable:
            workdir = original_workdir(args.nanogpt_repo, data, Path(tmp) / "nanoGPT")
        for r in range(args.rounds):
            k = r % max(len(runnable), 1)
            for side in runnable[k:] + runnable[:k]:  # each side goes first in turn
                out = Path(tmp) / f"out-{len(results[side].runs)}-{side}"
                if side == ORIGINAL:
                    cmd, cwd = original_command(out, args), workdir
                else:
                    cmd, cwd = ours_command(side, data, out, args), None
                run = watch(cmd, cwd, targets, args.timeout, args.stop_at_targets)
                results[side].runs.append(run)
                times = ", ".join(_seconds(first_crossing(run.evals, t)) for t in targets)
                print(
                    f"round {r + 1}: {side}: {run.wall:.1f} s, {run.status}, final val "
                    f"{run.final_val}, s to targets: {times}",
                    file=sys.stderr,
                    flush=True,
                )
    rows = [summarize(results[s], targets) for s in sides]
    import torch

    print(
        f"\ntime to target{' (dry run)' if args.dry_run else ''}, {args.rounds} round(s), "
        f"eval every {args.eval_interval} steps on {args.eval_iters} batches; "
        f"torch {torch.__version__}, {platform.processor() or platform.machine()}, "
        f"{os.cpu_count()} CPUs, {time.strftime('%Y-%m-%d')}"
    )
    print(format_table(rows, targets))
    if args.json is not None:
        args.json.write_text(json.dumps({"targets": targets, "sides": rows}, indent=2) + "\n")
    failed = any(run.status.startswith("failed") for s in results.values() for run in s.runs)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
