"""The server's decoding engine: continuous batching over one KV cache.

One model, one cache of ``max_batch`` slots (each a whole context of ``block_size``
positions), one thread that decodes. Every step of that thread:

1. drops the sequences whose client went away (``Job.cancel``);
2. admits waiting jobs, first come first served, while there are free slots: each prompt is
   run through the model once (the prefill), its keys and values written into a slot (into
   ``n`` slots for ``n`` completions of one prompt), and the first token picked;
3. decodes one token for every sequence in the batch at once: each row at its own position
   (``GPT.forward`` takes (B, 1) positions), attending to its own slot up to that position;
4. retires the finished sequences (``max_tokens`` reached, a stop string, the context full).

So a request that arrives while others decode joins the batch at the next step, and the
batch shrinks as sequences finish. The sequences of the batch sit in slots ``0 .. B-1``:
when one leaves, the last one's cache moves into its slot, so the batch's keys and values
are always one view of the cache, never a gathered copy.

Each sequence is sampled with its own settings (``sampling.pick_next``) and, when the
request gave a ``seed``, its own random generator; sequences with equal settings and no
seed are drawn together from the engine's generator.
"""

from __future__ import annotations

import os
import threading
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

import torch

from ..data.tokenizer import Tokenizer
from ..log import get_logger
from ..model import GPT
from ..sampling import SamplingSettings, StopText, pick_next

logger = get_logger(__name__)

# Tokens whose text may end inside a character (BPE splits UTF-8 bytes) are held back until
# the character completes, for at most this many tokens.
HOLD_TOKENS = 4


@dataclass(frozen=True)
class Text:
    """Text of completion ``index`` that can be shown now."""

    index: int
    text: str


@dataclass(frozen=True)
class Done:
    """Completion ``index`` has ended: ``reason`` is "stop" or "length"."""

    index: int
    reason: str
    completion_tokens: int


@dataclass(frozen=True)
class Failed:
    """The engine could not finish the job; ``message`` says why."""

    message: str


Event = Text | Done | Failed


class Busy(Exception):
    """Every slot is taken and the queue is full: try again later."""


@dataclass
class Job:
    """``n`` completions of one prompt (token ids). ``emit`` receives their ``Event``s, from
    the engine's thread; completion ``i`` is reported as index ``first_index + i``."""

    prompt: list[int]
    max_tokens: int
    settings: SamplingSettings
    emit: Callable[[Event], None]
    n: int = 1
    seed: int | None = None
    stops: tuple[str, ...] = ()
    first_index: int = 0
    cancelled: bool = False

    def cancel(self) -> None:
        """Drop the job's sequences at the engine's next step (any thread may call this)."""
        self.cancelled = True


@dataclass
class _Row:
    """One sequence being decoded: the prompt and the tokens so far."""

    job: Job
    index: int  # among the job's n completions
    tokens: list[int]
    generator: torch.Generator | None
    stop: StopText
    generated: int = 0
    shown_upto: int = 0  # tokens[:shown_upto] have been turned into text
    done: bool = False


