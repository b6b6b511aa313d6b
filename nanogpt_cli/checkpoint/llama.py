"""Hugging Face ``transformers`` Llama folders, both ways, for the models Llama computes.

A nanogpt model with rotary positions, RMSNorm and SwiGLU (``--pos-embedding rope --norm
rmsnorm --activation swiglu``), tied or not, is a Llama with as many key/value heads as
query heads: the same rotation (feature pair ``(i, i + hs/2)``, Llama's ``rotate_half``),
the same norm and MLP. Only the layout of the weights differs: nanogpt keeps q, k and v in
one matrix (``attn.c_attn``) and SwiGLU's gate and up projections in another
(``mlp.c_fc``: the gate's rows first), which Llama keeps apart. A parameter-free norm
(``--no-norm-gain``) exports as a gain of ones.

QK-norm and logit soft-capping have no place in a Llama, and neither have learned position
embeddings, LayerNorm or a non-gated MLP: such models are refused, naming the option.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from ..config import ModelConfig
from ..errors import CheckpointDamaged, CheckpointError
from ..model import NORM_EPS, mlp_hidden
from . import fields
from .core import LM_HEAD, WTE, Checkpoint, canonical_weights
from .hf_folder import HF_CONFIG, hf_checkpoint, raw_weights

LLAMA = "llama"  # the model_type

# nanogpt's per-layer tensors -> Llama's, for those that map one to one.
_SAME = {
    "ln_1.weight": "input_layernorm.weight",
    "ln_2.weight": "post_attention_layernorm.weight",
    "attn.c_proj.weight": "self_attn.o_proj.weight",
    "attn.c_proj.bias": "self_attn.o_proj.bias",
    "mlp.c_proj.weight": "mlp.down_proj.weight",
    "mlp.c_proj.bias": "mlp.down_proj.bias",
}
_NORMS = ("input_layernorm", "post_attention_layernorm")
# ... and those nanogpt keeps in one tensor: its rows, in order.
_SPLIT = {
    "attn.c_attn": ("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj"),
    "mlp.c_fc": ("mlp.gate_proj", "mlp.up_proj"),
}


def llama_blockers(cfg: ModelConfig) -> list[str]:
    """The options of ``cfg``, as flags, that keep it from being a Llama (none: it is one)."""
    found = []
    if cfg.pos_embedding != "rope":
        found.append(f"--pos-embedding {cfg.pos_embedding}")
    if cfg.norm != "rmsnorm":
        found.append(f"--norm {cfg.norm}")
    if cfg.activation != "swiglu":
        found.append(f"--activation {cfg.activation}")
    if cfg.qk_norm:
        found.append("--qk-norm")
    if cfg.logit_softcap:
        found.append(f"--logit-softcap {cfg.logit_softcap}")
    return found


def llama_config_kwargs(cfg: ModelConfig, vocab_size: int) -> dict[str, Any]:
    """The ``LlamaConfig`` of a model ``llama_blockers`` passes."""
    return {
        "vocab_size": vocab_size,
        "hidden_size": cfg.n_embd,
        "intermediate_size": mlp_hidden(cfg),
        "num_hidden_layers": cfg.n_layer,
        "num_attention_heads": cfg.n_head,
        "num_key_value_heads": cfg.n_head,
        "head_dim": cfg.n_embd // cfg.n_head,
        "hidden_act": "silu",
        "max_position_embeddings": cfg.block_size,
        "rms_norm_eps": NORM_EPS,
        "rope_theta": cfg.rope_base,
        "attention_bias": cfg.bias,
        "mlp_bias": cfg.bias,
        "attention_dropout": cfg.dropout,
        "tie_word_embeddings": cfg.tie_embeddings,
        "architectures": ["LlamaForCausalLM"],
    }


def llama_state_dict(
    weights: Mapping[str, torch.Tensor], cfg: ModelConfig, vocab_size: int
) -> dict[str, torch.Tensor]:
    """nanogpt weights under Llama's names (``vocab_size`` rows of the embeddings)."""
    out = {"model.embed_tokens.weight": weights[WTE][:vocab_size]}
    if not cfg.tie_embeddings:
        out["lm_head.weight"] = weights[LM_HEAD][:vocab_size]
    for i in range(cfg.n_layer):
        ours, theirs = f"transformer.h.{i}.", f"model.layers.{i}."
        for name, target in _SAME.items():
            if ours + name in weights:
                out[theirs + target] = weights[ours + name]
        for name, targets in _SPLIT.items():
            for kind in ("weight", "bias"):
                if f"{ours}{name}.{kind}" in weights:
                    parts = weights[f"{ours}{name}.{kind}"].chunk(len(targets), dim=0)
                    for target, part in zip(targets, parts, strict=True):
                        out[f"{theirs}{target}.{kind}"] = part
    if "transformer.ln_f.weight" in weights:
        out["model.norm.weight"] = weights["transformer.ln_f.weight"]
    if not cfg.norm_gain:  # a parameter-free norm is a Llama norm with a gain of ones
        names = [f"model.layers.{i}.{n}.weight" for i in range(cfg.n_layer) for n in _NORMS]
        for name in [*names, "model.norm.weight"]:
            out[name] = torch.ones(cfg.n_embd, dtype=weights[WTE].dtype)  # one tensor each
    return {name: t.contiguous() for name, t in out.items()}


