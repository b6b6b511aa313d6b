"""Hugging Face ``transformers`` folders, both ways: GPT-2, and Llama for the models it
computes (``checkpoint.llama``).

nanogpt's parameter names are GPT-2's; what differs is that Hugging Face stores the four
projection matrices as ``Conv1D`` weights, transposed relative to ``nn.Linear``, always has
biases, and names the GELU forms ``gelu`` (exact) and ``gelu_new`` (tanh approximation).
A padded vocabulary (nanoGPT's 50304) is cropped to the tokenizer's size on export. A model
with an untied head exports as a GPT-2 with ``tie_word_embeddings`` off.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Mapping
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch

from ..config import ModelConfig
from ..errors import CheckpointDamaged, CheckpointError
from . import fields
from .core import LM_HEAD, WTE, Checkpoint, canonical_weights
from .directory import fsync_dir
from .files import seal
from .hf_folder import (
    GPT2_VOCAB,
    HF_CONFIG,
    hf_checkpoint,
    is_hf_folder,
    model_type,
    raw_weights,
    resolve_hf_source,
)
from .llama import LLAMA, llama_blockers, llama_config_kwargs, llama_state_dict, read_llama

_CONV1D = ("attn.c_attn.weight", "attn.c_proj.weight", "mlp.c_fc.weight", "mlp.c_proj.weight")
_TO_HF_ACTIVATION = {"gelu": "gelu", "gelu_tanh": "gelu_new"}
_FROM_HF_ACTIVATION = {"gelu": "gelu", "gelu_new": "gelu_tanh", "gelu_pytorch_tanh": "gelu_tanh"}
GPT2_EOT = 50256
CHAR_TOKENIZER_NOTE = (
    "character-level model: tokenizer.json maps one character to one id, so "
    "AutoTokenizer, pipelines and generate() work; tools that assume GPT-2's BPE do not"
)


# What ``write_hf`` puts in a folder; ``--force`` replaces only a folder made of these.
EXPORT_FILES = frozenset(
    {
        HF_CONFIG,
        "generation_config.json",
        "model.safetensors",
        "tokenizer.json",
        "tokenizer_config.json",
        "special_tokens_map.json",
        "added_tokens.json",
        "vocab.json",
        "merges.txt",
    }
)


def is_nanogpt_export(path: Path) -> bool:
    """Whether ``path`` is a folder ``write_hf`` wrote, holding nothing else."""
    if not is_hf_folder(path):
        return False
    try:
        config = json.loads((path / HF_CONFIG).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return "nanogpt" in config and all(
        p.is_file() and p.name in EXPORT_FILES for p in path.iterdir()
    )


def _is_conv1d(name: str) -> bool:
    return name.endswith(_CONV1D)


# -- export ------------------------------------------------------------------------------------


def hf_state_dict(ckpt: Checkpoint, vocab_size: int) -> dict[str, torch.Tensor]:
    """The checkpoint's weights under Hugging Face's names and layouts.

    The output layer is left out when it is tied to ``transformer.wte.weight``; missing
    biases are zeros, which compute the same as none.
    """
    weights = ckpt.weights()
    cfg = ckpt.model_config
    out: dict[str, torch.Tensor] = {}
    for name, t in weights.items():
        if name == LM_HEAD and cfg.tie_embeddings:
            continue
        if name in (WTE, LM_HEAD):
            t = t[:vocab_size]
        elif _is_conv1d(name):
            t = t.t()
        out[name] = t.contiguous()
    if not cfg.bias:
        width = {"ln_1": 1, "ln_2": 1, "attn.c_attn": 3, "attn.c_proj": 1, "mlp.c_fc": 4}
        width["mlp.c_proj"] = 1
        dtype = weights[WTE].dtype
        for i in range(cfg.n_layer):
            for part, mult in width.items():
                out[f"transformer.h.{i}.{part}.bias"] = torch.zeros(mult * cfg.n_embd, dtype=dtype)
        out["transformer.ln_f.bias"] = torch.zeros(cfg.n_embd, dtype=dtype)
    return out


def export_vocab_size(ckpt: Checkpoint) -> int:
    """The vocabulary exported: the tokenizer's, when the model's is padded beyond it."""
    model_vocab = ckpt.model_config.vocab_size or 0
    tokenizer_vocab = _tokenizer_vocab(ckpt.tokenizer)
    if tokenizer_vocab is not None and tokenizer_vocab < model_vocab:
        return tokenizer_vocab
    return model_vocab


def _tokenizer_vocab(tokenizer: dict[str, Any] | None) -> int | None:
    if not tokenizer:
        return None
    if tokenizer.get("kind") == "char":
        return len(tokenizer["chars"])
    if tokenizer.get("kind") == "tiktoken" and tokenizer.get("name") == "gpt2":
        return GPT2_VOCAB
    return None


def export_architecture(cfg: ModelConfig) -> str:
    """The ``transformers`` architecture a model exports as: ``gpt2``, or ``llama`` for a
    RoPE + RMSNorm + SwiGLU model. Raises ``CheckpointError`` naming an option that
    neither computes."""
    departures = [d for d in cfg.non_gpt2_options() if d != "--no-tie-embeddings"]
    if not departures:
        return "gpt2"
    blockers = llama_blockers(cfg)
    if not blockers:
        return LLAMA
    hint = (
        f"; and {blockers[0]} keeps it from being a Llama (which needs --pos-embedding rope, "
        "--norm rmsnorm and --activation swiglu, without --qk-norm or --logit-softcap)"
        if cfg.pos_embedding == "rope"
        else ""
    )
    raise CheckpointError(
        f"cannot export to Hugging Face: the model uses {departures[0]}, which GPT-2 does not "
        f"compute{hint}; keep it as a nanogpt checkpoint (to-separated, to-unified or "
        "to-model-only)"
    )


def write_hf(dst: str | Path, ckpt: Checkpoint, *, overwrite: bool = False) -> list[str]:
    """Write a folder that ``AutoModelForCausalLM.from_pretrained(dst)`` loads as it is: a
    ``GPT2LMHeadModel``, or a ``LlamaForCausalLM`` (``export_architecture``).

    Returns notes for the user (what the tokenizer files can do, what was cropped). The
    folder is assembled under a temporary name beside ``dst`` and renamed into place.
    """
    from safetensors.torch import save_file

    dst = Path(dst).expanduser()
    cfg = ckpt.model_config
    architecture = export_architecture(cfg)
    vocab = export_vocab_size(ckpt)
    notes: list[str] = []
    if vocab < (cfg.vocab_size or 0):
        notes.append(f"vocabulary cropped from {cfg.vocab_size} (padded) to {vocab} tokens")
    gpt2_bpe = _tokenizer_vocab(ckpt.tokenizer) == GPT2_VOCAB
    common = {
        "bos_token_id": GPT2_EOT if gpt2_bpe else None,
        "eos_token_id": GPT2_EOT if gpt2_bpe else None,
        # What Hugging Face's config has no field for, so that from-hf restores it exactly.
        "nanogpt": {
            "model": asdict(cfg),
            "tokenizer": ckpt.tokenizer,
            "dataset": ckpt.dataset,
            "iter_num": ckpt.state.iter_num,
        },
    }
    if architecture == LLAMA:
        from transformers import LlamaConfig

        hf_config: Any = LlamaConfig(**llama_config_kwargs(cfg, vocab), **common)
        tensors = llama_state_dict(ckpt.weights(), cfg, vocab)
        notes.append("exported as a Llama (LlamaForCausalLM): RoPE, RMSNorm and SwiGLU")
    else:
        from transformers import GPT2Config

        hf_config = GPT2Config(
            vocab_size=vocab,
            n_positions=cfg.block_size,
            n_embd=cfg.n_embd,
            n_layer=cfg.n_layer,
            n_head=cfg.n_head,
            activation_function=_TO_HF_ACTIVATION[cfg.activation],
            resid_pdrop=cfg.dropout,
            embd_pdrop=cfg.dropout,
            attn_pdrop=cfg.dropout,
            layer_norm_epsilon=1e-5,
            tie_word_embeddings=cfg.tie_embeddings,
            architectures=["GPT2LMHeadModel"],
            **common,
        )
        tensors = hf_state_dict(ckpt, vocab)
    dst.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{dst.name}.", dir=dst.parent))
    umask = os.umask(0)
    os.umask(umask)
    tmp.chmod(0o777 & ~umask)  # mkdtemp's 0700 would become the export folder's mode
    try:
        hf_config.save_pretrained(tmp)
        save_file(tensors, str(tmp / "model.safetensors"), metadata={"format": "pt"})
        notes += _write_tokenizer(tmp, ckpt.tokenizer)
        for written in tmp.iterdir():  # on disk before the folder is renamed into place
            seal(written)  # the ordinary mode too (save_file's is 0600)
        fsync_dir(tmp)
        _replace_dir(tmp, dst, overwrite)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return notes


def _replace_dir(tmp: Path, dst: Path, overwrite: bool) -> None:
    occupied = (dst.is_dir() and any(dst.iterdir())) or (dst.exists() and not dst.is_dir())
    if occupied:
        if not overwrite:
            raise CheckpointError(f"{dst} already exists and is not empty; pass --force to replace")
        old = dst.with_name(f".{dst.name}.old")
        shutil.rmtree(old, ignore_errors=True)
        os.replace(dst, old)
        os.replace(tmp, dst)
        shutil.rmtree(old, ignore_errors=True)
    else:
        if dst.is_dir():
            dst.rmdir()
        os.replace(tmp, dst)
    fsync_dir(dst.parent)


def _write_tokenizer(folder: Path, tokenizer: dict[str, Any] | None) -> list[str]:
    if not tokenizer:
        return ["no tokenizer is known for this model: no tokenizer files written"]
    if tokenizer.get("kind") == "char":
        char_tokenizer(list(tokenizer["chars"])).save_pretrained(folder)
        return [CHAR_TOKENIZER_NOTE]
    if tokenizer.get("kind") == "tiktoken" and tokenizer.get("name") == "gpt2":
        from ..data.tokenizer import gpt2_bpe_files

        files = gpt2_bpe_files()
        if files is None:
            return [
                "GPT-2 tokenizer files not written: tiktoken has not cached them and they "
                "could not be downloaded; copy vocab.json and merges.txt from the 'gpt2' "
                "model on the Hugging Face hub"
            ]
        from transformers import GPT2TokenizerFast

        # GPT-2's encoder.json and vocab.bpe are Hugging Face's vocab.json and merges.txt;
        # loading them back from the folder writes the rest (tokenizer.json, its config).
        encoder, merges = files
        shutil.copyfile(encoder, folder / "vocab.json")
        shutil.copyfile(merges, folder / "merges.txt")
        GPT2TokenizerFast.from_pretrained(folder).save_pretrained(folder)
        return []
    return [f"tokenizer kind {tokenizer.get('kind')!r} has no Hugging Face form; none written"]


def char_tokenizer(chars: list[str]) -> Any:
    """A Hugging Face fast tokenizer that maps each character to its id, and back."""
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    core = Tokenizer(models.WordLevel({c: i for i, c in enumerate(chars)}, unk_token=None))
    core.pre_tokenizer = pre_tokenizers.Split(Regex(r"[\s\S]"), behavior="isolated")
    core.decoder = decoders.Fuse()
    return PreTrainedTokenizerFast(tokenizer_object=core)


# -- import ------------------------------------------------------------------------------------


def our_weights(raw: Mapping[str, torch.Tensor], source: Path) -> dict[str, torch.Tensor]:
    """Hugging Face GPT-2 weights under nanogpt's names and layouts."""
    out: dict[str, torch.Tensor] = {}
    for name, t in raw.items():
        # GPT2Model checkpoints (the hub's 'gpt2') have no 'transformer.' prefix.
        if not name.startswith(("transformer.", "lm_head.")):
            name = "transformer." + name
        if _is_conv1d(name) and t.dim() != 2:
            raise CheckpointDamaged(f"{source}: {name} is {tuple(t.shape)}, not a matrix")
        out[name] = t.t().contiguous() if _is_conv1d(name) else t
    return canonical_weights(out, source)