class Engine:
    """Decodes the jobs given to ``submit`` in one batch, on a thread of its own
    (``start``/``close``), or step by step (``step``, for tests)."""

    def __init__(
        self,
        model: GPT,
        tokenizer: Tokenizer,
        *,
        max_batch: int = 16,
        max_queue: int = 64,
        seed: int | None = None,
    ) -> None:
        cfg = model.config
        self.model = model.eval()
        self.tokenizer = tokenizer
        self.block_size = cfg.block_size
        self.vocab_size = tokenizer.vocab_size
        self.max_batch, self.max_queue = max_batch, max_queue
        param = model.lm_head.weight
        self.device = param.device
        with torch.inference_mode():
            shape = (cfg.n_layer, max_batch, cfg.n_head, cfg.block_size, cfg.n_embd // cfg.n_head)
            self.k = torch.zeros(shape, device=param.device, dtype=param.dtype)
            self.v = torch.zeros(shape, device=param.device, dtype=param.dtype)
        self.generator = torch.Generator(device=self.device)
        self.generator.manual_seed(
            int.from_bytes(os.urandom(8), "little") if seed is None else seed
        )
        self.rows: list[_Row] = []  # row i decodes in cache slot i
        self.waiting: deque[Job] = deque()
        self.dropped = 0  # sequences dropped because their client went away
        self._cond = threading.Condition()
        self._thread: threading.Thread | None = None
        self._closing = False

    # -- the queue ------------------------------------------------------------------------------

    def submit(self, jobs: list[Job]) -> None:
        """Queue ``jobs`` (all, or none: ``Busy`` when they would wait behind ``max_queue``
        jobs that are already waiting for a slot)."""
        for job in jobs:
            if not 1 <= job.n <= self.max_batch:
                raise ValueError(f"a job of {job.n} sequences cannot fit {self.max_batch} slots")
        with self._cond:
            self.waiting = deque(j for j in self.waiting if not j.cancelled)  # clients gone
            free = self.max_batch - len(self.rows)
            queued = 0  # jobs that will have to wait for a slot
            for job in [*self.waiting, *jobs]:
                if queued == 0 and job.n <= free:
                    free -= job.n
                else:
                    queued += 1
            if queued > self.max_queue:
                raise Busy(f"{len(self.waiting)} requests are waiting for a slot")
            self.waiting.extend(jobs)
            self._cond.notify()

    @property
    def running(self) -> int:
        return len(self.rows)

    # -- the thread -----------------------------------------------------------------------------

    def start(self) -> None:
        self._thread = threading.Thread(target=self._loop, name="nanogpt-engine", daemon=True)
        self._thread.start()

    def close(self) -> None:
        with self._cond:
            self._closing = True
            self._cond.notify()
        if self._thread is not None:
            self._thread.join()
        self._fail_all("the server is shutting down")

    def _loop(self) -> None:
        while True:
            with self._cond:
                while not (self._closing or self.waiting or self.rows):
                    self._cond.wait()
                if self._closing:
                    return
            try:
                self.step()
            except Exception as e:  # a failure costs its requests, not the server
                logger.error(f"decoding failed: {type(e).__name__}: {e}")
                self._fail_all(f"decoding failed: {type(e).__name__}: {e}")

    def _fail_all(self, message: str) -> None:
        with self._cond:
            jobs = {id(r.job): r.job for r in self.rows} | {id(j): j for j in self.waiting}
            self.rows, self.waiting = [], deque()
        for job in jobs.values():
            _send(job, Failed(message))

    # -- one step -------------------------------------------------------------------------------

    @torch.inference_mode()
    def step(self) -> None:
        """Drop, admit, decode one token for every sequence, retire the finished ones."""
        cancelled = [i for i, row in enumerate(self.rows) if row.job.cancelled]
        self.dropped += len(cancelled)
        self._remove(cancelled)
        for job in self._admit():
            admitted = len(self.rows)
            try:
                self._prefill(job)
            except Exception as e:  # this prompt's failure: the batch goes on
                del self.rows[admitted:]
                logger.error(f"a prompt failed: {type(e).__name__}: {e}")
                _send(job, Failed(f"the prompt failed: {type(e).__name__}: {e}"))
        self._remove([i for i, row in enumerate(self.rows) if row.done])
        if not self.rows:
            return
        self._decode()
        self._remove([i for i, row in enumerate(self.rows) if row.done])

    def _admit(self) -> list[Job]:
        admitted = []
        with self._cond:
            free = self.max_batch - len(self.rows)
            while self.waiting and (self.waiting[0].cancelled or self.waiting[0].n <= free):
                job = self.waiting.popleft()
                if not job.cancelled:
                    admitted.append(job)
                    free -= job.n
        return admitted

    def _prefill(self, job: Job) -> None:
        """Run ``job``'s prompt through the model into the next free slots; pick the first
        token of each of its ``n`` completions."""
        slot = len(self.rows)
        ids = torch.tensor([job.prompt], dtype=torch.long, device=self.device)  # (1, T)
        T = ids.size(1)
        pos = torch.arange(T, dtype=torch.long, device=self.device)
        layers = [_Prefill(self.k[i], self.v[i], slot) for i in range(self.k.size(0))]
        logits, _ = self.model(ids, pos=pos, cache=layers, last_only=True)
        assert logits is not None
        logits = logits[:, -1, : self.vocab_size]  # (1, vocab)
        # The other completions of the prompt start from the same keys and values.
        self.k[:, slot + 1 : slot + job.n, :, :T] = self.k[:, slot : slot + 1, :, :T]
        self.v[:, slot + 1 : slot + job.n, :, :T] = self.v[:, slot : slot + 1, :, :T]
        for i in range(job.n):
            generator = None
            if job.seed is not None:
                generator = torch.Generator(device=self.device)
                generator.manual_seed((job.seed + job.first_index + i) % 2**63)
            row = _Row(job, i, list(job.prompt), generator, StopText(job.stops))
            row.shown_upto = len(row.tokens)
            self.rows.append(row)
            token = self._pick(logits, [row])
            self._advance(row, int(token[0]))

    def _decode(self) -> None:
        """One new token for every row, each at its own position."""
        B = len(self.rows)
        last = torch.tensor([[r.tokens[-1]] for r in self.rows], device=self.device)  # (B, 1)
        pos = torch.tensor([len(r.tokens) - 1 for r in self.rows], device=self.device)  # (B,)
        length = int(pos.max()) + 1  # positions any row attends to
        mask = torch.arange(length, device=self.device)[None, :] <= pos[:, None]  # (B, L)
        mask = mask.view(B, 1, 1, length)  # (B, nh, T, L) by broadcast
        rows = torch.arange(B, device=self.device)
        layers = [
            _Step(self.k[i], self.v[i], rows, pos, mask, length) for i in range(self.k.size(0))
        ]
        logits, _ = self.model(last, pos=pos[:, None], cache=layers)
        assert logits is not None
        tokens = self._pick(logits[:, -1, : self.vocab_size], self.rows)
        for row, token in zip(self.rows, tokens.tolist(), strict=True):
            self._advance(row, token)

    def _pick(self, logits: torch.Tensor, rows: list[_Row]) -> torch.Tensor:
        """The next token of each of ``rows`` from its row of ``logits`` (B, vocab)."""
        out = torch.empty(len(rows), dtype=torch.long, device=self.device)
        shared: dict[SamplingSettings, list[int]] = {}
        for i, row in enumerate(rows):
            settings = row.job.settings
            if row.generator is None and settings.repetition_penalty == 1.0:
                shared.setdefault(settings, []).append(i)
                continue
            seen = None
            if settings.repetition_penalty != 1.0:
                seen = torch.tensor([row.tokens], dtype=torch.long, device=self.device)
            out[i] = pick_next(logits[i : i + 1], settings, seen, row.generator)[0]
        for settings, group in shared.items():
            index = torch.tensor(group, device=self.device)
            out[index] = pick_next(logits[index], settings, None, self.generator)
        return out

    def _advance(self, row: _Row, token: int) -> None:
        """Add ``token`` to ``row``: send the text it completes, end the row when it is done."""
        row.tokens.append(token)
        row.generated += 1
        full = len(row.tokens) > self.block_size  # no position left to feed the last token
        ended = full or row.generated >= row.job.max_tokens
        text = self.tokenizer.decode(row.tokens[row.shown_upto :])
        if ended or not text.endswith("\ufffd") or len(row.tokens) - row.shown_upto > HOLD_TOKENS:
            row.shown_upto = len(row.tokens)
            shown = row.stop.push(text)
            if ended and not row.stop.stopped:
                shown += row.stop.flush()
            if shown:
                _send(row.job, Text(row.job.first_index + row.index, shown))
        if row.stop.stopped or ended:
            row.done = True
            reason = "stop" if row.stop.stopped else "length"
            _send(row.job, Done(row.job.first_index + row.index, reason, row.generated))

    def _remove(self, indices: list[int]) -> None:
        """Take rows ``indices`` out of the batch; the last row moves into each hole."""
        for i in sorted(indices, reverse=True):
            last = len(self.rows) - 1
            if i != last:
                n = len(self.rows[last].tokens) - 1  # positions its cache holds
                self.k[:, i, :, :n] = self.k[:, last, :, :n]
                self.v[:, i, :, :n] = self.v[:, last, :, :n]
                self.rows[i] = self.rows[last]
            self.rows.pop()


def _send(job: Job, event: Event) -> None:
    try:
        job.emit(event)
    except Exception:  # the receiver is gone (its event loop closed): nobody to tell
        job.cancel()


class _Prefill:
    """One layer's cache for a prompt's first pass: keys and values are written to ``slot``
    from position 0 and attention is plain causal over the prompt itself."""

    def __init__(self, k: torch.Tensor, v: torch.Tensor, slot: int) -> None:
        self.k, self.v, self.slot = k, v, slot  # (slots, nh, block_size, hs)

    def update(
        self, k: torch.Tensor, v: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        T = k.size(2)
        self.k[self.slot : self.slot + 1, :, :T] = k
        self.v[self.slot : self.slot + 1, :, :T] = v
        return k, v, None


class _Step:
    """One layer's cache for a decoding step of the batch: row b's new key and value go to
    its position ``pos[b]``, and it attends to its own slot up to there (``mask``)."""

    def __init__(
        self,
        k: torch.Tensor,
        v: torch.Tensor,
        rows: torch.Tensor,
        pos: torch.Tensor,
        mask: torch.Tensor,
        length: int,
    ) -> None:
        self.k, self.v = k, v  # (slots, nh, block_size, hs)
        self.rows, self.pos, self.mask, self.length = rows, pos, mask, length

    def update(
        self, k: torch.Tensor, v: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        B = k.size(0)
        self.k[self.rows, :, self.pos] = k[:, :, 0]  # (B, nh, hs) into (slot, :, position)
        self.v[self.rows, :, self.pos] = v[:, :, 0]
        return self.k[:B, :, : self.length], self.v[:B, :, : self.length], self.mask
