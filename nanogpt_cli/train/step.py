"""One optimizer step: the part of training that ``nanogpt train`` loops over and
``nanogpt bench`` times.

Forward and backward over ``grad_accum`` micro-batches (the next batch is fetched while the
current one's backward runs, so a CUDA copy overlaps it), gradient clipping, the optimizer
and scaler update. Losses and gradient norms stay on the device until ``read()``: the step
itself never waits for the GPU.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

from ..log import get_logger
from .device import autocast
from .optim import clip_gradients

logger = get_logger(__name__)

Batch = tuple[torch.Tensor, torch.Tensor]


class TrainStep:
    """Runs optimizer steps of ``model``; ``compile`` wraps its forward in torch.compile,
    falling back to eager if compilation fails (it happens on the first call)."""

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
    ) -> None:
        self.model, self.optimizer, self.scaler = model, optimizer, scaler
        self.grad_accum, self.grad_clip = grad_accum, grad_clip
        self.device, self.dtype = device, dtype
        self.params = [p for p in model.parameters() if p.requires_grad]
        self.compiled = compile
        self._forward_model: Any = torch.compile(model) if compile else model
        # Sums since the last read: loss, gradient norm, steps whose norm was clipped.
        self._sums = torch.zeros(3, device=device)
        self._steps = 0

    def __call__(self, x: torch.Tensor, y: torch.Tensor, fetch: Callable[[], Batch]) -> Batch:
        """One optimizer step starting from batch ``(x, y)``; returns the batch after it."""
        for _ in range(self.grad_accum):
            with autocast(self.device, self.dtype):
                _, loss = self._forward(x, y)
                loss = loss / self.grad_accum
            x, y = fetch()
            self.scaler.scale(loss).backward()
            self._sums[0] += loss.detach()
        if self.grad_clip > 0:
            self.scaler.unscale_(self.optimizer)
            norm = clip_gradients(self.params, self.grad_clip)
            self._sums[1] += norm
            self._sums[2] += norm > self.grad_clip
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.optimizer.zero_grad(set_to_none=True)
        self._steps += 1
        return x, y

    def read(self) -> tuple[float, float | None, float | None]:
        """Mean loss, mean gradient norm and clipping rate over the steps since the last
        read (norm and rate are None without clipping). The one host-device sync."""
        loss, norm, clipped = self._sums.tolist()
        steps = max(self._steps, 1)
        self._sums.zero_()
        self._steps = 0
        if self.grad_clip > 0:
            return loss / steps, norm / steps, clipped / steps
        return loss / steps, None, None

    def _forward(self, x: torch.Tensor, y: torch.Tensor) -> Any:
        if self._forward_model is self.model:
            return self.model(x, y)
        try:
            return self._forward_model(x, y)
        except Exception as e:  # compilation happens on the first call, and can fail there
            logger.warning(f"torch.compile failed, continuing without it: {_first_line(e)}")
            self._forward_model = self.model
            self.compiled = False
            return self.model(x, y)


def _first_line(e: BaseException) -> str:
    text = str(e).strip()
    return text.splitlines()[0] if text else type(e).__name__
