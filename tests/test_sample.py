from __future__ import annotations

from pathlib import Path

import pytest
import torch
from conftest import TINY, make_text

from nanogpt_cli.config import ModelConfig, build_config
from nanogpt_cli.data.prepare import prepare_shakespeare_char
from nanogpt_cli.errors import ConfigError
from nanogpt_cli.model import GPT
from nanogpt_cli.sample import KVCache, Sampler, decode_step, generate, window_start
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


def tiny_model() -> GPT:
    torch.manual_seed(0)
    return GPT(ModelConfig(n_layer=2, n_head=2, n_embd=32, block_size=16, vocab_size=50)).eval()


def test_kv_cache_logits_equal_full_forward() -> None:
    model = tiny_model()
    idx = torch.randint(0, 50, (2, 12))
    full, _ = model(idx)
    cache = KVCache.for_model(model, batch_size=2)
    steps = [cache.append(model, idx[:, :5])]  # prefill
    steps.append(cache.append(model, idx[:, 5:9]))  # a chunk on a filled cache
    steps += [cache.append(model, idx[:, t : t + 1]) for t in range(9, 12)]
    torch.testing.assert_close(torch.cat(steps, dim=1), full, atol=1e-5, rtol=1e-5)
    assert cache.length == 12


def test_kv_cache_refuses_to_overflow() -> None:
    model = tiny_model()
    cache = KVCache.for_model(model, batch_size=1)
    cache.append(model, torch.randint(0, 50, (1, 16)))
    with pytest.raises(ValueError, match="KV cache holds 16 positions"):
        cache.append(model, torch.randint(0, 50, (1, 1)))
    assert cache.length == 16


def test_fixed_shape_decode_step_equals_the_cached_forward(checkpoint: Path) -> None:
    """decode_step (attention over the whole cache, later positions masked) gives the
    logits of the usual cached forward pass, position after position."""
    model = Sampler.from_checkpoint(checkpoint, device="cpu").model
    idx = torch.randint(0, model.config.vocab_size, (2, 12))
    with torch.inference_mode():
        ref_cache, cache = KVCache.for_model(model, 2), KVCache.for_model(model, 2)
        ref_cache.append(model, idx[:, :4])
        cache.append(model, idx[:, :4])
        for t in range(4, 12):
            ref = ref_cache.append(model, idx[:, t : t + 1])
            pos = torch.tensor([cache.length])
            logits = decode_step(model, idx[:, t : t + 1], pos, cache.k, cache.v)
            cache.length += 1
            torch.testing.assert_close(logits, ref[:, -1], rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("stride", [None, 3])
def test_compiled_decoding_gives_the_same_tokens(
    checkpoint: Path, stride: int | None, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`compile=True` traces the decode step as one graph (fullgraph: a graph break fails)
    and generates what eager decoding does, across window slides and repeated calls (which
    reuse the compiled step and its cache)."""
    import nanogpt_cli.sample as sample_module

    # aot_eager traces through dynamo and AOTAutograd like inductor does, without the C++
    # build inductor needs on a CPU (tens of seconds here).
    monkeypatch.setattr(sample_module, "COMPILE_BACKEND", "aot_eager")
    sampler = Sampler.from_checkpoint(checkpoint, device="cpu")
    kwargs = dict(max_new_tokens=40, temperature=0.0, num_samples=2, window_stride=stride)
    eager = text_of(sampler, "JULIET:\n", **kwargs)
    assert text_of(sampler, "JULIET:\n", compile=True, **kwargs) == eager
    assert text_of(sampler, "JULIET:\n", compile=True, **kwargs) == eager
    sampled = dict(max_new_tokens=30, temperature=0.8, seed=3)
    assert text_of(sampler, "\n", compile=True, **sampled) == text_of(sampler, "\n", **sampled)
    with pytest.raises(ConfigError, match="KV cache"):
        sampler.stream("a", compile=True, use_cache=False)


def test_sample_command_compile_flag(checkpoint: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """`nanogpt sample --compile` prints what `--no-compile` prints; the bench reports it."""
    from typer.testing import CliRunner

    import nanogpt_cli.sample as sample_module
    from nanogpt_cli.cli.app import app

    monkeypatch.setattr(sample_module, "COMPILE_BACKEND", "aot_eager")
    runner = CliRunner()
    args = [
        "sample",
        "--checkpoint",
        str(checkpoint),
        "--max-new-tokens",
        "25",
        "--temperature",
        "0.8",
        "--seed",
        "5",
        "--start",
        "ROMEO:",
        "--device",
        "cpu",
        "-q",
    ]
    compiled = runner.invoke(app, [*args, "--compile"])
    eager = runner.invoke(app, [*args, "--no-compile"])
    assert compiled.exit_code == 0 and eager.exit_code == 0, compiled.output
    assert compiled.stdout == eager.stdout and len(eager.stdout.strip()) > len("ROMEO:")
    # an explicit --compile without the cache is refused, not silently dropped
    refused = runner.invoke(app, [*args, "--compile", "--no-kv-cache"])
    assert refused.exit_code != 0 and "KV cache" in str(refused.exception)
    bench = runner.invoke(
        app,
        [
            "bench",
            "sample",
            "--checkpoint",
            str(checkpoint),
            "--new-tokens",
            "8",
            "--repeats",
            "1",
            "--compile",
            "--json",
            "--device",
            "cpu",
        ],
    )
    assert bench.exit_code == 0, bench.output
    import json

    report = json.loads(bench.stdout)
    assert report["compiled"] is True and report["compile_s"] > 0


def test_compile_failure_falls_back_to_eager_decoding(
    checkpoint: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """A platform where compilation fails (no C++ compiler, an unsupported GPU) still
    generates, the same tokens, with one warning."""
    import nanogpt_cli.sample as sample_module

    def broken(gm: object, example_inputs: object) -> object:
        raise RuntimeError("no C++ compiler found")

    monkeypatch.setattr(sample_module, "COMPILE_BACKEND", broken)
    sampler = Sampler.from_checkpoint(checkpoint, device="cpu")
    kwargs = dict(max_new_tokens=20, temperature=0.0)
    assert text_of(sampler, "ROMEO:", compile=True, **kwargs) == text_of(
        sampler, "ROMEO:", **kwargs
    )
    assert capsys.readouterr().err.count("compiling the decode step failed") == 1
