"""Tokenizers, described by a small JSON-able dict stored with datasets and checkpoints."""

from __future__ import annotations

from typing import Any, Protocol

from ..errors import DatasetError


class Tokenizer(Protocol):
    vocab_size: int

    def encode(self, text: str) -> list[int]: ...

    def decode(self, ids: list[int]) -> str: ...

    def to_dict(self) -> dict[str, Any]: ...


class CharTokenizer:
    """One token per character, over the characters seen in the training text."""

    kind = "char"

    def __init__(self, chars: list[str]) -> None:
        self.itos = list(chars)
        self.stoi = {ch: i for i, ch in enumerate(self.itos)}
        self.vocab_size = len(self.itos)

    @classmethod
    def from_text(cls, text: str) -> CharTokenizer:
        return cls(sorted(set(text)))

    def encode(self, text: str) -> list[int]:
        try:
            return [self.stoi[ch] for ch in text]
        except KeyError as e:
            raise DatasetError(
                f"character {e.args[0]!r} is not in this model's vocabulary of "
                f"{self.vocab_size} characters"
            ) from None

    def decode(self, ids: list[int]) -> str:
        return "".join(self.itos[i] for i in ids)

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "chars": "".join(self.itos)}


def tokenizer_from_dict(info: dict[str, Any]) -> Tokenizer:
    """Rebuild a tokenizer from what ``to_dict`` stored."""
    kind = info.get("kind")
    if kind == "char":
        chars = info.get("chars")
        if isinstance(chars, str):
            chars = list(chars)
        if not isinstance(chars, list) or not all(
            isinstance(c, str) and len(c) == 1 for c in chars
        ):
            raise DatasetError("character tokenizer metadata has no valid 'chars' list")
        return CharTokenizer(chars)
    raise DatasetError(f"unknown tokenizer kind {kind!r}; this nanogpt cannot read it")
