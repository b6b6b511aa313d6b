"""One optimizer step: the part of training that ``nanogpt train`` loops over and
``nanogpt bench`` times.

Forward and backward over ``grad_accum`` micro-batches (the next batch is fetched while the
current one's backward runs, so a CUDA copy overlaps it), gradient clipping, the optimizer
and scaler update. Losses and gradient norms stay on the device until ``read()``: the step
itself never waits for the GPU.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from typing import Any

import torch

from ..log import get_logger
from .device import autocast
from .optim import clip_gradients

logger = get_logger(__name__)

Batch = tuple[torch.Tensor, torch.Tensor]
FOLD_AT = 1024  # micro-step losses kept before they are summed into one


class TrainStep:
    """Runs optimizer steps of ``model``; ``compile`` wraps its forward in torch.compile,
    falling back to eager if compilation fails (it happens on the first call).

    In a distributed run, ``module`` is the wrapper to train through (DDP), ``sync(last)``
    the context that lets a micro-batch's backward synchronise gradients only when it is
    the step's last, and ``dist`` averages the reported loss over the processes.
    """

    def __init__(
        self,
        model: torch.nn.Module,
        optimizer: torch.optim.Optimizer,
        scaler: torch.amp.GradScaler,
        *,
        grad_accum: int,
        grad_clip: float,
        device: torch.device,
        dtype: torch.dtype,
        compile: bool = False,
        module: torch.nn.Module | None = None,
        sync: Callable[[bool], Any] | None = None,
        dist: Any = None,
    ) -> None:
        self.model, self.optimizer, self.scaler = model, optimizer, scaler
        self.grad_accum, self.grad_clip = grad_accum, grad_clip
        self.device, self.dtype = device, dtype
        self.params = [p for p in model.parameters() if p.requires_grad]
        self.compiled = compile
        self.module = module or model
        self._sync = sync or (lambda last: contextlib.nullcontext())
        self._dist = dist
        self._forward_model: Any = torch.compile(self.module) if compile else self.module
        # Since the last read: the micro-steps' losses and the steps' gradient norms, kept as
        # device tensors (appending costs no kernel launch; read() reduces them at once).
        self._losses: list[torch.Tensor] = []
        self._norms: list[torch.Tensor] = []
        self._steps = 0

    def __call__(self, x: torch.Tensor, y: torch.Tensor, fetch: Callable[[], Batch]) -> Batch:
        """One optimizer step starting from batch ``(x, y)``; returns the batch after it."""
        for micro in range(self.grad_accum):
            with self._sync(micro == self.grad_accum - 1):
                with autocast(self.device, self.dtype):
                    _, loss = self._forward(x, y)
                    loss = loss / self.grad_accum
                x, y = fetch()
                self.scaler.scale(loss).backward()
            self._losses.append(loss.detach())
        if self.grad_clip > 0:
            self.scaler.unscale_(self.optimizer)
            self._norms.append(clip_gradients(self.params, self.grad_clip))
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.optimizer.zero_grad(set_to_none=True)
        self._steps += 1
        if len(self._losses) > FOLD_AT:  # a very long log interval: keep the lists short
            self._losses = [torch.stack(self._losses).sum()]
        return x, y

    def read(self) -> tuple[float, float | None, float | None]:
        """Mean loss, mean gradient norm and clipping rate over the steps since the last
        read (norm and rate are None without clipping). The one host-device sync.

        Steps whose gradients overflowed (fp16; the scaler skips them) are left out of the
        mean norm, which they would make infinite.
        """
        steps = max(self._steps, 1)
        loss = torch.stack(self._losses).sum() if self._losses else torch.zeros(())
        parts = [loss.float().reshape(1)]
        if self._norms:
            norms = torch.stack(self._norms).float()
            finite = norms.isfinite()
            parts += [
                torch.where(finite, norms, 0).sum().reshape(1),
                finite.sum().reshape(1).float(),
                (norms > self.grad_clip).sum().reshape(1).float(),
            ]
        values = torch.cat([p.to(parts[0].device) for p in parts])
        if self._dist is not None:  # the loss is each process's own; norms are global
            values[0] = self._dist.mean(values[:1])[0]
        values = values.tolist()
        self._losses, self._norms, self._steps = [], [], 0
        if len(values) == 1:
            return values[0] / steps, None, None
        total, norm_sum, n_finite, clipped = values
        mean_norm = norm_sum / n_finite if n_finite else float("inf")
        return total / steps, mean_norm, clipped / steps

    def _forward(self, x: torch.Tensor, y: torch.Tensor) -> Any:
        if self._forward_model is self.module:
            return self.module(x, y)
        try:
            return self._forward_model(x, y)
        except Exception as e:  # compilation happens on the first call, and can fail there
            logger.warning(f"torch.compile failed, continuing without it: {_first_line(e)}")
            self._forward_model = self.module
            self.compiled = False
            return self.module(x, y)


def _first_line(e: BaseException) -> str:
    text = str(e).strip()
    return text.splitlines()[0] if text else type(e).__name__