def weights_from_llama(
    raw: Mapping[str, torch.Tensor], cfg: ModelConfig
) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """Llama weights under nanogpt's names, and the norm gains apart (a model without
    gains takes none; the caller checks that they are ones)."""
    out: dict[str, torch.Tensor] = {WTE: raw["model.embed_tokens.weight"]}
    out[LM_HEAD] = raw.get("lm_head.weight", out[WTE])
    gains: dict[str, torch.Tensor] = {"transformer.ln_f.weight": raw["model.norm.weight"]}
    for i in range(cfg.n_layer):
        ours, theirs = f"transformer.h.{i}.", f"model.layers.{i}."
        for name, source in _SAME.items():
            if theirs + source in raw:
                (gains if name.startswith("ln_") else out)[ours + name] = raw[theirs + source]
        for name, sources in _SPLIT.items():
            for kind in ("weight", "bias"):
                parts = [raw.get(f"{theirs}{s}.{kind}") for s in sources]
                if all(p is not None for p in parts):
                    out[f"{ours}{name}.{kind}"] = torch.cat(parts, dim=0)  # type: ignore[arg-type]
    return out, gains


def read_llama(folder: Path, hf: fields.Fields) -> Checkpoint:
    """A Llama folder as a nanogpt model (``checkpoint.llama``): RoPE, RMSNorm, SwiGLU."""
    source = folder / HF_CONFIG
    problems = []
    act = hf.text("hidden_act", "silu")
    if act != "silu":
        problems.append(f"hidden_act {act!r}")
    n_embd = hf.integer("hidden_size", low=1, high=fields.MAX_DIM)
    n_head = hf.integer("num_attention_heads", low=1, high=fields.MAX_DIM)
    if n_embd % n_head:
        raise fields.invalid(source, "hidden_size", f"({n_embd}) is not divisible by n_head")
    kv_heads = hf.integer("num_key_value_heads", None, low=1, high=fields.MAX_DIM)
    if kv_heads not in (None, n_head):
        problems.append(f"grouped-query attention (num_key_value_heads {kv_heads})")
    head_dim = hf.integer("head_dim", None, low=1, high=fields.MAX_DIM)
    if head_dim not in (None, n_embd // n_head):
        problems.append(f"head_dim {head_dim}")
    rope = fields.Fields(hf.obj("rope_parameters", {}), source, "rope_parameters")
    if hf.raw("rope_scaling", None) or rope.text("rope_type", "default") != "default":
        problems.append("scaled rotary embeddings (rope_scaling)")
    theta = rope.number("rope_theta", None, low=1e-9) or hf.number("rope_theta", 10000.0, low=1e-9)
    epsilon = hf.number("rms_norm_eps", 1e-6)
    if abs(epsilon - NORM_EPS) > 1e-12:
        problems.append(f"rms_norm_eps {epsilon} (nanogpt's norms use {NORM_EPS})")
    bias = hf.boolean("attention_bias", False)
    if hf.boolean("mlp_bias", False) != bias:
        problems.append("biases in the attention but not the MLP, or the other way round")
    extra = fields.Fields(hf.obj("nanogpt", {}), source, "nanogpt")
    ours = fields.Fields(extra.obj("model", {}), source, "nanogpt.model")
    model_config = ModelConfig(
        n_layer=hf.integer("num_hidden_layers", low=1, high=fields.MAX_DIM),
        n_head=n_head,
        n_embd=n_embd,
        block_size=hf.integer("max_position_embeddings", 2048, low=1, high=fields.MAX_DIM),
        vocab_size=None,
        dropout=0.0,
        bias=bias,
        pos_embedding="rope",
        rope_base=theta,
        norm="rmsnorm",
        norm_gain=ours.raw("norm_gain", True) is not False,
        activation="swiglu",
        tie_embeddings=hf.boolean("tie_word_embeddings", False),
    )
    hidden = hf.integer("intermediate_size", low=1, high=fields.INT64_MAX)
    if hidden != mlp_hidden(model_config):
        problems.append(
            f"intermediate_size {hidden} (nanogpt's SwiGLU width for hidden_size {n_embd} is "
            f"{mlp_hidden(model_config)})"
        )
    if problems:
        raise CheckpointError(
            f"{folder} is a Llama variant nanogpt's model does not compute: " + ", ".join(problems)
        )
    try:
        weights, gains = weights_from_llama(raw_weights(folder), model_config)
    except KeyError as e:
        raise CheckpointDamaged(f"{folder}: the Llama weights have no {e.args[0]}") from None
    if model_config.norm_gain:
        weights.update(gains)
    elif any(not torch.all(g == 1) for g in gains.values()):
        raise CheckpointError(
            f"{source} says it was exported from a nanogpt model without norm gains, but its "
            "norms have gains other than one"
        )
    weights = canonical_weights(weights, folder)
    shapes = {name: tuple(t.shape) for name, t in weights.items()}
    names = {"n_embd": "hidden_size", "n_layer": "num_hidden_layers"}
    fields.check_shapes(model_config, shapes, source, folder, names)
    tokenizer = fields.tokenizer_field(extra.raw("tokenizer", None), source, "nanogpt.tokenizer")
    iter_num = extra.integer("iter_num", None) or 0
    return hf_checkpoint(
        folder, model_config, weights, tokenizer, extra.text("dataset", None), iter_num
    )
