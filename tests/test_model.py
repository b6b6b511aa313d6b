from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from nanogpt_cli import cpu_matmul
from nanogpt_cli.config import ModelConfig
from nanogpt_cli.model import GELU, GPT, KVCache


def tiny(**overrides: object) -> GPT:
    torch.manual_seed(0)
    cfg = ModelConfig(n_layer=2, n_head=2, n_embd=32, block_size=16, vocab_size=50)
    for k, v in overrides.items():
        setattr(cfg, k, v)
    return GPT(cfg)


def test_output_shapes_and_last_only() -> None:
    model = tiny()
    idx = torch.randint(0, 50, (3, 10))
    logits, loss = model(idx)
    assert logits.shape == (3, 10, 50) and loss is None
    last, _ = model(idx, last_only=True)
    assert last.shape == (3, 1, 50)
    torch.testing.assert_close(last[:, 0], logits[:, -1])


def test_initial_loss_is_about_ln_vocab() -> None:
    model = tiny(vocab_size=65)
    idx = torch.randint(0, 65, (8, 16))
    _, loss = model(idx, torch.randint(0, 65, (8, 16)))
    assert loss is not None
    assert abs(loss.item() - math.log(65)) < 0.1


def test_weights_are_tied_and_residual_projections_scaled() -> None:
    model = tiny(n_layer=8, n_embd=64)
    assert model.lm_head.weight is model.transformer.wte.weight
    proj = model.transformer.h[0].mlp.c_proj.weight
    assert proj.std().item() == pytest.approx(0.02 / math.sqrt(16), rel=0.1)
    assert model.transformer.h[0].mlp.c_fc.weight.std().item() == pytest.approx(0.02, rel=0.1)


def test_num_params_leaves_out_position_embeddings() -> None:
    model = tiny()
    total = sum(p.numel() for p in model.parameters())
    assert model.num_params(non_embedding=False) == total
    assert model.num_params() == total - 16 * 32


def test_bias_option_adds_biases() -> None:
    assert not any(n.endswith(".bias") for n, _ in tiny().named_parameters())
    assert any(n.endswith("c_attn.bias") for n, _ in tiny(bias=True).named_parameters())


def test_flops_per_token_counts_six_per_parameter_plus_attention() -> None:
    model = tiny()
    assert model.flops_per_token(16) == 6 * model.num_params() + 12 * 2 * 32 * 16


def test_crop_block_size() -> None:
    model = tiny()
    model.crop_block_size(8)
    assert model.config.block_size == 8
    assert model.transformer.wpe.weight.shape == (8, 32)
    model(torch.randint(0, 50, (1, 8)))
    with pytest.raises(ValueError, match="block size is 8"):
        model(torch.randint(0, 50, (1, 9)))
    with pytest.raises(ValueError, match="cannot grow"):
        model.crop_block_size(32)


@pytest.mark.parametrize("approximate", ["tanh", "none"])
@pytest.mark.parametrize("shape", [(64, 48), (256, 256)], ids=["small", "large"])
def test_gelu_matches_torch(approximate: str, shape: tuple[int, int]) -> None:
    # Large CPU inputs take the sigmoid form of the tanh approximation, small ones torch's.
    x = torch.randn(*shape, dtype=torch.float64, requires_grad=True)
    ours = GELU(approximate)(x)
    ref = F.gelu(x, approximate=approximate)
    torch.testing.assert_close(ours, ref)
    grad = torch.randn_like(ours)
    g1 = torch.autograd.grad(ours, x, grad)[0]
    g2 = torch.autograd.grad(ref, x, grad)[0]
    torch.testing.assert_close(g1, g2)


def test_activation_field_selects_the_gelu_form() -> None:
    tanh_model, exact_model = tiny(activation="gelu_tanh"), tiny(activation="gelu")
    exact_model.load_state_dict(tanh_model.state_dict())
    assert tanh_model.transformer.h[0].mlp.gelu.approximate == "tanh"
    assert exact_model.transformer.h[0].mlp.gelu.approximate == "none"
    idx = torch.randint(0, 50, (2, 16))
    a, b = tanh_model(idx)[0], exact_model(idx)[0]
    assert not torch.equal(a, b)  # same weights, another activation: other logits
    torch.testing.assert_close(a, b, atol=1e-3, rtol=0)  # ... but only slightly


def test_kv_cache_logits_equal_full_forward() -> None:
    model = tiny().eval()
    idx = torch.randint(0, 50, (2, 12))
    full, _ = model(idx)
    cache = KVCache.for_model(model, batch_size=2)
    steps = [model(idx[:, :5], cache=cache)[0]]  # prefill
    steps.append(model(idx[:, 5:9], cache=cache)[0])  # a chunk on a filled cache
    steps += [model(idx[:, t : t + 1], cache=cache)[0] for t in range(9, 12)]
    torch.testing.assert_close(torch.cat(steps, dim=1), full, atol=1e-5, rtol=1e-5)
    assert cache.length == 12


