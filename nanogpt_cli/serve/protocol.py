"""OpenAI's completions API, as ``nanogpt serve`` speaks it: a request body checked field by
field into a ``CompletionRequest``, the response and stream chunk bodies, and the error
body (``{"error": {"message", "type", "param", "code"}}``).

Pure Python, no web framework: the app (``app.py``) hands a parsed JSON body in and gets
an ``ApiError`` (status and body) or a request out.

Fields this server does not know are ignored, as OpenAI's clients send some (``user``,
``metadata``). Fields it knows but cannot honour are refused with a 400 naming the field
when they ask for anything but their default: ``logprobs``, ``echo``, ``suffix``,
``best_of`` above ``n``, ``frequency_penalty`` / ``presence_penalty`` other than 0,
``logit_bias``. ``top_k``, ``min_p`` and ``repetition_penalty`` are extensions (vLLM's
names), with ``transformers``' definitions (``nanogpt_cli.sampling``).
"""

from __future__ import annotations

import math
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

MAX_STOPS = 16  # stop strings per request
SEED_MAX = 2**63 - 1
DEFAULT_MAX_TOKENS = 16  # OpenAI's default
DEFAULT_TEMPERATURE = 1.0  # OpenAI's default


class ApiError(Exception):
    """A request the server refuses: an HTTP status and OpenAI's error body. Raised and
    answered inside the server only; it never reaches the command line."""

    def __init__(
        self,
        status: int,
        message: str,
        param: str | None = None,
        code: str | None = None,
        kind: str = "invalid_request_error",
    ) -> None:
        super().__init__(message)
        self.status, self.message, self.param, self.code, self.kind = (
            status,
            message,
            param,
            code,
            kind,
        )

    def body(self) -> dict[str, Any]:
        return {
            "error": {
                "message": self.message,
                "type": self.kind,
                "param": self.param,
                "code": self.code,
            }
        }


@dataclass(frozen=True)
class Limits:
    """What the server accepts: ``max_tokens`` up to ``max_tokens_cap``, ``n`` (and a
    request's completions, prompts x n) up to ``max_n``, token ids below ``vocab_size``."""

    max_tokens_cap: int
    max_n: int
    vocab_size: int


@dataclass(frozen=True)
class CompletionRequest:
    """A checked ``POST /v1/completions`` body. Each prompt is text or token ids."""

    prompts: list[str | list[int]]
    max_tokens: int = DEFAULT_MAX_TOKENS
    temperature: float = DEFAULT_TEMPERATURE
    top_p: float | None = None
    top_k: int | None = None
    min_p: float | None = None
    repetition_penalty: float = 1.0
    n: int = 1
    stop: tuple[str, ...] = ()
    seed: int | None = None
    stream: bool = False
    include_usage: bool = False
    id: str = field(default_factory=lambda: f"cmpl-{uuid.uuid4().hex}")
    created: int = field(default_factory=lambda: int(time.time()))


def parse_completion(body: Any, limits: Limits) -> CompletionRequest:
    """``body`` (parsed JSON) as a ``CompletionRequest``; ``ApiError`` (400) naming the
    first field that is of the wrong type, out of range, or asks for what is unsupported."""
    if not isinstance(body, dict):
        raise ApiError(400, "the request body must be a JSON object")
    _refuse_unsupported(body)
    get = _Fields(body)
    prompts = _prompts(body.get("prompt"), limits.vocab_size)
    max_tokens = get.integer("max_tokens", min(DEFAULT_MAX_TOKENS, limits.max_tokens_cap), low=1)
    if max_tokens > limits.max_tokens_cap:
        raise ApiError(
            400,
            f"max_tokens is {max_tokens}, more than this server's limit of "
            f"{limits.max_tokens_cap} (nanogpt serve --max-tokens-cap)",
            "max_tokens",
        )
    n = get.integer("n", 1, low=1)
    if n > limits.max_n or n * len(prompts) > limits.max_n:
        raise ApiError(
            400,
            f"n ({n}) x prompts ({len(prompts)}) is more than this server's limit of "
            f"{limits.max_n} completions per request (nanogpt serve --max-n)",
            "n",
        )
    best_of = get.integer("best_of", n, low=1)
    if best_of != n:
        raise ApiError(400, "best_of other than n is not supported", "best_of")
    temperature = get.number("temperature", DEFAULT_TEMPERATURE, low=0, high=100)
    top_p = get.number("top_p", 1.0, low=0, high=1)
    if top_p <= 0:
        raise ApiError(400, "top_p must be above 0 and at most 1 (1 keeps every token)", "top_p")
    top_k = get.integer("top_k", -1, low=-1)
    min_p = get.number("min_p", 0.0, low=0, high=1)
    penalty = get.number("repetition_penalty", 1.0, low=0, high=100)
    if penalty <= 0:
        raise ApiError(400, "repetition_penalty must be above 0 (1: none)", "repetition_penalty")
    seed = get.integer("seed", -1, low=0, high=SEED_MAX)
    stream = get.boolean("stream", False)
    options = body.get("stream_options")
    if options is not None and not isinstance(options, dict):
        raise ApiError(400, "stream_options must be an object", "stream_options")
    include_usage = _Fields(options or {}, "stream_options.").boolean("include_usage", False)
    return CompletionRequest(
        prompts=prompts,
        max_tokens=max_tokens,
        temperature=temperature,
        top_p=None if top_p >= 1 else top_p,
        top_k=None if top_k <= 0 else top_k,
        min_p=min_p or None,
        repetition_penalty=penalty,
        n=n,
        stop=_stops(body.get("stop")),
        seed=None if seed < 0 else seed,
        stream=stream,
        include_usage=include_usage,
    )


