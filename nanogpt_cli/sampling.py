"""How the next token is chosen from a row of logits: repetition penalty, temperature and
the top-k, top-p (nucleus) and min-p filters, then a draw (or the argmax at temperature 0).

The definitions and their order are those of ``transformers`` ``generate``: the repetition
penalty (CTRL's: a seen token's logit is divided by the penalty when positive, multiplied
when negative) applies to the raw logits, then temperature, top-k, top-p and min-p, each
keeping at least one token. The sampler of ``nanogpt sample`` and the server use this
module, so the same settings choose the same tokens everywhere.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass

import torch

from .errors import ConfigError


@dataclass(frozen=True)
class SamplingSettings:
    """How to pick each next token. ``None`` (or 1.0 for ``top_p`` and
    ``repetition_penalty``, 0 for ``min_p``) turns a filter off."""

    temperature: float = 0.8
    top_k: int | None = 200
    top_p: float | None = None
    min_p: float | None = None
    repetition_penalty: float = 1.0

    def check(self) -> None:
        """Raise ``ConfigError`` naming the first setting out of its range."""
        if not 0 <= self.temperature <= 100 or self.temperature != self.temperature:
            raise ConfigError("--temperature must be between 0 (greedy) and 100")
        if self.top_k is not None and self.top_k < 1:
            raise ConfigError("--top-k must be at least 1 (leave it out to keep every token)")
        if self.top_p is not None and not 0 < self.top_p <= 1:
            raise ConfigError("--top-p must be above 0 and at most 1 (1 keeps every token)")
        if self.min_p is not None and not 0 <= self.min_p <= 1:
            raise ConfigError("--min-p must be between 0 and 1 (0 keeps every token)")
        if not 0 < self.repetition_penalty <= 100:
            raise ConfigError("--repetition-penalty must be above 0 and at most 100 (1: none)")

    @property
    def greedy(self) -> bool:
        return self.temperature == 0


def penalize_repetition(logits: torch.Tensor, seen: torch.Tensor, penalty: float) -> torch.Tensor:
    """``logits`` (B, V) with every token id in ``seen`` (B, T) penalised (CTRL)."""
    if penalty == 1.0 or seen.numel() == 0:
        return logits
    seen = seen.clamp(max=logits.size(-1) - 1)  # ids past a restricted vocabulary: none
    picked = logits.gather(1, seen)
    picked = torch.where(picked < 0, picked * penalty, picked / penalty)
    return logits.scatter(1, seen, picked)


def filter_top_k(logits: torch.Tensor, top_k: int) -> torch.Tensor:
    """Keep the ``top_k`` largest logits of each row (ties with the k-th kept too)."""
    if top_k >= logits.size(-1):
        return logits
    kth = torch.topk(logits, top_k, dim=-1).values[:, [-1]]  # (B, 1)
    return logits.masked_fill(logits < kth, float("-inf"))


def filter_top_p(logits: torch.Tensor, top_p: float) -> torch.Tensor:
    """Keep the smallest set of most likely tokens whose probability reaches ``top_p``."""
    if top_p >= 1.0:
        return logits
    ordered, order = torch.sort(logits, descending=False)
    cumulative = ordered.softmax(dim=-1).cumsum(dim=-1)
    drop = cumulative <= (1 - top_p)
    drop[..., -1:] = False  # the most likely token always stays
    return logits.masked_fill(drop.scatter(1, order, drop), float("-inf"))


def filter_min_p(logits: torch.Tensor, min_p: float) -> torch.Tensor:
    """Drop tokens less likely than ``min_p`` times the most likely token's probability."""
    if min_p <= 0:
        return logits
    probs = torch.softmax(logits, dim=-1)
    drop = probs < min_p * probs.amax(dim=-1, keepdim=True)
    drop.scatter_(1, probs.argmax(dim=-1, keepdim=True), False)
    return logits.masked_fill(drop, float("-inf"))


def process_logits(
    logits: torch.Tensor, settings: SamplingSettings, seen: torch.Tensor | None = None
) -> torch.Tensor:
    """The float32 logits (B, V) the next token is drawn from, after the repetition penalty
    over ``seen`` (B, T) (the tokens so far: prompt and generated), temperature and the
    filters; at temperature 0 only the penalty applies."""
    logits = logits.float()
    if seen is not None:
        logits = penalize_repetition(logits, seen, settings.repetition_penalty)
    if settings.greedy:
        return logits
    logits = logits / settings.temperature
    if settings.top_k is not None:
        logits = filter_top_k(logits, settings.top_k)
    if settings.top_p is not None:
        logits = filter_top_p(logits, settings.top_p)
    if settings.min_p is not None:
        logits = filter_min_p(logits, settings.min_p)
    return logits


