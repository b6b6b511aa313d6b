"""The comparison the kernels' self-checks make: ``torch.testing.assert_close``'s float32
tolerances without its import, which costs more than all the checks together."""

from __future__ import annotations

import torch

RTOL, ATOL = 1.3e-6, 1e-5  # torch.testing's defaults for float32


def assert_close(actual: torch.Tensor, expected: torch.Tensor, what: str) -> None:
    """Raise ``AssertionError`` naming ``what`` unless the tensors agree to float32
    tolerance (same shape, dtype and values)."""
    if actual.shape != expected.shape or actual.dtype != expected.dtype:
        raise AssertionError(
            f"{what}: {actual.dtype} {tuple(actual.shape)} where "
            f"{expected.dtype} {tuple(expected.shape)} was expected"
        )
    if not torch.allclose(actual, expected, rtol=RTOL, atol=ATOL):
        diff = (actual - expected).abs().max().item()
        raise AssertionError(f"{what} differs from torch's by up to {diff:.3g}")
