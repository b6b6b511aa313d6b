"""Float32 CPU products through oneDNN (nanogpt_cli.kernels.onednn): same results as the
BLAS up to float rounding, in both directions, and torch's own kernels wherever oneDNN's
cannot be used."""

from __future__ import annotations

from typing import Any

import pytest
import torch
from torch.nn import functional as F

from nanogpt_cli.config import ModelConfig
from nanogpt_cli.kernels import apply_kernels
from nanogpt_cli.kernels import onednn as cpu_matmul
from nanogpt_cli.kernels.loss_head import linear_cross_entropy
from nanogpt_cli.model import GPT

needs_onednn = pytest.mark.skipif(
    cpu_matmul.signature_problem() is not None, reason="this torch build has no oneDNN linear"
)


def count_products(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """A list that gets an entry per oneDNN product from now on."""
    calls: list[int] = []
    product = cpu_matmul._product

    def counting(*args: torch.Tensor | None) -> torch.Tensor:
        calls.append(1)
        return product(*args)  # type: ignore[arg-type]

    monkeypatch.setattr(cpu_matmul, "_product", counting)
    return calls


@needs_onednn
@pytest.mark.parametrize(
    ("shape", "out_features", "bias"),
    [((24, 32), 48, True), ((3, 8, 32), 96, False), ((2, 5, 128), 16, True), ((7, 16), 65, False)],
)
def test_linear_equals_f_linear_forward_and_backward(
    monkeypatch: pytest.MonkeyPatch,
    shape: tuple[int, ...],
    out_features: int,
    bias: bool,
) -> None:
    torch.manual_seed(0)
    x = torch.randn(*shape, requires_grad=True)
    w = torch.randn(out_features, shape[-1], requires_grad=True)
    b = torch.randn(out_features, requires_grad=True) if bias else None
    upstream = torch.randn(*shape[:-1], out_features)

    got = cpu_matmul.linear(x, w, b)
    assert got.grad_fn is not None and "_Linear" in type(got.grad_fn).__name__
    got.backward(upstream)
    got_grads = [t.grad.clone() for t in (x, w, b) if t is not None]
    for t in (x, w, b):
        if t is not None:
            t.grad = None
    want = F.linear(x, w, b)
    want.backward(upstream)
    want_grads = [t.grad for t in (x, w, b) if t is not None]

    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)
    for g, ref in zip(got_grads, want_grads, strict=True):
        torch.testing.assert_close(g, ref, rtol=1e-5, atol=1e-5)


