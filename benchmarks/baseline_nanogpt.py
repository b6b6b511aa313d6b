"""A plain eager PyTorch GPT training loop, the way nanoGPT's train.py runs it.

Written for the benchmarks as the "before" picture: the same model shape and hyperparameters
as ``nanogpt train --preset shakespeare-char-cpu``, with nanoGPT's habits: the model in the
style of its model.py (exact GELU, SDPA attention), a memmap re-created for every batch,
AdamW without the fused kernel on CPU, evaluation with train-sized batches under no_grad,
loss read every iteration, a pickled checkpoint saved when val loss improves.

Usage: python benchmarks/baseline_nanogpt.py DATA_DIR OUT_DIR [--max-iters N]
Prints one JSON line at the end: {"val_loss": ..., "iters": ..., "train_seconds": ...}.

``benchmarks/train_step.py`` times this model's step for other shapes (``Shape``).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import time
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn as nn
from torch.nn import functional as F


@dataclass(frozen=True)
class Shape:
    """Model and batch shape; the default is shakespeare-char-cpu, i.e. nanoGPT's
    config/train_shakespeare_char.py with the README's MacBook overrides."""

    batch: int = 12
    block: int = 64
    layers: int = 4
    heads: int = 4
    embd: int = 128


CPU_PRESET = Shape()
LR, MIN_LR, WARMUP, DECAY_ITERS = 1e-3, 1e-4, 100, 2000
BETA1, BETA2, WEIGHT_DECAY, GRAD_CLIP = 0.9, 0.99, 0.1, 1.0
EVAL_INTERVAL, EVAL_ITERS = 250, 20


