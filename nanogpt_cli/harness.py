"""nanogpt models in EleutherAI's lm-evaluation-harness (``lm_eval``, the optional extra
``eval``): HellaSwag, LAMBADA and every other task of the harness, or your own.

``NanoGPTLM`` is the harness's model interface over any checkpoint nanogpt loads (its own
formats, nanoGPT's ``ckpt.pt``, Hugging Face GPT-2 folders, ``gpt2`` ... ``gpt2-xl``) with the
checkpoint's tokenizer (GPT-2's BPE or a character vocabulary). Importing this module
registers it under the name ``nanogpt``, so the harness's own entry points take it too::

    import lm_eval
    from nanogpt_cli.harness import NanoGPTLM

    lm = NanoGPTLM("out-shakespeare-char", device="cpu")
    lm_eval.simple_evaluate(model=lm, tasks=["lambada_openai"])

It computes what the harness's ``hf`` model computes for the same weights (the tests compare
them): a context and continuation longer than the block are cut from the left, a long text
is scored in the harness's disjoint rolling windows after a prefix token (``<|endoftext|>``;
for a character vocabulary, the newline), and ``generate_until`` decodes with the KV cache of
``sample.generate``, greedily unless the task asks to sample. ``nanogpt_cli.tasks`` runs
tasks by name with it (``nanogpt eval --tasks``, training's ``--eval-tasks``).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import torch

from .errors import ConfigError, DatasetError
from .log import get_logger
from .runtime import autocast, resolve_device, resolve_dtype

EXTRA_HINT = (
    "evaluating on benchmark tasks needs lm-evaluation-harness (the lm_eval package): "
    "pip install 'nanogpt-cli[eval]'"
)

try:
    import lm_eval  # noqa: F401  (the package itself first: a missing one fails here)
    from lm_eval.api.model import TemplateLM
    from lm_eval.api.registry import register_model
    from lm_eval.models.utils import (
        handle_stop_sequences,
        normalize_gen_kwargs,
        postprocess_generated_text,
    )
    from lm_eval.utils import get_rolling_token_windows, make_disjoint_window
except ImportError:  # the optional extra is not installed
    raise ConfigError(EXTRA_HINT) from None

logger = get_logger(__name__)

DEFAULT_BATCH_SIZE = 16
MAX_GEN_TOKS = 256  # the harness's default for a task that names none, as its hf model
# Cap on the float32 log-probabilities of one forward pass (rows x tokens x vocabulary).
LOGIT_BYTES = 1 << 28
SAMPLE_SEED = 1234  # generation that samples (do_sample) draws from this seed


class NanoGPTLM(TemplateLM):
    """A nanogpt model as an lm-evaluation-harness ``LM``.

    Give ``checkpoint`` (a path, a GPT-2 size; ``pretrained`` is its other name, as the
    harness's ``hf`` model calls it), or an already loaded ``model`` (a ``GPT``) with its
    ``tokenizer``; ``from_sampler`` takes a ``sample.Sampler``. ``dtype`` is the precision
    of the forward passes (autocast; ``auto``: bfloat16 or float16 on CUDA, float32
    elsewhere); log-probabilities are always summed in float32.
    """

    backend = "causal"

    def __init__(
        self,
        checkpoint: str | Path | None = None,
        *,
        pretrained: str | Path | None = None,
        model: Any = None,
        tokenizer: Any = None,
        device: str | torch.device | None = None,
        dtype: str | torch.dtype | None = None,
        batch_size: int | str | None = None,
        max_batch_size: int | None = None,
        meta: str | Path | None = None,
        cpu_kernels: str | None = None,
        prefix_token_id: int | None = None,
        **unused: Any,
    ) -> None:
        super().__init__()
        if unused:
            logger.warning(f"the nanogpt model ignores {', '.join(sorted(unused))}")
        source = checkpoint if checkpoint is not None else pretrained
        if model is None:
            if source is None:
                raise ConfigError(
                    "the nanogpt model needs checkpoint=PATH or a GPT-2 size (gpt2 ... gpt2-xl)"
                )
            model, tokenizer = load(source, meta, cpu_kernels)
            model.to(resolve_device(str(device or "auto")))
        elif tokenizer is None:
            raise ConfigError("give the model's tokenizer with model=")
        self.model = model
        self.tokenizer = tokenizer
        self.source = str(source) if source is not None else type(model).__name__
        self._device = next(model.parameters()).device
        self.dtype = (
            dtype
            if isinstance(dtype, torch.dtype)
            else resolve_dtype(str(dtype or "auto"), self._device)
        )
        self.batch_size = _batch_size(batch_size, max_batch_size)
        self.vocab_size = int(tokenizer.vocab_size)
        self._eot = end_of_text(tokenizer)
        self._prefix = prefix_token_id if prefix_token_id is not None else prefix_token(tokenizer)

    @classmethod
    def from_sampler(cls, sampler: Any, **kwargs: Any) -> NanoGPTLM:
        """The model and tokenizer of a loaded ``sample.Sampler``."""
        return cls(model=sampler.model, tokenizer=sampler.tokenizer, **kwargs)

    # -- what the harness asks of a model ---------------------------------------------------

    @property
    def eot_token_id(self) -> int | None:  # type: ignore[override]
        """``<|endoftext|>`` of GPT-2's BPE; None for a character vocabulary, which has none."""
        return self._eot

    @property
    def prefix_token_id(self) -> int:
        """The token a text is scored after when there is no context."""
        return self._prefix

    @property
    def max_length(self) -> int:
        return int(self.model.config.block_size)

    @property
    def max_gen_toks(self) -> int:
        return MAX_GEN_TOKS

    @property
    def tokenizer_name(self) -> str:
        info = self.tokenizer.to_dict()
        return str(info.get("name", info.get("kind", "tokenizer")))

    def tok_encode(
        self, string: str, add_special_tokens: bool | None = None, **_: Any
    ) -> list[int]:
        return list(self.tokenizer.encode(string))

    def tok_decode(self, tokens: Sequence[int]) -> str:
        return str(self.tokenizer.decode([int(t) for t in tokens]))

    def get_model_info(self) -> dict[str, Any]:
        return {
            "model_source": self.source,
            "model_num_parameters": sum(p.numel() for p in self.model.parameters()),
            "model_dtype": str(self.dtype).removeprefix("torch."),
        }

    def loglikelihood_rolling(self, requests: list[Any], disable_tqdm: bool = False) -> list[float]:
        """Log-likelihood of whole texts, in the harness's disjoint windows of the block."""
        windows: list[tuple[int, tuple[None, list[int], list[int]]]] = []
        for i, (text,) in enumerate(req.args for req in requests):
            for context, continuation in map(
                make_disjoint_window,
                get_rolling_token_windows(
                    token_list=self.tok_encode(text),
                    prefix_token=self.prefix_token_id,
                    max_seq_len=self.max_length,
                    context_len=1,
                ),
            ):
                windows.append((i, (None, context, continuation)))
        scores = self._loglikelihood_tokens([w for _, w in windows], disable_tqdm)
        totals = [0.0] * len(requests)
        for (i, _), (logprob, _) in zip(windows, scores, strict=True):
            totals[i] += logprob
        for req, total in zip(requests, totals, strict=True):
            self.cache_hook.add_partial("loglikelihood_rolling", req.args, total)
        return totals

    def _loglikelihood_tokens(
        self, requests: list[Any], disable_tqdm: bool = False, **_: Any
    ) -> list[tuple[float, bool]]:
        """(log-probability, whether greedy) of each continuation after its context, both
        token lists; ``(context + continuation)`` is cut from the left to the block."""
        block = self.max_length
        rows = []
        for i, (_, context, continuation) in enumerate(requests):
            if len(continuation) > block:
                raise DatasetError(
                    f"a continuation of {len(continuation)} tokens is longer than the model's "
                    f"context of {block}; it cannot be scored"
                )
            rows.append((i, (context + continuation)[-(block + 1) :][:-1], continuation))
        rows.sort(key=lambda r: -len(r[1]))  # longest first: a batch is as long as its first
        results: list[tuple[float, bool] | None] = [None] * len(rows)
        with self._evaluating(), _progress("loglikelihood", len(rows), disable_tqdm) as bar:
            for batch in self._batches(rows, lambda r: len(r[1])):
                width = len(batch[0][1])
                idx = torch.zeros(len(batch), width, dtype=torch.long)  # right-padded
                for j, (_, inp, _) in enumerate(batch):
                    idx[j, : len(inp)] = torch.tensor(inp)
                logprobs = self._log_probs(idx)  # (B, T, vocab)
                for j, (i, inp, continuation) in enumerate(batch):
                    scored = logprobs[j, len(inp) - len(continuation) : len(inp)]  # (n, vocab)
                    target = torch.tensor(continuation, device=scored.device)
                    logprob = scored.gather(1, target[:, None]).sum()
                    greedy = bool((scored.argmax(dim=-1) == target).all())
                    results[i] = (float(logprob), greedy)
                    request = requests[i][0]
                    if request is not None:  # rolling windows are cached per text
                        self.cache_hook.add_partial("loglikelihood", request, results[i])
                bar.advance(len(batch))
        return [r for r in results if r is not None]

    def generate_until(self, requests: list[Any], disable_tqdm: bool = False) -> list[str]:
        """Continue each context until a stop sequence, the end-of-text token or
        ``max_gen_toks`` tokens; contexts of the same length and settings share a batch.
        The context is cut from the left to leave room for ``max_gen_toks`` in the block
        (as the harness's ``hf`` model does); asked for more than the block holds, the
        window moves on as ``nanogpt sample``'s does."""
        from .sample import generate

        eos = self.tok_decode([self._eot]) if self._eot is not None else None
        work = []
        for i, (context, gen_kwargs) in enumerate(req.args for req in requests):
            kwargs = normalize_gen_kwargs(gen_kwargs, self.max_gen_toks)
            until = handle_stop_sequences(kwargs.pop("until", None), eos=eos)
            new = int(kwargs.pop("max_gen_toks"))
            temperature = float(kwargs.get("temperature", 0.0)) if kwargs.get("do_sample") else 0.0
            room = self.max_length - new if new < self.max_length else self.max_length
            ids = self.tok_encode(context)[-room:] or [self.prefix_token_id]
            work.append((i, ids, tuple(until), new, temperature))
        # Same length and settings, longest first.
        work.sort(key=lambda w: (-len(w[1]), w[2], w[3], w[4]))
        results: list[str] = [""] * len(work)
        generator = torch.Generator(device=self._device).manual_seed(SAMPLE_SEED)
        with self._evaluating(), _progress("generate", len(work), disable_tqdm) as bar:
            for batch in self._batches(work, lambda w: 1, lambda w: (len(w[1]), *w[2:])):
                _, _, until, new, temperature = batch[0]
                idx = torch.tensor([w[1] for w in batch], dtype=torch.long, device=self._device)
                made: list[list[int]] = [[] for _ in batch]
                done = [False] * len(batch)
                with autocast(self._device, self.dtype):
                    for tokens in generate(
                        self.model,
                        idx,
                        new,
                        temperature=temperature,
                        top_k=None,
                        generator=generator,
                        vocab_size=self.vocab_size,
                    ):
                        for j, token in enumerate(tokens.tolist()):
                            if done[j]:
                                continue
                            if token == self._eot:
                                done[j] = True
                                continue
                            made[j].append(token)
                            done[j] = _stopped(self.tok_decode(made[j][-64:]), until)
                        if all(done):
                            break
                for (i, *_), tokens in zip(batch, made, strict=True):
                    text = postprocess_generated_text(self.tok_decode(tokens), list(until), None)
                    results[i] = text
                    self.cache_hook.add_partial("generate_until", requests[i].args, text)
                bar.advance(len(batch))
        return results

    # -- helpers ---------------------------------------------------------------------------

    def _batches(
        self, rows: list[Any], width: Callable[[Any], int], same: Callable[[Any], Any] | None = None
    ) -> Iterator[list[Any]]:
        """Consecutive rows in batches of at most ``batch_size`` whose log-probabilities
        (``width`` positions a row) fit in ``LOGIT_BYTES``; with ``same``, only rows it
        maps to the same value share a batch."""
        batch: list[Any] = []
        for row in rows:
            full = len(batch) >= self._rows(width(batch[0])) if batch else False
            if batch and (full or (same is not None and same(row) != same(batch[0]))):
                yield batch
                batch = []
            batch.append(row)
        if batch:
            yield batch

    def _rows(self, length: int) -> int:
        return max(1, min(self.batch_size, LOGIT_BYTES // (4 * max(length, 1) * self.vocab_size)))

    def _log_probs(self, idx: torch.Tensor) -> torch.Tensor:
        """Float32 log-probabilities (B, T, vocab) over the tokenizer's ids (a vocabulary
        padded beyond them, as nanoGPT's 50304, has ids no text holds)."""
        with torch.inference_mode(), autocast(self._device, self.dtype):
            logits, _ = self.model(idx.to(self._device))
        return torch.log_softmax(logits[..., : self.vocab_size].float(), dim=-1)

    @contextlib.contextmanager
    def _evaluating(self) -> Iterator[None]:
        """The model in eval mode (no dropout) for a call, as it was afterwards."""
        was_training = self.model.training
        self.model.eval()
        try:
            yield
        finally:
            self.model.train(was_training)


with contextlib.suppress(ValueError):  # registered by an earlier import of this module
    register_model("nanogpt")(NanoGPTLM)


def _stopped(text: str, until: Sequence[str]) -> bool:
    return any(stop and stop in text for stop in until)


@contextlib.contextmanager
def _progress(label: str, total: int, disable: bool) -> Iterator[Any]:
    from .progress import progress

    with progress(label, total=total, unit="requests", show=not disable) as bar:
        yield bar


def _batch_size(batch_size: int | str | None, max_batch_size: int | None) -> int:
    """The harness passes ``auto``, ``auto:N`` or a number, maybe as text."""
    if batch_size is None or (isinstance(batch_size, str) and batch_size.startswith("auto")):
        size = min(DEFAULT_BATCH_SIZE, max_batch_size or DEFAULT_BATCH_SIZE)
    else:
        try:
            size = int(batch_size)
        except ValueError:
            raise ConfigError(
                f"--batch-size must be a number or auto, not {batch_size!r}"
            ) from None
    if size < 1:
        raise ConfigError(f"--batch-size must be positive (got {size})")
    return size


def end_of_text(tokenizer: Any) -> int | None:
    """The end-of-text token of a tiktoken tokenizer; None for a character vocabulary."""
    encoding = getattr(tokenizer, "encoding", None)
    token = getattr(encoding, "eot_token", None)
    return int(token) if token is not None else None


def prefix_token(tokenizer: Any) -> int:
    """What a text is scored after: ``<|endoftext|>`` (GPT-2's BPE), else the newline that
    separates a character corpus's passages, else the vocabulary's first character."""
    eot = end_of_text(tokenizer)
    if eot is not None:
        return eot
    stoi = getattr(tokenizer, "stoi", {})
    return int(stoi.get("\n", 0))


def load(
    source: str | Path, meta: str | Path | None = None, cpu_kernels: str | None = None
) -> tuple[Any, Any]:
    """The model (float32, on the CPU, in eval mode) and tokenizer of a checkpoint or
    GPT-2 size, as ``nanogpt eval`` loads them."""
    from .checkpoint import model_from_checkpoint, read_pretrained
    from .data.tokenizer import tokenizer_from_dict
    from .kernels import apply_kernels, kernel_mode

    mode = kernel_mode(cpu_kernels)
    ckpt = read_pretrained(source, meta=meta)
    tokenizer = tokenizer_from_dict(ckpt.tokenizer)
    model = model_from_checkpoint(ckpt)
    apply_kernels(model, mode)
    return model, tokenizer
