"""The loss of the output layer without keeping its logits, for large vocabularies on CPU.

On CPU the loss head of a large vocabulary is memory-bound around its matmuls: the usual
path writes the logits, their log-softmax, a zero-filled gradient and the softmax gradient,
each a (tokens x vocab) tensor, and reads them back. Here the logits are turned into their
own gradient in place (softmax, minus one at the target) and multiplied out at once, in the
forward pass; backward only scales the two gradients. docs/benchmarks.md ("CPU kernels")
has the measurements.
"""

from __future__ import annotations

from typing import Any

import torch
from torch.nn import functional as F

from ..model import LMHead
from . import onednn
from .selfcheck import assert_close

# From this vocabulary size up the fused head is worth its bookkeeping; a character
# vocabulary's logits are small enough to stay in cache either way.
MIN_VOCAB = 4096


class _LinearCrossEntropy(torch.autograd.Function):
    """Mean cross-entropy of ``h @ weight.T`` with the gradients computed in the forward pass.

    The mean's per-token scale is applied to the two small operands (the hidden states, the
    input gradient) instead of the (tokens x vocab) logits. The softmax is ATen's, in place
    (the same bits as out of place). The log-sum-exp comes from the row's largest logit and
    largest probability (which is 1 / the row's sum of exponentials, never below 1 / vocab),
    so it stays exact where a target's probability underflows. No second (tokens x vocab)
    tensor is written. Equal to ``F.cross_entropy`` up to float rounding, gradients
    included. Targets equal to -1 are ignored (all of them: a NaN loss and zero gradients,
    as ``F.cross_entropy``). With ``fast_products`` the products go through oneDNN.
    """

    @staticmethod
    def forward(  # type: ignore[override]
        ctx: Any, h: torch.Tensor, weight: torch.Tensor, targets: torch.Tensor, fast_products: bool
    ) -> torch.Tensor:
        z = onednn.linear(h, weight) if fast_products else F.linear(h, weight)  # (N, V) logits
        valid = targets != -1
        safe = torch.where(valid, targets, 0)[:, None]
        picked = z.gather(1, safe).squeeze(1)
        count = valid.sum()
        top = z.amax(dim=1)
        torch.softmax(z, dim=1, out=z)
        lse = top - z.amax(dim=1).log()  # the largest probability is 1 / sum(exp(z - top))
        loss = torch.where(valid, lse - picked, 0.0).sum() / count
        need_h, need_w = ctx.needs_input_grad[0], ctx.needs_input_grad[1]
        if need_h or need_w:
            # d(mean loss)/d(logits) = (softmax - one-hot target) * scale, a per-row scale
            # applied to the products' small operands instead of the (tokens x vocab) z.
            scale = valid.to(z.dtype)[:, None] / count.clamp(min=1)
            z.scatter_add_(1, safe, z.new_full(safe.shape, -1.0))
            grad_h = grad_w = None
            if need_h:
                grad_h = onednn.mm_weight_copied(z, weight) if fast_products else z @ weight
                grad_h.mul_(scale)
            if need_w:
                grad_w = onednn.mm(z.t(), h * scale) if fast_products else z.t() @ (h * scale)
            ctx.save_for_backward(grad_h, grad_w)
        return loss

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        grad_h, grad_w = ctx.saved_tensors
        if not bool(grad == 1):  # a scaled loss (gradient accumulation): scale the gradients
            grad_h = grad_h * grad if grad_h is not None else None
            grad_w = grad_w * grad if grad_w is not None else None
        return grad_h, grad_w, None, None


def linear_cross_entropy(
    h: torch.Tensor, weight: torch.Tensor, targets: torch.Tensor, fast_products: bool = False
) -> torch.Tensor:
    """``F.cross_entropy(h @ weight.T, targets, ignore_index=-1)`` for 2-D ``h`` without
    keeping the logits for backward. Where no gradient is wanted (evaluation, ``no_grad``)
    it is the plain loss: computing gradients there would triple the work."""
    if torch.is_grad_enabled() and (h.requires_grad or weight.requires_grad):
        return _LinearCrossEntropy.apply(h, weight, targets, fast_products)  # type: ignore[no-any-return]
    logits = onednn.linear(h, weight) if fast_products else F.linear(h, weight)
    return F.cross_entropy(logits, targets, ignore_index=-1)


class FusedLossHead(LMHead):
    """``LMHead`` whose ``loss`` is ``linear_cross_entropy`` where it applies: float32 on
    the CPU, no bias, not under autocast or torch.compile. ``fast_products`` is set when the
    oneDNN products are on as well."""

    fast_products = False

    def loss(self, x: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        if (
            x.device.type == "cpu"
            and x.dtype == self.weight.dtype == torch.float32
            and self.bias is None
            and not torch.is_autocast_enabled("cpu")
            and not torch.compiler.is_compiling()
        ):
            flat = x.reshape(-1, x.size(-1))
            return linear_cross_entropy(flat, self.weight, targets.reshape(-1), self.fast_products)
        return super().loss(x, targets)


# -- self-check and timing (apply_kernels runs them) -----------------------------------------


def check(fast_products: bool) -> None:
    """``linear_cross_entropy`` gives ``F.cross_entropy``'s loss and gradients, with ignored
    targets and a scaled loss (raises otherwise)."""
    generator = torch.Generator().manual_seed(0)
    h = torch.randn(40, 16, generator=generator).requires_grad_()
    w = torch.randn(30, 16, generator=generator).requires_grad_()
    targets = torch.randint(0, 30, (40,), generator=generator)
    targets[::6] = -1
    ref = F.cross_entropy(h @ w.t(), targets, ignore_index=-1)
    want = torch.autograd.grad(ref / 3, (h, w))
    ours = linear_cross_entropy(h, w, targets, fast_products)
    got = torch.autograd.grad(ours / 3, (h, w))
    assert_close(ours, ref, "loss")
    for g1, g2 in zip(got, want, strict=True):
        assert_close(g1, g2, "gradient")


def measure(fast_products: bool) -> tuple[float, float]:
    """Forward and backward of a loss head of 256 tokens, 128 wide, over 8192 tokens: fused,
    then the logits and ``F.cross_entropy``."""
    h = torch.randn(256, 128, requires_grad=True)
    w = torch.randn(8192, 128, requires_grad=True)
    targets = torch.randint(0, 8192, (256,))

    def fused() -> None:
        loss = linear_cross_entropy(h, w, targets, fast_products)
        torch.autograd.grad(loss, (h, w))

    def plain() -> None:
        logits = onednn.linear(h, w) if fast_products else F.linear(h, w)
        torch.autograd.grad(F.cross_entropy(logits, targets), (h, w))

    from .calibrate import REPEATS, best_times

    return best_times(fused, plain, REPEATS)
