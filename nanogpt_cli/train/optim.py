"""The optimizers (AdamW with decay on matrices only; Muon for the blocks' matrices with
AdamW for the rest) and the warmup + cosine learning-rate schedule."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from ..config import OptimConfig
from ..errors import ConfigError


def build_optimizer(model: nn.Module, cfg: OptimConfig) -> torch.optim.Optimizer:
    """The optimizer ``cfg.optimizer`` names over ``model``'s trainable parameters."""
    if cfg.optimizer == "muon":
        return build_muon(model, cfg)
    return _adamw([p for p in model.parameters() if p.requires_grad], cfg)


def _adamw(params: list[nn.Parameter], cfg: OptimConfig) -> torch.optim.AdamW:
    """AdamW where weight decay applies to >= 2-D tensors (matmul weights, embeddings) only.

    Biases and LayerNorm gains are left undecayed. The fused kernel is used where torch has
    one for the device: on CPU it is several times faster than the per-tensor loop, and
    on CUDA one kernel replaces hundreds of launches.
    """
    groups = [
        {"params": [p for p in params if p.dim() >= 2], "weight_decay": cfg.weight_decay},
        {"params": [p for p in params if p.dim() < 2], "weight_decay": 0.0},
    ]
    kwargs = {"lr": cfg.learning_rate, "betas": (cfg.beta1, cfg.beta2)}
    try:
        return torch.optim.AdamW(groups, fused=True, **kwargs)
    except RuntimeError:  # no fused kernel for this device in this torch
        return torch.optim.AdamW(groups, **kwargs)


def muon_parameters(model: nn.Module) -> tuple[list[nn.Parameter], list[nn.Parameter]]:
    """``model``'s trainable parameters split into Muon's (the 2-D weight matrices inside
    the transformer blocks) and AdamW's (embeddings, the output head, gains, biases).

    Muon orthogonalises a hidden layer's update; the embeddings and the head map tokens,
    not hidden features, and stay with AdamW as in modded-nanogpt and nanochat."""
    muon, other = [], []
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        in_block = name.startswith("transformer.h.")
        (muon if in_block and p.dim() == 2 else other).append(p)
    return muon, other


def build_muon(model: nn.Module, cfg: OptimConfig) -> MuonAdamW:
    """``torch.optim.Muon`` at ``cfg.muon_lr`` for the blocks' matrices (no weight decay,
    as nanochat), and AdamW as ``--optimizer adamw`` builds it for the rest."""
    if not hasattr(torch.optim, "Muon"):
        raise ConfigError(
            f"--optimizer muon needs torch.optim.Muon, which torch {torch.__version__} does "
            "not have; install torch 2.9 or newer, or use --optimizer adamw"
        )
    muon_params, other = muon_parameters(model)
    if not muon_params:
        raise ConfigError("--optimizer muon: the model has no weight matrices in its blocks")
    muon = torch.optim.Muon(
        muon_params, lr=cfg.muon_lr, momentum=cfg.muon_momentum, weight_decay=0.0
    )
    return MuonAdamW(muon, _adamw(other, cfg))


class MuonAdamW(torch.optim.Optimizer):
    """Muon and AdamW stepped as one optimizer.

    ``param_groups`` are Muon's group, then AdamW's two (the same dicts: the schedule sets
    each group's ``lr``), and ``state_dict()`` is the one ``torch.optim.Optimizer`` writes
    for those groups (parameters numbered across them), so checkpoints save, convert and
    shard it like AdamW's alone.
    """

    def __init__(self, muon: torch.optim.Optimizer, adamw: torch.optim.AdamW) -> None:
        # No Optimizer.__init__: the parameters, groups and state are the two optimizers'.
        self.muon, self.adamw = muon, adamw
        self.defaults: dict[str, Any] = {}

    @property  # type: ignore[override]
    def param_groups(self) -> list[dict[str, Any]]:
        return self.muon.param_groups + self.adamw.param_groups

    @property  # type: ignore[override]
    def state(self) -> dict[torch.Tensor, Any]:
        return {**self.muon.state, **self.adamw.state}

    def zero_grad(self, set_to_none: bool = True) -> None:
        self.muon.zero_grad(set_to_none)
        self.adamw.zero_grad(set_to_none)

    def step(self, closure: Callable[[], float] | None = None) -> None:  # type: ignore[override]
        self.muon.step()
        self.adamw.step()

    def state_dict(self) -> dict[str, Any]:
        muon, adamw = self.muon.state_dict(), self.adamw.state_dict()
        shift = sum(len(g["params"]) for g in muon["param_groups"])
        return {
            "state": {**muon["state"], **{i + shift: s for i, s in adamw["state"].items()}},
            "param_groups": muon["param_groups"]
            + [{**g, "params": [i + shift for i in g["params"]]} for g in adamw["param_groups"]],
        }

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        groups = state_dict["param_groups"]
        if len(groups) != len(self.param_groups):
            raise ValueError(
                f"the state has {len(groups)} parameter groups, this optimizer "
                f"{len(self.param_groups)}"
            )
        n_muon = len(self.muon.param_groups)
        muon_groups, adamw_groups = groups[:n_muon], groups[n_muon:]
        shift = sum(len(g["params"]) for g in muon_groups)
        state = {int(i): s for i, s in state_dict["state"].items()}
        self.muon.load_state_dict(
            {"state": {i: s for i, s in state.items() if i < shift}, "param_groups": muon_groups}
        )
        self.adamw.load_state_dict(
            {
                "state": {i - shift: s for i, s in state.items() if i >= shift},
                "param_groups": [
                    {**g, "params": [i - shift for i in g["params"]]} for g in adamw_groups
                ],
            }
        )

    def __repr__(self) -> str:
        return f"MuonAdamW({self.muon!r}, {self.adamw!r})"


