"""Float32 matrix products on the CPU through oneDNN instead of the BLAS.

PyTorch's CPU ``mm`` and ``linear`` call the BLAS (MKL's sgemm on x86 builds), and MKL
picks its kernels by CPU vendor: on AMD processors it runs its AVX2 code even where the CPU
has AVX-512. oneDNN, which the same torch build carries (``torch.ops.mkldnn.
_linear_pointwise``, the kernel behind inductor's CPU linear layers), picks by instruction
set. Which of the two is faster depends on the processor (docs/benchmarks.md, "CPU
kernels"); ``kernels.linear`` calibrates that on each machine. Results are float32
throughout: they equal the BLAS's up to float rounding, and the same inputs give the same
bits from run to run.

``linear`` is ``F.linear`` with that kernel for both directions: the forward product and
the two of backward (input gradient, weight gradient) are each one oneDNN product over the
operands' strided views. oneDNN reads a transposed right operand (its weight) in place
but copies a transposed left one, and reads a weight with padded rows or columns (a slice)
far slower than a dense one, so such a weight is copied first; the weight gradient is
computed in the orientation whose copies are the smaller (``onednn_mm``). The function is
differentiable once (no double backward, as with every ``once_differentiable`` function);
torch.func transforms and forward-mode AD get ``F.linear``.

``torch.ops.mkldnn._linear_pointwise`` is a private op: ``linear.check_onednn`` verifies
that it exists with the signature used here (``signature_problem``) and computes what
``F.linear`` computes, and the kernels that use it stay off where it does not.
"""

from __future__ import annotations

from typing import Any

import torch
from torch.autograd.function import once_differentiable
from torch.nn import functional as F

# The private op's arguments as this module calls it: X, W, B, attr, scalars, algorithm.
SIGNATURE = (
    "Tensor",
    "Tensor",
    "Optional[Tensor]",
    "str",
    "List[Optional[number]]",
    "Optional[str]",
)


def _op() -> Any:
    return torch.ops.mkldnn._linear_pointwise


def signature_problem() -> str | None:
    """Why this torch build's oneDNN linear op cannot be used as this module does, or None."""
    if not torch.backends.mkldnn.is_available():
        return "this torch build has no oneDNN"
    try:
        schema = _op().default._schema
    except (AttributeError, RuntimeError):
        return "this torch build has no torch.ops.mkldnn._linear_pointwise"
    found = tuple(str(a.type) for a in schema.arguments)
    if found != SIGNATURE:
        return f"torch.ops.mkldnn._linear_pointwise takes ({', '.join(found)}) here"
    return None


def _matrix(t: torch.Tensor) -> torch.Tensor:
    """``t`` as a 2-D matrix oneDNN can read in place as a product's left operand: row- or
    column-major with positive strides, rows or columns may be padded (a slice of a wider
    tensor); a broadcast gradient, with a zero stride, is copied."""
    if t.dim() != 2:
        t = t.reshape(-1, t.size(-1))
    if t.stride(1) == 1 and t.stride(0) >= t.size(1):
        return t
    if t.stride(0) == 1 and t.stride(1) >= t.size(0):
        return t
    return t.contiguous()


def _dense(t: torch.Tensor) -> bool:
    """Whether the 2-D ``t`` is row- or column-major without padding."""
    return t.is_contiguous() or t.t().is_contiguous()


def _weight(t: torch.Tensor) -> torch.Tensor:
    """``t`` as oneDNN's weight (a product's right operand): row- or column-major without
    padding, else copied. oneDNN reads a padded weight (a slice of a wider matrix, or the
    transposed view of one, as a sliced input's is in its weight gradient) orders of
    magnitude slower than a dense copy of it."""
    return t if _dense(t) else t.contiguous()


