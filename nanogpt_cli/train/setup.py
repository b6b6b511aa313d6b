"""Setting up the training step: what ``Trainer`` and ``nanogpt bench`` share.

The device and precision, the micro-batches per step, the model on its device with the CPU
kernels applied, the distributed wrapping, the optimizer, the gradient scaler and the
``TrainStep`` that runs them, all built here in one fixed order, so a benchmark times
exactly the step a run trains with.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from ..config import TrainConfig
from ..data.loader import BatchLoader, RankBatches
from ..errors import ConfigError
from ..kernels import apply_kernels
from ..model import GPT
from ..runtime import resolve_device, resolve_dtype, setup_backends, use_compile
from .distributed import Dist, wrap_model
from .optim import build_optimizer
from .step import TrainStep


def micro_batches_per_step(cfg: TrainConfig) -> int:
    """Micro-batches in one optimizer step over all processes: from ``total_batch_tokens``
    when it is set, else ``gradient_accumulation_steps``."""
    if cfg.data.total_batch_tokens is not None:
        return cfg.data.total_batch_tokens // (cfg.data.batch_size * cfg.model.block_size)
    return cfg.data.gradient_accumulation_steps


def micro_batches_per_process(cfg: TrainConfig, world: int) -> int:
    """Each of ``world`` processes' share of a step's micro-batches."""
    total = micro_batches_per_step(cfg)
    if total % world:
        raise ConfigError(
            f"{total} micro-batches per step do not divide among {world} processes; set "
            f"--gradient-accumulation-steps (or --total-batch-tokens) to a multiple of {world}"
        )
    return total // world


def start_device(cfg: TrainConfig, dist: Dist | None = None) -> tuple[torch.device, torch.dtype]:
    """The device and precision of a run, torch's settings for them, and the seed set (the
    same initial weights in every process)."""
    device = dist.device if dist else resolve_device(cfg.system.device)
    dtype = resolve_dtype(cfg.system.dtype, device)
    setup_backends(device)
    torch.manual_seed(cfg.system.seed)
    return device, dtype


@dataclass
class StepSetup:
    """What runs a training step, and how much it processes."""

    device: torch.device
    dtype: torch.dtype
    model: GPT
    optimizer: torch.optim.Optimizer
    scaler: torch.amp.GradScaler
    step: TrainStep
    micro_batches: int  # per optimizer step, over all processes
    tokens_per_step: int  # over all processes
    kernels: list[str]  # the CPU kernels applied (kernels.apply_kernels)


def build_step(
    cfg: TrainConfig,
    model: GPT,
    device: torch.device,
    dtype: torch.dtype,
    dist: Dist | None = None,
) -> StepSetup:
    """The training step of ``model`` (weights in place): moved to ``device``, the CPU
    kernels applied (unless it is compiled), wrapped (DDP) or sharded in place (FSDP) in a
    distributed run, and an optimizer and scaler built over its parameters."""
    world = dist.world if dist else 1
    per_process = micro_batches_per_process(cfg, world)
    model.to(device)
    compiled = use_compile(cfg.system.compile, device)
    # torch.compile picks its own kernels; the CPU kernels are for eager runs. In a
    # distributed run the first process applies them alone (timing them, if this machine
    # has not, without the others' load); the others then read its verdicts.
    if dist is not None and not dist.main:
        dist.barrier()
    kernels = [] if compiled else apply_kernels(model, cfg.system.cpu_kernels)
    if dist is not None and dist.main:
        dist.barrier()
    module, sync = wrap_model(model, dist) if dist else (model, None)
    optimizer = build_optimizer(model, cfg.optim)
    scaler = torch.amp.GradScaler(device.type, enabled=dtype == torch.float16)
    step = TrainStep(
        model,
        optimizer,
        scaler,
        grad_accum=per_process,
        grad_clip=cfg.optim.grad_clip,
        device=device,
        dtype=dtype,
        compile=compiled,
        module=module,
        sync=sync,
        dist=dist,
    )
    micro = per_process * world
    return StepSetup(
        device=device,
        dtype=dtype,
        model=model,
        optimizer=optimizer,
        scaler=scaler,
        step=step,
        micro_batches=micro,
        tokens_per_step=micro * cfg.data.batch_size * model.config.block_size,
        kernels=kernels,
    )


def train_batches(
    cfg: TrainConfig,
    path: Path,
    block_size: int,
    device: torch.device,
    dist: Dist | None = None,
) -> RankBatches:
    """The training batches of ``path`` (a split's tokens) for this process: the shared
    stream of micro-batches, each process taking its own share of every step's."""
    world = dist.world if dist else 1
    loader = BatchLoader(path, block_size, cfg.data.batch_size, device, seed=cfg.system.seed)
    return RankBatches(
        loader,
        rank=dist.rank if dist else 0,
        world=world,
        per_step=micro_batches_per_step(cfg),
    )