# Known fields with the values that mean "not asked for"; anything else is refused.
_DEFAULTS_ONLY: dict[str, tuple[Any, ...]] = {
    "logprobs": (None, 0, False),
    "echo": (None, False),
    "suffix": (None, ""),
    "frequency_penalty": (None, 0, 0.0),
    "presence_penalty": (None, 0, 0.0),
    "logit_bias": (None, {}),
}


def _refuse_unsupported(body: dict[str, Any]) -> None:
    for name, defaults in _DEFAULTS_ONLY.items():
        value = body.get(name)
        if not any(value == d and type(value) is type(d) for d in defaults):
            raise ApiError(400, f"{name} is not supported by nanogpt serve (leave it out)", name)
    model = body.get("model")
    if model is not None and not isinstance(model, str):
        raise ApiError(400, "model must be a string", "model")


class _Fields:
    """Typed reads of optional fields of a JSON object; null is the default."""

    def __init__(self, body: dict[str, Any], prefix: str = "") -> None:
        self.body, self.prefix = body, prefix

    def _value(self, name: str) -> Any:
        return self.body.get(name)

    def integer(self, name: str, default: int, low: int, high: int | None = None) -> int:
        value = self._value(name)
        if value is None:
            return default
        if isinstance(value, float) and value.is_integer():
            value = int(value)
        if isinstance(value, bool) or not isinstance(value, int):
            raise ApiError(400, f"{self.prefix}{name} must be an integer", self.prefix + name)
        if value < low or (high is not None and value > high):
            upper = f" and at most {high}" if high is not None else ""
            raise ApiError(
                400, f"{self.prefix}{name} must be at least {low}{upper}", self.prefix + name
            )
        return value

    def number(self, name: str, default: float, low: float, high: float) -> float:
        value = self._value(name)
        if value is None:
            return default
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ApiError(400, f"{self.prefix}{name} must be a number", self.prefix + name)
        if not math.isfinite(value) or not low <= value <= high:
            raise ApiError(
                400, f"{self.prefix}{name} must be between {low:g} and {high:g}", self.prefix + name
            )
        return float(value)

    def boolean(self, name: str, default: bool) -> bool:
        value = self._value(name)
        if value is None:
            return default
        if not isinstance(value, bool):
            raise ApiError(400, f"{self.prefix}{name} must be true or false", self.prefix + name)
        return value


def _prompts(value: Any, vocab_size: int) -> list[str | list[int]]:
    """A prompt, as OpenAI takes it: text, a list of texts, token ids, or lists of ids."""
    if value is None:
        raise ApiError(400, "prompt is required", "prompt")
    one_of_ids = isinstance(value, list) and value and all(_is_id(x) for x in value)
    if isinstance(value, str) or one_of_ids:
        value = [value]
    if not isinstance(value, list) or not value:
        raise ApiError(
            400, "prompt must be a string, a list of strings or a list of token ids", "prompt"
        )
    prompts: list[str | list[int]] = []
    for item in value:
        if isinstance(item, str):
            prompts.append(item)
        elif isinstance(item, list) and all(_is_id(x) for x in item):
            if any(not 0 <= x < vocab_size for x in item):
                raise ApiError(
                    400, f"prompt token ids must be between 0 and {vocab_size - 1}", "prompt"
                )
            prompts.append(list(item))
        else:
            raise ApiError(
                400, "prompt must be a string, a list of strings or a list of token ids", "prompt"
            )
        if not prompts[-1]:
            raise ApiError(400, "prompt is empty; give at least one character", "prompt")
    return prompts


def _is_id(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _stops(value: Any) -> tuple[str, ...]:
    if value is None:
        return ()
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list) or not all(isinstance(s, str) for s in value):
        raise ApiError(400, "stop must be a string or a list of strings", "stop")
    if len(value) > MAX_STOPS:
        raise ApiError(400, f"stop takes at most {MAX_STOPS} strings", "stop")
    return tuple(s for s in value if s)


# -- response bodies ---------------------------------------------------------------------------


def choice(index: int, text: str, finish_reason: str | None) -> dict[str, Any]:
    return {"text": text, "index": index, "logprobs": None, "finish_reason": finish_reason}


def completion_body(
    request: CompletionRequest,
    model: str,
    choices: list[dict[str, Any]],
    usage: dict[str, int] | None,
) -> dict[str, Any]:
    """A ``text_completion`` object: the whole response, or one chunk of a stream."""
    body: dict[str, Any] = {
        "id": request.id,
        "object": "text_completion",
        "created": request.created,
        "model": model,
        "choices": choices,
    }
    if usage is not None or not request.stream:
        body["usage"] = usage
    return body


def usage_body(prompt_tokens: int, completion_tokens: int) -> dict[str, int]:
    return {
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "total_tokens": prompt_tokens + completion_tokens,
    }
