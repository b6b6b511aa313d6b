"""Linear layers with CPU fast paths, swapped in for ``nn.Linear`` by ``apply_kernels``.

- ``OneDNNLinear``: float32 products, in training and inference, through oneDNN
  (``kernels.onednn``) instead of the BLAS.
- ``SplitLinear``: inference on a few rows with a large weight, as in decoding. Multiplying
  a few rows by a large weight streams the whole weight from memory; the BLAS splits such
  a product across threads by rows, so every thread reads all of the weight. Splitting the
  weight's output features across the threads instead (a batched matmul over its parts)
  reads it once. Where oneDNN does the products only a single row is split: oneDNN already
  reads the weight once from two rows on (docs/benchmarks.md, "CPU kernels").

Both equal ``nn.Linear`` up to float rounding, and leave everything they do not handle
(other devices and dtypes, autocast, torch.compile) to it.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from . import onednn
from .selfcheck import assert_close

SPLIT_MAX_ROWS = 64  # with the BLAS; 1 where oneDNN does the products
SPLIT_MIN_WEIGHT = 1 << 18  # elements: 1 MiB of float32


def split_linear(
    x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, parts: int
) -> torch.Tensor:
    """``F.linear(x, weight, bias)`` as ``parts`` products over slices of the weight's
    output features, one batched matmul."""
    out_features, in_features = weight.shape
    rows = x.numel() // in_features
    flat = x.reshape(rows, in_features)
    size = out_features // parts
    even = parts * size  # features in equal parts; the few left over go by themselves
    w = weight[:even].view(parts, size, in_features)  # (p, N/p, K)
    xt = flat.t().unsqueeze(0).expand(parts, -1, -1)  # (p, K, rows)
    y = torch.bmm(w, xt).permute(2, 0, 1).reshape(rows, even)  # (rows, N)
    if even < out_features:
        y = torch.cat([y, F.linear(flat, weight[even:])], dim=1)
    if bias is not None:
        y = y + bias
    return y.view(*x.shape[:-1], out_features)


class OneDNNLinear(nn.Linear):
    """``nn.Linear`` whose float32 CPU products go through oneDNN."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return onednn.linear(x, self.weight, self.bias)


class SplitLinear(nn.Linear):
    """``nn.Linear`` that splits a few-row inference product by output features across
    the threads."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self._splits(x):
            return super().forward(x)
        return split_linear(x, self.weight, self.bias, torch.get_num_threads())

    def _splits(self, x: torch.Tensor) -> bool:
        if torch.compiler.is_compiling() or torch.is_grad_enabled():
            return False  # the compiler picks its own kernels; training keeps the usual path
        if torch.is_autocast_enabled("cpu"):
            return False  # autocast casts in its own op
        if x.device.type != "cpu" or x.dtype != self.weight.dtype:
            return False
        parts = torch.get_num_threads()
        max_rows = 1 if isinstance(self, OneDNNLinear) else SPLIT_MAX_ROWS
        return (
            parts >= 2
            and 1 <= x.numel() // self.in_features <= max_rows
            and self.weight.numel() >= SPLIT_MIN_WEIGHT
            and self.out_features >= 2 * parts
        )


# -- self-checks and timings (apply_kernels runs them) ---------------------------------------


def check_onednn() -> None:
    """The private op exists with the expected signature, and ``onednn.linear`` gives
    ``F.linear``'s values and gradients (raises otherwise)."""
    problem = onednn.signature_problem()
    if problem is not None:
        raise RuntimeError(problem)
    generator = torch.Generator().manual_seed(0)
    for bias in (True, False):
        x = torch.randn(3, 5, 24, generator=generator).requires_grad_()
        w = torch.randn(40, 24, generator=generator).requires_grad_()
        b = torch.randn(40, generator=generator).requires_grad_() if bias else None
        ours, ref = onednn.linear(x, w, b), F.linear(x, w, b)
        assert_close(ours, ref, "output")
        grad = torch.randn(ref.shape, generator=generator)
        inputs = [x, w] + ([b] if b is not None else [])
        got = torch.autograd.grad(ours, inputs, grad)
        want = torch.autograd.grad(ref, inputs, grad)
        for g1, g2 in zip(got, want, strict=True):
            assert_close(g1, g2, "gradient")
        with torch.no_grad():
            assert_close(onednn.linear(x, w, b), F.linear(x, w, b), "output without grad")


def check_split() -> None:
    """``split_linear`` gives ``F.linear``'s values, features divisible by the parts or not."""
    generator = torch.Generator().manual_seed(0)
    for out_features in (96, 97):
        x = torch.randn(3, 32, generator=generator)
        w = torch.randn(out_features, 32, generator=generator)
        b = torch.randn(out_features, generator=generator)
        assert_close(split_linear(x, w, b, 2), F.linear(x, w, b), "output")


# Shapes timed: the MLP products of a small CPU model and of GPT-2, (rows, in, out).
TRAINING_SHAPES = ((768, 128, 512), (512, 768, 3072))


def measure_onednn() -> tuple[float, float]:
    """Forward and backward of linear layers at ``TRAINING_SHAPES``: oneDNN, then torch."""
    cases = []
    for rows, k, n in TRAINING_SHAPES:
        x = torch.randn(rows, k, requires_grad=True)
        w = torch.randn(n, k, requires_grad=True)
        cases.append((x, w, torch.randn(rows, n)))

    def run(linear: object) -> None:
        for x, w, grad in cases:
            torch.autograd.grad(linear(x, w), (x, w), grad)  # type: ignore[operator]

    from .calibrate import REPEATS, best_times

    return best_times(lambda: run(onednn.linear), lambda: run(F.linear), REPEATS)


def measure_split(onednn_on: bool) -> tuple[float, float]:
    """A GPT-2-sized weight times 1 row (and 8 rows with the BLAS), under no_grad: split,
    then the product the layer takes otherwise."""
    weight = torch.randn(3072, 768)
    rows = (1,) if onednn_on else (1, 8)
    xs = [torch.randn(r, 768) for r in rows]
    parts = torch.get_num_threads()
    other = onednn.linear if onednn_on else F.linear

    def split() -> None:
        for x in xs:
            split_linear(x, weight, None, parts)

    def plain() -> None:
        for x in xs:
            other(x, weight)

    from .calibrate import best_times

    with torch.no_grad():
        return best_times(split, plain, 20)