class SelfAttention(nn.Module):
    def __init__(self, shape: Shape) -> None:
        super().__init__()
        self.heads, self.embd = shape.heads, shape.embd
        self.qkv = nn.Linear(shape.embd, 3 * shape.embd, bias=False)
        self.proj = nn.Linear(shape.embd, shape.embd, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, T, C = x.shape
        q, k, v = self.qkv(x).split(self.embd, dim=2)
        q = q.view(B, T, self.heads, C // self.heads).transpose(1, 2)
        k = k.view(B, T, self.heads, C // self.heads).transpose(1, 2)
        v = v.view(B, T, self.heads, C // self.heads).transpose(1, 2)
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        return self.proj(y.transpose(1, 2).contiguous().view(B, T, C))


class Layer(nn.Module):
    def __init__(self, shape: Shape) -> None:
        super().__init__()
        embd = shape.embd
        self.ln1 = nn.LayerNorm(embd, bias=False)
        self.attn = SelfAttention(shape)
        self.ln2 = nn.LayerNorm(embd, bias=False)
        self.fc = nn.Linear(embd, 4 * embd, bias=False)
        self.gelu = nn.GELU()
        self.out = nn.Linear(4 * embd, embd, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.ln1(x))
        return x + self.out(self.gelu(self.fc(self.ln2(x))))


class BaselineGPT(nn.Module):
    def __init__(self, vocab: int, shape: Shape = CPU_PRESET) -> None:
        super().__init__()
        self.tok = nn.Embedding(vocab, shape.embd)
        self.pos = nn.Embedding(shape.block, shape.embd)
        self.layers = nn.ModuleList([Layer(shape) for _ in range(shape.layers)])
        self.ln_f = nn.LayerNorm(shape.embd, bias=False)
        self.head = nn.Linear(shape.embd, vocab, bias=False)
        self.tok.weight = self.head.weight
        for name, p in self.named_parameters():
            if p.dim() >= 2:
                std = (
                    0.02 / math.sqrt(2 * shape.layers)
                    if name.endswith(("proj.weight", "out.weight"))
                    else 0.02
                )
                nn.init.normal_(p, 0.0, std)

    def forward(self, idx: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        x = self.tok(idx) + self.pos(torch.arange(idx.size(1)))
        for layer in self.layers:
            x = layer(x)
        logits = self.head(self.ln_f(x))
        return F.cross_entropy(logits.view(-1, logits.size(-1)), targets.view(-1))


def get_batch(
    data_dir: str, split: str, shape: Shape = CPU_PRESET
) -> tuple[torch.Tensor, torch.Tensor]:
    # nanoGPT re-creates the memmap for every batch to avoid a memory leak.
    data = np.memmap(os.path.join(data_dir, f"{split}.bin"), dtype=np.uint16, mode="r")
    block = shape.block
    ix = torch.randint(len(data) - block, (shape.batch,))
    x = torch.stack([torch.from_numpy(data[i : i + block].astype(np.int64)) for i in ix])
    y = torch.stack([torch.from_numpy(data[i + 1 : i + 1 + block].astype(np.int64)) for i in ix])
    return x, y


def make_optimizer(model: nn.Module) -> torch.optim.AdamW:
    """AdamW as nanoGPT configures it on a CPU (decay on matrices, no fused kernel)."""
    params = [p for p in model.parameters() if p.requires_grad]
    return torch.optim.AdamW(
        [
            {"params": [p for p in params if p.dim() >= 2], "weight_decay": WEIGHT_DECAY},
            {"params": [p for p in params if p.dim() < 2], "weight_decay": 0.0},
        ],
        lr=LR,
        betas=(BETA1, BETA2),
    )


def train_step(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    batch: tuple[torch.Tensor, torch.Tensor],
    next_batch: Callable[[], tuple[torch.Tensor, torch.Tensor]],
) -> tuple[torch.Tensor, torch.Tensor]:
    """nanoGPT's step: forward, fetch the next batch, backward, clip, step; the loss is read."""
    loss = model(*batch)
    batch = next_batch()
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), GRAD_CLIP)
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    loss.item()  # nanoGPT logs every iteration in the README's CPU line
    return batch


def lr_at(it: int) -> float:
    if it < WARMUP:
        return LR * (it + 1) / (WARMUP + 1)
    if it > DECAY_ITERS:
        return MIN_LR
    ratio = (it - WARMUP) / (DECAY_ITERS - WARMUP)
    return MIN_LR + 0.5 * (1.0 + math.cos(math.pi * ratio)) * (LR - MIN_LR)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("data_dir")
    ap.add_argument("out_dir")
    ap.add_argument("--max-iters", type=int, default=2000)
    args = ap.parse_args()
    os.makedirs(args.out_dir, exist_ok=True)
    torch.manual_seed(1337)
    with open(os.path.join(args.data_dir, "meta.json"), encoding="utf-8") as f:
        vocab = json.load(f)["vocab_size"]
    model = BaselineGPT(vocab)
    optimizer = make_optimizer(model)
    ctx = nullcontext()

    @torch.no_grad()
    def estimate_loss() -> dict[str, float]:
        model.eval()
        out = {}
        for split in ("train", "val"):
            losses = torch.zeros(EVAL_ITERS)
            for k in range(EVAL_ITERS):
                x, y = get_batch(args.data_dir, split)
                with ctx:
                    losses[k] = model(x, y).item()
            out[split] = losses.mean().item()
        model.train()
        return out

    start = time.perf_counter()
    best_val, val_loss, it = 1e9, float("nan"), 0
    evals: list[dict[str, float]] = []  # wall-clock time of each, for time-to-target
    x, y = get_batch(args.data_dir, "train")
    while True:
        lr = lr_at(it)
        for group in optimizer.param_groups:
            group["lr"] = lr
        if it % EVAL_INTERVAL == 0:
            losses = estimate_loss()
            val_loss = losses["val"]
            evals.append({"iter": it, "val_loss": val_loss, "time": time.time()})
            print(
                f"step {it}: train loss {losses['train']:.4f}, val loss {val_loss:.4f}", flush=True
            )
            if val_loss < best_val:
                best_val = val_loss
                if it > 0:
                    torch.save(
                        {
                            "model": model.state_dict(),
                            "optimizer": optimizer.state_dict(),
                            "iter_num": it,
                            "best_val_loss": best_val,
                        },
                        os.path.join(args.out_dir, "ckpt.pt"),
                    )
        if it >= args.max_iters:
            break
        x, y = train_step(model, optimizer, (x, y), lambda: get_batch(args.data_dir, "train"))
        it += 1
    seconds = time.perf_counter() - start
    result = {"val_loss": val_loss, "iters": it, "train_seconds": seconds, "evals": evals}
    print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
