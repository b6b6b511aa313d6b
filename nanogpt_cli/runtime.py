"""Device, precision and compilation choices, resolved once from the config; shared by
training, sampling, evaluation and benchmarks.

Nothing here changes the process when imported. ``setup_backends`` sets torch's own
per-device switches (TF32 on CUDA); ``keep_freed_memory`` changes how the C library's
malloc behaves for the whole process, so only the CLI calls it (a library caller may opt
in by calling it).
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import os
import sys
from typing import Any

import torch

from .config.dtypes import dtype_name
from .errors import DeviceError

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}

# Dense peak TFLOP/s by GPU name fragment: (16-bit tensor cores, fp32 via TF32).
# The first fragment found in torch.cuda.get_device_name() wins, so order matters.
PEAK_TFLOPS: list[tuple[str, float, float]] = [
    ("H200", 989.0, 494.5),
    ("H100 PCIe", 756.0, 378.0),
    ("H100", 989.0, 494.5),
    ("A100", 312.0, 156.0),
    ("A10G", 125.0, 62.5),
    ("L40S", 362.0, 183.0),
    ("L4", 121.0, 60.0),
    ("RTX 4090", 165.2, 82.6),
    ("RTX 3090", 71.0, 35.6),
    ("V100", 125.0, 15.7),
    ("T4", 65.0, 8.1),
]


def resolve_device(name: str) -> torch.device:
    """``auto`` picks cuda > mps > cpu; an explicit device must exist on this machine."""
    mps_ok = torch.backends.mps.is_available()
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        return torch.device("mps" if mps_ok else "cpu")
    device = torch.device(name)
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise DeviceError(
                f"--device {name} asks for CUDA, but torch sees no CUDA GPU on this machine; "
                "use --device cpu (or auto)"
            )
        count = torch.cuda.device_count()
        if device.index is not None and device.index >= count:
            raise DeviceError(
                f"--device {name}: this machine has {count} CUDA device(s), "
                f"cuda:0 to cuda:{count - 1}"
            )
    if device.type == "mps" and not mps_ok:
        raise DeviceError(
            f"--device {name} asks for Apple MPS, which this machine or torch build lacks; "
            "use --device cpu (or auto)"
        )
    return device


def resolve_dtype(name: str, device: torch.device) -> torch.dtype:
    """``auto``: bf16 on CUDA where supported, else fp16; fp32 on CPU and MPS. Any spelling
    of config.dtypes is accepted (``bf16``, ``bfloat16``)."""
    name = dtype_name(name)
    if name == "auto":
        if device.type == "cuda":
            return torch.bfloat16 if _native_bf16(device) else torch.float16
        return torch.float32
    dtype = DTYPES[name]
    if dtype == torch.bfloat16 and device.type == "cuda" and not _native_bf16(device):
        raise DeviceError(
            "--dtype bfloat16: this GPU does not support bfloat16; use --dtype float16 or auto"
        )
    return dtype


def _native_bf16(device: torch.device) -> bool:
    # torch.cuda.is_bf16_supported() also says yes where bfloat16 is only emulated (V100,
    # T4), which is slower than float16 there; Ampere (8.0) and newer do it in hardware.
    return torch.cuda.get_device_capability(device) >= (8, 0)


def autocast(device: torch.device, dtype: torch.dtype) -> contextlib.AbstractContextManager[Any]:
    """Mixed precision for the forward pass; nothing to do in float32."""
    if dtype == torch.float32:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=dtype)


def use_compile(requested: bool | None, device: torch.device) -> bool:
    """``None`` (auto) compiles on CUDA only: on CPU, compiling costs more than it saves for
    the model sizes people train there (measured in docs/benchmarks.md)."""
    if requested is None:
        return device.type == "cuda"
    return requested


def synchronize(device: torch.device) -> None:
    """Wait for the device's queued work, so a timer measures it."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    elif device.type == "mps":
        torch.mps.synchronize()


def peak_flops(device: torch.device, dtype: torch.dtype) -> float | None:
    """The device's peak FLOP/s for ``dtype``, or None when unknown (then MFU is n/a)."""
    if device.type != "cuda":
        return None
    name = torch.cuda.get_device_name(device)
    for fragment, half, fp32 in PEAK_TFLOPS:
        if fragment in name:
            return (fp32 if dtype == torch.float32 else half) * 1e12
    return None


def setup_backends(device: torch.device) -> None:
    """torch's speed settings for ``device`` that do not change results beyond float
    tolerance."""
    if device.type == "cuda":
        # TF32 matmuls and convolutions: fp32's exponent range on the tensor cores.
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True


# glibc's mallopt parameters (malloc.h)
_M_TRIM_THRESHOLD = -1
_M_MMAP_MAX = -4
KEEP_MEMORY_ENV = "NANOGPT_KEEP_FREED_MEMORY"


def keep_freed_memory() -> bool:
    """Let glibc reuse freed tensor memory instead of handing it back to the kernel.

    A training step on CPU frees and re-allocates the same buffers every step: activations,
    gradients, and for a large vocabulary the logits and the embedding's gradient (hundreds
    of MB for GPT-2). By default glibc serves a block above its mmap threshold (128 KiB,
    rising to the largest such block freed, at most 32 MiB) with a fresh mmap() and unmaps
    it on free, and trims the heap's free top, so each step pays a page fault for every
    4 KiB of those blocks it touches. Here the main thread's heap serves every block, of
    any size, and is never trimmed, so after the first steps a step faults no page at all.
    The process keeps its peak memory until it exits, as CUDA's caching allocator does.
    This is a process-wide malloc setting: the CLI applies it to its own process on Linux
    (``NANOGPT_KEEP_FREED_MEMORY=0`` turns that off); the library never does. Measured in
    docs/benchmarks.md ("Freed memory kept"). Returns whether it was applied.
    """
    if os.environ.get(KEEP_MEMORY_ENV, "1") == "0" or not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # not glibc (e.g. musl)
        return False
    # -1 is read as SIZE_MAX: no trimming at all
    return bool(mallopt(_M_MMAP_MAX, 0) and mallopt(_M_TRIM_THRESHOLD, -1))
