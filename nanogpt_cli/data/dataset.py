"""Prepared datasets on disk: ``train.bin`` / ``val.bin`` (headerless uint16) + ``meta.json``.

The ``.bin`` files are nanoGPT's layout, so nanoGPT's own scripts read them too. ``meta.json``
records the tokenizer and the token counts; it is JSON, never pickle.
"""

from __future__ import annotations

import contextlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import DatasetError
from ..paths import data_root, data_root_origin, dataset_dir, is_dataset_path
from ..safe_files import replace_atomically

META_FILE = "meta.json"
SPLITS = ("train", "val")
TOKEN_BYTES = 2  # uint16
MAX_VOCAB = 2**16  # what uint16 tokens can index
# meta.json's record of the largest token of each split: {"train": {"bytes": ..., "mtime_ns":
# ..., "max": ...}}, valid while the file has that size and modification time.
MAX_TOKEN_KEY = "max_token"
SCAN_CHUNK = 2**24  # tokens read at a time when looking for the largest

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
    except (OSError, UnicodeDecodeError, ValueError, RecursionError) as e:
        # ValueError: JSONDecodeError, and numbers of too many digits
        raise DatasetError(f"cannot read {meta_path}: {e}; prepare the dataset again") from None
    if not isinstance(meta, dict) or "tokenizer" not in meta or "vocab_size" not in meta:
        raise DatasetError(f"{meta_path} is not a nanogpt dataset description; prepare again")
    _check_meta(meta, meta_path)
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
    check_token_ids(path, meta)
    return Dataset(name=str(meta.get("name", name)), path=path, meta=meta)


# The type of each field of meta.json that is read, checked when a dataset is opened.
META_TYPES: dict[str, tuple[type, ...]] = {
    "vocab_size": (int,),
    "tokenizer": (dict,),
    "name": (str,),
    "splits": (dict,),
    MAX_TOKEN_KEY: (dict,),
}


def _check_meta(meta: dict[str, Any], meta_path: Path) -> None:
    """Refuse a meta.json whose fields have the wrong type or an impossible vocabulary,
    naming the file and the field."""
    for field, types in META_TYPES.items():
        value = meta.get(field)
        if field in meta and (not isinstance(value, types) or isinstance(value, bool)):
            expected = " or ".join(t.__name__ for t in types).replace("dict", "an object")
            raise DatasetError(
                f"{meta_path}: '{field}' should be {expected}, not {json.dumps(value)[:40]}; "
                "prepare the dataset again (--force)"
            )
    vocab = meta["vocab_size"]
    if not 1 <= vocab <= MAX_VOCAB:
        raise DatasetError(
            f"{meta_path}: vocab_size {vocab} is not between 1 and {MAX_VOCAB} (the tokens are "
            "uint16); prepare the dataset again (--force)"
        )


def check_token_ids(path: Path, meta: dict[str, Any]) -> None:
    """Refuse a dataset with a token at or above its vocabulary size (which the model's
    embedding would index out of range): the largest token of each split is read once
    and kept in meta.json, valid while the file keeps its size and modification time."""
    vocab = int(meta["vocab_size"])
    for split in SPLITS:
        bin_path = path / f"{split}.bin"
        largest = max_token(bin_path, meta)
        if largest >= vocab:
            raise DatasetError(
                f"{bin_path} holds token {largest}, but {path / META_FILE} gives a vocabulary "
                f"of {vocab} tokens (0 to {vocab - 1}); prepare the dataset again (--force)"
            )


def max_token(bin_path: Path, meta: dict[str, Any]) -> int:
    """The largest token of ``bin_path``, from meta.json's record where it is still valid;
    otherwise read (in chunks, through a memory map) and recorded, in ``meta`` and in
    meta.json where the folder is writable."""
    stat = bin_path.stat()
    key = {"bytes": stat.st_size, "mtime_ns": stat.st_mtime_ns}
    known = meta.get(MAX_TOKEN_KEY, {}).get(bin_path.stem)
    if isinstance(known, dict) and {k: known.get(k) for k in key} == key:
        value = known.get("max")
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    largest = scan_max_token(bin_path)
    records = meta.setdefault(MAX_TOKEN_KEY, {})
    records[bin_path.stem] = {**key, "max": largest}
    with contextlib.suppress(OSError):  # a read-only dataset: read again next time
        write_meta(bin_path.parent / META_FILE, meta, scan=False)
    return largest


def scan_max_token(bin_path: Path) -> int:
    """The largest uint16 token of ``bin_path``, read through a memory map a chunk at a time
    (memory stays small whatever the file's size)."""
    import numpy as np

    if bin_path.stat().st_size == 0:
        return -1
    try:
        tokens = np.memmap(bin_path, dtype=np.uint16, mode="r")
    except (OSError, ValueError) as e:
        raise DatasetError(f"cannot read {bin_path}: {e}") from None
    largest = 0
    for start in range(0, len(tokens), SCAN_CHUNK):
        largest = max(largest, int(tokens[start : start + SCAN_CHUNK].max()))
    del tokens
    return largest


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
    replace_atomically(path, tokens.tofile)


def write_meta(path: Path, meta: dict[str, Any], scan: bool = True) -> None:
    """Write a dataset's meta.json atomically; with ``scan``, first record in it the largest
    token of each split beside it (so opening the dataset need not read them)."""
    if scan:
        records = meta.setdefault(MAX_TOKEN_KEY, {})
        for split in SPLITS:
            bin_path = path.parent / f"{split}.bin"
            if bin_path.is_file():
                stat = bin_path.stat()
                records[split] = {
                    "bytes": stat.st_size,
                    "mtime_ns": stat.st_mtime_ns,
                    "max": scan_max_token(bin_path),
                }
    text = json.dumps(meta, indent=2, ensure_ascii=False) + "\n"
    replace_atomically(path, lambda f: f.write(text.encode("utf-8")))