def _drop_zero_biases(weights: dict[str, torch.Tensor], source: Path) -> None:
    """Remove the biases of a bias-free model that nanogpt exported as zeros."""
    biases = [k for k in weights if k.endswith(".bias")]
    if any(weights[k].count_nonzero() for k in biases):
        raise CheckpointError(
            f"{source} says it was exported from a bias-free nanogpt model, but has non-zero biases"
        )
    for k in biases:
        del weights[k]


def read_hf(src: str | Path) -> Checkpoint:
    """Read a Hugging Face GPT-2 or Llama folder (or hub id) as a model-only checkpoint."""
    folder = resolve_hf_source(src)
    source = folder / HF_CONFIG
    hf = fields.Fields(fields.read_json(source), source)
    if model_type(folder) == LLAMA:
        return read_llama(folder, hf)
    problems = []
    activation = _FROM_HF_ACTIVATION.get(hf.text("activation_function", "gelu_new"))
    if activation is None:
        problems.append(f"activation_function {hf.value.get('activation_function')!r}")
    epsilon = hf.number("layer_norm_epsilon", 1e-5)
    if abs(epsilon - 1e-5) > 1e-12:
        problems.append(f"layer_norm_epsilon {epsilon}")
    n_embd = hf.integer("n_embd", 768, low=1, high=fields.MAX_DIM)
    n_inner = hf.integer("n_inner", None, low=1, high=fields.INT64_MAX)
    if n_inner not in (None, 4 * n_embd):
        problems.append(f"n_inner {n_inner}")
    if hf.raw("scale_attn_by_inverse_layer_idx", False) or hf.raw("scale_attn_weights", 1) is False:
        problems.append("non-standard attention scaling")
    if problems:
        raise CheckpointError(
            f"{folder} is a GPT-2 variant nanogpt's model does not compute: " + ", ".join(problems)
        )
    shape = {
        "n_layer": hf.integer("n_layer", 12, low=1, high=fields.MAX_DIM),
        "n_head": hf.integer("n_head", 12, low=1, high=fields.MAX_DIM),
        "block_size": hf.integer("n_positions", 1024, low=1, high=fields.MAX_DIM),
    }
    if n_embd % shape["n_head"]:
        raise fields.invalid(source, "n_embd", f"({n_embd}) is not divisible by n_head")
    extra = fields.Fields(hf.obj("nanogpt", {}), source, "nanogpt")
    tokenizer = fields.tokenizer_field(extra.raw("tokenizer", None), source, "nanogpt.tokenizer")
    dataset = extra.text("dataset", None)
    iter_num = extra.integer("iter_num", None) or 0
    # Hugging Face's GPT-2 always has biases; a model nanogpt exported without them says so.
    bias = fields.Fields(extra.obj("model", {}), source, "nanogpt.model").raw("bias", True)
    bias = bias is not False
    weights = our_weights(raw_weights(folder), folder)
    if not bias:
        _drop_zero_biases(weights, folder)
    model_config = ModelConfig(
        **shape,
        n_embd=n_embd,
        vocab_size=None,
        dropout=0.0,
        bias=bias,
        activation=activation,  # type: ignore[arg-type]
        tie_embeddings=hf.boolean("tie_word_embeddings", True),
    )
    shapes = {name: tuple(t.shape) for name, t in weights.items()}
    fields.check_shapes(model_config, shapes, source, folder, {"block_size": "n_positions"})
    return hf_checkpoint(folder, model_config, weights, tokenizer, dataset, iter_num)
