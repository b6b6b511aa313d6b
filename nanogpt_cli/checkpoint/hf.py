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
from ..errors import CheckpointDamaged, CheckpointError, first_line
from ..model import NORM_EPS, mlp_hidden
from . import fields
from .core import HF, LM_HEAD, WTE, Checkpoint, TrainState, canonical_weights
from .directory import fsync_dir
from .files import seal
from .llama import LLAMA, llama_blockers, llama_config_kwargs, llama_state_dict, weights_from_llama
from .safety import load_torch_file

HF_CONFIG = "config.json"
MODEL_TYPES = ("gpt2", LLAMA)  # the transformers architectures read and written
_CONV1D = ("attn.c_attn.weight", "attn.c_proj.weight", "mlp.c_fc.weight", "mlp.c_proj.weight")
_TO_HF_ACTIVATION = {"gelu": "gelu", "gelu_tanh": "gelu_new"}
_FROM_HF_ACTIVATION = {"gelu": "gelu", "gelu_new": "gelu_tanh", "gelu_pytorch_tanh": "gelu_tanh"}
GPT2_VOCAB = 50257
GPT2_EOT = 50256
CHAR_TOKENIZER_NOTE = (
    "character-level model: tokenizer.json maps one character to one id, so "
    "AutoTokenizer, pipelines and generate() work; tools that assume GPT-2's BPE do not"
)


def model_type(path: Path) -> str | None:
    """The ``model_type`` of the Hugging Face config in folder ``path``; None without one."""
    config = path / HF_CONFIG
    if not config.is_file():
        return None
    try:
        found = json.loads(config.read_text(encoding="utf-8")).get("model_type")
    except (OSError, ValueError, AttributeError, RecursionError):
        return None
    return found if isinstance(found, str) else None


def is_hf_folder(path: Path) -> bool:
    """Whether ``path`` is a folder holding a Hugging Face GPT-2 or Llama model."""
    return model_type(path) in MODEL_TYPES


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


def resolve_hf_source(src: str | Path) -> Path:
    """A local folder for ``src``: the folder itself, or a hub id downloaded to the cache."""
    path = Path(src).expanduser()
    if path.exists():
        if not is_hf_folder(path):
            raise CheckpointError(
                f"{path} is not a Hugging Face GPT-2 or Llama folder (no config.json with "
                "model_type 'gpt2' or 'llama')"
            )
        return path
    name = str(src)
    if name.startswith((".", "/", "~")) or name.count("/") > 1:
        raise CheckpointError(f"{src} does not exist")
    from huggingface_hub import snapshot_download

    try:
        folder = Path(snapshot_download(name, allow_patterns=["*.json", "*.txt", "*.safetensors"]))
        if not list(folder.glob("*.safetensors")):
            folder = Path(snapshot_download(name, allow_patterns=["pytorch_model.bin"]))
    except Exception as e:  # network, unknown repo, authentication: all one message
        raise CheckpointError(
            f"{src} is not a local folder and could not be fetched from the Hugging Face hub "
            f"({str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__}); "
            "download it elsewhere and pass its folder"
        ) from None
    if not is_hf_folder(folder):
        raise CheckpointError(
            f"hub model {src} is not a GPT-2 or Llama model (model_type is neither)"
        )
    return folder


def _hf_raw_weights(folder: Path) -> dict[str, torch.Tensor]:
    index = folder / "model.safetensors.index.json"
    if (folder / "model.safetensors").is_file():
        return _safetensors(folder / "model.safetensors")
    if index.is_file():
        weight_map = fields.Fields(fields.read_json(index), index).obj("weight_map")
        shards = set(weight_map.values())
        if not all(isinstance(s, str) and s == Path(s).name for s in shards):
            raise fields.invalid(index, "weight_map", "must name files in its own folder")
        out: dict[str, torch.Tensor] = {}
        for shard in sorted(shards):
            out.update(_safetensors(folder / shard))
        return out
    if (folder / "pytorch_model.bin").is_file():
        state = load_torch_file(folder / "pytorch_model.bin")
        if not isinstance(state, dict) or not all(
            isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in state.items()
        ):
            raise CheckpointDamaged(
                f"{folder / 'pytorch_model.bin'} is not a state dict (names to tensors)"
            )
        return state
    raise CheckpointDamaged(f"{folder} has no model.safetensors or pytorch_model.bin")


def _safetensors(path: Path) -> dict[str, torch.Tensor]:
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    try:
        return load_file(str(path))
    except (SafetensorError, OSError) as e:
        raise CheckpointDamaged(
            f"{path} is not a readable safetensors file ({first_line(e)}); the file is damaged "
            "or not a checkpoint"
        ) from None


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
        return _read_llama(folder, hf)
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
    weights = our_weights(_hf_raw_weights(folder), folder)
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
    return _hf_checkpoint(folder, model_config, weights, tokenizer, dataset, iter_num)


def _hf_checkpoint(
    folder: Path,
    model_config: ModelConfig,
    weights: dict[str, torch.Tensor],
    tokenizer: dict[str, Any] | None,
    dataset: str | None,
    iter_num: int,
) -> Checkpoint:
    notes: list[str] = []
    if tokenizer is None and model_config.vocab_size == GPT2_VOCAB:
        tokenizer = {"kind": "tiktoken", "name": "gpt2"}
        notes.append("vocabulary of 50257: taken to be GPT-2's BPE")
    elif tokenizer is None:
        notes.append("no nanogpt tokenizer recorded: sampling will need one")
    return Checkpoint(
        model_config=model_config,
        tokenizer=tokenizer,
        state=TrainState(iter_num=iter_num),
        dataset=dataset,
        path=folder,
        format=HF,
        origin="transformers",
        files=sorted(p for p in folder.iterdir() if p.is_file()),
        notes=notes,
        _weights=weights,
    )


def _read_llama(folder: Path, hf: fields.Fields) -> Checkpoint:
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
        weights, gains = weights_from_llama(_hf_raw_weights(folder), model_config)
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
    return _hf_checkpoint(
        folder, model_config, weights, tokenizer, extra.text("dataset", None), iter_num
    )
