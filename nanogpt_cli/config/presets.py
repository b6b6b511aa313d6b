"""Presets: named sets of options over the defaults (which are nanoGPT's ``train.py``
defaults), built in or the user's own TOML files."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..errors import ConfigError
from .files import read_preset_file
from .validate import suggest

# Rotary positions, RMSNorm, QK-norm, ReLU², an untied head and Muon on the blocks'
# matrices: what the speedrun presets add to the classic ones.
MODERN_RECIPE: dict[str, Any] = {
    "pos_embedding": "rope",
    "norm": "rmsnorm",
    "qk_norm": True,
    "activation": "relu2",
    "tie_embeddings": False,
    "optimizer": "muon",
}

PRESETS: dict[str, dict[str, Any]] = {
    "shakespeare-char": {
        "description": "Baby GPT on character-level Shakespeare (nanoGPT).",
        "values": {
            "out_dir": "out-shakespeare-char",
            "eval_interval": 250,
            "eval_iters": 200,
            "log_interval": 10,
            "always_save_checkpoint": False,
            "dataset": "shakespeare-char",
            "gradient_accumulation_steps": 1,
            "batch_size": 64,
            "block_size": 256,
            "n_layer": 6,
            "n_head": 6,
            "n_embd": 384,
            "dropout": 0.2,
            "learning_rate": 1e-3,
            "max_iters": 5000,
            "lr_decay_iters": 5000,
            "min_lr": 1e-4,
            "beta2": 0.99,
            "warmup_iters": 100,
        },
    },
    "shakespeare-char-cpu": {
        "description": "Small character-level Shakespeare for a laptop CPU.",
        "extends": "shakespeare-char",
        "values": {
            "device": "cpu",
            "compile": False,
            "eval_iters": 20,
            "block_size": 64,
            "batch_size": 12,
            "n_layer": 4,
            "n_head": 4,
            "n_embd": 128,
            "max_iters": 2000,
            "lr_decay_iters": 2000,
            "dropout": 0.0,
        },
    },
    # The speedrun presets: MODERN_RECIPE over a classic preset. The runs that chose their
    # values are in docs/training.md ("Speedrun presets").
    "shakespeare-char-speedrun": {
        "description": "shakespeare-char with the modern recipe (RoPE, RMSNorm, QK-norm, "
        "ReLU², untied head, Muon), for a GPU.",
        "extends": "shakespeare-char",
        "values": {
            "out_dir": "out-shakespeare-char-speedrun",
            **MODERN_RECIPE,
            "max_iters": 2000,
            "lr_decay_iters": 2000,
            "warmup_iters": 50,
            "eval_interval": 100,
        },
    },
    "shakespeare-char-speedrun-cpu": {
        "description": "shakespeare-char-cpu with the modern recipe (RoPE, RMSNorm, QK-norm, "
        "ReLU², untied head, Muon): the same val loss in a fraction of the time.",
        "extends": "shakespeare-char-cpu",
        "values": {
            "out_dir": "out-shakespeare-char-speedrun-cpu",
            **MODERN_RECIPE,
            "muon_momentum": 0.85,
            "batch_size": 16,
            "max_iters": 700,
            "lr_decay_iters": 700,
            "warmup_iters": 30,
            "eval_interval": 100,
        },
    },
    "gpt2-124m": {
        "description": "GPT-2 124M on OpenWebText (nanoGPT's train.py).",
        "values": {"out_dir": "out-gpt2-124m", "dataset": "openwebtext"},
    },
    "gpt2-124m-speedrun": {
        "description": "GPT-2 124M with the modern recipe (RoPE, RMSNorm, QK-norm, ReLU², "
        "untied head, logit soft-cap, zero-init projections, Muon).",
        "extends": "gpt2-124m",
        "values": {
            "out_dir": "out-gpt2-124m-speedrun",
            **MODERN_RECIPE,
            "norm_gain": False,
            "logit_softcap": 15.0,
            "zero_init_proj": True,
            "max_iters": 10000,
            "lr_decay_iters": 10000,
            "warmup_iters": 200,
            "eval_interval": 500,
        },
    },
    # nanoGPT's config/finetune_shakespeare.py, one preset per GPT-2 size.
    "finetune-gpt2": {
        "description": "Finetune GPT-2 124M on Shakespeare (nanoGPT).",
        "values": {
            "init_from": "gpt2",
            "out_dir": "out-finetune-gpt2",
            "dataset": "shakespeare",
            "eval_interval": 5,
            "eval_iters": 40,
            "log_interval": 1,
            "always_save_checkpoint": False,
            "batch_size": 1,
            "gradient_accumulation_steps": 32,
            "max_iters": 20,
            "learning_rate": 3e-5,
            "decay_lr": False,
            "dropout": 0.0,
        },
    },
    **{
        f"finetune-{size}": {
            "description": f"Finetune {size} on Shakespeare.",
            "extends": "finetune-gpt2",
            "values": {"init_from": size, "out_dir": f"out-finetune-{size}"},
        }
        for size in ("gpt2-medium", "gpt2-large", "gpt2-xl")
    },
    # nanoGPT's config/eval_gpt2*.py: the loss of the released weights on OpenWebText.
    **{
        f"eval-{size}": {
            "description": f"Evaluate {size} on OpenWebText ({script}).",
            "values": {
                "init_from": size,
                "dataset": "openwebtext",
                "batch_size": 8,
                "eval_iters": 500,
                "eval_only": True,
                "out_dir": f"out-eval-{size}",
            },
        }
        for size, script in (
            ("gpt2", "eval_gpt2.py"),
            ("gpt2-medium", "eval_gpt2_medium.py"),
            ("gpt2-large", "eval_gpt2_large.py"),
            ("gpt2-xl", "eval_gpt2_xl.py"),
        )
    },
}


# The preset names of nanoGPT's config files and of the README this project grew out of,
# as those spell them: each works wherever a preset is named (dots, dashes, underscores and
# case aside) and `nanogpt presets list` shows them.
PRESET_ALIASES: dict[str, str] = {
    "train_shakespeare_char": "shakespeare-char",
    "train_gpt2": "gpt2-124m",
    "finetune_shakespeare": "finetune-gpt2",
    "finetune.gpt2_small": "finetune-gpt2",
    "finetune.gpt2_medium": "finetune-gpt2-medium",
    "finetune.gpt2_large": "finetune-gpt2-large",
    "finetune.gpt2_xl": "finetune-gpt2-xl",
    "eval_gpt2": "eval-gpt2",
    "eval_gpt2_medium": "eval-gpt2-medium",
    "eval_gpt2_large": "eval-gpt2-large",
    "eval_gpt2_xl": "eval-gpt2-xl",
}


def _key(name: str) -> str:
    return name.lower().replace("_", "-").replace(".", "-")


_BY_KEY = {_key(alias): target for alias, target in PRESET_ALIASES.items()}


def canonical_preset(name: str) -> str:
    """The built-in preset ``name`` stands for: itself, or the preset of an alias or of
    another spelling (``train_shakespeare_char``, ``Shakespeare_Char``); a name that is
    neither is returned as it is."""
    if name in PRESETS:
        return name
    key = _key(name)
    if key in PRESETS:
        return key
    return _BY_KEY.get(key, name)


def preset_aliases(name: str) -> list[str]:
    """The aliases of built-in preset ``name``."""
    return [alias for alias, target in PRESET_ALIASES.items() if target == name]


def user_preset_files() -> dict[str, Path]:
    """``NAME.toml`` files in the user's presets directory, by preset name."""
    from ..paths import user_presets_dir

    folder = user_presets_dir()
    try:
        return {p.stem: p for p in sorted(folder.glob("*.toml")) if p.is_file()}
    except OSError:
        return {}