@needs_onednn
def test_linear_gradients_of_transposed_inputs_and_broadcast_gradients(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    torch.manual_seed(1)
    base = torch.randn(32, 20, requires_grad=True)
    w = torch.randn(12, 32, requires_grad=True)
    # a transposed input, and .sum() hands back a broadcast (zero-stride) gradient
    cpu_matmul.linear(base.t(), w).sum().backward()
    got = base.grad.clone(), w.grad.clone()
    base.grad = w.grad = None
    F.linear(base.t(), w).sum().backward()
    torch.testing.assert_close(got[0], base.grad, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(got[1], w.grad, rtol=1e-5, atol=1e-5)


@needs_onednn
def test_sliced_inputs_and_weights_reach_onednn_as_unpadded_weights(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A slice of a wider tensor (rows padded) is read in place as a left operand, but never
    handed to oneDNN as the weight: oneDNN reads a padded weight orders of magnitude
    slower than a dense copy (docs/benchmarks.md)."""
    weights: list[bool] = []
    lefts: list[int] = []
    kernel = torch.ops.mkldnn._linear_pointwise

    def recording(a: torch.Tensor, b: torch.Tensor, *args: Any) -> Any:
        weights.append(b.is_contiguous() or b.t().is_contiguous())
        lefts.append(a.data_ptr())
        return kernel(a, b, *args)

    monkeypatch.setattr(torch.ops.mkldnn, "_linear_pointwise", recording)
    torch.manual_seed(2)
    wide = torch.randn(3, 8, 48, requires_grad=True)
    wide_w = torch.randn(20, 48, requires_grad=True)
    x, w = wide[..., :24], wide_w[:, 8:32]  # both padded views
    out = cpu_matmul.linear(x, w)
    out.square().sum().backward()
    got = wide.grad.clone(), wide_w.grad.clone()
    wide.grad = wide_w.grad = None
    F.linear(x, w).square().sum().backward()
    torch.testing.assert_close(out, F.linear(x, w), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(got[0], wide.grad, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(got[1], wide_w.grad, rtol=1e-5, atol=1e-5)
    assert len(weights) == 3 and all(weights)  # forward, input and weight gradients
    assert lefts[0] == x.data_ptr()  # the sliced input itself is read in place


@needs_onednn
def test_only_the_wanted_gradients_are_computed(monkeypatch: pytest.MonkeyPatch) -> None:
    """An input that needs no gradient (the first layer's case) costs no product in backward:
    one product forward, one for the weight's gradient."""
    calls = count_products(monkeypatch)
    x = torch.randn(6, 8)
    w = torch.randn(4, 8, requires_grad=True)
    cpu_matmul.linear(x, w).sum().backward()
    assert len(calls) == 2
    torch.testing.assert_close(w.grad, torch.ones(6, 4).t() @ x)


@needs_onednn
@pytest.mark.parametrize(
    ("a_shape", "b_shape", "ta", "tb"),
    [((9, 7), (7, 5), False, False), ((7, 9), (7, 5), True, False), ((9, 7), (5, 7), False, True)],
)
def test_mm_equals_matmul_in_every_orientation(
    monkeypatch: pytest.MonkeyPatch,
    a_shape: tuple[int, int],
    b_shape: tuple[int, int],
    ta: bool,
    tb: bool,
) -> None:
    a, b = torch.randn(*a_shape), torch.randn(*b_shape)
    a, b = (a.t() if ta else a), (b.t() if tb else b)
    got = cpu_matmul.mm(a, b)
    assert got.is_contiguous()
    torch.testing.assert_close(got, a @ b, rtol=1e-5, atol=1e-5)


@needs_onednn
def test_the_loss_heads_long_product_gets_a_row_major_weight(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    weights: list[bool] = []
    product = cpu_matmul._product

    def recording(a: torch.Tensor, b: torch.Tensor, bias: torch.Tensor | None = None) -> Any:
        weights.append(b.is_contiguous())
        return product(a, b, bias)

    monkeypatch.setattr(cpu_matmul, "_product", recording)
    a, b = torch.randn(3, 4096), torch.randn(4096, 5)  # logits' gradient, embedding
    torch.testing.assert_close(cpu_matmul.mm_weight_copied(a, b), a @ b, rtol=1e-4, atol=1e-3)
    torch.testing.assert_close(cpu_matmul.mm(a, b), a @ b, rtol=1e-4, atol=1e-3)
    assert weights == [True, False]  # copied first; mm reads it in place
    # and the fused loss head uses it for its input's gradient
    h = torch.randn(6, 5, requires_grad=True)
    embedding = torch.randn(4096, 5, requires_grad=True)
    targets = torch.randint(0, 4096, (6,))
    weights.clear()
    linear_cross_entropy(h, embedding, targets, fast_products=True).backward()
    assert weights[:2] == [True, True]  # the logits, then the input's gradient


@needs_onednn
def test_same_inputs_give_the_same_bits(monkeypatch: pytest.MonkeyPatch) -> None:
    x, w = torch.randn(64, 48), torch.randn(80, 48)
    assert torch.equal(cpu_matmul.linear(x, w), cpu_matmul.linear(x, w))


@needs_onednn
def test_a_training_step_of_the_model_goes_through_onednn(monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = ModelConfig(n_layer=2, n_head=2, n_embd=32, block_size=16, vocab_size=65)
    model = GPT(cfg)
    assert "onednn-linear" in apply_kernels(model, "on")
    calls = count_products(monkeypatch)
    idx = torch.randint(0, 65, (2, 16))
    _, loss = model(idx, idx, return_logits=False)
    assert loss is not None
    loss.backward()
    # forward: 4 products per block and the head; backward: 2 per product (the first
    # layer's input gradient included: only the embedding lookup needs none)
    assert len(calls) == 3 * (4 * cfg.n_layer + 1)


@needs_onednn
def test_other_dtypes_and_autocast_keep_the_torch_kernels(monkeypatch: pytest.MonkeyPatch) -> None:
    x, w = torch.randn(4, 8, dtype=torch.float64), torch.randn(3, 8, dtype=torch.float64)
    assert not cpu_matmul.usable(x, w)
    x32, w32 = x.float(), w.float()
    assert cpu_matmul.usable(x32, w32)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert not cpu_matmul.usable(x32, w32)
        assert cpu_matmul.linear(x32, w32).dtype == torch.bfloat16


@needs_onednn
def test_biases_and_weights_linear_takes(monkeypatch: pytest.MonkeyPatch) -> None:
    """A strided bias is read right; what oneDNN cannot take (a bias of another dtype, a
    broadcast 2-D bias) goes to F.linear, with its result or its error."""
    x, w = torch.randn(6, 8), torch.randn(5, 8)
    strided = torch.randn(10)[::2]
    torch.testing.assert_close(cpu_matmul.linear(x, w, strided), F.linear(x, w, strided))
    assert cpu_matmul.usable(x, w, strided)
    row = torch.randn(1, 5)
    assert not cpu_matmul.usable(x, w, row)
    torch.testing.assert_close(cpu_matmul.linear(x, w, row), F.linear(x, w, row))
    assert not cpu_matmul.usable(x, w, strided.double())
    with pytest.raises(RuntimeError):
        cpu_matmul.linear(x, w, strided.double())


@needs_onednn
# torch.func's own use of torch.jit (deprecated; a FutureWarning from torch 2.15)
@pytest.mark.filterwarnings("ignore::DeprecationWarning", "ignore::FutureWarning")
def test_forward_mode_ad_and_torch_func_get_torch_kernels(monkeypatch: pytest.MonkeyPatch) -> None:
    """A custom autograd function has no forward-mode formula: under forward AD or a
    torch.func transform, linear is F.linear, so tangents and gradients stay right."""
    import torch.autograd.forward_ad as fwAD

    x, w, t = torch.randn(4, 8), torch.randn(3, 8), torch.randn(4, 8)
    with fwAD.dual_level():
        out = cpu_matmul.linear(fwAD.make_dual(x, t), w)
        tangent = fwAD.unpack_dual(out).tangent
    assert tangent is not None
    torch.testing.assert_close(tangent, F.linear(t, w))
    _, jvp = torch.func.jvp(lambda a: cpu_matmul.linear(a, w), (x,), (t,))
    torch.testing.assert_close(jvp, F.linear(t, w))
    grad = torch.func.grad(lambda a: cpu_matmul.linear(a, w).sum())(x)
    torch.testing.assert_close(grad, torch.ones(4, 3) @ w)
