"""The CUDA-specific choices, exercised on a machine without a GPU (CI has none)."""

from __future__ import annotations

import os
import platform
import subprocess
import sys

import pytest
import torch

from nanogpt_cli import runtime as dev
from nanogpt_cli.errors import DeviceError

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


STEP_FAULTS = """
import resource
import torch
from nanogpt_cli.config import ModelConfig
from nanogpt_cli.model import GPT
from nanogpt_cli.runtime import keep_freed_memory
print(keep_freed_memory())
torch.manual_seed(0)
# a vocabulary of 16384 makes the loss head's buffers 32 MiB, past every mmap threshold
model = GPT(ModelConfig(n_layer=2, n_head=2, n_embd=64, block_size=64, vocab_size=16384))
opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
idx = torch.randint(0, 16384, (8, 65))
faults = []
for step in range(12):
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    _, loss = model(idx[:, :-1], idx[:, 1:], return_logits=False)
    loss.backward()
    opt.step()
    opt.zero_grad(set_to_none=True)
    faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
print(min(faults[-6:]))  # the fewest of the late steps
"""


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="needs glibc's malloc")
@pytest.mark.parametrize("keep", [True, False])
def test_training_steps_reuse_freed_memory_without_page_faults(keep: bool) -> None:
    env = {
        name: value
        for name, value in os.environ.items()  # glibc's malloc, with its defaults
        if name not in ("LD_PRELOAD", "GLIBC_TUNABLES") and not name.startswith("MALLOC_")
    }
    env[dev.KEEP_MEMORY_ENV] = "1" if keep else "0"
    done = subprocess.run(
        [sys.executable, "-c", STEP_FAULTS], env=env, capture_output=True, text=True, check=True
    )
    applied, faults = done.stdout.split()
    # Each step frees and makes again buffers of 2 to 32 MiB: thousands of pages. Kept, late
    # steps fault next to none (the heap may still grow now and then, by one block, and a
    # CI run once saw several late steps fault one 32 MiB block each: the fewest is read);
    # not kept, every step faults thousands.
    if keep:
        assert applied == "True" and int(faults) < 200
    else:
        assert applied == "False" and int(faults) > 2000
