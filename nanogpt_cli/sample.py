"""Text generation with a KV cache.

With the cache, each new token costs one position of compute instead of a forward pass over
the whole context. GPT-2's positions are absolute: once the text outgrows ``block_size``,
every cached key was computed at a position that no longer holds, so the cache cannot simply
drop its oldest entry. Instead the context window jumps forward by ``window_stride`` tokens
and the cache is refilled from the tokens it keeps. Both paths, with and without the cache,
condition on exactly the same window, so they produce the same tokens; ``window_stride=1``
is nanoGPT's window (always the last ``block_size`` tokens), which re-reads the whole window
for every token once the text is longer than the block.

With ``compile``, each new token runs ``GPT.decode``, a step whose shapes never change,
compiled once per model and batch size; on CUDA it is captured as a CUDA graph
("reduce-overhead"), which removes the launch overhead of a step's ~100 small kernels.
"""

from __future__ import annotations

import weakref
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import torch

from .checkpoint import model_from_checkpoint, read_pretrained
from .data.tokenizer import Tokenizer, tokenizer_from_dict
from .errors import ConfigError, first_line
from .log import get_logger
from .model import GPT, KVCache
from .train.device import resolve_device, resolve_dtype

logger = get_logger(__name__)


def window_start(length: int, block_size: int, stride: int) -> int:
    """First position of the context window for a sequence of ``length`` tokens."""
    if length <= block_size:
        return 0
    return -(-(length - block_size) // stride) * stride  # ceil to a multiple of stride


def default_stride(block_size: int) -> int:
    return max(1, block_size // 4)


def next_token(
    logits: torch.Tensor,
    temperature: float,
    top_k: int | None,
    generator: torch.Generator | None,
) -> torch.Tensor:
    """Pick one token per row from (B, vocab) logits; temperature 0 is greedy."""
    logits = logits.float()
    if temperature == 0:
        return logits.argmax(dim=-1)
    logits = logits / temperature
    if top_k is not None and top_k < logits.size(-1):
        kth = torch.topk(logits, top_k, dim=-1).values[:, [-1]]  # (B, 1)
        logits = logits.masked_fill(logits < kth, float("-inf"))
    probs = torch.softmax(logits, dim=-1)
    return torch.multinomial(probs, num_samples=1, generator=generator).squeeze(1)


def generate(
    model: GPT,
    idx: torch.Tensor,
    max_new_tokens: int,
    *,
    temperature: float = 1.0,
    top_k: int | None = None,
    generator: torch.Generator | None = None,
    use_cache: bool = True,
    window_stride: int | None = None,
    vocab_size: int | None = None,
    compile: bool = False,
) -> Iterator[torch.Tensor]:
    """Yield the next token of every row of ``idx`` (B, T), ``max_new_tokens`` times.

    ``compile`` decodes with the compiled fixed-shape step (see the module's help); it
    needs the KV cache.

    ``vocab_size`` restricts sampling to the tokenizer's ids when the model's vocabulary is
    padded beyond it (nanoGPT pads GPT-2's 50257 to 50304). Arguments are checked when this
    is called, before the first token is generated.
    """
    block = model.config.block_size
    stride = window_stride or default_stride(block)
    if not 1 <= stride <= block:
        raise ConfigError(f"--window-stride must be between 1 and the block size ({block})")
    if compile and not use_cache:
        raise ConfigError("--compile decodes with the KV cache; drop --no-kv-cache")
    decoder = Decoder.of(model, idx.size(0)) if compile else None
    return _generate(
        model,
        idx,
        max_new_tokens,
        temperature,
        top_k,
        generator,
        use_cache,
        stride,
        vocab_size,
        decoder,
    )


# The backend of torch.compile for decoding (tests trace with a cheaper one).
COMPILE_BACKEND = "inductor"
_DECODERS: weakref.WeakKeyDictionary[GPT, dict[int, Decoder]] = weakref.WeakKeyDictionary()


class Decoder:
    """``model.decode`` compiled for one batch size, with the KV cache it writes.

    Kept per model and batch size, so generating again reuses the compiled step (and on
    CUDA the captured graph, whose cache tensors must keep their addresses). So one
    compiled generation at a time per model and batch size: a second one started before
    the first is exhausted would share its cache.
    """

    def __init__(self, model: GPT, batch_size: int) -> None:
        self.cache = KVCache.for_model(model, batch_size)
        cuda = self.cache.k.device.type == "cuda"
        if cuda:
            # The cache is written in place inside the graph: its memory must not move.
            torch._dynamo.mark_static_address(self.cache.k)
            torch._dynamo.mark_static_address(self.cache.v)
        self.model = model
        self.ran = False  # compilation happens on the first call, and can fail there
        self.step: Callable[..., torch.Tensor] = torch.compile(
            model.decode,
            backend=COMPILE_BACKEND,
            mode="reduce-overhead" if cuda and COMPILE_BACKEND == "inductor" else None,
            fullgraph=True,
            dynamic=False,
        )

    @classmethod
    def of(cls, model: GPT, batch_size: int) -> Decoder:
        kept = _DECODERS.setdefault(model, {})
        if batch_size not in kept:
            kept[batch_size] = cls(model, batch_size)
        return kept[batch_size]

    def __call__(self, idx: torch.Tensor) -> torch.Tensor:
        """Logits (B, vocab) for ``idx`` (B, 1), the next position of the cache."""
        cache = self.cache
        idx = idx.clone(memory_format=torch.contiguous_format)  # strides fixed, no recompile
        pos = torch.tensor([cache.begin(1)], dtype=torch.long, device=idx.device)
        try:
            logits = self.step(idx, pos, cache.k, cache.v)
        except Exception as e:
            if self.ran:
                raise
            logger.warning(
                f"compiling the decode step failed, decoding without it: {first_line(e)}"
            )
            self.step = self.model.decode
            logits = self.step(idx, pos, cache.k, cache.v)
        self.ran = True
        cache.commit()
        return logits


@torch.inference_mode()
def _generate(
    model: GPT,
    idx: torch.Tensor,
    max_new_tokens: int,
    temperature: float,
    top_k: int | None,
    generator: torch.Generator | None,
    use_cache: bool,
    stride: int,
    vocab_size: int | None,
    decoder: Decoder | None = None,
) -> Iterator[torch.Tensor]:
    block = model.config.block_size
    tokens = idx
    if decoder is not None:
        cache: KVCache | None = decoder.cache
    else:
        cache = KVCache.for_model(model, idx.size(0)) if use_cache else None
    cache_start = -1  # window start of what the cache holds; -1: nothing yet
    for _ in range(max_new_tokens):
        start = window_start(tokens.size(1), block, stride)
        if cache is None:
            logits, _ = model(tokens[:, start:], last_only=True)
        elif start != cache_start:
            # New window (or the first step): refill the cache from the window's tokens.
            cache.reset()
            cache_start = start
            logits, _ = model(tokens[:, start:], cache=cache, last_only=True)
        elif decoder is not None:
            logits = decoder(tokens[:, -1:])[:, None]
        else:
            logits, _ = model(tokens[:, -1:], cache=cache)
        token = next_token(logits[:, -1, :vocab_size], temperature, top_k, generator)  # (B,)
        tokens = torch.cat([tokens, token[:, None]], dim=1)
        yield token


@dataclass
class Sampler:
    """A model and its tokenizer, ready to generate."""

    model: GPT
    tokenizer: Tokenizer
    device: torch.device

    @classmethod
    def from_checkpoint(
        cls,
        path: str | Path,
        device: str = "auto",
        dtype: str = "auto",
        meta: str | Path | None = None,
    ) -> Sampler:
        """Load any checkpoint format, or a GPT-2 size by name (``gpt2`` ... ``gpt2-xl``);
        ``meta`` is a nanoGPT ``meta.pkl`` vocabulary."""
        ckpt = read_pretrained(path, meta=meta)
        tokenizer = tokenizer_from_dict(ckpt.tokenizer)
        dev = resolve_device(device)
        model = model_from_checkpoint(ckpt)
        model.to(device=dev, dtype=resolve_dtype(dtype, dev))
        return cls(model=model, tokenizer=tokenizer, device=dev)

    def stream(
        self,
        prompt: str,
        max_new_tokens: int = 500,
        *,
        num_samples: int = 1,
        temperature: float = 0.8,
        top_k: int | None = 200,
        seed: int = 1337,
        use_cache: bool = True,
        window_stride: int | None = None,
        compile: bool = False,
    ) -> Iterator[torch.Tensor]:
        """Generate ``num_samples`` continuations of ``prompt`` in one batch, token by token.

        Arguments are checked when this is called, before the first token is generated.
        """
        problems = []
        if temperature < 0:
            problems.append(f"--temperature must not be negative (got {temperature})")
        if top_k is not None and top_k <= 0:
            problems.append(f"--top-k must be positive (got {top_k})")
        if num_samples <= 0:
            problems.append(f"--num-samples must be positive (got {num_samples})")
        if max_new_tokens < 0:
            problems.append(f"--max-new-tokens must not be negative (got {max_new_tokens})")
        if problems:
            raise ConfigError("; ".join(problems))
        ids = self.tokenizer.encode(prompt)
        if not ids:
            raise ConfigError("the prompt is empty; give --start some text")
        idx = torch.tensor([ids] * num_samples, dtype=torch.long, device=self.device)
        generator = torch.Generator(device=self.device).manual_seed(seed)
        return generate(
            self.model,
            idx,
            max_new_tokens,
            temperature=temperature,
            top_k=top_k,
            generator=generator,
            use_cache=use_cache,
            window_stride=window_stride,
            vocab_size=self.tokenizer.vocab_size,
            compile=compile,
        )
