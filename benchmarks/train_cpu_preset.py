"""Wall time and final val loss of `nanogpt train --preset shakespeare-char-cpu`, side by side
with a plain eager nanoGPT-style loop (benchmarks/baseline_nanogpt.py) on the same data.

Each round runs both, alternating which goes first, as whole processes (start-up included).

Usage:
  nanogpt prepare shakespeare-char            # once
  python benchmarks/train_cpu_preset.py [--rounds 2] [--max-iters 2000] [--data-dir DIR]
                                        [--target 1.92] [--first ours]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from nanogpt_cli.paths import dataset_dir  # noqa: E402

# (wall seconds, final val loss, seconds from launch to the first eval at or below the target)
Run = tuple[float, float, float | None]


def first_at(evals: list[dict], launch: float, target: float) -> float | None:
    """Seconds from the process's launch to its first evaluation with val loss <= target."""
    hits = [e["time"] - launch for e in evals if e["val_loss"] <= target]
    return hits[0] if hits else None


def run_ours(data_dir: Path, out: Path, max_iters: int, target: float) -> Run:
    cmd = [
        sys.executable,
        "-m",
        "nanogpt_cli",
        "train",
        "--preset",
        "shakespeare-char-cpu",
        "--data-dir",
        str(data_dir.parent),
        "--dataset",
        data_dir.name,
        "--out-dir",
        str(out),
        "--max-iters",
        str(max_iters),
    ]
    launch, start = time.time(), time.perf_counter()
    subprocess.run(cmd, check=True, stderr=subprocess.DEVNULL)
    wall = time.perf_counter() - start
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    evals = [r for r in records if r["kind"] == "eval"]
    return wall, evals[-1]["val_loss"], first_at(evals, launch, target)


def run_baseline(data_dir: Path, out: Path, max_iters: int, target: float) -> Run:
    cmd = [
        sys.executable,
        str(HERE / "baseline_nanogpt.py"),
        str(data_dir),
        str(out),
        "--max-iters",
        str(max_iters),
    ]
    launch, start = time.time(), time.perf_counter()
    proc = subprocess.run(cmd, check=True, capture_output=True, text=True)
    wall = time.perf_counter() - start
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    return wall, result["val_loss"], first_at(result["evals"], launch, target)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--rounds", type=int, default=1)
    ap.add_argument("--max-iters", type=int, default=2000)
    ap.add_argument("--data-dir", default=None, help="datasets directory (default: nanogpt's)")
    ap.add_argument(
        "--target", type=float, default=1.92, help="val loss for the time-to-target column"
    )
    ap.add_argument(
        "--first",
        choices=["baseline", "ours"],
        default="baseline",
        help="which side runs first in the first round (then they alternate)",
    )
    args = ap.parse_args()
    data = dataset_dir("shakespeare-char", args.data_dir)
    if not (data / "meta.json").exists():
        sys.exit(f"{data} is not prepared; run `nanogpt prepare shakespeare-char` first")

    import torch

    results: dict[str, list[Run]] = {
        "baseline (nanoGPT-style eager)": [],
        "nanogpt": [],
    }
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(args.rounds):
            order = ["baseline", "ours"] if r % 2 == 0 else ["ours", "baseline"]
            if args.first == "ours":
                order.reverse()
            for which in order:
                out = Path(tmp) / f"{which}-{r}"
                if which == "ours":
                    res = run_ours(data, out, args.max_iters, args.target)
                    results["nanogpt"].append(res)
                else:
                    res = run_baseline(data, out, args.max_iters, args.target)
                    results["baseline (nanoGPT-style eager)"].append(res)
                print(
                    f"round {r + 1}: {which:8s} {res[0]:7.1f} s  val loss {res[1]:.4f}",
                    file=sys.stderr,
                    flush=True,
                )

    base_wall = statistics.median(w for w, _, _ in results["baseline (nanoGPT-style eager)"])
    print(
        f"\nshakespeare-char-cpu, {args.max_iters} iterations, {args.rounds} round(s); "
        f"torch {torch.__version__}, {platform.processor() or platform.machine()}, "
        f"{os.cpu_count()} CPUs, {time.strftime('%Y-%m-%d')}"
    )
    print(
        f"| run | wall s (median) | wall s (each) | final val loss | vs baseline "
        f"| s to val <= {args.target} (each) |"
    )
    print("|---|---:|---:|---:|---:|---:|")
    for name, runs in results.items():
        walls = [w for w, _, _ in runs]
        med = statistics.median(walls)
        each = ", ".join(f"{w:.0f}" for w in walls)
        vals = ", ".join(f"{v:.4f}" for _, v, _ in runs)
        hits = ", ".join("not reached" if t is None else f"{t:.0f}" for _, _, t in runs)
        print(f"| {name} | {med:.1f} | {each} | {vals} | {med / base_wall:.2f}x | {hits} |")


if __name__ == "__main__":
    main()
