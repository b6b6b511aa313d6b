"""Wall time and final val loss of `nanogpt train --preset shakespeare-char-cpu`, side by side
with a plain eager nanoGPT-style loop (benchmarks/baseline_nanogpt.py) on the same data, and
with `--nanogpt-repo DIR`, also with the original nanoGPT's own train.py from a checkout of
https://github.com/karpathy/nanoGPT, run with its README's CPU line (MacBook settings).

Each round runs every side as a whole process (start-up included), the order rotating from
round to round. The original runs in a scratch directory that holds links to its scripts and
this dataset in its layout (data/shakespeare_char: the same .bin files and a meta.pkl); the
checkout is not changed.

Usage:
  nanogpt prepare shakespeare-char            # once
  python benchmarks/train_cpu_preset.py [--rounds 2] [--max-iters 2000] [--data-dir DIR]
                                        [--target 1.92] [--first ours] [--nanogpt-repo DIR]
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
        "--no-sample-at-end",  # the original trains and stops: the same work on both sides
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


# nanoGPT README: "python train.py config/train_shakespeare_char.py --device=cpu
# --compile=False --eval_iters=20 --log_interval=1 --block_size=64 --batch_size=12 --n_layer=4
# --n_head=4 --n_embd=128 --max_iters=2000 --lr_decay_iters=2000 --dropout=0.0"
ORIGINAL_FLAGS = [
    "--device=cpu",
    "--compile=False",
    "--eval_iters=20",
    "--log_interval=1",
    "--block_size=64",
    "--batch_size=12",
    "--n_layer=4",
    "--n_head=4",
    "--n_embd=128",
    "--dropout=0.0",
]


def original_workdir(repo: Path, data_dir: Path, work: Path) -> Path:
    """A directory to run the checkout's train.py in: links to its scripts, and the prepared
    dataset as nanoGPT's data/shakespeare_char (the .bin files and a pickled meta)."""
    import pickle

    work.mkdir()
    for name in ("train.py", "model.py", "configurator.py", "config"):
        if not (repo / name).exists():
            sys.exit(f"{repo} is not a nanoGPT checkout: it has no {name}")
        (work / name).symlink_to((repo / name).resolve())
    data = work / "data" / "shakespeare_char"
    data.mkdir(parents=True)
    for split in ("train.bin", "val.bin"):
        (data / split).symlink_to((data_dir / split).resolve())
    chars = json.loads((data_dir / "meta.json").read_text())["tokenizer"]["chars"]
    meta = {
        "vocab_size": len(chars),
        "itos": dict(enumerate(chars)),
        "stoi": {c: i for i, c in enumerate(chars)},
    }
    (data / "meta.pkl").write_bytes(pickle.dumps(meta))
    return work


def run_original(workdir: Path, max_iters: int, target: float) -> Run:
    cmd = [
        sys.executable,
        "-u",
        "train.py",
        "config/train_shakespeare_char.py",
        *ORIGINAL_FLAGS,
        f"--max_iters={max_iters}",
        f"--lr_decay_iters={max_iters}",
    ]
    launch, start = time.time(), time.perf_counter()
    evals = []
    with subprocess.Popen(
        cmd, cwd=workdir, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True
    ) as proc:
        assert proc.stdout is not None
        for line in proc.stdout:  # "step 250: train loss 2.1, val loss 2.2"
            if line.startswith("step ") and "val loss" in line:
                val = float(line.rsplit("val loss", 1)[1])
                evals.append({"time": time.time(), "val_loss": val})
    wall = time.perf_counter() - start
    if proc.returncode != 0 or not evals:
        sys.exit(f"the original train.py failed (exit {proc.returncode}) in {workdir}")
    return wall, evals[-1]["val_loss"], first_at(evals, launch, target)


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
        choices=["baseline", "ours", "original"],
        default="baseline",
        help="which side runs first in the first round (then each goes first in turn)",
    )
    ap.add_argument(
        "--nanogpt-repo",
        type=Path,
        default=None,
        help="a checkout of karpathy/nanoGPT: also run its train.py (README's CPU line), "
        "and compare against it",
    )
    args = ap.parse_args()
    data = dataset_dir("shakespeare-char", args.data_dir)
    if not (data / "meta.json").exists():
        sys.exit(f"{data} is not prepared; run `nanogpt prepare shakespeare-char` first")

    import torch

    names = {
        "original": "nanoGPT train.py (original)",
        "baseline": "baseline (nanoGPT-style eager)",
        "ours": "nanogpt",
    }
    sides = ["baseline", "ours"]
    if args.nanogpt_repo is not None:
        sides.insert(0, "original")
    if args.first not in sides:
        sys.exit("--first original needs --nanogpt-repo")
    sides.remove(args.first)
    sides.insert(0, args.first)
    results: dict[str, list[Run]] = {names[side]: [] for side in names if side in sides}
    reference = names["original"] if "original" in sides else names["baseline"]
    with tempfile.TemporaryDirectory() as tmp:
        workdir = None
        if args.nanogpt_repo is not None:
            workdir = original_workdir(args.nanogpt_repo, data, Path(tmp) / "nanoGPT")
        for r in range(args.rounds):
            k = r % len(sides)
            order = sides[k:] + sides[:k]  # each side goes first in turn
            for which in order:
                out = Path(tmp) / f"{which}-{r}"
                if which == "ours":
                    res = run_ours(data, out, args.max_iters, args.target)
                elif which == "baseline":
                    res = run_baseline(data, out, args.max_iters, args.target)
                else:
                    assert workdir is not None
                    res = run_original(workdir, args.max_iters, args.target)
                results[names[which]].append(res)
                print(
                    f"round {r + 1}: {which:8s} {res[0]:7.1f} s  val loss {res[1]:.4f}",
                    file=sys.stderr,
                    flush=True,
                )

    ref_wall = statistics.median(w for w, _, _ in results[reference])
    print(
        f"\nshakespeare-char-cpu, {args.max_iters} iterations, {args.rounds} round(s); "
        f"torch {torch.__version__}, {platform.processor() or platform.machine()}, "
        f"{os.cpu_count()} CPUs, {time.strftime('%Y-%m-%d')}"
    )
    vs = "vs original" if reference == names["original"] else "vs baseline"
    print(
        f"| run | wall s (median) | wall s (each) | final val loss | {vs} "
        f"| s to val <= {args.target} (each) |"
    )
    print("|---|---:|---:|---:|---:|---:|")
    for name, runs in results.items():
        walls = [w for w, _, _ in runs]
        med = statistics.median(walls)
        each = ", ".join(f"{w:.0f}" for w in walls)
        vals = ", ".join(f"{v:.4f}" for _, v, _ in runs)
        hits = ", ".join("not reached" if t is None else f"{t:.0f}" for _, _, t in runs)
        print(f"| {name} | {med:.1f} | {each} | {vals} | {med / ref_wall:.2f}x | {hits} |")


if __name__ == "__main__":
    main()
