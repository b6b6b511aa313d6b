"""Generation speed with and without the KV cache, side by side.

For each model: time to generate N new tokens (greedy, batch 1) with `nanogpt`'s KV-cache
decoding and with the cache disabled (a full forward over the context window per token, as
nanoGPT's sample.py does), and check that both produce the same tokens.

Models: random weights in the shapes of the presets, plus any trained checkpoints given.

Usage:
  python benchmarks/sample_kv_cache.py [--tokens 500] [--checkpoint out-shakespeare-char]
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from nanogpt_cli.config import ModelConfig
from nanogpt_cli.model import GPT
from nanogpt_cli.sample import Sampler, generate

SHAPES = {
    "shakespeare-char-cpu (random)": ModelConfig(4, 4, 128, 64, 65),
    "shakespeare-char (random)": ModelConfig(6, 6, 384, 256, 65),
    "gpt2-124m (random)": ModelConfig(12, 12, 768, 1024, 50304),
}


def timed(model: GPT, tokens: int, use_cache: bool, repeats: int) -> tuple[float, torch.Tensor]:
    idx = torch.zeros((1, 1), dtype=torch.long)
    best, out = float("inf"), None
    for _ in range(repeats):
        start = time.perf_counter()
        out = torch.stack(list(generate(model, idx, tokens, temperature=0.0, use_cache=use_cache)))
        best = min(best, time.perf_counter() - start)
    assert out is not None
    return best, out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--tokens", type=int, default=500)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--checkpoint", action="append", default=[])
    ap.add_argument("--skip-random", action="store_true")
    args = ap.parse_args()

    models: dict[str, GPT] = {}
    for path in args.checkpoint:
        models[f"{path} (trained)"] = Sampler.from_checkpoint(path, device="cpu").model
    if not args.skip_random:
        for name, cfg in SHAPES.items():
            torch.manual_seed(0)
            models[name] = GPT(cfg).eval()

    print(
        f"{args.tokens} new tokens, batch 1, greedy, CPU; torch {torch.__version__}, "
        f"{platform.machine()}, {os.cpu_count()} CPUs, {time.strftime('%Y-%m-%d')}"
    )
    print("| model | block | with KV cache | without | speedup | same tokens |")
    print("|---|---:|---:|---:|---:|:---:|")
    for name, model in models.items():
        torch.set_grad_enabled(False)
        timed(model, 8, True, 1)  # warm-up
        with_cache, a = timed(model, args.tokens, True, args.repeats)
        without, b = timed(model, args.tokens, False, args.repeats)
        print(
            f"| {name} | {model.config.block_size} | {with_cache:.2f} s | {without:.2f} s | "
            f"{without / with_cache:.1f}x | {'yes' if torch.equal(a, b) else 'NO'} |",
            flush=True,
        )


if __name__ == "__main__":
    main()
