"""GELU's tanh approximation computed through a sigmoid, swapped in for ``nn.GELU``.

0.5 * (1 + tanh(u)) == sigmoid(2u) exactly; only the floating-point path differs (about
1e-7). On CPUs where ATen's vectorized tanh is slower than its sigmoid, this forward is
the faster one (docs/benchmarks.md, "CPU kernels"). Backward is ATen's one-pass tanh-GELU
derivative from ``x``, the only tensor kept: keeping ``sigmoid(2u)`` as well for a backward
of several elementwise passes made the whole training step slower, although in isolation
that version was the faster one.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F

from .selfcheck import assert_close

_C1 = 2.0 * math.sqrt(2.0 / math.pi)
_C2 = _C1 * 0.044715
# Below this many elements (a decoding step's few positions) the one-kernel form has less
# overhead.
MIN_ELEMENTS = 1 << 15


class _SigmoidGELUTanh(torch.autograd.Function):
    """GELU, tanh approximation, as x * sigmoid(2u) with u its tanh argument."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        c1 = x.new_tensor(_C1)
        y = torch.addcmul(c1, x, x, value=_C2).mul_(x).sigmoid_()  # sigmoid(2u)
        ctx.save_for_backward(x)
        return y.mul_(x)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> torch.Tensor:
        (x,) = ctx.saved_tensors
        return torch.ops.aten.gelu_backward(grad, x, approximate="tanh")


def sigmoid_gelu(x: torch.Tensor) -> torch.Tensor:
    """``F.gelu(x, approximate="tanh")`` through a sigmoid."""
    return _SigmoidGELUTanh.apply(x)  # type: ignore[no-any-return]


class SigmoidGELU(nn.GELU):
    """``nn.GELU`` whose tanh approximation takes the sigmoid form on large CPU inputs."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if (
            self.approximate == "tanh"
            and x.device.type == "cpu"
            and x.numel() >= MIN_ELEMENTS
            and not torch.compiler.is_compiling()
            and not torch.is_autocast_enabled("cpu")
        ):
            return sigmoid_gelu(x)
        return F.gelu(x, approximate=self.approximate)


# -- self-check and timing (apply_kernels runs them) -----------------------------------------


def check() -> None:
    """``sigmoid_gelu`` gives ``F.gelu``'s values and gradients (raises otherwise)."""
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(64, 48, generator=generator).requires_grad_()
    ours, ref = sigmoid_gelu(x), F.gelu(x, approximate="tanh")
    assert_close(ours, ref, "output")
    grad = torch.randn(ref.shape, generator=generator)
    got = torch.autograd.grad(ours, x, grad)[0]
    want = torch.autograd.grad(ref, x, grad)[0]
    assert_close(got, want, "gradient")


def measure() -> tuple[float, float]:
    """Forward and backward on a (768, 512) activation: sigmoid form, then ``F.gelu``."""
    x = torch.randn(768, 512, requires_grad=True)
    grad = torch.randn(768, 512)

    def run(gelu: object) -> None:
        torch.autograd.grad(gelu(x), x, grad)  # type: ignore[operator]

    from .calibrate import best_times

    return best_times(
        lambda: run(sigmoid_gelu), lambda: run(lambda t: F.gelu(t, approximate="tanh")), 20
    )
