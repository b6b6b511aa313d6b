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
from typing import Any

import torch

from ..config import ModelConfig
from ..model import NORM_EPS, mlp_hidden
from .core import LM_HEAD, WTE

LLAMA = "llama"

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
