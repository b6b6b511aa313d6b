"""Loss on fixed windows of a prepared dataset: what training reports and ``nanogpt eval`` runs.

The training loop and ``nanogpt eval`` draw the same windows from the same seeds
(``evaluation_windows``) and average the loss the same way (``split_losses``), so a
checkpoint evaluated afterwards reports the loss its run logged.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .config import TrainConfig, build_config
from .data.dataset import SPLITS, Dataset, check_tokenizer
from .data.first_use import open_or_prepare
from .data.loader import fixed_windows
from .data.tokenizer import token_byte_lengths
from .errors import ConfigError
from .log import get_logger
from .progress import progress
from .runtime import autocast, resolve_device, resolve_dtype

logger = get_logger(__name__)

# Tokens per evaluation forward pass: on CPU, smaller passes than a whole batch were the
# faster (docs/benchmarks.md, "Where the time goes").
EVAL_CHUNK_TOKENS = 1 << 12
EVAL_CHUNK_LOGIT_BYTES = 1 << 28  # cap on the logits tensor of one evaluation pass


class EvaluationStopped(Exception):
    """``split_losses`` was told to stop between two passes: it has no result."""


def _share(windows: torch.Tensor, dist: Any) -> torch.Tensor:
    """This process's equal slice of ``windows``, padded with windows to ignore (targets -1)."""
    if dist is None:
        return windows
    per = -(-windows.size(0) // dist.world)
    mine = windows[dist.rank * per : (dist.rank + 1) * per]
    if mine.size(0) < per:
        pad = torch.full((per - mine.size(0), windows.size(1)), -1, dtype=windows.dtype)
        mine = torch.cat([mine, pad.to(windows.device)])
    return mine


def evaluation_windows(
    dataset: Dataset,
    block_size: int,
    batch_size: int,
    eval_iters: int,
    seed: int,
    device: torch.device,
    splits: tuple[str, ...] = SPLITS,
) -> dict[str, torch.Tensor]:
    """``eval_iters * batch_size`` windows of ``block_size + 1`` tokens per split, drawn
    once from ``seed`` (the training run's seed): the same every time."""
    n = eval_iters * batch_size
    return {
        split: fixed_windows(
            dataset.split_path(split),
            block_size,
            n,
            seed=seed + 1 + SPLITS.index(split),
            device=device,
        )
        for split in splits
    }


def split_losses(
    model: Any,
    windows: Mapping[str, torch.Tensor],
    device: torch.device,
    dtype: torch.dtype,
    dist: Any = None,
    stop: Callable[[], bool] | None = None,
) -> dict[str, float]:
    """Mean cross-entropy (nats per token) of ``model`` over each split's windows.

    In a distributed run (``dist``) each process takes an equal slice of the windows (the
    last padded with windows whose targets are ignored, so every process runs as many
    forward passes: FSDP needs them all) and the sums are added up.

    ``stop`` is asked after every forward pass (a fraction of a second each, on a CPU too)
    whether to give up: then ``EvaluationStopped`` is raised and the partial sums are
    dropped. In a distributed run it must answer the same in every process.
    """
    # FSDP gathers parameters for the forward pass into tensors that training updates in
    # place afterwards: they must not be inference tensors.
    fsdp = dist is not None and dist.strategy == "fsdp"
    was_training = model.training
    try:
        with torch.no_grad() if fsdp else torch.inference_mode():
            return _split_losses(model, windows, device, dtype, dist, stop)
    finally:
        model.train(was_training)


def _split_losses(
    model: Any,
    windows: Mapping[str, torch.Tensor],
    device: torch.device,
    dtype: torch.dtype,
    dist: Any,
    stop: Callable[[], bool] | None,
) -> dict[str, float]:
    model.eval()
    cfg = model.config
    block = cfg.block_size
    rows = max(
        1,
        min(
            EVAL_CHUNK_TOKENS // block,
            EVAL_CHUNK_LOGIT_BYTES // (block * cfg.vocab_size * 4),
        ),
    )
    windows = {split: _share(w, dist) for split, w in windows.items()}
    losses = {}
    passes = sum(-(-w.size(0) // rows) for w in windows.values())
    with progress("eval", total=passes) as bar:
        for split, w in windows.items():
            bar.describe(f"eval {split}")
            total = torch.zeros(2, device=device, dtype=torch.float64)  # loss sum, windows
            for chunk in w.split(rows):
                targets = chunk[:, 1:]
                real = (targets[:, 0] >= 0).sum()
                with autocast(device, dtype):
                    _, loss = model(chunk[:, :-1].clamp(min=0), targets, return_logits=False)
                # A chunk of padding only has no loss (0/0); no host sync to find out.
                total[0] += torch.where(real > 0, loss.double(), 0.0) * real
                total[1] += real
                bar.advance()
                if stop is not None and stop():
                    raise EvaluationStopped
            if dist is not None:
                total = dist.sum(total)
            losses[split] = (total[0] / total[1]).item()
    return losses


def evaluation_recorded(metrics: Path, it: int) -> bool:
    """Whether a run's metrics file records an evaluation at iteration ``it``. A run stopped
    during an evaluation has none, and resuming it makes that evaluation; unreadable
    metrics count as a record (as before: nothing is evaluated twice)."""
    from .errors import MetricsError
    from .metrics import read_metrics

    try:
        records = read_metrics(metrics)
    except MetricsError:
        return True
    return any(r.get("kind") == "eval" and r.get("iter") == it for r in records)


# The table of nanoGPT's README ("baselines"): the released GPT-2 weights on OpenWebText, as
# nanoGPT's config/eval_gpt2*.py measure them (500 x 8 windows of 1,024 tokens per split).
NANOGPT_BASELINES: dict[str, tuple[str, float, float]] = {
    # size: (params as the README gives them, train loss, val loss)
    "gpt2": ("124M", 3.11, 3.12),
    "gpt2-medium": ("350M", 2.85, 2.84),
    "gpt2-large": ("774M", 2.66, 2.67),
    "gpt2-xl": ("1558M", 2.56, 2.54),
}


def nanogpt_baseline(model: str, dataset: str) -> tuple[str, float, float] | None:
    """nanoGPT README's (params, train loss, val loss) of GPT-2 size ``model`` on
    ``dataset``, if that is OpenWebText; else None."""
    if Path(str(dataset)).name != "openwebtext":
        return None
    return NANOGPT_BASELINES.get(str(model))


@dataclass
class SplitEval:
    loss: float  # nats per token
    perplexity: float
    bits_per_byte: float
    tokens: int  # predicted tokens
    bytes: int  # UTF-8 bytes of those tokens


@dataclass
class EvalReport:
    model: str
    dataset: str
    splits: dict[str, SplitEval]
    batch_size: int
    eval_iters: int
    block_size: int
    seed: int
    device: str
    dtype: str

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def eval_settings(
    saved: Mapping[str, Any] | None,
    preset: str | None = None,
    overrides: Mapping[str, Any] | None = None,
) -> TrainConfig:
    """Evaluation options: defaults < the checkpoint's saved run config < preset < flags.

    The saved device, dtype and compile settings describe the machine that trained; they
    are not taken (the seed is: it fixes the evaluation windows)."""
    base = None
    if saved:
        base = {group: values for group, values in saved.items() if group != "system"}
        system = saved.get("system")
        if isinstance(system, Mapping) and "seed" in system:
            base["system"] = {"seed": system["seed"]}
    return build_config(preset, None, overrides, base=base)


def evaluate(
    source: str | Path,
    *,
    dataset: str | None = None,
    data_dir: str | Path | None = None,
    preset: str | None = None,
    batch_size: int | None = None,
    eval_iters: int | None = None,
    block_size: int | None = None,
    seed: int | None = None,
    device: str | None = None,
    dtype: str | None = None,
    cpu_kernels: str | None = None,
    splits: tuple[str, ...] = SPLITS,
    meta: str | Path | None = None,
) -> EvalReport:
    """Loss, perplexity and bits per byte of a checkpoint or GPT-2 size on a dataset.

    Unset options come from the preset, else from the run config saved with the checkpoint
    (so its run's evaluation windows are drawn again), else from the training defaults.
    """
    from .checkpoint import model_from_checkpoint, read_pretrained
    from .kernels import apply_kernels

    unknown = [s for s in splits if s not in SPLITS]
    if unknown:
        raise ConfigError(f"unknown split {unknown[0]!r}; use {', '.join(SPLITS)}")
    ckpt = read_pretrained(source, meta=meta)
    cfg = eval_settings(
        ckpt.config,
        preset,
        {
            "dataset": dataset,
            "data_dir": str(data_dir) if data_dir is not None else None,
            "batch_size": batch_size,
            "eval_iters": eval_iters,
            "seed": seed,
            "device": device,
            "dtype": dtype,
            "cpu_kernels": cpu_kernels,
        },
    )
    if dataset is None and not ckpt.config and preset is None:
        raise ConfigError(f"{source} records no dataset; name one with --dataset")
    data = open_or_prepare(cfg.data.dataset, cfg.data.data_dir)
    vocab = ckpt.model_config.vocab_size or 0
    check_tokenizer(ckpt.tokenizer, vocab, data, str(source))
    dev = resolve_device(cfg.system.device)
    torch_dtype = resolve_dtype(cfg.system.dtype, dev)
    model = model_from_checkpoint(ckpt)
    if block_size is not None and block_size < model.config.block_size:
        model.crop_block_size(block_size)
    elif block_size is not None and block_size > model.config.block_size:
        raise ConfigError(
            f"--block-size {block_size} is larger than the model's context of "
            f"{model.config.block_size}"
        )
    model.to(dev)
    apply_kernels(model, cfg.system.cpu_kernels)
    block = model.config.block_size
    windows = evaluation_windows(
        data, block, cfg.data.batch_size, cfg.eval.eval_iters, cfg.system.seed, dev, splits
    )
    logger.info(
        f"evaluating {source} on {data.name} ({', '.join(splits)}): "
        f"{cfg.eval.eval_iters} x {cfg.data.batch_size} windows of {block} tokens"
    )
    losses = split_losses(model, windows, dev, torch_dtype)
    lengths = token_byte_lengths(data.tokenizer_info)
    results = {}
    for split, w in windows.items():
        targets = w[:, 1:].cpu().numpy()
        n_bytes = int(lengths[targets].sum(dtype=np.int64))
        n_tokens = int(targets.size)
        loss = losses[split]
        results[split] = SplitEval(
            loss=loss,
            perplexity=math.exp(loss),
            bits_per_byte=loss * n_tokens / (math.log(2) * n_bytes) if n_bytes else math.nan,
            tokens=n_tokens,
            bytes=n_bytes,
        )
    return EvalReport(
        model=str(source),
        dataset=data.name,
        splits=results,
        batch_size=cfg.data.batch_size,
        eval_iters=cfg.eval.eval_iters,
        block_size=block,
        seed=cfg.system.seed,
        device=str(dev),
        dtype=str(torch_dtype).removeprefix("torch."),
    )
