"""Optional CPU fast paths, applied to a built model by ``apply_kernels``.

The model (``model.py``) is written with torch's own layers. On a CPU in float32 these
kernels may replace some of them, by swapping a module's class for a subclass that takes a
faster path where it applies and defers to the original elsewhere (as FSDP2's
``fully_shard`` swaps classes); parameters, names and state dicts are untouched:

- ``onednn-linear``: linear layers' products through oneDNN (``linear.OneDNNLinear``);
- ``split-linear``: decoding's few-row products with a large weight split across threads
  by output features (``linear.SplitLinear``);
- ``loss-head``: the output layer's loss without keeping the logits, for vocabularies of
  4096 and more (``loss_head.FusedLossHead``);
- ``sigmoid-gelu``: GELU's tanh approximation through a sigmoid (``gelu.SigmoidGELU``).

Each kernel checks itself against the reference op once per process, when first applied
(values and gradients on a small input; for the private oneDNN op, also its signature). On
any mismatch or error it stays off with one warning. ``mode`` (``--cpu-kernels``,
``NANOGPT_CPU_KERNELS``) is ``auto`` (a kernel goes on where it measured faster than the
reference on this machine: ``calibrate``), ``on`` (every kernel that passes its check) or
``off``. They are applied before any compile or distributed wrapping, and under
torch.compile or autocast they step aside for torch's own ops. Only modules that compute
what torch's own class does are swapped: a subclass with a ``forward`` of its own is kept.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial

import torch
from torch import nn

from ..config import KernelMode, env_values
from ..errors import ConfigError, first_line
from ..log import get_logger
from ..model import LMHead
from . import calibrate, gelu, linear, loss_head

logger = get_logger(__name__)

MODES: tuple[KernelMode, ...] = ("auto", "on", "off")

_problems: dict[str, str | None] = {}  # self-check results of this process: name -> problem
_classes: dict[tuple[type, type], type] = {}  # composed module classes, made once


def kernel_mode(mode: str | None = None) -> KernelMode:
    """``mode`` checked, or when None, ``NANOGPT_CPU_KERNELS``'s value (default ``auto``)."""
    if mode is None:
        values, problems = env_values()
        if problems:
            raise ConfigError("; ".join(problems))
        mode = values.get("cpu_kernels", "auto")
    if mode not in MODES:
        raise ConfigError(f"--cpu-kernels {mode!r}: use one of {', '.join(MODES)}")
    return mode  # type: ignore[return-value]


def passes_check(name: str, check: Callable[[], None]) -> bool:
    """Whether kernel ``name`` passed its self-check, run on the first call in this process;
    a failure is reported once, as a warning."""
    if name not in _problems:
        try:
            with torch.inference_mode(False), torch.enable_grad():  # checks take gradients
                check()
            _problems[name] = None
        except Exception as e:
            _problems[name] = first_line(e)
            logger.warning(
                f"CPU kernel {name} failed its self-check and stays off "
                f"({_problems[name]}); PyTorch's own op is used instead"
            )
    return _problems[name] is None


def swap(module: nn.Module, kernel: type[nn.Module]) -> None:
    """Make ``module`` an instance of ``kernel`` (a subclass of what it replaces), keeping
    its parameters, buffers and hooks; kernels applied before stay in the class's order."""
    current = type(module)
    if issubclass(current, kernel):
        return
    if kernel.__bases__ == (current,):
        module.__class__ = kernel
        return
    key = (kernel, current)
    if key not in _classes:
        _classes[key] = type(f"{kernel.__name__}_{current.__name__}", (kernel, current), {})
    module.__class__ = _classes[key]


def apply_kernels(model: nn.Module, mode: str | None = None) -> list[str]:
    """Swap the CPU kernels that ``mode`` allows and that pass their self-check into
    ``model``, a float32 model on the CPU (any other model is left as it is). Returns the
    names of the kernels applied."""
    mode = kernel_mode(mode)
    first = next(model.parameters(), None)
    if mode == "off" or first is None or first.device.type != "cpu":
        return []
    if first.dtype != torch.float32:
        return []

    def wanted(name: str, check: Callable[[], None], measure: calibrate.Measure) -> bool:
        if mode == "auto" and calibrate.cached(name) is False:
            return False  # measured slower here: no need to check it either
        if not passes_check(name, check):
            return False
        return mode == "on" or calibrate.faster(name, measure)

    applied: list[str] = []
    linears = [m for m in model.modules() if _plain(m, nn.Linear)]
    onednn = (
        bool(linears)
        and _onednn_present(mode)
        and wanted("onednn-linear", linear.check_onednn, linear.measure_onednn)
    )
    if onednn:
        for m in linears:
            swap(m, linear.OneDNNLinear)
        applied.append("onednn-linear")
    products = "onednn" if onednn else "blas"  # what the kernels below are timed against

    large = [m for m in linears if m.weight.numel() >= linear.SPLIT_MIN_WEIGHT]
    if (
        large
        and torch.get_num_threads() >= 2
        and wanted(
            f"split-linear ({products})", linear.check_split, partial(linear.measure_split, onednn)
        )
    ):
        for m in large:
            swap(m, linear.SplitLinear)
        applied.append("split-linear")

    heads = [m for m in model.modules() if isinstance(m, LMHead)]
    heads = [m for m in heads if m.out_features >= loss_head.MIN_VOCAB]
    if heads and wanted(
        f"loss-head ({products})",
        partial(loss_head.check, onednn),
        partial(loss_head.measure, onednn),
    ):
        for m in heads:
            swap(m, loss_head.FusedLossHead)
            m.fast_products = onednn  # type: ignore[assignment]
        applied.append("loss-head")

    gelus = [m for m in model.modules() if _plain(m, nn.GELU) and m.approximate == "tanh"]
    if gelus and wanted("sigmoid-gelu", gelu.check, gelu.measure):
        for m in gelus:
            swap(m, gelu.SigmoidGELU)
        applied.append("sigmoid-gelu")
    return applied


def _plain(module: nn.Module, base: type[nn.Module]) -> bool:
    """Whether ``module`` is a ``base`` whose ``forward`` is ``base``'s own or a kernel's."""
    if not isinstance(module, base):
        return False
    forward = type(module).forward
    return forward is base.forward or forward.__module__.startswith(__name__)


def _onednn_present(mode: str) -> bool:
    """Whether this torch build has oneDNN at all. A build without it (some platforms) is
    no failure: only ``on``, which asked for it, hears about it."""
    if torch.backends.mkldnn.is_available():
        return True
    if mode == "on":
        passes_check("onednn-linear", linear.check_onednn)  # reports the reason once
    return False


__all__ = ["MODES", "apply_kernels", "kernel_mode", "passes_check", "swap"]
