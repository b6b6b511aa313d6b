"""Data-parallel training over the processes torchrun starts: DDP or FSDP2.

A run is distributed when torchrun's environment says so (``WORLD_SIZE`` > 1). Each
process takes one device (``cuda:LOCAL_RANK``, or the CPU with gloo), its share of every
optimizer step's micro-batches (``data.loader.RankBatches``) and, with FSDP, its shard of
the parameters. Gradients are synchronised on the last micro-batch of a step only.
Checkpoints hold the full, unsharded state in the usual formats, so a sharded run resumes
in one process and the other way round. Every collective waits at most ``dist_timeout``
seconds: a process that stops ends the run with an error instead of a hang.
"""

from __future__ import annotations

import contextlib
import datetime
import os
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist
from torch import nn

from ..config import SystemConfig
from ..errors import DeviceError, TrainingError

# What a collective raises when a peer process died or stopped answering (gloo and NCCL
# raise RuntimeErrors, DistBackendError among them); is_peer_failure tells them from bugs.
PEER_ERRORS: tuple[type[BaseException], ...] = (RuntimeError, ConnectionError)
_PEER_SIGNS = ("gloo", "nccl", "connection", "timed out", "timeout", "peer", "broken pipe")


def under_torchrun() -> bool:
    """Whether this process was started by torchrun (or another launcher setting its
    environment) as one of several."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


@dataclass
class Dist:
    """This process's place in a distributed run."""

    rank: int
    local_rank: int
    world: int
    device: torch.device
    strategy: str

    @property
    def main(self) -> bool:
        return self.rank == 0

    def mean(self, values: torch.Tensor) -> torch.Tensor:
        """The mean over the processes of ``values`` (each process's own)."""
        values = values.clone()
        dist.all_reduce(values, op=dist.ReduceOp.SUM)
        return values / self.world

    def sum(self, values: torch.Tensor) -> torch.Tensor:
        values = values.clone()
        dist.all_reduce(values, op=dist.ReduceOp.SUM)
        return values

    def barrier(self) -> None:
        """Wait until every process gets here."""
        dist.barrier()

    def close(self) -> None:
        """Leave the process group. (c10d's worker threads can still hold the tensors of
        the last collectives after that, which is why the ``nanogpt`` entry point ends a
        distributed process without finalizing the interpreter: ``cli.app.main``.)"""
        if dist.is_initialized():
            dist.destroy_process_group()


_joined = False


def joined_process_group() -> bool:
    """Whether this process has been one of a distributed run (``init_distributed``)."""
    return _joined


def init_distributed(cfg: SystemConfig) -> Dist | None:
    """Join the process group torchrun describes; None in a single process."""
    global _joined
    if not under_torchrun():
        return None
    _joined = True
    world = int(os.environ["WORLD_SIZE"])
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    wants_cuda = cfg.device.startswith("cuda") or (
        cfg.device == "auto" and torch.cuda.is_available()
    )
    if wants_cuda:
        if not torch.cuda.is_available() or local_rank >= torch.cuda.device_count():
            raise DeviceError(
                f"process {rank} needs cuda:{local_rank}, but this machine has "
                f"{torch.cuda.device_count()} CUDA device(s); start at most that many per node"
            )
        device = torch.device("cuda", local_rank)
        torch.cuda.set_device(device)
        backend = "nccl"
    elif cfg.device in ("auto", "cpu"):
        device, backend = torch.device("cpu"), "gloo"
    else:
        raise DeviceError(
            f"distributed training runs on CUDA or the CPU, not --device {cfg.device}"
        )
    dist.init_process_group(
        backend, timeout=datetime.timedelta(seconds=cfg.dist_timeout), rank=rank, world_size=world
    )
    return Dist(rank, local_rank, world, device, cfg.strategy)


