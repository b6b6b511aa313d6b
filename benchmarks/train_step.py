"""The training step, side by side: nanogpt's (``nanogpt bench``'s TrainStep) and a plain
eager PyTorch GPT-2 step written the nanoGPT way (benchmarks/baseline_nanogpt.py: a memmap
re-created for every batch, AdamW without the fused kernel, the loss read every step, no
compile), same model shape, batch and data, against the step's floor. With ``--compile``,
a third side: nanogpt's step under torch.compile (its compile time reported apart, as
``nanogpt bench`` does; steady-state steps only in ms/step).

The floor is the step's FLOPs (6 N per token plus attention) at this machine's fp32
matrix-multiply rate, measured on one large square matmul (best of several) in the same
run. Each side runs in its own process, rounds rotating which goes first. nanogpt's side
runs as ``nanogpt bench`` does: the CPU kernels of ``--cpu-kernels`` (default auto) and
freed memory kept (``runtime.keep_freed_memory``).

``--compare-with DIR`` adds nanogpt from another checkout (a git worktree of an earlier
commit, say) as one more side, run the same way with ``PYTHONPATH=DIR``: two versions of
the step, interleaved in one run.

Usage:
  nanogpt prepare shakespeare-char; nanogpt prepare shakespeare       # once
  python benchmarks/train_step.py [--rounds 3] [--only cpu-preset gpt2-256] [--compile]
         [--compare-with ../nanogpt-before]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
from datetime import date
from pathlib import Path

HERE = Path(__file__).resolve().parent

# name: (dataset, shape, steps). gpt2-256 is GPT-2 124M at block 256 (vocab padded to 50304).
CONFIGS = {
    "cpu-preset": ("shakespeare-char", dict(batch=12, block=64, layers=4, heads=4, embd=128), 30),
    "gpt2-256": ("shakespeare", dict(batch=4, block=256, layers=12, heads=12, embd=768), 3),
}
WARMUP = 3

OURS = f"""
import json, sys
try:  # what the CLI does for its process (a checkout from before did it in setup_backends)
    from nanogpt_cli.runtime import keep_freed_memory
    keep_freed_memory()
except ImportError:
    pass
from nanogpt_cli.bench import bench_train
from nanogpt_cli.config import build_config
dataset, shape, steps = sys.argv[1], json.loads(sys.argv[2]), int(sys.argv[3])
compile = sys.argv[4] == "1"
vocab = 50304 if dataset == "shakespeare" else None
cfg = build_config("shakespeare-char-cpu", overrides=dict(
    dataset=dataset, batch_size=shape["batch"], block_size=shape["block"],
    n_layer=shape["layers"], n_head=shape["heads"], n_embd=shape["embd"], vocab_size=vocab,
    compile=compile,
))
r = bench_train(cfg, steps=steps, warmup={WARMUP}, data="real", measure_floor=False)
assert r.compiled == compile, "torch.compile failed; see the warning above"
print(json.dumps({{"ms": r.step_ms.median, "flops": r.flops_per_step, "compile_s": r.compile_s}}))
"""

BASELINE = f"""
import json, sys, time, statistics
sys.path.insert(0, {str(HERE)!r})
import torch
from baseline_nanogpt import BaselineGPT, Shape, get_batch, make_optimizer, train_step
from nanogpt_cli.paths import dataset_dir
dataset, shape, steps = sys.argv[1], Shape(**json.loads(sys.argv[2])), int(sys.argv[3])
data = str(dataset_dir(dataset))
torch.manual_seed(1337)
vocab = 50304 if dataset == "shakespeare" else json.load(open(data + "/meta.json"))["vocab_size"]
model = BaselineGPT(vocab, shape)
optimizer = make_optimizer(model)
batch = get_batch(data, "train", shape)
times = []
for i in range({WARMUP} + steps):
    start = time.perf_counter()
    batch = train_step(model, optimizer, batch, lambda: get_batch(data, "train", shape))
    times.append(time.perf_counter() - start)
print(json.dumps({{"ms": statistics.median(times[{WARMUP}:]) * 1000}}))
"""


def run(
    code: str, dataset: str, shape: dict, steps: int, compile: bool = False, path: str | None = None
) -> dict:
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    if path is not None:
        env["PYTHONPATH"] = path
    done = subprocess.run(
        [sys.executable, "-c", code, dataset, json.dumps(shape), str(steps), str(int(compile))],
        capture_output=True,
        text=True,
        env=env,
        check=True,
    )
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--only", nargs="+", choices=list(CONFIGS), default=list(CONFIGS))
    parser.add_argument("--compile", action="store_true", help="add nanogpt under torch.compile")
    parser.add_argument("--compare-with", metavar="DIR", help="another nanogpt checkout")
    args = parser.parse_args()
    import torch

    from nanogpt_cli.bench import matmul_tflops

    print(
        f"{platform.machine()}, {os.cpu_count()} CPUs, torch {torch.__version__}, {date.today()}, "
        f"median of {args.rounds} rounds (each the median step of one process)"
    )
    print(
        "| model | batch | side | ms/step | vs baseline | matmul GFLOP/s | floor ms | vs floor "
        "| compile s |"
    )
    print("|---|---|---|---:|---:|---:|---:|---:|---:|")
    sides = [("nanogpt", OURS, False, None), ("baseline", BASELINE, False, None)]
    if args.compile:
        sides.append(("nanogpt --compile", OURS, True, None))
    if args.compare_with:
        sides.append((f"nanogpt ({args.compare_with})", OURS, False, args.compare_with))
    for name in args.only:
        dataset, shape, steps = CONFIGS[name]
        ms: dict[str, list[float]] = {side: [] for side, _, _, _ in sides}
        compile_s: list[float] = []
        rates, flops = [], 0.0
        for r in range(args.rounds):
            # rotate which side goes first
            for side, code, compiled, path in sides[r % len(sides) :] + sides[: r % len(sides)]:
                result = run(code, dataset, shape, steps, compiled, path)
                ms[side].append(result["ms"])
                flops = result.get("flops", flops)
                if compiled:
                    compile_s.append(result["compile_s"])
            rates.append(matmul_tflops(torch.device("cpu"), torch.float32) * 1000)
        rate = statistics.median(rates)
        floor = flops / (rate * 1e9) * 1000
        base = statistics.median(ms["baseline"])
        for side, _, compiled, _ in sorted(sides, key=lambda s: s[0] != "baseline"):
            median = statistics.median(ms[side])
            spent = ", ".join(f"{c:.1f}" for c in compile_s) if compiled else ""
            print(
                f"| {name} | {shape['batch']} x {shape['block']} | {side} | {median:,.1f} | "
                f"{median / base:.2f}x | {rate:.0f} | {floor:,.1f} | {median / floor:.2f}x "
                f"| {spent} |"
            )


if __name__ == "__main__":
    main()
