"""The CUDA-specific choices, exercised on a machine without a GPU (CI has none)."""

from __future__ import annotations

import pytest
import torch

from nanogpt_cli.errors import DeviceError
from nanogpt_cli.train import device as dev

CUDA = torch.device("cuda")


@pytest.mark.parametrize(
    ("capability", "expected"), [((9, 0), torch.bfloat16), ((8, 0), torch.bfloat16),
                                 ((7, 5), torch.float16), ((7, 0), torch.float16)]
)  # fmt: skip
def test_auto_dtype_on_cuda_follows_the_gpu(
    monkeypatch: pytest.MonkeyPatch, capability: tuple[int, int], expected: torch.dtype
) -> None:
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: capability)
    assert dev.resolve_dtype("auto", CUDA) == expected
    assert dev.resolve_dtype("float32", CUDA) == torch.float32
    assert dev.resolve_dtype("float16", CUDA) == torch.float16


def test_bfloat16_on_a_gpu_without_it_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: (7, 0))
    with pytest.raises(DeviceError, match="use --dtype float16 or auto"):
        dev.resolve_dtype("bfloat16", CUDA)


def test_cpu_and_mps_default_to_float32() -> None:
    assert dev.resolve_dtype("auto", torch.device("cpu")) == torch.float32
    assert dev.resolve_dtype("auto", torch.device("mps")) == torch.float32


def test_compile_is_automatic_on_cuda_only() -> None:
    assert dev.use_compile(None, CUDA) is True
    assert dev.use_compile(None, torch.device("cpu")) is False
    assert dev.use_compile(None, torch.device("mps")) is False
    assert dev.use_compile(False, CUDA) is False and dev.use_compile(True, torch.device("cpu"))


def test_cuda_turns_on_tf32(monkeypatch: pytest.MonkeyPatch) -> None:
    matmul, cudnn = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    try:
        torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
        dev.setup_backends(CUDA)
        assert torch.backends.cuda.matmul.allow_tf32 and torch.backends.cudnn.allow_tf32
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = matmul, cudnn


def test_autocast_only_below_float32() -> None:
    import contextlib

    assert isinstance(dev.autocast(torch.device("cpu"), torch.float32), contextlib.nullcontext)
    with dev.autocast(torch.device("cpu"), torch.bfloat16):
        assert torch.is_autocast_enabled("cpu")
