from __future__ import annotations

from pathlib import Path

import pytest
import torch
from conftest import TINY, make_text

from nanogpt_cli.config import build_config
from nanogpt_cli.data.prepare import prepare_shakespeare_char
from nanogpt_cli.errors import ConfigError
from nanogpt_cli.sample import Sampler, generate, window_start
from nanogpt_cli.train import train


def train_tiny(root: Path, **overrides: object) -> Path:
    """Prepare the generated corpus under ``root`` and train a tiny model; returns out_dir."""
    corpus = root / "corpus.txt"
    corpus.write_text(make_text())
    prepare_shakespeare_char(source=str(corpus), data_dir=root / "data")
    out = root / "out"
    options = {**TINY, "data_dir": str(root / "data"), "out_dir": str(out), **overrides}
    train(build_config("shakespeare-char", overrides=options))
    return out


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny model trained for a few steps (block size 16)."""
    return train_tiny(tmp_path_factory.mktemp("sample"), max_iters=30)


def text_of(sampler: Sampler, prompt: str, **kwargs: object) -> list[str]:
    rows = list(zip(*[t.tolist() for t in sampler.stream(prompt, **kwargs)], strict=True))
    return [sampler.tokenizer.decode(list(r)) for r in rows]


def test_window_start() -> None:
    assert window_start(10, 16, 4) == 0
    assert window_start(16, 16, 4) == 0
    assert window_start(17, 16, 4) == 4  # jumps by the stride
    assert window_start(20, 16, 4) == 4
    assert window_start(21, 16, 4) == 8
    assert window_start(21, 16, 1) == 5  # stride 1: always the last block_size tokens


def test_greedy_is_deterministic(checkpoint: Path) -> None:
    sampler = Sampler.from_checkpoint(checkpoint, device="cpu")
    a = text_of(sampler, "ROMEO:", max_new_tokens=40, temperature=0.0, seed=1)
    b = text_of(sampler, "ROMEO:", max_new_tokens=40, temperature=0.0, seed=2)
    assert a == b and len(a[0]) == 40


def test_sampling_is_reproducible_by_seed(checkpoint: Path) -> None:
    sampler = Sampler.from_checkpoint(checkpoint, device="cpu")
    a = text_of(sampler, "\n", max_new_tokens=60, seed=7)
    b = text_of(sampler, "\n", max_new_tokens=60, seed=7)
    c = text_of(sampler, "\n", max_new_tokens=60, seed=8)
    assert a == b and a != c


@pytest.mark.parametrize("stride", [None, 1, 5])
def test_kv_cache_matches_no_cache_beyond_block_size(checkpoint: Path, stride: int | None) -> None:
    sampler = Sampler.from_checkpoint(checkpoint, device="cpu")
    # 70 new tokens with a block of 16: the window slides many times.
    kwargs = dict(max_new_tokens=70, temperature=0.0, num_samples=2, window_stride=stride)
    cached = text_of(sampler, "JULIET:\n", use_cache=True, **kwargs)
    uncached = text_of(sampler, "JULIET:\n", use_cache=False, **kwargs)
    assert cached == uncached


def test_generate_yields_the_same_tokens_with_and_without_cache(checkpoint: Path) -> None:
    sampler = Sampler.from_checkpoint(checkpoint, device="cpu")
    model = sampler.model
    idx = torch.tensor([sampler.tokenizer.encode("NURSE:\nthe")])
    seen = {}
    for use_cache in (True, False):
        tokens = list(generate(model, idx, 30, temperature=0.0, use_cache=use_cache))
        seen[use_cache] = torch.stack(tokens)
    assert torch.equal(seen[True], seen[False])


def test_prompt_longer_than_block(checkpoint: Path) -> None:
    sampler = Sampler.from_checkpoint(checkpoint, device="cpu")
    prompt = "ROMEO:\nthe night is sweet and fair and the day\n"  # > 16 characters
    a = text_of(sampler, prompt, max_new_tokens=20, temperature=0.0, use_cache=True)
    b = text_of(sampler, prompt, max_new_tokens=20, temperature=0.0, use_cache=False)
    assert a == b


def test_stream_checks_its_arguments_before_generating(checkpoint: Path) -> None:
    sampler = Sampler.from_checkpoint(checkpoint, device="cpu")
    # No token is requested: the checks run when stream() is called.
    with pytest.raises(ConfigError, match="--temperature must not be negative"):
        sampler.stream("a", temperature=-1)
    with pytest.raises(ConfigError, match="empty"):
        sampler.stream("")
    with pytest.raises(ConfigError, match="--top-k must be positive"):
        sampler.stream("a", top_k=0)
    with pytest.raises(ConfigError, match="--window-stride must be between 1 and the block"):
        sampler.stream("a", window_stride=17)


def test_padded_vocabulary_never_samples_beyond_the_tokenizer(tmp_path: Path) -> None:
    out = train_tiny(tmp_path, max_iters=3, vocab_size=512)
    sampler = Sampler.from_checkpoint(out, device="cpu")
    assert sampler.model.config.vocab_size == 512 > sampler.tokenizer.vocab_size
    tokens = torch.stack(list(sampler.stream("R", 200, temperature=2.0, top_k=None)))
    assert int(tokens.max()) < sampler.tokenizer.vocab_size
