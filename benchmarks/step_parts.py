"""Where a CPU training step stands against its floor: the step, and its largest parts alone.

The floor is the step's FLOPs (6 N per token plus attention, ``GPT.flops_per_token``) at
the machine's measured float32 matrix-multiply rate (``nanogpt bench``'s measurement: the
best of a 2048-square product through MKL and oneDNN, here taken once before the models).
For each model this prints, side by side:

- the step (nanogpt's ``TrainStep`` with every CPU kernel on, as ``--cpu-kernels on``, and
  freed memory kept as the CLI keeps it: forward, backward, clipping, fused AdamW; the
  median of ``--steps`` after warm-up);
- the step's matrix products alone: every oneDNN product one step makes, recorded with
  its operands' shapes and strides, replayed back to back through the same kernel (the
  best of ``--repeats`` replays), and their rate; the copies ``kernels.onednn`` makes around
  a product (a transposed result, a weight copied for the loss head) are not included;
- attention alone: ``scaled_dot_product_attention`` forward and backward at the step's
  shapes, once per layer (the best of ``--repeats``);

each in milliseconds and as a multiple of the floor. The products and attention alone are
what the step cannot go below with these kernels: where their sum is above a target
multiple of the floor, no change around them reaches it.

Usage:
  python benchmarks/step_parts.py [--only cpu-preset gpt2-256] [--steps 20] [--repeats 5]
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable
from datetime import date
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from nanogpt_cli.bench import matmul_tflops
from nanogpt_cli.config import ModelConfig, OptimConfig
from nanogpt_cli.kernels import apply_kernels
from nanogpt_cli.kernels import onednn as cpu_matmul
from nanogpt_cli.model import GPT
from nanogpt_cli.runtime import keep_freed_memory, setup_backends
from nanogpt_cli.train.optim import build_optimizer
from nanogpt_cli.train.step import TrainStep

# name: (model, batch, steps): the shapes of benchmarks/train_step.py
CONFIGS = {
    "cpu-preset": (ModelConfig(4, 4, 128, 64, 65), 12, 30),
    "gpt2-256": (ModelConfig(12, 12, 768, 256, 50304), 4, 4),
}
Product = tuple[tuple[int, ...], tuple[int, ...], tuple[int, ...], tuple[int, ...], bool]


def best_of(fn: Callable[[], Any], repeats: int) -> float:
    """Seconds of the fastest of ``repeats`` calls, after one to warm up."""
    fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def record_products(step: Callable[[], Any]) -> list[Product]:
    """The oneDNN products one call of ``step`` makes: shapes and strides of both operands,
    and whether there is a bias."""
    seen: list[Product] = []
    original = cpu_matmul._product

    def recording(a: torch.Tensor, b: torch.Tensor, bias: torch.Tensor | None = None) -> Any:
        seen.append((tuple(a.shape), a.stride(), tuple(b.shape), b.stride(), bias is not None))
        return original(a, b, bias)

    cpu_matmul._product = recording  # type: ignore[assignment]
    try:
        step()
    finally:
        cpu_matmul._product = original  # type: ignore[assignment]
    return seen


def operands(product: Product) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    a_shape, a_stride, b_shape, b_stride, bias = product
    a = torch.empty_strided(a_shape, a_stride).normal_()
    b = torch.empty_strided(b_shape, b_stride).normal_()
    return a, b, torch.zeros(b_shape[0]) if bias else None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", nargs="+", choices=list(CONFIGS), default=list(CONFIGS))
    parser.add_argument("--steps", type=int, default=None, help="timed steps (per model)")
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    if (problem := cpu_matmul.signature_problem()) is not None:
        sys.exit(f"no oneDNN products here ({problem}): nothing to replay")
    setup_backends(torch.device("cpu"))
    keep_freed_memory()
    rate = matmul_tflops(torch.device("cpu"), torch.float32) * 1e12
    print(
        f"{platform.machine()}, {os.cpu_count()} CPUs, torch {torch.__version__}, {date.today()}; "
        f"float32 matrix-multiply rate {rate / 1e9:.0f} GFLOP/s (the floor's)"
    )
    print(
        "| model | batch | floor ms | step ms | step / floor | products alone ms "
        "| products GFLOP/s | attention alone ms | products + attention / floor |"
    )
    print("|---|---|---:|---:|---:|---:|---:|---:|---:|")
    for name in args.only:
        config, batch, steps = CONFIGS[name]
        step_s, step_flops, products_s, product_flops = measure(
            config, batch, args.steps or steps, args.repeats
        )
        attention_s = attention_seconds(config, batch, args.repeats)
        floor_s = step_flops / rate
        print(
            f"| {name} | {batch} x {config.block_size} | {floor_s * 1e3:,.1f} "
            f"| {step_s * 1e3:,.1f} | {step_s / floor_s:.2f}x | {products_s * 1e3:,.1f} "
            f"| {product_flops / products_s / 1e9:.0f} | {attention_s * 1e3:,.1f} "
            f"| {(products_s + attention_s) / floor_s:.2f}x |",
            flush=True,
        )


def measure(
    config: ModelConfig, batch: int, steps: int, repeats: int
) -> tuple[float, float, float, float]:
    """Seconds of the step (median of ``steps``) and its FLOPs; seconds of its products
    replayed alone (the best of ``repeats``) and their FLOPs."""
    device = torch.device("cpu")
    torch.manual_seed(0)
    model = GPT(config)
    apply_kernels(model, "on")
    optimizer = build_optimizer(model, OptimConfig())
    scaler = torch.amp.GradScaler("cpu", enabled=False)
    train = TrainStep(
        model, optimizer, scaler, grad_accum=1, grad_clip=1.0, device=device, dtype=torch.float32
    )
    tokens = torch.randint(0, config.vocab_size or 1, (batch, config.block_size + 1))

    def fetch() -> tuple[torch.Tensor, torch.Tensor]:
        return tokens[:, :-1], tokens[:, 1:]

    x, y = fetch()
    for _ in range(3):
        train(x, y, fetch)
    step_times = []
    for _ in range(steps):
        start = time.perf_counter()
        train(x, y, fetch)
        step_times.append(time.perf_counter() - start)
    tensors = [operands(p) for p in record_products(lambda: train(x, y, fetch))]
    product_flops = sum(2 * a.numel() * b.size(0) for a, b, _ in tensors)

    def replay() -> None:
        for a, b, bias in tensors:
            cpu_matmul._product(a, b, bias)

    step_flops = model.flops_per_token(config.block_size) * batch * config.block_size
    return statistics.median(step_times), step_flops, best_of(replay, repeats), product_flops


def attention_seconds(config: ModelConfig, batch: int, repeats: int) -> float:
    """Seconds of ``scaled_dot_product_attention`` forward and backward at the step's shapes,
    once per layer (the best of ``repeats``)."""
    B, T, C, H = batch, config.block_size, config.n_embd, config.n_head
    # as the model passes them: heads of one (B, T, 3C) projection, transposed views
    qkv = torch.randn(B, T, 3 * C, requires_grad=True)
    q, k, v = (t.view(B, T, H, C // H).transpose(1, 2) for t in qkv.split(C, dim=2))
    grad = torch.randn(B, H, T, C // H)

    def attention() -> None:
        for _ in range(config.n_layer):
            out = F.scaled_dot_product_attention(q, k, v, is_causal=True)
            torch.autograd.grad(out, (q, k, v), grad)

    return best_of(attention, repeats)


if __name__ == "__main__":
    main()
