"""The generation benchmark behind ``nanogpt bench sample``: time to the first token and
decoding speed."""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass
from typing import Any

import torch

from ..config import TrainConfig
from ..errors import ConfigError
from ..model import GPT
from ..runtime import resolve_device, resolve_dtype
from .common import SYNTHETIC_VOCAB, Spread, dataset_vocab, synchronize


@dataclass
class SampleBench:
    """One generation benchmark: ``batch_size`` rows, ``new_tokens`` each."""

    device: str
    dtype: str
    params: int
    batch_size: int
    prompt_tokens: int
    new_tokens: int
    kv_cache: bool
    compiled: bool
    compile_s: float | None  # the untimed first run, which compiles the decode step
    first_token_ms: Spread
    decode_tokens_per_s: Spread
    total_tokens_per_s: Spread
    seconds: Spread

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def bench_sample(
    model: GPT,
    *,
    batch_size: int = 1,
    new_tokens: int = 300,
    prompt_tokens: int = 1,
    repeats: int = 3,
    use_cache: bool = True,
    compile: bool = False,
    seed: int = 1337,
) -> SampleBench:
    """Greedy generation of ``new_tokens`` tokens for ``batch_size`` rows, ``repeats`` times:
    time to the first token (the prompt's forward pass included) and decoding speed. With
    ``compile``, one untimed run first compiles the decode step (``compile_s``)."""
    from ..sample import generate

    if min(batch_size, new_tokens, prompt_tokens, repeats) < 1:
        raise ConfigError("--batch-size, --new-tokens, --prompt-tokens and --repeats must be >= 1")
    param = next(model.parameters())
    device = param.device
    vocab = model.config.vocab_size or SYNTHETIC_VOCAB
    generator = torch.Generator().manual_seed(seed)
    prompt = torch.randint(0, vocab, (batch_size, prompt_tokens), generator=generator).to(device)
    model.eval()
    compile_s = None
    if compile:
        synchronize(device)
        start = time.perf_counter()
        for _ in generate(model, prompt, min(new_tokens, 3), temperature=0.0, compile=True):
            pass
        synchronize(device)
        compile_s = time.perf_counter() - start
    first, decode, total, seconds = [], [], [], []
    for _ in range(repeats):
        synchronize(device)
        start = time.perf_counter()
        stream = generate(
            model, prompt, new_tokens, temperature=0.0, use_cache=use_cache, compile=compile
        )
        first_at = None
        for token in stream:
            if first_at is None:
                token.cpu()  # the first token reaches the host: what a user waits for
                first_at = time.perf_counter()
        synchronize(device)
        end = time.perf_counter()
        assert first_at is not None
        first.append((first_at - start) * 1000)
        rest = end - first_at
        decode.append(batch_size * (new_tokens - 1) / rest if new_tokens > 1 and rest > 0 else 0)
        total.append(batch_size * new_tokens / (end - start))
        seconds.append(end - start)
    return SampleBench(
        device=str(device),
        dtype=str(param.dtype).removeprefix("torch."),
        params=model.num_params(),
        batch_size=batch_size,
        prompt_tokens=prompt_tokens,
        new_tokens=new_tokens,
        kv_cache=use_cache,
        compiled=compile,
        compile_s=compile_s,
        first_token_ms=Spread.of(first),
        decode_tokens_per_s=Spread.of(decode),
        total_tokens_per_s=Spread.of(total),
        seconds=Spread.of(seconds),
    )


def random_model(cfg: TrainConfig, device: str = "auto", dtype: str = "auto") -> GPT:
    """A model of ``cfg``'s shape with random weights, on ``device``, in eval mode, with the
    CPU kernels of ``cfg.system.cpu_kernels``; the vocabulary is the config's, else its
    dataset's (if prepared), else GPT-2's."""
    from ..kernels import apply_kernels

    dev = resolve_device(device)
    vocab = cfg.model.vocab_size or dataset_vocab(cfg) or SYNTHETIC_VOCAB
    model = GPT(dataclasses.replace(cfg.model, vocab_size=vocab))
    model.to(device=dev, dtype=resolve_dtype(dtype, dev)).eval()
    apply_kernels(model, cfg.system.cpu_kernels)
    return model
