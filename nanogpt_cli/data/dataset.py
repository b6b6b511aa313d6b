"""Prepared datasets on disk: ``train.bin`` / ``val.bin`` (headerless uint16) + ``meta.json``.

The ``.bin`` files are nanoGPT's layout, so nanoGPT's own scripts read them too. ``meta.json``
records the tokenizer and the token counts; it is JSON, never pickle.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import DatasetError
from ..paths import data_root, data_root_origin, dataset_dir, is_dataset_path

META_FILE = "meta.json"
SPLITS = ("train", "val")
TOKEN_BYTES = 2  # uint16

# How to prepare each dataset that `nanogpt prepare` knows, for error messages.
PREPARE_HINTS = {
    "shakespeare-char": "nanogpt prepare shakespeare-char",
    "shakespeare": "nanogpt prepare shakespeare",
    "openwebtext": "nanogpt prepare openwebtext",
}


@dataclass
class Dataset:
    """A prepared dataset: where its splits are and how its tokens map to text."""

    name: str
    path: Path
    meta: dict[str, Any]

    @property
    def vocab_size(self) -> int:
        return int(self.meta["vocab_size"])

    @property
    def tokenizer_info(self) -> dict[str, Any]:
        return dict(self.meta["tokenizer"])

    def split_path(self, split: str) -> Path:
        return self.path / f"{split}.bin"


def open_dataset(name: str, data_dir: str | Path | None = None) -> Dataset:
    """Find a prepared dataset and check that its files are usable."""
    path = dataset_dir(name, data_dir)
    meta_path = path / META_FILE
    if not meta_path.exists():
        hint = PREPARE_HINTS.get(name)
        if hint and data_dir:
            hint += f" --data-dir {data_dir}"
        how = (
            f"run `{hint}`"
            if hint
            else "see `nanogpt prepare --help`, or pass --dataset DIR of a prepared dataset"
        )
        dashed = name.replace("_", "-")
        if not hint and dashed in PREPARE_HINTS:  # nanoGPT's folder name of one
            how = f"nanogpt names it '{dashed}': pass --dataset {dashed}"
        where = (
            ""  # --dataset named a folder: no data directory involved
            if is_dataset_path(name)
            else f"; data directory {data_root(data_dir)}, {data_root_origin(data_dir)}"
        )
        raise DatasetError(f"dataset '{name}' is not prepared (no {meta_path}{where}); {how}")
    try:
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise DatasetError(f"cannot read {meta_path}: {e}; prepare the dataset again") from None
    if not isinstance(meta, dict) or "tokenizer" not in meta or "vocab_size" not in meta:
        raise DatasetError(f"{meta_path} is not a nanogpt dataset description; prepare again")
    for split in SPLITS:
        bin_path = path / f"{split}.bin"
        if not bin_path.exists():
            raise DatasetError(f"dataset '{name}' has no {bin_path}; prepare it again")
        size = bin_path.stat().st_size
        if size == 0:
            raise DatasetError(f"{bin_path} is empty; prepare the dataset again (--force)")
        if size % TOKEN_BYTES:
            raise DatasetError(
                f"{bin_path} has {size} bytes, not a whole number of uint16 tokens; "
                "prepare the dataset again (--force)"
            )
    return Dataset(name=str(meta.get("name", name)), path=path, meta=meta)


def describe_tokenizer(info: dict[str, Any] | None) -> str:
    if not info:
        return "an unknown tokenizer"
    if info.get("kind") == "char":
        return f"characters ({len(info.get('chars', ''))} of them)"
    if info.get("kind") == "tiktoken":
        return "GPT-2's BPE" if info.get("name") == "gpt2" else f"tiktoken {info.get('name')}"
    return str(info.get("kind"))


def check_tokenizer(
    tokenizer: dict[str, Any] | None, vocab_size: int, dataset: Dataset, model: str
) -> None:
    """Refuse to train or evaluate ``model`` (its tokenizer and vocabulary size) on a
    dataset made with another tokenizer, saying how to prepare a matching one."""
    from ..log import get_logger

    logger = get_logger(__name__)

    if tokenizer is None:
        logger.warning(
            f"{model} records no tokenizer; assuming it is dataset '{dataset.name}''s "
            f"({describe_tokenizer(dataset.tokenizer_info)})"
        )
    elif tokenizer != dataset.tokenizer_info:
        hint = (
            "; prepare the text with GPT-2's BPE (`nanogpt prepare shakespeare`, "
            "`nanogpt prepare text FILES --tokenizer gpt2`)"
            if tokenizer.get("kind") == "tiktoken"
            else ""
        )
        raise DatasetError(
            f"dataset '{dataset.name}' is tokenized with "
            f"{describe_tokenizer(dataset.tokenizer_info)} but {model} uses "
            f"{describe_tokenizer(tokenizer)}{hint}"
        )
    if dataset.vocab_size > vocab_size:
        raise DatasetError(
            f"dataset '{dataset.name}' has a vocabulary of {dataset.vocab_size} tokens, more "
            f"than {model}'s {vocab_size}"
        )


def write_tokens(path: Path, tokens: Any) -> None:
    """Write a uint16 array to ``path`` atomically."""
    tmp = path.with_name(path.name + ".tmp")
    tokens.tofile(tmp)
    os.replace(tmp, path)


def write_meta(path: Path, meta: dict[str, Any]) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(meta, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    os.replace(tmp, path)
