from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

from nanogpt_cli.config import ModelConfig
from nanogpt_cli.model import GPT


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


def test_activation_field_selects_the_gelu_form() -> None:
    tanh_model, exact_model = tiny(activation="gelu_tanh"), tiny(activation="gelu")
    exact_model.load_state_dict(tanh_model.state_dict())
    assert tanh_model.transformer.h[0].mlp.gelu.approximate == "tanh"
    assert exact_model.transformer.h[0].mlp.gelu.approximate == "none"
    idx = torch.randint(0, 50, (2, 16))
    a, b = tanh_model(idx)[0], exact_model(idx)[0]
    assert not torch.equal(a, b)  # same weights, another activation: other logits
    torch.testing.assert_close(a, b, atol=1e-3, rtol=0)  # ... but only slightly


def test_model_requires_vocab_size() -> None:
    with pytest.raises(ValueError, match="vocab_size"):
        GPT(ModelConfig(n_layer=1, n_head=1, n_embd=8, block_size=4))


@pytest.mark.parametrize("grad", [True, False])
def test_model_compiles_as_one_graph(grad: bool) -> None:
    """torch.compile sees the whole forward pass without a graph break (fullgraph), in
    training and in inference."""
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


def test_loss_alone_equals_the_loss_of_the_logits() -> None:
    """return_logits=False (training, evaluation) changes nothing but what is returned: the
    same loss and the same gradients for every parameter, tied embedding included."""
    torch.manual_seed(0)
    model = tiny()
    idx = torch.randint(0, model.config.vocab_size, (3, 8))
    targets = idx.roll(1, dims=1)
    targets[0, :3] = -1  # ignored
    logits, ref = model(idx, targets)
    assert logits is not None and ref is not None
    ref.backward()
    grads = {n: p.grad.clone() for n, p in model.named_parameters()}
    model.zero_grad(set_to_none=True)
    none, loss = model(idx, targets, return_logits=False)
    assert none is None and loss is not None
    loss.backward()
    torch.testing.assert_close(loss, ref)
    for name, p in model.named_parameters():
        torch.testing.assert_close(p.grad, grads[name], msg=name)


MODEL_PY = Path(__file__).resolve().parents[1] / "nanogpt_cli" / "model.py"


def test_the_reference_model_stays_a_reference() -> None:
    """model.py reads like nanoGPT's: short, torch's own layers, nothing device-specific
    (the fast paths live in nanogpt_cli.kernels and are applied from outside)."""
    text = MODEL_PY.read_text(encoding="utf-8")
    assert len(text.splitlines()) <= 350
    imports = [line for line in text.splitlines() if line.startswith(("import ", "from "))]
    assert not [line for line in imports if "kernels" in line or "cpu_matmul" in line]
    for word in ("mkldnn", "get_num_threads", "device.type", "is_compiling", "autocast"):
        assert word not in text, word
    model = tiny()
    layers = {type(m) for m in model.modules()}
    assert all(t.__module__.startswith(("torch.", "nanogpt_cli.model")) for t in layers)