def wrap_model(model: nn.Module, d: Dist) -> tuple[nn.Module, Callable[[bool], Any]]:
    """The module to train through, and ``sync(last)``: a context for one micro-batch's
    backward that synchronises gradients only on the step's last micro-batch.

    DDP wraps the model; FSDP2 shards each transformer block, then the rest, in place (the
    model keeps its names, so its state dict maps onto the checkpoint formats).
    """
    if d.strategy == "fsdp":
        from torch.distributed.fsdp import fully_shard

        for block in model.transformer.h:  # type: ignore[attr-defined, union-attr]
            fully_shard(block)
        fully_shard(model)

        @contextlib.contextmanager
        def fsdp_sync(last: bool) -> Iterator[None]:
            model.set_requires_gradient_sync(last)  # type: ignore[operator]
            yield

        return model, fsdp_sync
    from torch.nn.parallel import DistributedDataParallel

    ddp = DistributedDataParallel(
        model, device_ids=[d.device.index] if d.device.type == "cuda" else None
    )

    def ddp_sync(last: bool) -> Any:
        return contextlib.nullcontext() if last else ddp.no_sync()

    return ddp, ddp_sync


def full_state(
    model: nn.Module, optimizer: torch.optim.Optimizer, d: Dist | None
) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """The model's full state dict and the optimizer's, in ``optimizer.state_dict()``'s own
    layout (parameters by index), on the CPU for FSDP. With FSDP every process must call
    this (it gathers the shards), and only rank 0 gets them: the others get empty dicts."""
    if d is None or d.strategy != "fsdp":
        return model.state_dict(), optimizer.state_dict()
    from torch.distributed.checkpoint.state_dict import (
        StateDictOptions,
        get_model_state_dict,
        get_optimizer_state_dict,
    )

    options = StateDictOptions(full_state_dict=True, cpu_offload=True)
    weights = get_model_state_dict(model, options=options)
    by_name = get_optimizer_state_dict(model, optimizer, options=options)
    if not d.main:  # the full state lands in rank 0 only
        return {}, {}
    return weights, _by_index(by_name)


def load_optimizer_state(
    model: nn.Module, optimizer: torch.optim.Optimizer, state: dict[str, Any], d: Dist | None
) -> None:
    """Load a full optimizer state (``optimizer.state_dict()``'s layout) into ``optimizer``,
    sharding it for FSDP."""
    if d is None or d.strategy != "fsdp":
        optimizer.load_state_dict(state)
        return
    from torch.distributed.checkpoint.state_dict import (
        StateDictOptions,
        set_optimizer_state_dict,
    )

    set_optimizer_state_dict(
        model,
        optimizer,
        _by_name(state, optimizer, model),
        options=StateDictOptions(full_state_dict=True),
    )


def _by_index(state: dict[str, Any]) -> dict[str, Any]:
    """A state keyed by parameter names (torch.distributed.checkpoint's) as one keyed by
    the parameters' positions in the groups (``optimizer.state_dict()``'s)."""
    index: dict[str, int] = {}
    groups = []
    for group in state["param_groups"]:
        ids = []
        for name in group["params"]:
            index.setdefault(name, len(index))
            ids.append(index[name])
        groups.append({**group, "params": ids})
    return {"state": {index[n]: s for n, s in state["state"].items()}, "param_groups": groups}


def _by_name(
    state: dict[str, Any], optimizer: torch.optim.Optimizer, model: nn.Module
) -> dict[str, Any]:
    names = {id(p): n for n, p in model.named_parameters()}
    order = [names[id(p)] for group in optimizer.param_groups for p in group["params"]]
    groups = [
        {**saved, "params": [order[i] for i in saved["params"]]} for saved in state["param_groups"]
    ]
    return {"state": {order[int(i)]: s for i, s in state["state"].items()}, "param_groups": groups}


def is_peer_failure(e: BaseException) -> bool:
    """Whether ``e`` came from a collective that lost its peers (not from a bug)."""
    if isinstance(e, (ConnectionError, getattr(dist, "DistError", ConnectionError))):
        return True
    text = str(e).lower()
    return any(sign in text for sign in _PEER_SIGNS)


def peer_failure(e: BaseException, resume: str) -> TrainingError:
    """The error a process reports when a collective failed: another process stopped;
    ``resume`` is the command that continues the run."""
    text = re.sub(r"\[[^\]]*\.(?:cc|cpp|h)?:\d+\]\s*", "", str(e).strip())  # gloo's file:line
    reason = text.splitlines()[0].split(". ")[0] if text else type(e).__name__
    return TrainingError(
        f"another process of the run stopped or stopped answering ({reason[:160]}); the run "
        f"ends. Continue from the last checkpoint with `{resume}`"
    )
