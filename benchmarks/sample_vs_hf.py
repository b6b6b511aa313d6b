"""Generation speed: nanogpt vs Hugging Face ``transformers`` ``generate(use_cache=True)`` on
the same random GPT-2 weights, greedy, side by side in one run.

Both sides load the same Hugging Face folder (a random ``GPT2LMHeadModel``, saved once) in
a fresh process each, so "whole process" includes imports and loading; "decode" is tokens
per second of generation alone, timed inside that process. nanogpt's side applies the CPU
kernels as ``nanogpt sample`` does (``--cpu-kernels`` / ``NANOGPT_CPU_KERNELS``, default
auto). Rounds rotate which side goes first. Both sides must produce the same tokens
(greedy decoding of the same weights).

``--compare-with DIR`` adds a third side: nanogpt from another checkout (a git worktree of
an earlier commit, say), run the same way with ``PYTHONPATH=DIR``, to compare two versions
in one run.

Usage: python benchmarks/sample_vs_hf.py [--tokens 300] [--batch 1 8] [--sizes gpt2 tiny]
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
import tempfile
import time
from datetime import date
from pathlib import Path

SIZES = {
    "gpt2": {"n_layer": 12, "n_head": 12, "n_embd": 768},  # GPT-2 124M
    "tiny": {"n_layer": 2, "n_head": 4, "n_embd": 64},
}
PROMPT_TOKEN = 198  # "\n" in GPT-2's BPE

OURS = f"""
import json, sys, time
start = time.perf_counter()
import torch
from nanogpt_cli.checkpoint import model_from_checkpoint, read_pretrained
from nanogpt_cli.sample import generate
torch.set_grad_enabled(False)
folder, batch, tokens = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
model = model_from_checkpoint(read_pretrained(folder))  # the weights; no tokenizer needed
try:  # as nanogpt sample does (a checkout from before the kernels package had them built in)
    from nanogpt_cli.kernels import apply_kernels
    apply_kernels(model)
except ImportError:
    pass
idx = torch.full((batch, 1), {PROMPT_TOKEN}, dtype=torch.long)
loaded = time.perf_counter()
out = [t for t in generate(model, idx, tokens, temperature=0.0)]
done = time.perf_counter()
ids = torch.stack(out, dim=1)[0].tolist()
print(json.dumps({{"load": loaded - start, "gen": done - loaded, "ids": ids}}))
"""

HF = f"""
import json, sys, time
start = time.perf_counter()
import torch
from transformers import GPT2LMHeadModel
torch.set_grad_enabled(False)
folder, batch, tokens = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
model = GPT2LMHeadModel.from_pretrained(folder, torch_dtype=torch.float32).eval()
idx = torch.full((batch, 1), {PROMPT_TOKEN}, dtype=torch.long)
loaded = time.perf_counter()
out = model.generate(
    idx, attention_mask=torch.ones_like(idx), max_new_tokens=tokens, min_new_tokens=tokens,
    do_sample=False, use_cache=True, pad_token_id=50256,
)
done = time.perf_counter()
ids = out[0, 1:].tolist()
print(json.dumps({{"load": loaded - start, "gen": done - loaded, "ids": ids}}))
"""


def make_folder(size: str, root: Path) -> Path:
    import torch
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(0)
    folder = root / size
    model = GPT2LMHeadModel(GPT2Config(**SIZES[size], n_positions=1024, vocab_size=50257))
    model.save_pretrained(folder)
    return folder


def run(code: str, folder: Path, batch: int, tokens: int, path: str | None = None) -> dict:
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    env.update(HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", TOKENIZERS_PARALLELISM="false")
    if path is not None:
        env["PYTHONPATH"] = path
    start = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-c", code, str(folder), str(batch), str(tokens)],
        capture_output=True,
        text=True,
        env=env,
        check=True,
    )
    result = json.loads(done.stdout.strip().splitlines()[-1])
    result["wall"] = time.perf_counter() - start
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tokens", type=int, default=300)
    parser.add_argument("--batch", type=int, nargs="+", default=[1, 8])
    parser.add_argument("--sizes", nargs="+", default=list(SIZES), choices=list(SIZES))
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--compare-with", metavar="DIR", help="another nanogpt checkout")
    args = parser.parse_args()
    import torch

    print(
        f"{platform.machine()}, {os.cpu_count()} CPUs, torch {torch.__version__}, "
        f"{date.today()}; {args.tokens} new tokens, greedy, fp32, median of {args.rounds} rounds"
    )
    print(
        "| model | batch | side | whole process s | decode tokens/s | "
        "vs HF (process) | vs HF (decode) | same tokens |"
    )
    print("|---|---:|---|---:|---:|---:|---:|:---:|")
    with tempfile.TemporaryDirectory() as tmp:
        for size in args.sizes:
            folder = make_folder(size, Path(tmp))
            for batch in args.batch:
                sides = [("nanogpt", OURS, None), ("transformers", HF, None)]
                if args.compare_with:
                    sides.append((f"nanogpt ({args.compare_with})", OURS, args.compare_with))
                results: dict[str, list[dict]] = {side: [] for side, _, _ in sides}
                for r in range(args.rounds):
                    turn = r % len(sides)
                    for side, code, path in sides[turn:] + sides[:turn]:
                        results[side].append(run(code, folder, batch, args.tokens, path))
                ids = [v[0]["ids"] for v in results.values()]
                same = all(i == ids[0] for i in ids)
                wall = {s: statistics.median(r["wall"] for r in v) for s, v in results.items()}
                rate = {
                    s: statistics.median(batch * args.tokens / r["gen"] for r in v)
                    for s, v in results.items()
                }
                for side in sorted(results, key=lambda side: side != "transformers"):
                    vs_wall = wall["transformers"] / wall[side]
                    vs_rate = rate[side] / rate["transformers"]
                    print(
                        f"| {size} | {batch} | {side} | {wall[side]:.2f} | {rate[side]:,.1f} | "
                        f"{vs_wall:.2f}x | {vs_rate:.2f}x | {'yes' if same else 'NO'} |"
                    )


if __name__ == "__main__":
    main()