def _product(a: torch.Tensor, b: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
    """``a @ b.T (+ bias)`` for 2-D float32 CPU matrices, by oneDNN."""
    if bias is not None:
        bias = bias.contiguous()
    return _op()(_matrix(a), _weight(b), bias, "none", [], "")  # type: ignore[no-any-return]


class _Linear(torch.autograd.Function):
    @staticmethod
    def forward(  # type: ignore[override]
        ctx: Any, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None
    ) -> torch.Tensor:
        x2 = _matrix(x)
        need_x, need_w = ctx.needs_input_grad[0], ctx.needs_input_grad[1]
        # keep only what backward uses: the weight for the input's gradient and vice versa
        ctx.save_for_backward(x2 if need_w else None, weight if need_x else None)
        ctx.input_shape = x.shape
        return _product(x2, weight, bias).view(*x.shape[:-1], weight.size(0))

    @staticmethod
    @once_differentiable
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        x2, weight = ctx.saved_tensors
        g = _matrix(grad)
        need_x, need_w, need_b = ctx.needs_input_grad
        grad_x = onednn_mm(g, weight).view(ctx.input_shape) if need_x else None
        grad_w = onednn_mm(g.t(), x2) if need_w else None
        grad_b = g.sum(0) if need_b else None
        return grad_x, grad_w, grad_b


def onednn_mm(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """``a @ b`` for 2-D float32 CPU matrices by oneDNN, in the orientation that copies
    less: oneDNN copies a left operand that is not row-major, and a right one (its weight)
    is copied unless it is row- or column-major without padding (``_weight``), so ``a @ b``
    costs a copy of ``a`` unless it is row-major and one of ``b`` if it is padded, and
    ``(b.T @ a.T).T`` a copy of ``b`` unless it is column-major and one of ``a`` if it is
    padded, plus the transposed result's. Returns a contiguous matrix."""
    direct = (0 if a.is_contiguous() else a.numel()) + (0 if _dense(b) else b.numel())
    flipped = (
        (0 if b.t().is_contiguous() else b.numel())
        + (0 if _dense(a) else a.numel())
        + a.size(0) * b.size(1)
    )
    if flipped < direct:
        return _product(b.t(), a).t().contiguous()
    return _product(a, b.t())


def usable(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None) -> bool:
    """Whether ``linear(x, weight, bias)`` can take the oneDNN path: float32 CPU tensors of
    the shapes ``F.linear`` takes (a 2-D weight, a 1-D bias); not under autocast,
    torch.compile, torch.func transforms or forward-mode AD (each needs torch's own
    kernels)."""
    return (
        x.device.type == "cpu"
        and x.dtype == weight.dtype == torch.float32
        and weight.device == x.device
        and weight.dim() == 2
        and (
            bias is None or (bias.dim() == 1 and bias.dtype == x.dtype and bias.device == x.device)
        )
        and x.numel() > 0
        and not torch.compiler.is_compiling()
        and not torch.is_autocast_enabled("cpu")
        and not _transformed(x)
    )


def _transformed(x: torch.Tensor) -> bool:
    """Whether ``x`` is inside a torch.func transform or a forward-mode AD level, which a
    custom autograd function without their formulas would silently get wrong."""
    return bool(
        torch._C._functorch.is_functorch_wrapped_tensor(x)
        or getattr(torch.autograd.forward_ad, "_current_level", -1) >= 0
    )


def linear(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
    """``F.linear(x, weight, bias)``, through oneDNN where ``usable``."""
    if not usable(x, weight, bias):
        return F.linear(x, weight, bias)
    if torch.is_grad_enabled() and (
        x.requires_grad or weight.requires_grad or (bias is not None and bias.requires_grad)
    ):
        return _Linear.apply(x, weight, bias)  # type: ignore[no-any-return]
    return _product(x, weight, bias).view(*x.shape[:-1], weight.size(0))


def mm(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """``a @ b`` for 2-D float32 CPU matrices with no autograd, through oneDNN where
    ``usable``."""
    return onednn_mm(a, b) if usable(a, b.t()) else a @ b


def mm_weight_copied(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """``a @ b`` for a row-major ``b`` with a long contraction (the loss head's input
    gradient, over the vocabulary), through oneDNN where ``usable``, with oneDNN's weight
    (``b.T``) copied to row-major first: oneDNN's own reorder of a column-major weight is
    slower at that length than the copy. Elsewhere it is ``a @ b``."""
    if not usable(a, b.t()):
        return a @ b
    return _product(a, b.t().contiguous())
