"""Text generation with a KV cache.

With the cache, each new token costs one position of compute instead of a forward pass over
the whole context. GPT-2's positions are absolute: once the text outgrows ``block_size``,
every cached key was computed at a position that no longer holds, so the cache cannot simply
drop its oldest entry. Instead the context window jumps forward by ``window_stride`` tokens
and the cache is refilled from the tokens it keeps. Both paths, with and without the cache,
condition on exactly the same window, so they produce the same tokens; ``window_stride=1``
is nanoGPT's window (always the last ``block_size`` tokens), which re-reads the whole window
for every token once the text is longer than the block.

The cache is ``kv_cache.KVCache``: preallocated keys and values that the model's attention layers
read and extend through the small ``model.LayerCache`` protocol. With ``compile``, each new
token runs ``decode_step``, a step whose shapes never change (attention covers the whole
cache, later positions masked), compiled once per model and batch size; on CUDA it is
captured as a CUDA graph ("reduce-overhead"), which removes the launch overhead of a
step's many small kernels.
"""

from __future__ import annotations

import math
import os
import time
import weakref
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch

from .checkpoint import model_from_checkpoint, read_pretrained
from .data.tokenizer import Tokenizer, tokenizer_from_dict
from .errors import ConfigError, DatasetError, first_line
from .kv_cache import KVCache, decode_step
from .log import get_logger
from .model import GPT
from .runtime import resolve_device, resolve_dtype
from .sampling import SamplingSettings, TextStream, pick_next

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
    return pick_next(logits, SamplingSettings(temperature, top_k), None, generator)


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
    settings: SamplingSettings | None = None,
) -> Iterator[torch.Tensor]:
    """Yield the next token of every row of ``idx`` (B, T), ``max_new_tokens`` times.

    Each token is chosen by ``sampling.pick_next`` with ``settings`` (top-p, min-p, the
    repetition penalty: see ``SamplingSettings``); without them, by ``temperature`` and
    ``top_k`` alone. The repetition penalty sees every token of the row, the prompt's too.

    ``compile`` decodes with the compiled fixed-shape step (see the module's help); it
    needs the KV cache.

    ``vocab_size`` restricts sampling to the tokenizer's ids when the model's vocabulary is
    padded beyond it (nanoGPT pads GPT-2's 50257 to 50304). Arguments are checked when this
    is called, before the first token is generated.
    """
    block = model.config.block_size
    stride = default_stride(block) if window_stride is None else window_stride
    if not 1 <= stride <= block:
        raise ConfigError(f"--window-stride must be between 1 and the block size ({block})")
    if compile and not use_cache:
        raise ConfigError("--compile decodes with the KV cache; drop --no-kv-cache")
    if settings is None:
        settings = SamplingSettings(temperature, top_k)
    decoder = Decoder.of(model, idx.size(0)) if compile else None
    return _generate(
        model,
        idx,
        max_new_tokens,
        settings,
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
    """``decode_step`` compiled for one model and batch size, with the KV cache it writes.

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
        self.ran = False  # compilation happens on the first call, and can fail there

        def step(
            idx: torch.Tensor, pos: torch.Tensor, k: torch.Tensor, v: torch.Tensor
        ) -> torch.Tensor:
            return decode_step(model, idx, pos, k, v)

        self.eager = step
        self.step: Callable[..., torch.Tensor] = torch.compile(
            step,
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
        if cache.length >= cache.max_len:
            raise ValueError(f"KV cache holds {cache.max_len} positions; cannot add 1 more")
        idx = idx.clone(memory_format=torch.contiguous_format)  # strides fixed, no recompile
        pos = torch.tensor([cache.length], dtype=torch.long, device=idx.device)
        try:
            logits = self.step(idx, pos, cache.k, cache.v)
        except Exception as e:
            if self.ran:
                raise
            logger.warning(
                f"compiling the decode step failed, decoding without it: {first_line(e)}"
            )
            self.step = self.eager
            logits = self.step(idx, pos, cache.k, cache.v)
        self.ran = True
        cache.length += 1
        return logits


@torch.inference_mode()
def _generate(
    model: GPT,
    idx: torch.Tensor,
    max_new_tokens: int,
    settings: SamplingSettings,
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
    penalize = settings.repetition_penalty != 1.0
    for _ in range(max_new_tokens):
        start = window_start(tokens.size(1), block, stride)
        if cache is None:
            logits, _ = model(tokens[:, start:], last_only=True)
        elif start != cache_start:
            # New window (or the first step): refill the cache from the window's tokens.
            cache.reset()
            cache_start = start
            logits = cache.append(model, tokens[:, start:], last_only=True)
        elif decoder is not None:
            logits = decoder(tokens[:, -1:])[:, None]
        else:
            logits = cache.append(model, tokens[:, -1:])
        seen = tokens if penalize else None
        token = pick_next(logits[:, -1, :vocab_size], settings, seen, generator)  # (B,)
        tokens = torch.cat([tokens, token[:, None]], dim=1)
        yield token


# Tokens a generation holds, over all its samples (the prompt's and the new ones, 8 bytes
# each, twice: the model's input and what the command keeps to print): 512 MiB each time.
MAX_HELD_TOKENS = 2**26
SEED_MAX = 2**63 - 1


def check_sampling(
    temperature: float, top_k: int | None, num_samples: int, max_new_tokens: int, seed: int
) -> None:
    """Refuse sampling options outside their ranges, all problems in one ``ConfigError``."""
    problems = []
    if not math.isfinite(temperature):
        problems.append(f"--temperature must be a finite number (got {temperature})")
    elif temperature < 0:
        problems.append(f"--temperature must not be negative (got {temperature})")
    if top_k is not None and top_k <= 0:
        problems.append(f"--top-k must be positive (got {top_k})")
    if num_samples <= 0:
        problems.append(f"--num-samples must be positive (got {num_samples})")
    if max_new_tokens < 0:
        problems.append(f"--max-new-tokens must not be negative (got {max_new_tokens})")
    if not 0 <= seed <= SEED_MAX:
        problems.append(f"--seed must be between 0 and {SEED_MAX} (got {seed})")
    if problems:
        raise ConfigError("; ".join(problems))
    if num_samples * max_new_tokens > MAX_HELD_TOKENS:
        raise ConfigError(
            f"--num-samples {num_samples} x --max-new-tokens {max_new_tokens} is "
            f"{num_samples * max_new_tokens:,} tokens, more than the {MAX_HELD_TOKENS:,} a "
            "command holds in memory; draw fewer or shorter samples per command (run it again "
            "with another --seed for more)"
        )


def check_ending(stop: Sequence[str], max_time: float | None) -> None:
    """Refuse an empty stop string and a time limit that is not a number of seconds."""
    if max_time is not None and not (math.isfinite(max_time) and max_time >= 0):
        raise ConfigError(f"--max-time must be a number of seconds, 0 or more (got {max_time})")
    if any(not s for s in stop):
        raise ConfigError("--stop must be some text (an empty stop string would stop at once)")


def check_batch_memory(model: GPT, num_samples: int, length: int, device: torch.device) -> None:
    """Refuse a batch of ``num_samples`` sequences of up to ``length`` tokens whose KV cache,
    logits and tokens would not fit in the device's whole memory, before any of it is made:
    an allocation that fails late, or swaps the machine, says nothing useful."""
    if num_samples * length > MAX_HELD_TOKENS:
        raise ConfigError(
            f"--num-samples {num_samples} x {length} tokens (the prompt and --max-new-tokens) "
            f"is more than the {MAX_HELD_TOKENS:,} tokens a command holds in memory; use a "
            "shorter prompt or fewer or shorter samples"
        )
    total = device_memory(device)
    if total is None:
        return
    cfg = model.config
    element = next(model.parameters()).element_size()
    kv_cache = 2 * cfg.n_layer * cfg.block_size * cfg.n_embd * element
    logits = 4 * cfg.vocab_size * 4  # float32: the logits, scaled, filtered, softmax
    per_sample = kv_cache + logits + 16 * length
    if num_samples * per_sample > total:
        most = max(1, total // per_sample)
        raise ConfigError(
            f"--num-samples {num_samples} needs about {num_samples * per_sample / 2**30:,.1f} "
            f"GiB for its KV cache and logits, more than the {total / 2**30:,.1f} GiB of "
            f"{device.type} memory here; draw at most {most:,} samples at a time"
        )


def device_memory(device: torch.device) -> int | None:
    """The whole memory of ``device`` in bytes (the machine's for the CPU and MPS), or None
    where it cannot be told."""
    try:
        if device.type == "cuda":
            return int(torch.cuda.get_device_properties(device).total_memory)
        return int(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"))
    except (AttributeError, ValueError, OSError, RuntimeError):
        return None


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
        cpu_kernels: str | None = None,
    ) -> Sampler:
        """Load any checkpoint format, or a GPT-2 size by name (``gpt2`` ... ``gpt2-xl``);
        ``meta`` is a nanoGPT ``meta.pkl`` vocabulary. ``cpu_kernels`` is the mode of
        ``kernels.apply_kernels`` (None: ``$NANOGPT_CPU_KERNELS``, else auto)."""
        from .kernels import apply_kernels, kernel_mode

        mode = kernel_mode(cpu_kernels)  # checked before the weights are read
        ckpt = read_pretrained(path, meta=meta)
        tokenizer = tokenizer_from_dict(ckpt.tokenizer)
        dev = resolve_device(device)
        model = model_from_checkpoint(ckpt)
        model.to(device=dev, dtype=resolve_dtype(dtype, dev))
        apply_kernels(model, mode)
        return cls(model=model, tokenizer=tokenizer, device=dev)

    def stream(
        self,
        prompt: str,
        max_new_tokens: int = 500,
        *,
        num_samples: int = 1,
        temperature: float = 0.8,
        top_k: int | None = 200,
        top_p: float | None = None,
        min_p: float | None = None,
        repetition_penalty: float = 1.0,
        seed: int = 1337,
        generator: torch.Generator | None = None,
        use_cache: bool = True,
        window_stride: int | None = None,
        compile: bool = False,
    ) -> Iterator[torch.Tensor]:
        """Generate ``num_samples`` continuations of ``prompt`` in one batch, token by token.

        Random draws come from ``generator`` when given (a session that goes on drawing
        from one), else from a new one seeded with ``seed``. Arguments are checked when
        this is called, before the first token is generated.
        """
        check_sampling(temperature, top_k, num_samples, max_new_tokens, seed)
        settings = SamplingSettings(temperature, top_k, top_p, min_p, repetition_penalty)
        settings.check()
        ids = self.tokenizer.encode(prompt)
        if not ids:
            raise ConfigError("the prompt is empty; give --start some text")
        check_batch_memory(self.model, num_samples, len(ids) + max_new_tokens, self.device)
        idx = torch.tensor([ids] * num_samples, dtype=torch.long, device=self.device)
        if generator is None:
            generator = torch.Generator(device=self.device).manual_seed(seed)
        return generate(
            self.model,
            idx,
            max_new_tokens,
            settings=settings,
            generator=generator,
            use_cache=use_cache,
            window_stride=window_stride,
            vocab_size=self.tokenizer.vocab_size,
            compile=compile,
        )

    def stream_text(
        self,
        prompt: str,
        max_new_tokens: int = 500,
        *,
        settings: SamplingSettings | None = None,
        stop: Sequence[str] = (),
        max_time: float | None = None,
        clock: Callable[[], float] = time.monotonic,
        **options: Any,
    ) -> TextStream:
        """``stream``'s generation as text (see ``TextStream``): each sample ends at the
        first of the ``stop`` strings, which is not part of its text; the batch ends when
        every sample has ended, or once ``max_time`` seconds of ``clock`` have passed since
        the first step began (checked after each token, so at least one comes).

        ``settings`` gives the sampling controls instead of ``stream``'s keywords; the other
        ``options`` are ``stream``'s (``num_samples``, ``seed``, ``generator``, ...).
        """
        check_ending(stop, max_time)
        if settings is not None:
            options = {**asdict(settings), **options}
        tokens = self.stream(prompt, max_new_tokens, **options)
        return TextStream(
            tokens,
            self.tokenizer.decode,
            options.get("num_samples", 1),
            stops=stop,
            max_time=max_time,
            clock=clock,
        )


def sample_of_run(
    out_dir: str | Path,
    *,
    device: str = "auto",
    seed: int = 1337,
    cpu_kernels: str | None = None,
    max_new_tokens: int | None = None,
) -> str:
    """A short sample from the checkpoint in ``out_dir``, what ``nanogpt train`` shows when
    a run ends: from a newline, 200 characters of a character vocabulary or 100 tokens of
    another, at the default temperature and top-k."""
    sampler = Sampler.from_checkpoint(out_dir, device=device, cpu_kernels=cpu_kernels)
    tokenizer = sampler.tokenizer
    if max_new_tokens is None:
        max_new_tokens = 200 if getattr(tokenizer, "kind", None) == "char" else 100
    prompt = "\n"
    try:
        tokenizer.encode(prompt)
    except DatasetError:  # a vocabulary without a newline starts from its first character
        prompt = tokenizer.decode([0])
    new = [int(tokens[0]) for tokens in sampler.stream(prompt, max_new_tokens, seed=seed)]
    return prompt + tokenizer.decode(new)