def update_seconds(optimizer: torch.optim.Optimizer, sync: Callable[[], None]) -> float:
    """Seconds of one update of ``optimizer``'s Muon matrices, timed without touching the
    run: one scratch matrix of each shape, stepped by a scratch ``torch.optim.Muon`` (once
    to warm up, once timed), times the number of matrices of that shape (the cost of an
    orthogonalisation depends on the shape alone). AdamW's update, a small part of a step,
    counts as none (and so does every optimizer but Muon)."""
    if not isinstance(optimizer, MuonAdamW):
        return 0.0
    import time
    from collections import Counter

    group = optimizer.muon.param_groups[0]
    first = group["params"][0]
    total = 0.0
    for shape, count in Counter(tuple(p.shape) for p in group["params"]).items():
        scratch = torch.ones(shape, device=first.device, dtype=first.dtype, requires_grad=True)
        scratch.grad = torch.ones_like(scratch)
        muon = torch.optim.Muon([scratch], lr=group["lr"], momentum=group["momentum"])
        muon.step()
        sync()
        start = time.perf_counter()
        muon.step()
        sync()
        total += (time.perf_counter() - start) * count
    return total


def optimizer_name(state: dict[str, Any]) -> str:
    """Which optimizer saved ``state`` (an ``optimizer.state_dict()``): ``muon`` where a
    group has Muon's hyperparameters, else ``adamw``."""
    groups = state.get("param_groups") or []
    return "muon" if any(isinstance(g, dict) and "ns_steps" in g for g in groups) else "adamw"


def is_muon_group(group: dict[str, Any]) -> bool:
    return "ns_steps" in group


def set_learning_rate(optimizer: torch.optim.Optimizer, lr: float, cfg: OptimConfig) -> None:
    """Set the schedule's ``lr`` (``learning_rate``) on every group: Muon's groups get it
    scaled by ``muon_lr / learning_rate``, so both follow the same warmup and decay."""
    for group in optimizer.param_groups:
        group["lr"] = lr * cfg.muon_lr / cfg.learning_rate if is_muon_group(group) else lr


def apply_hyperparameters(optimizer: torch.optim.Optimizer, cfg: OptimConfig) -> None:
    """Set weight decay, betas and momentum from ``cfg`` on an optimizer made by
    ``build_optimizer``.

    A loaded optimizer state carries the hyperparameters of the run that saved it; a resumed
    run uses its own config instead (the learning rate is set by the schedule every step).
    """
    adamw = optimizer.adamw if isinstance(optimizer, MuonAdamW) else optimizer
    decay, no_decay = adamw.param_groups
    decay["weight_decay"], no_decay["weight_decay"] = cfg.weight_decay, 0.0
    for group in adamw.param_groups:
        group["betas"] = (cfg.beta1, cfg.beta2)
        # and this machine's kernel choice (a state saved by nanoGPT's unfused optimizer)
        group["fused"] = adamw.defaults.get("fused")
    for group in optimizer.param_groups:
        if is_muon_group(group):
            group["momentum"], group["weight_decay"] = cfg.muon_momentum, 0.0


def describe(optimizer: torch.optim.Optimizer, cfg: OptimConfig) -> str:
    """One line on the optimizer's groups, for the run's log."""
    adamw = optimizer.adamw if isinstance(optimizer, MuonAdamW) else optimizer
    decayed, undecayed = (len(g["params"]) for g in adamw.param_groups)
    text = (
        f"AdamW{' (fused)' if adamw.defaults.get('fused') else ''}: {decayed} tensors with "
        f"weight decay {cfg.weight_decay}, {undecayed} without"
    )
    if isinstance(optimizer, MuonAdamW):
        n = sum(len(g["params"]) for g in optimizer.muon.param_groups)
        text = f"Muon: {n} block matrices at lr {cfg.muon_lr:g}; " + text
    return text


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