def preset_names() -> list[str]:
    """Built-in presets, then the user's (a user file may replace a built-in preset)."""
    names = list(PRESETS)
    names += [n for n in user_preset_files() if n not in PRESETS]
    return names


def get_preset(name: str) -> dict[str, Any]:
    """A preset's definition: the user's file of that name if there is one, else built-in."""
    files = user_preset_files()
    if name in files:
        return read_preset_file(files[name])
    if canonical_preset(name) in PRESETS:
        return PRESETS[canonical_preset(name)]
    raise ConfigError(f"unknown preset '{name}'{suggest(name, preset_names())}")


def is_preset(name: str) -> bool:
    """Whether ``name`` names a preset: the user's, built in, or an alias in any spelling."""
    return name in user_preset_files() or canonical_preset(name) in PRESETS


def preset_values(name: str) -> dict[str, Any]:
    """The flat option values a preset sets, its ``extends`` chain included."""
    chain: list[str] = []
    definitions: list[dict[str, Any]] = []
    current: str | None = name
    while current is not None:
        if current in chain:
            raise ConfigError(
                f"preset '{name}' extends itself through {' -> '.join([*chain, current])}"
            )
        chain.append(current)
        definitions.append(get_preset(current))
        current = definitions[-1].get("extends")
    values: dict[str, Any] = {}
    for definition in reversed(definitions):
        values.update(definition["values"])
    return values