def test_kv_cache_refuses_to_overflow() -> None:
    model = tiny().eval()
    cache = KVCache.for_model(model, batch_size=1)
    model(torch.randint(0, 50, (1, 16)), cache=cache)
    with pytest.raises(ValueError, match="KV cache holds 16 positions"):
        model(torch.randint(0, 50, (1, 1)), cache=cache)


def test_model_requires_vocab_size() -> None:
    with pytest.raises(ValueError, match="vocab_size"):
        GPT(ModelConfig(n_layer=1, n_head=1, n_embd=8, block_size=4))


@pytest.mark.parametrize(("out_features", "bias"), [(96, True), (97, False)])
def test_split_linear_equals_linear(
    out_features: int, bias: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Decoding on CPU with the BLAS splits a large weight's output features across the
    # threads; the result must be nn.Linear's, also when the features do not divide evenly.
    import nanogpt_cli.model as model_module

    monkeypatch.setattr(cpu_matmul, "onednn_enabled", lambda: False)
    calls: list[int] = []
    bmm = torch.bmm
    monkeypatch.setattr(torch, "bmm", lambda *a: calls.append(1) or bmm(*a))
    monkeypatch.setattr(model_module, "SPLIT_MIN_WEIGHT", 0)
    threads = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        torch.manual_seed(0)
        layer = model_module.Linear(32, out_features, bias=bias)
        x = torch.randn(3, 5, 32)
        plain = torch.nn.functional.linear(x, layer.weight, layer.bias)
        with torch.no_grad():
            fast = layer(x)
        assert calls, "the split path was not taken"
        torch.testing.assert_close(fast, plain)
        calls.clear()
        layer(x).sum().backward()  # training: always the plain path
        assert not calls and layer.weight.grad is not None
        with torch.no_grad():
            layer(torch.randn(2, 40, 32))  # 80 rows: too many to split
        assert not calls
    finally:
        torch.set_num_threads(threads)


@pytest.mark.skipif(not cpu_matmul.onednn_available(), reason="this torch build has no oneDNN")
def test_with_onednn_only_one_row_is_split(monkeypatch: pytest.MonkeyPatch) -> None:
    # Decoding one row: the split product (faster there); two rows and more: oneDNN.
    import nanogpt_cli.model as model_module

    monkeypatch.setattr(cpu_matmul, "onednn_enabled", lambda: True)
    monkeypatch.setattr(model_module, "SPLIT_MIN_WEIGHT", 0)
    calls: list[str] = []
    bmm, product = torch.bmm, cpu_matmul._product
    monkeypatch.setattr(torch, "bmm", lambda *a: calls.append("split") or bmm(*a))
    monkeypatch.setattr(cpu_matmul, "_product", lambda *a: calls.append("onednn") or product(*a))
    threads = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        layer = model_module.Linear(32, 96, bias=True)
        for rows, path in ((1, "split"), (2, "onednn")):
            x = torch.randn(rows, 1, 32)
            with torch.no_grad():
                y = layer(x)
            assert calls == [path]
            torch.testing.assert_close(y, torch.nn.functional.linear(x, layer.weight, layer.bias))
            calls.clear()
    finally:
        torch.set_num_threads(threads)


@pytest.mark.parametrize("grad", [True, False])
def test_model_compiles_as_one_graph(grad: bool) -> None:
    """torch.compile sees the whole forward pass without a graph break (fullgraph), in
    training and in inference, where the CPU decoding path of Linear would otherwise ask
    for the thread count."""
    model = tiny()
    compiled = torch.compile(model, backend="aot_eager", fullgraph=True)
    idx = torch.randint(0, model.config.vocab_size, (2, 8))
    with torch.set_grad_enabled(grad):
        logits, loss = compiled(idx, idx)
        ref, ref_loss = model(idx, idx)
    torch.testing.assert_close(loss, ref_loss)
    torch.testing.assert_close(logits, ref)
    if grad:
        loss.backward()


BACKENDS = [
    pytest.param(
        True,
        id="onednn",
        marks=pytest.mark.skipif(
            not cpu_matmul.onednn_available(), reason="this torch build has no oneDNN"
        ),
    ),
    pytest.param(False, id="blas"),
]


@pytest.mark.parametrize("onednn", BACKENDS)
def test_linear_cross_entropy_equals_the_usual_loss_and_gradients(
    onednn: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The CPU loss head that never keeps the logits gives F.cross_entropy's loss and
    gradients, with ignored (-1) targets, a scaled loss, and no gradients under no_grad;
    with every target ignored, a NaN loss and zero gradients, as F.cross_entropy."""
    from nanogpt_cli.model import linear_cross_entropy

    monkeypatch.setattr(cpu_matmul, "onednn_enabled", lambda: onednn)
    torch.manual_seed(0)
    h = torch.randn(40, 16, requires_grad=True)
    w = torch.randn(30, 16, requires_grad=True)
    targets = torch.randint(0, 30, (40,))
    targets[::6] = -1
    ref = F.cross_entropy(h @ w.t(), targets, ignore_index=-1)
    (ref / 3).backward()
    grads = h.grad.clone(), w.grad.clone()
    h.grad = w.grad = None
    loss = linear_cross_entropy(h, w, targets)
    (loss / 3).backward()
    torch.testing.assert_close(loss, ref)
    torch.testing.assert_close(h.grad, grads[0])
    torch.testing.assert_close(w.grad, grads[1])
    with torch.no_grad():
        torch.testing.assert_close(linear_cross_entropy(h, w, targets), ref)
    h.grad = w.grad = None
    loss = linear_cross_entropy(h, w, torch.full_like(targets, -1))
    loss.backward()
    assert loss.isnan()
    assert not h.grad.any() and not w.grad.any()


@pytest.mark.parametrize("onednn", BACKENDS)
def test_linear_cross_entropy_stays_exact_where_a_targets_probability_underflows(
    onednn: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Confidently wrong predictions (a target 200 nats below the row's largest logit, so
    its float32 probability is 0) keep a finite, exact loss and the usual gradients: the
    log-sum-exp is not read off the target's probability."""
    from nanogpt_cli.model import linear_cross_entropy

    monkeypatch.setattr(cpu_matmul, "onednn_enabled", lambda: onednn)
    torch.manual_seed(0)
    h = torch.randn(12, 8, dtype=torch.float64)
    h[:, 0] = 50.0
    w = torch.randn(30, 8, dtype=torch.float64)
    w[:, 0] = torch.linspace(-2.0, 2.0, 30, dtype=torch.float64)  # logits spread over 200
    targets = torch.zeros(12, dtype=torch.long)  # the least likely token of every row
    targets[-1] = 29  # and one row's most likely token
    h32 = h.float().requires_grad_()
    w32 = w.float().requires_grad_()
    ref = F.cross_entropy(h @ w.t(), targets)  # float64: exact to the float32 tolerance
    assert torch.softmax((h32 @ w32.t()).detach(), 1)[0, 0] == 0  # the probability is gone
    loss = linear_cross_entropy(h32, w32, targets)
    loss.backward()
    torch.testing.assert_close(loss.double(), ref, rtol=1e-5, atol=0)
    h_ref = h32.detach().clone().requires_grad_()
    w_ref = w32.detach().clone().requires_grad_()
    F.cross_entropy(h_ref @ w_ref.t(), targets).backward()
    torch.testing.assert_close(h32.grad, h_ref.grad)
    torch.testing.assert_close(w32.grad, w_ref.grad)


def test_linear_cross_entropy_computes_no_gradients_where_none_are_wanted(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Evaluation (inference_mode, no_grad) and inputs that need no gradient take the plain
    loss: the fused head would compute both gradients in its forward pass for nothing."""
    import nanogpt_cli.model as model_module

    calls: list[int] = []
    real = model_module._LinearCrossEntropy.apply
    monkeypatch.setattr(
        model_module._LinearCrossEntropy, "apply", lambda *a: calls.append(1) or real(*a)
    )
    torch.manual_seed(0)
    h = torch.randn(40, 16, requires_grad=True)
    w = torch.randn(30, 16, requires_grad=True)
    targets = torch.randint(0, 30, (40,))
    ref = F.cross_entropy(h @ w.t(), targets)
    for context in (torch.no_grad, torch.inference_mode):
        with context():
            torch.testing.assert_close(model_module.linear_cross_entropy(h, w, targets), ref)
    plain = model_module.linear_cross_entropy(h.detach(), w.detach(), targets)
    torch.testing.assert_close(plain, ref.detach())
    assert calls == []
    model_module.linear_cross_entropy(h, w, targets).backward()
    assert calls == [1]


def test_training_forward_without_logits_matches_the_full_forward(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """return_logits=False (training, evaluation) changes nothing but what is returned: the
    same loss and the same gradients for every parameter, tied embedding included."""
    import nanogpt_cli.model as model_module

    monkeypatch.setattr(model_module, "FUSED_LOSS_MIN_VOCAB", 1)  # the tiny vocabulary too
    torch.manual_seed(0)
    model = tiny()
    idx = torch.randint(0, model.config.vocab_size, (3, 8))
    targets = idx.roll(1, dims=1)
    logits, ref = model(idx, targets)
    ref.backward()
    grads = {n: p.grad.clone() for n, p in model.named_parameters()}
    model.zero_grad(set_to_none=True)
    spy = []
    real = model_module.linear_cross_entropy
    monkeypatch.setattr(model_module, "linear_cross_entropy", lambda *a: spy.append(1) or real(*a))
    none, loss = model(idx, targets, return_logits=False)
    loss.backward()
    assert spy  # the fused loss head ran
    assert none is None and logits is not None
    torch.testing.assert_close(loss, ref)
    for name, p in model.named_parameters():
        torch.testing.assert_close(p.grad, grads[name], msg=name)
