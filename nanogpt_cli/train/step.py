"""One optimizer step: the part of training that ``nanogpt train`` loops over and
``nanogpt bench`` times.

Forward and backward over ``grad_accum`` micro-batches (the next batch is fetched while the
current one's backward runs, so a CUDA copy overlaps it), gradient clipping, the optimizer
and scaler update. Losses and gradient norms stay on the device until ``read()``: the step
itself never waits for the GPU.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

from ..errors import first_line
from ..log import get_logger
from ..runtime import autocast, synchronize
from .optim import clip_gradients, total_norm, update_seconds

logger = get_logger(__name__)

Batch = tuple[torch.Tensor, torch.Tensor]


@dataclass
class StepTimes:
    """What ``TrainStep.measure`` found: the first forward and backward pass (compilation
    included, where the model is compiled), one after it, a whole optimizer step made of
    such passes, and an evaluation forward pass of the same batch."""

    first_s: float
    micro_s: float
    step_s: float
    eval_s: float


@dataclass
class StepReport:
    """The steps since the last read: mean loss of the good ones, mean gradient norm and
    clipping rate (None without clipping), and per step whether it was skipped (bad), its
    loss and its gradient norm."""

    loss: float
    grad_norm: float | None
    clip_frac: float | None
    bad: list[bool]
    losses: list[float]
    norms: list[float]


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
        # Since the last read, one entry per step, kept as device tensors (appending costs
        # no kernel launch; read() reduces them at once): loss, gradient norm, skipped.
        self._losses: list[torch.Tensor] = []
        self._norms: list[torch.Tensor] = []
        self._bad: list[torch.Tensor] = []

    def __call__(self, x: torch.Tensor, y: torch.Tensor, fetch: Callable[[], Batch]) -> Batch:
        """One optimizer step starting from batch ``(x, y)``; returns the batch after it.

        A step whose loss or gradient is not finite changes nothing: the optimizer skips it
        (with fp16, GradScaler skips gradient overflows as usual).
        """
        step_loss: torch.Tensor | None = None
        for micro in range(self.grad_accum):
            with self._sync(micro == self.grad_accum - 1):
                with autocast(self.device, self.dtype):
                    _, loss = self._forward(x, y)
                    loss = loss / self.grad_accum
                x, y = fetch()
                self.scaler.scale(loss).backward()
            step_loss = loss.detach() if step_loss is None else step_loss + loss.detach()
        assert step_loss is not None
        self.scaler.unscale_(self.optimizer)  # (nothing to do without fp16)
        if self.grad_clip > 0:
            norm = clip_gradients(self.params, self.grad_clip)
        else:
            norm = total_norm(self.params)
        if self.scaler.is_enabled():
            # Overflows are the scaler's business; only a non-finite loss counts as bad.
            bad = ~torch.isfinite(step_loss)
            self.scaler.step(self.optimizer)
        else:
            bad = ~torch.isfinite(norm)  # a NaN or inf loss makes the gradients so too
            self._guarded_step(bad)
        self.scaler.update()
        self.optimizer.zero_grad(set_to_none=True)
        self._losses.append(step_loss.float())
        self._norms.append(norm.float())
        self._bad.append(bad)
        return x, y

    def measure(self, x: torch.Tensor, y: torch.Tensor, budget_s: float = 2.0) -> StepTimes:
        """Time forward and backward passes on ``(x, y)`` (one untimed first, then more
        until ``budget_s`` is spent, at most three; one alone if it took longer than that
        without compiling; always two in a distributed run) and one evaluation forward pass,
        without
        changing the run: the optimizer never steps, the gradients are dropped and the
        random generators put back. A step's time is ``grad_accum`` passes and Muon's update
        (``optim.update_seconds``; AdamW's, a small part, is not included)."""
        from .rng import capture_rng, restore_rng

        rng = capture_rng()
        mps_rng = torch.mps.get_rng_state() if self.device.type == "mps" else None
        try:
            times: list[float] = []
            # The processes of a distributed run make the same passes (each one's backward
            # joins collectives), so their count cannot depend on each process's clock.
            fixed = self._dist is not None
            while (
                len(times) < 3
                if fixed
                else not times or (len(times) < 4 and sum(times[1:]) < budget_s)
            ):
                if not fixed and len(times) == 1 and times[0] > budget_s and not self.compiled:
                    break  # one long eager pass is its own estimate (a warm-up is small)
                synchronize(self.device)
                start = time.perf_counter()
                with self._sync(True):
                    with autocast(self.device, self.dtype):
                        _, loss = self._forward(x, y)
                    loss.backward()
                synchronize(self.device)
                times.append(time.perf_counter() - start)
            self.optimizer.zero_grad(set_to_none=True)
            was_training = self.model.training
            self.model.eval()
            with torch.no_grad(), autocast(self.device, self.dtype):
                synchronize(self.device)
                start = time.perf_counter()
                self.model(x, y, return_logits=False)
                synchronize(self.device)
                eval_s = time.perf_counter() - start
            self.model.train(was_training)
            update_s = update_seconds(self.optimizer, lambda: synchronize(self.device))
        finally:
            self.optimizer.zero_grad(set_to_none=True)
            restore_rng(rng)
            if mps_rng is not None:
                torch.mps.set_rng_state(mps_rng)
        timed = times[1:] or times
        micro_s = sorted(timed)[len(timed) // 2]
        return StepTimes(times[0], micro_s, micro_s * self.grad_accum + update_s, eval_s)

    def _guarded_step(self, bad: torch.Tensor) -> None:
        # The fused AdamW kernel skips its update where ``found_inf`` is set, the way
        # GradScaler drives it: a step with a non-finite gradient is skipped on the device.
        if all(group.get("fused") for group in self.optimizer.param_groups):
            self.optimizer.found_inf = bad.float()  # type: ignore[attr-defined]
            try:
                self.optimizer.step()
            finally:
                del self.optimizer.found_inf  # type: ignore[attr-defined]
        elif not bad.item():  # another optimizer (Muon): the host decides (a sync per step)
            self.optimizer.step()

    def skipped_since_read(self) -> int:
        """How many of this process's steps since the last ``read`` were skipped (a sync)."""
        return int(torch.stack(self._bad).sum().item()) if self._bad else 0

    def read(self) -> StepReport:
        """What happened since the last read: the one host-device sync of the loop."""
        steps = len(self._losses)
        if steps == 0:
            return StepReport(float("nan"), None, None, [], [], [])
        losses = torch.stack(self._losses)
        norms = torch.stack(self._norms)
        bad = torch.stack(self._bad)
        good = ~bad
        finite = norms.isfinite()
        sums = torch.stack(
            [
                torch.where(good, losses, 0).sum(),
                good.sum().float(),
                torch.where(finite, norms, 0).sum(),
                finite.sum().float(),
                (norms > self.grad_clip).sum().float(),
            ]
        )
        if self._dist is not None:
            # Losses are each process's own (norms are global): sum the good ones; a step
            # is bad if it was bad anywhere.
            sums[:2] = self._dist.sum(sums[:2])
            bad = self._dist.sum(bad.float()) > 0
        values = torch.cat([sums, bad.float(), losses, norms]).tolist()
        self._losses, self._norms, self._bad = [], [], []
        loss_sum, n_good, norm_sum, n_finite, clipped = values[:5]
        flags = [v > 0 for v in values[5 : 5 + steps]]
        clip = self.grad_clip > 0
        return StepReport(
            loss=loss_sum / n_good if n_good else float("nan"),
            grad_norm=(norm_sum / n_finite if n_finite else float("inf")) if clip else None,
            clip_frac=clipped / steps if clip else None,
            bad=flags,
            losses=values[5 + steps : 5 + 2 * steps],
            norms=values[5 + 2 * steps :],
        )

    def _forward(self, x: torch.Tensor, y: torch.Tensor) -> Any:
        if self._forward_model is self.module:
            return self.module(x, y, return_logits=False)
        try:
            return self._forward_model(x, y, return_logits=False)
        except Exception as e:  # compilation happens on the first call, and can fail there
            logger.warning(f"torch.compile failed, continuing without it: {first_line(e)}")
            self._forward_model = self.module
            self.compiled = False
            return self.module(x, y, return_logits=False)
