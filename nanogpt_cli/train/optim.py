"""AdamW with decay on matrices only, and the warmup + cosine learning-rate schedule."""

from __future__ import annotations

import math

import torch
from torch import nn

from ..config import OptimConfig


def build_optimizer(model: nn.Module, cfg: OptimConfig) -> torch.optim.AdamW:
    """AdamW where weight decay applies to >= 2-D tensors (matmul weights, embeddings) only.

    Biases and LayerNorm gains are left undecayed. The fused kernel is used where torch has
    one for the device: on CPU it is several times faster than the per-tensor loop, and
    on CUDA one kernel replaces hundreds of launches.
    """
    params = [p for p in model.parameters() if p.requires_grad]
    groups = [
        {"params": [p for p in params if p.dim() >= 2], "weight_decay": cfg.weight_decay},
        {"params": [p for p in params if p.dim() < 2], "weight_decay": 0.0},
    ]
    kwargs = {"lr": cfg.learning_rate, "betas": (cfg.beta1, cfg.beta2)}
    try:
        return torch.optim.AdamW(groups, fused=True, **kwargs)
    except RuntimeError:  # no fused kernel for this device in this torch
        return torch.optim.AdamW(groups, **kwargs)


def apply_hyperparameters(optimizer: torch.optim.Optimizer, cfg: OptimConfig) -> None:
    """Set weight decay and betas from ``cfg`` on an optimizer made by ``build_optimizer``.

    A loaded optimizer state carries the hyperparameters of the run that saved it; a resumed
    run uses its own config instead (the learning rate is set by the schedule every step).
    """
    decay, no_decay = optimizer.param_groups
    decay["weight_decay"], no_decay["weight_decay"] = cfg.weight_decay, 0.0
    for group in optimizer.param_groups:
        group["betas"] = (cfg.beta1, cfg.beta2)
        # and this machine's kernel choice (a state saved by nanoGPT's unfused optimizer)
        group["fused"] = optimizer.defaults.get("fused")


def total_norm(params: list[torch.Tensor]) -> torch.Tensor:
    """The gradients' total norm (over all shards with FSDP)."""
    grads = [p.grad for p in params if p.grad is not None]
    if not grads:
        return torch.zeros(())
    norm = torch.nn.utils.get_total_norm(grads)
    return norm.full_tensor() if hasattr(norm, "full_tensor") else norm


def clip_gradients(params: list[torch.Tensor], max_norm: float) -> torch.Tensor:
    """Scale gradients so their total norm is at most ``max_norm``; returns the norm before.

    On CPU the norm is already on the host, so gradients are only rescaled when clipping
    fires; elsewhere they are always scaled (by at most 1), which needs no host-device sync.
    """
    norm = total_norm(params)
    if norm.device.type != "cpu" or norm > max_norm:
        torch.nn.utils.clip_grads_with_norm_(params, max_norm, norm)
    return norm


def learning_rate(it: int, cfg: OptimConfig) -> float:
    """Linear warmup to ``learning_rate``, cosine decay to ``min_lr`` at ``lr_decay_iters``:
    nanoGPT's ``get_lr``. With ``lr_decay_iters`` at or below ``warmup_iters`` the warmup is
    followed by ``min_lr`` (where nanoGPT divides by zero at equal values)."""
    if not cfg.decay_lr:
        return cfg.learning_rate
    if it < cfg.warmup_iters:
        return cfg.learning_rate * (it + 1) / (cfg.warmup_iters + 1)
    if it > cfg.lr_decay_iters:
        return cfg.min_lr
    span = cfg.lr_decay_iters - cfg.warmup_iters
    ratio = (it - cfg.warmup_iters) / span if span > 0 else 1.0
    coeff = 0.5 * (1.0 + math.cos(math.pi * ratio))  # 1 -> 0
    return cfg.min_lr + coeff * (cfg.learning_rate - cfg.min_lr)
