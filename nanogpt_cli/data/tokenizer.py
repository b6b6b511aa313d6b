"""Tokenizers, described by a small JSON-able dict stored with datasets and checkpoints."""

from __future__ import annotations

import hashlib
import os
import tempfile
from pathlib import Path
from typing import Any, Protocol

from ..errors import DatasetError, first_line


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


class TiktokenTokenizer:
    """A tiktoken BPE encoding; ``gpt2`` is GPT-2's, with ``<|endoftext|>`` = 50256."""

    kind = "tiktoken"

    def __init__(self, name: str = "gpt2") -> None:
        import tiktoken

        try:
            self.encoding = tiktoken.get_encoding(name)
        except ValueError as e:  # an unknown encoding name
            raise DatasetError(f"unknown tiktoken encoding {name!r}: {first_line(e)}") from None
        except Exception as e:  # the BPE files are downloaded on first use
            raise DatasetError(
                f"cannot load the {name} BPE files (tiktoken downloads them on first use): "
                f"{first_line(e)}; {_offline_hint(name)}"
            ) from None
        self.name = name
        self.vocab_size = self.encoding.n_vocab

    def encode(self, text: str) -> list[int]:
        # As nanoGPT's sample.py: the end-of-text marker may be written in a prompt.
        return self.encoding.encode(text, allowed_special={"<|endoftext|>"})

    def decode(self, ids: list[int]) -> str:
        return self.encoding.decode(ids)

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "name": self.name}


_GPT2_BPE_URLS = {
    "encoder.json": "https://openaipublic.blob.core.windows.net/gpt-2/encodings/main/encoder.json",
    "vocab.bpe": "https://openaipublic.blob.core.windows.net/gpt-2/encodings/main/vocab.bpe",
}


def tiktoken_cache_dir() -> Path | None:
    """Where tiktoken caches its downloads (as its ``load.read_file_cached`` decides):
    ``$TIKTOKEN_CACHE_DIR``, else ``$DATA_GYM_CACHE_DIR``, else ``data-gym-cache`` in the
    temporary directory; None when caching is off (the variable set to an empty string)."""
    for var in ("TIKTOKEN_CACHE_DIR", "DATA_GYM_CACHE_DIR"):
        if var in os.environ:
            return Path(os.environ[var]) if os.environ[var] else None
    return Path(tempfile.gettempdir()) / "data-gym-cache"


def gpt2_bpe_cache_names() -> dict[str, str]:
    """The name tiktoken gives each GPT-2 BPE file in its cache: the sha1 of its URL."""
    return {name: hashlib.sha1(url.encode()).hexdigest() for name, url in _GPT2_BPE_URLS.items()}


def _offline_hint(name: str) -> str:
    if name != "gpt2":
        return "run once online, or copy $TIKTOKEN_CACHE_DIR from a machine where it works"
    cache = tiktoken_cache_dir()
    where = f"into {cache}" if cache else "into a folder named by $TIKTOKEN_CACHE_DIR"
    files = " and ".join(f"{file} as {cached}" for file, cached in gpt2_bpe_cache_names().items())
    return (
        f"offline, copy GPT-2's {files} (from openaipublic.blob.core.windows.net/gpt-2/"
        f"encodings/main/) {where} ($TIKTOKEN_CACHE_DIR chooses it)"
    )


def gpt2_bpe_files() -> tuple[Path, Path] | None:
    """GPT-2's ``encoder.json`` and ``vocab.bpe`` from tiktoken's cache, fetched there first
    if need be; None when they cannot be had (no network and nothing cached).

    These are Hugging Face's ``vocab.json`` and ``merges.txt`` under other names.
    """
    cache_dir = tiktoken_cache_dir()
    if cache_dir is None:  # tiktoken keeps no files
        return None
    paths = [cache_dir / cached for cached in gpt2_bpe_cache_names().values()]
    if not all(p.is_file() for p in paths):
        try:
            TiktokenTokenizer("gpt2")  # downloads both files into the cache
        except DatasetError:
            return None
    if not all(p.is_file() for p in paths):
        return None
    return paths[0], paths[1]


def token_byte_lengths(info: dict[str, Any]) -> Any:
    """UTF-8 length in bytes of every token id (a numpy array), for bits per byte."""
    import numpy as np

    if info.get("kind") == "char":
        return np.array([len(c.encode("utf-8")) for c in info["chars"]], dtype=np.int64)
    if info.get("kind") == "tiktoken":
        encoding = TiktokenTokenizer(str(info.get("name", "gpt2"))).encoding
        return np.array(
            [len(encoding.decode_single_token_bytes(i)) for i in range(encoding.n_vocab)],
            dtype=np.int64,
        )
    raise DatasetError(f"unknown tokenizer kind {info.get('kind')!r}")


def tokenizer_from_dict(info: dict[str, Any] | None) -> Tokenizer:
    """Rebuild a tokenizer from what ``to_dict`` stored."""
    if not info:
        raise DatasetError(
            "this checkpoint records no tokenizer; for a nanoGPT checkpoint pass its "
            "vocabulary with --meta path/to/meta.pkl"
        )
    if not isinstance(info, dict):
        raise DatasetError(f"the tokenizer is recorded as {type(info).__name__}, not an object")
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
    if kind == "tiktoken":
        name = info.get("name", "gpt2")
        if not isinstance(name, str):
            raise DatasetError(f"the tiktoken encoding's name is {name!r}, not a string")
        return TiktokenTokenizer(name)
    raise DatasetError(f"unknown tokenizer kind {kind!r}; this nanogpt cannot read it")