def pick_next(
    logits: torch.Tensor,
    settings: SamplingSettings,
    seen: torch.Tensor | None = None,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """One token id per row of ``logits`` (B, V): the argmax at temperature 0, else a draw
    from the processed distribution."""
    logits = process_logits(logits, settings, seen)
    if settings.greedy:
        return logits.argmax(dim=-1)
    probs = torch.softmax(logits, dim=-1)
    return torch.multinomial(probs, num_samples=1, generator=generator).squeeze(1)


class StopText:
    """A generation's text, piece by piece, cut before the first of ``stops``.

    ``push(piece)`` returns the text that can be shown now: text that might be the start of
    a stop string is held back until the next pieces tell. ``stopped`` turns true when a
    stop string appeared (it is never shown); ``flush()`` returns what is held back at the
    end of a generation that did not stop.
    """

    def __init__(self, stops: Sequence[str] = ()) -> None:
        self.stops = [s for s in stops if s]
        self.pending = ""
        self.stopped = False

    def push(self, piece: str) -> str:
        if self.stopped:
            return ""
        text = self.pending + piece
        found = [i for i in (text.find(s) for s in self.stops) if i >= 0]
        if found:
            self.stopped, self.pending = True, ""
            return text[: min(found)]
        hold = max((_prefix_overlap(text, s) for s in self.stops), default=0)
        self.pending = text[len(text) - hold :]
        return text[: len(text) - hold]

    def flush(self) -> str:
        out, self.pending = self.pending, ""
        return out


@dataclass
class SampleText:
    """One sample of a ``TextStream``: its text so far (stop string excluded), the tokens
    generated for it (the one that completed a stop string included), and why it ended:
    ``stop`` (a stop string), ``length`` (the tokens ran out), ``time`` (the time limit);
    None while it goes on."""

    text: str = ""
    tokens: int = 0
    finish: str | None = None


# Bytes of one UTF-8 character: a character split over more tokens than this is not one.
_UTF8_MAX = 4


class TextStream:
    """A batch of generations as text, token step by token step.

    Iterating yields, after each step, the text each sample adds (an empty string for a
    sample that ended or whose text is held back), and once more at the end for the text
    held back until then; ``samples`` says what each sample became. A sample ends at its
    first stop string (``StopText``); the batch ends when every sample has, when
    ``tokens`` runs out, or once ``max_time`` seconds of ``clock`` have passed since the
    first step began (checked after each step, so at least one token comes). A token
    that decodes to half a character (byte-level BPE) waits for the rest of it.
    """

    def __init__(
        self,
        tokens: Iterable[torch.Tensor],
        decode: Callable[[list[int]], str],
        num_samples: int,
        *,
        stops: Sequence[str] = (),
        max_time: float | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.tokens, self.decode = tokens, decode
        self.max_time, self.clock = max_time, clock
        self.samples = [SampleText() for _ in range(num_samples)]
        self._stops = [StopText(stops) for _ in range(num_samples)]
        self._pending: list[list[int]] = [[] for _ in range(num_samples)]

    @property
    def timed_out(self) -> bool:
        return any(s.finish == "time" for s in self.samples)

    def __iter__(self) -> Iterator[list[str]]:
        start = self.clock()
        ending = "length"
        steps = iter(self.tokens)
        for step in steps:  # (B,)
            yield [self._push(i, token) for i, token in enumerate(step.tolist())]
            if all(s.finish is not None for s in self.samples):
                break
            if self.max_time is not None and self.clock() - start >= self.max_time:
                ending = "time"
                break
        close = getattr(steps, "close", None)
        if close is not None:  # the generation's cache and tensors go now, not later
            close()
        tail = [self._end(i, ending) for i in range(len(self.samples))]
        if any(tail):
            yield tail

    def _push(self, i: int, token: int) -> str:
        sample, pending = self.samples[i], self._pending[i]
        if sample.finish is not None:
            return ""
        sample.tokens += 1
        pending.append(token)
        text = self.decode(pending)
        if text.endswith("\ufffd") and len(pending) < _UTF8_MAX:
            return ""
        pending.clear()
        return self._show(i, text)

    def _show(self, i: int, text: str) -> str:
        stop = self._stops[i]
        piece = stop.push(text)
        if stop.stopped:
            self.samples[i].finish = "stop"
        self.samples[i].text += piece
        return piece

    def _end(self, i: int, ending: str) -> str:
        sample = self.samples[i]
        if sample.finish is not None:
            return ""
        piece = self._show(i, self.decode(self._pending[i])) if self._pending[i] else ""
        self._pending[i].clear()
        if sample.finish is None:
            sample.finish = ending
            rest = self._stops[i].flush()
            sample.text += rest
            piece += rest
        return piece


_ESCAPES = {"n": "\n", "t": "\t", "r": "\r", "\\": "\\"}


def unescape(text: str) -> str:
    """``text`` as typed on a command line, with ``\\n``, ``\\t``, ``\\r`` and ``\\\\`` standing
    for a newline, a tab, a carriage return and a backslash (other backslashes stay)."""
    out, i = [], 0
    while i < len(text):
        if text[i] == "\\" and i + 1 < len(text) and text[i + 1] in _ESCAPES:
            out.append(_ESCAPES[text[i + 1]])
            i += 2
        else:
            out.append(text[i])
            i += 1
    return "".join(out)


def _prefix_overlap(text: str, stop: str) -> int:
    """Length of the longest end of ``text`` that is a proper beginning of ``stop``."""
    for n in range(min(len(text), len(stop) - 1), 0, -1):
        if stop.startswith(text[-n:]):
            return n
    return 0
