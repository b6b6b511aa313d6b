"""Checking what a checkpoint's own files say, before anything is built from them.

A ``checkpoint.json``, a ``ckpt.pt``'s ``model_args`` or a Hugging Face ``config.json`` is
untrusted input: edited by hand, damaged on disk, or written to exhaust memory (``n_layer:
1000000``). Every field is type- and range-checked here, and the model shape it asks for is
checked against the shapes of the weights beside it (read from the safetensors header or the
memory-mapped state dict, both bounded by the files' sizes) before any model or tensor is
made. Errors are ``CheckpointDamaged``, one line naming the file and the field.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import fields
from pathlib import Path
from typing import Any, get_args

from ..config import Activation, ModelConfig, Norm, PosEmbedding
from ..errors import CheckpointDamaged
from .core import COMPILED_PREFIX, LM_HEAD, WTE

INT64_MAX = 2**63 - 1
MAX_DIM = 2**31 - 1  # a width, depth, context or vocabulary no file could hold more of
MAX_JSON_BYTES = 64 * 2**20  # a checkpoint.json is a few KB, a config.json less
WPE = "transformer.wpe.weight"
LN_F_BIAS = "transformer.ln_f.bias"
ACTIVATIONS = get_args(Activation)
C_ATTN_BIAS = "transformer.h.0.attn.c_attn.bias"
MAX_SOFTCAP = 1e30  # any finite cap a model could mean
_MODEL_FIELDS = {f.name for f in fields(ModelConfig)}
_MISSING: Any = object()


def shown(value: Any) -> str:
    """A value as a message quotes it: short, with its type where that is the point."""
    try:
        text = repr(value)
    except ValueError:  # an integer too long to print (Python's 4300-digit limit)
        return "an integer of thousands of digits"
    if len(text) > 40:
        text = text[:37] + "..."
    return f"{text} (a {type(value).__name__})" if not isinstance(value, int | float) else text


def invalid(source: str | Path, field: str, why: str) -> CheckpointDamaged:
    return CheckpointDamaged(f"{source} is not a valid checkpoint: {field} {why}")


def read_json(path: Path) -> Any:
    """A JSON file's value, refusing a file too large to be one of ours and JSON nested too
    deep to parse."""
    try:
        size = path.stat().st_size
        if size > MAX_JSON_BYTES:
            raise CheckpointDamaged(
                f"{path} is not a checkpoint's JSON ({size} bytes, over {MAX_JSON_BYTES})"
            )
        return json.loads(path.read_text(encoding="utf-8"))
    except OSError as e:
        raise CheckpointDamaged(f"cannot read {path}: {e.strerror or e}") from None
    except (UnicodeDecodeError, ValueError, RecursionError) as e:
        why = "nested too deeply" if isinstance(e, RecursionError) else str(e).splitlines()[0]
        raise CheckpointDamaged(f"{path} is not valid JSON ({why}); the file is damaged") from None


class Fields:
    """Typed access to one JSON object of a checkpoint file, naming ``source`` and the
    field's dotted path in every error."""

    def __init__(self, value: Any, source: str | Path, prefix: str = "") -> None:
        if not isinstance(value, dict):
            raise invalid(source, prefix or "the file", f"must be an object, not {shown(value)}")
        self.value: dict[str, Any] = value
        self.source = source
        self.prefix = prefix

    def name(self, key: str) -> str:
        return f"{self.prefix}.{key}" if self.prefix else key

    def raw(self, key: str, default: Any = _MISSING) -> Any:
        if key not in self.value:
            if default is _MISSING:
                raise invalid(self.source, self.name(key), "is missing")
            return default
        return self.value[key]

    def integer(
        self, key: str, default: Any = _MISSING, *, low: int = 0, high: int = INT64_MAX
    ) -> Any:
        value = self.raw(key, default)
        if value is None and default is None:
            return None
        if isinstance(value, float) and value.is_integer() and low <= value <= high:
            value = int(value)  # 12.0, as some writers store it
        if isinstance(value, bool) or not isinstance(value, int):
            raise invalid(self.source, self.name(key), f"must be an integer, not {shown(value)}")
        if not low <= value <= high:
            raise invalid(self.source, self.name(key), f"is {shown(value)}, outside {low}..{high}")
        return value

    def number(
        self,
        key: str,
        default: Any = _MISSING,
        *,
        low: float = -math.inf,
        high: float = math.inf,
        infinite: bool = False,
    ) -> Any:
        """A finite number within ``low``..``high`` (``infinite``: or an infinity)."""
        value = self.raw(key, default)
        if value is None and default is None:
            return None
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise invalid(self.source, self.name(key), f"must be a number, not {shown(value)}")
        try:
            value = float(value)
        except OverflowError:
            value = math.inf
        if math.isinf(value) and infinite:
            return value
        if not (math.isfinite(value) and low <= value <= high):
            raise invalid(self.source, self.name(key), f"is {value}, outside {low}..{high}")
        return value

    def boolean(self, key: str, default: Any = _MISSING) -> bool:
        value = self.raw(key, default)
        if not isinstance(value, bool):
            raise invalid(self.source, self.name(key), f"must be true or false, not {shown(value)}")
        return value

    def text(self, key: str, default: Any = _MISSING) -> Any:
        value = self.raw(key, default)
        if value is None and default is None:
            return None
        if not isinstance(value, str):
            raise invalid(self.source, self.name(key), f"must be a string, not {shown(value)}")
        return value

    def obj(self, key: str, default: Any = _MISSING) -> Any:
        """A nested object (a dict), or ``default`` (None allowed) when absent or null."""
        value = self.raw(key, default)
        if value is None and (default is None or isinstance(default, dict)):
            return default
        if not isinstance(value, dict):
            raise invalid(self.source, self.name(key), f"must be an object, not {shown(value)}")
        return value


