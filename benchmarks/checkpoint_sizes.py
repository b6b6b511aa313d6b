"""Checkpoint sizes and save/load times of every format, side by side.

Builds a model in the shape of GPT-2 124M (nanoGPT's padded vocabulary of 50304, random
weights), takes one AdamW step so the optimizer holds its two moments per parameter, and
writes it in each format. The baseline is the unified ckpt.pt, the layout the original
nanoGPT writes. Needs about 4 GB of free disk under --dir.

Usage:
  python benchmarks/checkpoint_sizes.py [--dir /tmp/nanogpt-sizes] [--shape gpt2-124m]
"""

from __future__ import annotations

import argparse
import datetime
import platform
import shutil
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from nanogpt_cli.checkpoint import Checkpoint, TrainState, read_checkpoint, save_checkpoint
from nanogpt_cli.checkpoint.convert import DTYPES
from nanogpt_cli.checkpoint.hf import write_hf
from nanogpt_cli.config import ModelConfig
from nanogpt_cli.model import GPT
from nanogpt_cli.train.optim import build_optimizer

SHAPES = {
    "gpt2-124m": ModelConfig(12, 12, 768, 1024, 50304),
    "shakespeare-char": ModelConfig(6, 6, 384, 256, 65),
}


def folder_size(paths: list[Path]) -> int:
    return sum(p.stat().st_size for p in paths if p.is_file())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dir", type=Path, default=Path("/tmp/nanogpt-sizes"))
    parser.add_argument("--shape", choices=sorted(SHAPES), default="gpt2-124m")
    args = parser.parse_args()
    root: Path = args.dir
    shutil.rmtree(root, ignore_errors=True)
    root.mkdir(parents=True)

    torch.manual_seed(0)
    config = SHAPES[args.shape]
    model = GPT(config)
    from nanogpt_cli.config import OptimConfig

    optimizer = build_optimizer(model, OptimConfig())
    for p in model.parameters():
        p.grad = torch.randn_like(p) * 1e-3
    optimizer.step()
    ckpt = Checkpoint(
        model_config=config,
        tokenizer={"kind": "tiktoken", "name": "gpt2"},
        state=TrainState(iter_num=1),
        _weights=model.state_dict(),
        _optimizer={"optimizer": optimizer.state_dict(), "scaler": {}},
    )

    rows: list[tuple[str, int, float, float]] = []

    def measure(name: str, write, folder: Path) -> None:  # type: ignore[no-untyped-def]
        t0 = time.perf_counter()
        files = write()
        t1 = time.perf_counter()
        loaded = read_checkpoint(folder)
        loaded.weights()
        if loaded.has_optimizer:
            loaded.optimizer_state()
        t2 = time.perf_counter()
        rows.append((name, folder_size(files), t1 - t0, t2 - t1))

    measure(
        "unified ckpt.pt (nanoGPT layout, baseline)",
        lambda: save_checkpoint(ckpt, root / "unified", "unified"),
        root / "unified",
    )
    measure(
        "separated",
        lambda: save_checkpoint(ckpt, root / "separated", "separated"),
        root / "separated",
    )
    for dtype in ("fp32", "bf16", "fp16"):
        measure(
            f"model-only {dtype}",
            lambda dtype=dtype: save_checkpoint(
                ckpt, root / dtype, "model-only", dtype=DTYPES[dtype]
            ),
            root / dtype,
        )

    def hf() -> list[Path]:
        write_hf(root / "hf", ckpt)
        return [p for p in (root / "hf").iterdir() if p.name == "model.safetensors"]

    measure("Hugging Face (model.safetensors, vocab 50257)", hf, root / "hf")

    n_params = sum(p.numel() for p in model.parameters())
    print(
        f"{args.shape} shape, {n_params / 1e6:.1f}M parameters; torch {torch.__version__}, "
        f"{platform.machine()}, {datetime.date.today()}"
    )
    base = rows[0][1]
    print("| format | size MB | vs unified | save s | load s |")
    print("|---|---:|---:|---:|---:|")
    for name, size, save_s, load_s in rows:
        print(f"| {name} | {size / 1e6:.1f} | {size / base:.1%} | {save_s:.2f} | {load_s:.2f} |")
    shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