def model_config(
    value: Any, source: str | Path, prefix: str = "model", *, ignore_unknown: bool = False
) -> ModelConfig:
    """A ``ModelConfig`` from a checkpoint's ``model`` object, every field checked."""
    f = Fields(value, source, prefix)
    unknown = sorted(map(str, set(f.value) - _MODEL_FIELDS))
    if unknown and not ignore_unknown:
        raise invalid(source, f.name(unknown[0]), "is not a model field this nanogpt knows")
    defaults = ModelConfig()
    dims = {
        name: f.integer(name, getattr(defaults, name), low=1, high=MAX_DIM)
        for name in ("n_layer", "n_head", "n_embd", "block_size")
    }
    vocab_size = f.integer("vocab_size", None, low=1, high=MAX_DIM)
    dropout = f.number("dropout", 0.0, low=0.0, high=1.0)
    bias = f.boolean("bias", defaults.bias)
    choices = {
        name: choice(f, name, getattr(defaults, name), allowed)
        for name, allowed in (
            ("activation", ACTIVATIONS),
            ("pos_embedding", get_args(PosEmbedding)),
            ("norm", get_args(Norm)),
        )
    }
    # Absent in checkpoints from before these options: GPT-2's architecture, as then.
    options = {
        name: f.boolean(name, getattr(defaults, name))
        for name in ("norm_gain", "qk_norm", "tie_embeddings", "zero_init_proj")
    }
    options["rope_base"] = f.number("rope_base", defaults.rope_base, low=0.0, high=MAX_SOFTCAP)
    options["logit_softcap"] = f.number("logit_softcap", 0.0, low=0.0, high=MAX_SOFTCAP)
    if options["rope_base"] <= 0:
        raise invalid(source, f.name("rope_base"), "must be positive")
    if dims["n_embd"] % dims["n_head"]:
        raise invalid(
            source,
            f.name("n_embd"),
            f"({dims['n_embd']}) is not divisible by {f.name('n_head')} ({dims['n_head']})",
        )
    if choices["pos_embedding"] == "rope" and (dims["n_embd"] // dims["n_head"]) % 2:
        raise invalid(source, f.name("pos_embedding"), "rope needs an even head size")
    return ModelConfig(
        **dims, vocab_size=vocab_size, dropout=dropout, bias=bias, **choices, **options
    )


def choice(f: Fields, name: str, default: str, allowed: Sequence[str]) -> Any:
    """Field ``name`` of ``f``, one of ``allowed`` (``default`` when absent)."""
    value = f.raw(name, default)
    if value not in allowed:
        raise invalid(
            f.source, f.name(name), f"must be one of {', '.join(allowed)}, not {shown(value)}"
        )
    return value


def tokenizer_field(value: Any, source: str | Path, prefix: str = "tokenizer") -> Any:
    """A checkpoint's tokenizer description (None where it records none), checked."""
    if value is None:
        return None
    f = Fields(value, source, prefix)
    kind = f.text("kind")
    if kind == "char":
        chars = f.raw("chars")
        if isinstance(chars, list) and all(isinstance(c, str) and len(c) == 1 for c in chars):
            chars = "".join(chars)
        if not isinstance(chars, str) or not chars:
            raise invalid(source, f.name("chars"), f"must be a string, not {shown(chars)}")
    elif kind == "tiktoken":
        f.text("name", "gpt2")
    else:
        raise invalid(source, f.name("kind"), f"{kind!r} is not a tokenizer this nanogpt reads")
    return f.value


def run_config(value: Any, source: str | Path, prefix: str = "config") -> Any:
    """The run's options saved with a checkpoint: None, or option groups of plain values
    (their values are checked where they are used, by ``build_config``)."""
    if value is None:
        return None
    f = Fields(value, source, prefix)
    for group, options in f.value.items():
        Fields(options, source, f.name(str(group)))
    return f.value


def layer_indices(names: Sequence[str], source: str | Path) -> set[int]:
    """The block numbers of ``transformer.h.<i>.`` weights."""
    found: set[int] = set()
    for name in names:
        if name.startswith("transformer.h."):
            part = name.split(".")[2]
            if not part.isdigit() or len(part) > 9:
                raise CheckpointDamaged(f"{source} holds a weight of no block number: {name}")
            found.add(int(part))
    return found


def check_shapes(
    cfg: ModelConfig,
    shapes: Mapping[str, Sequence[int]],
    source: str | Path,
    weights: str | Path,
    names: Mapping[str, str] | None = None,
) -> ModelConfig:
    """``cfg`` (from ``source``) checked against the shapes of the weights in ``weights``;
    the vocabulary size filled in from them where ``cfg`` has none. ``names`` spells the
    fields as ``source`` does (``n_positions`` for ``block_size`` in a Hugging Face config)."""
    spelled = {"n_layer": "n_layer", "n_embd": "n_embd", "block_size": "block_size"}
    spelled.update({"vocab_size": "vocab_size", "bias": "bias", **(names or {})})
    canonical = {}
    for name, shape in shapes.items():
        while name.startswith(COMPILED_PREFIX):
            name = name[len(COMPILED_PREFIX) :]
        canonical[name] = tuple(int(n) for n in shape)
    embedding = canonical.get(WTE) or canonical.get(LM_HEAD)
    if embedding is None or len(embedding) != 2:
        raise CheckpointDamaged(f"{weights} holds no token embedding ({WTE}); is it a GPT?")
    vocab, width = embedding
    positions = canonical.get(WPE)
    rope = cfg.pos_embedding == "rope"
    if rope and positions is not None:
        raise CheckpointDamaged(
            f"weights in {weights} do not fit this model: {source} says pos_embedding = rope, "
            f"the weights have a position table ({WPE})"
        )
    if not rope and (positions is None or len(positions) != 2):
        raise CheckpointDamaged(f"{weights} holds no position embedding ({WPE}); is it a GPT?")
    layers = layer_indices(list(canonical), weights)
    # GPT-2's final LayerNorm has a bias exactly when the linear layers do; other norms none.
    gpt2_norm = cfg.norm == "layernorm" and cfg.norm_gain
    have: dict[str, Any] = {
        "n_embd": width,
        "n_layer": len(layers) if layers == set(range(len(layers))) else sorted(layers),
        "bias": (LN_F_BIAS if gpt2_norm else C_ATTN_BIAS) in canonical,
    }
    if positions is not None:
        have["block_size"] = positions[0]
    if cfg.vocab_size is not None:
        have["vocab_size"] = vocab
    for name, value in have.items():
        if getattr(cfg, name) != value:
            raise CheckpointDamaged(
                f"weights in {weights} do not fit this model: {source} says "
                f"{spelled[name]} = {getattr(cfg, name)}, the weights have {value}"
            )
    if positions is not None and positions[1] != width:
        raise CheckpointDamaged(
            f"weights in {weights} do not fit together: {WPE} is {positions}, {WTE} {embedding}"
        )
    if cfg.vocab_size is None:
        cfg.vocab_size = vocab
    return cfg


def config_from_shapes(
    shapes: Mapping[str, Sequence[int]], source: str | Path, **known: Any
) -> ModelConfig:
    """The model shape that the weights' shapes imply (``n_head`` cannot be read from
    shapes: it comes in ``known``)."""
    cfg = ModelConfig(n_layer=1, n_embd=1, block_size=1, vocab_size=None, **known)
    canonical = {name.removeprefix(COMPILED_PREFIX): shape for name, shape in shapes.items()}
    layers = layer_indices(list(canonical), source)
    embedding = canonical.get(WTE) or canonical.get(LM_HEAD)
    positions = canonical.get(WPE)
    if embedding is None or positions is None or len(embedding) != 2 or len(positions) != 2:
        raise CheckpointDamaged(f"{source} holds no token and position embeddings; is it a GPT?")
    if layers != set(range(len(layers))) or not layers:
        raise CheckpointDamaged(f"{source} holds blocks {sorted(layers)[:8]}, not 0..n-1")
    cfg.n_layer, cfg.n_embd, cfg.block_size = len(layers), int(embedding[1]), int(positions[0])
    cfg.bias = LN_F_BIAS in canonical
    return check_shapes(cfg, shapes, source, source)
