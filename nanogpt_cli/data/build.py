"""Tokenizing a stream of documents into ``train.bin`` / ``val.bin`` in bounded memory.

Documents arrive as pieces of text labelled with their split. Pieces are gathered into
batches of a few MB, tokenized (in worker processes with ``num_proc > 1``; at most two
batches per worker are in flight), and appended to the split's file under a temporary
name. Memory therefore depends on the batch size, never on the corpus. When everything is
written, the old ``meta.json`` is removed, the files are renamed into place and the new
``meta.json`` is written last: a dataset with a ``meta.json`` is always complete.
"""

from __future__ import annotations

import json
import os
import time
from collections import deque
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import DatasetError
from ..log import get_logger
from ..progress import progress
from .dataset import META_FILE, SPLITS, TOKEN_BYTES, write_meta

logger = get_logger(__name__)

FORMAT_VERSION = 1
BATCH_CHARS = 1 << 20  # text per tokenization batch
BATCH_PIECES = 4096
MAX_TOKEN_ID = (1 << 16) - 1  # uint16 files


@dataclass
class Piece:
    """Part of a document. ``start`` marks its first piece in this split (a document cut
    by the end-of-text val split counts in both), ``end`` its last (a separator follows)."""

    split: str
    text: str
    end: bool = True
    start: bool = True


@dataclass
class SplitStats:
    documents: int = 0
    tokens: int = 0
    bytes: int = 0  # UTF-8 bytes of the text (separators not counted)


@dataclass
class PrepareResult:
    """What a prepare step wrote (or found already written)."""

    name: str
    path: Path
    vocab_size: int
    tokenizer: str
    splits: dict[str, SplitStats]
    files: list[Path]
    seconds: float
    skipped: bool = False
    inputs: list[str] = field(default_factory=list)

    @property
    def train_tokens(self) -> int:
        return self.splits["train"].tokens

    @property
    def val_tokens(self) -> int:
        return self.splits["val"].tokens


# -- encoders: built from a JSON-able description, so worker processes can build their own --


_Item = tuple[str, str, bool, bool]  # a Piece as plain data, cheap to send to a worker


class _Encoder:
    def __init__(self, tokenizer: dict[str, Any], separator: list[int]) -> None:
        from .tokenizer import TiktokenTokenizer

        self.kind = tokenizer["kind"]
        self.separator = np.array(separator, dtype=np.uint16)
        if self.kind == "char":
            self.vocab = np.array([ord(c) for c in tokenizer["chars"]], dtype=np.uint32)
        else:
            self.encoding = TiktokenTokenizer(tokenizer["name"]).encoding

    def encode(self, texts: list[str]) -> list[np.ndarray]:
        if self.kind == "char":
            return [self._chars(t) for t in texts]
        return [np.array(ids, dtype=np.uint16) for ids in map(self.encoding.encode_ordinary, texts)]

    def _chars(self, text: str) -> np.ndarray:
        points = np.frombuffer(text.encode("utf-32-le"), dtype=np.uint32)
        ids = np.searchsorted(self.vocab, points)
        ids[ids == len(self.vocab)] = 0
        if not np.array_equal(self.vocab[ids], points):
            bad = text[int(np.flatnonzero(self.vocab[ids] != points)[0])]
            raise DatasetError(f"character {bad!r} is not in the vocabulary")
        return ids.astype(np.uint16)

    def batch(self, pieces: list[_Item]) -> dict[str, tuple[np.ndarray, int, int]]:
        """Tokens, documents and bytes per split for ``(split, text, start, end)`` pieces."""
        arrays = self.encode([text for _, text, _, _ in pieces])
        parts: dict[str, list[np.ndarray]] = {s: [] for s in SPLITS}
        docs = dict.fromkeys(SPLITS, 0)
        nbytes = dict.fromkeys(SPLITS, 0)
        for (split, text, start, end), ids in zip(pieces, arrays, strict=True):
            parts[split].append(ids)
            nbytes[split] += len(text) if text.isascii() else len(text.encode("utf-8"))
            docs[split] += start
            if end and len(self.separator):
                parts[split].append(self.separator)
        return {
            s: (np.concatenate(p) if p else np.empty(0, np.uint16), docs[s], nbytes[s])
            for s, p in parts.items()
        }


_WORKER: _Encoder | None = None


def _init_worker(tokenizer: dict[str, Any] | None, separator: list[int] | None) -> None:
    """A worker's start: it ends with the process that started it (even one killed with
    SIGKILL), leaves Ctrl-C to that process (which ends the pool) and takes the default
    SIGTERM (a forked worker inherits the parent's handlers); a spawned worker loads the
    tokenizer here, a forked one has it already."""
    import signal

    from ..lifeline import end_with_parent

    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    end_with_parent(signum=getattr(signal, "SIGKILL", signal.SIGTERM), grace_s=0)
    if tokenizer is not None and separator is not None:
        global _WORKER
        _WORKER = _Encoder(tokenizer, separator)


def _encode_in_worker(
    pieces: list[_Item],
) -> dict[str, tuple[np.ndarray, int, int]]:
    assert _WORKER is not None
    return _WORKER.batch(pieces)


def _batches(pieces: Iterable[Piece]) -> Iterator[list[_Item]]:
    batch: list[_Item] = []
    size = 0
    for piece in pieces:
        batch.append((piece.split, piece.text, piece.start, piece.end))
        size += len(piece.text)
        if size >= BATCH_CHARS or len(batch) >= BATCH_PIECES:
            yield batch
            batch, size = [], 0
    if batch:
        yield batch


def _encoded(
    pieces: Iterable[Piece], tokenizer: dict[str, Any], separator: list[int], num_proc: int
) -> Iterator[dict[str, tuple[np.ndarray, int, int]]]:
    """Encoded batches in input order, ``num_proc`` processes at a time."""
    if num_proc <= 1:
        encoder = _Encoder(tokenizer, separator)
        yield from map(encoder.batch, _batches(pieces))
        return
    import multiprocessing
    import sys

    # On Linux, forked workers inherit the loaded BPE tables and start in milliseconds;
    # they only run tiktoken and numpy. Elsewhere fork is unsafe (macOS) or absent.
    global _WORKER
    method = "fork" if sys.platform.startswith("linux") else "spawn"
    if method == "fork":
        _WORKER = _Encoder(tokenizer, separator)
    ctx = multiprocessing.get_context(method)
    initargs = (None, None) if method == "fork" else (tokenizer, separator)
    with ctx.Pool(num_proc, initializer=_init_worker, initargs=initargs) as pool:
        pending: deque[Any] = deque()
        for batch in _batches(pieces):
            pending.append(pool.apply_async(_encode_in_worker, (batch,)))
            if len(pending) >= 2 * num_proc:
                yield pending.popleft().get()
        while pending:
            yield pending.popleft().get()


# -- writing ------------------------------------------------------------------------------


def existing_dataset(out: Path, fingerprint: str) -> dict[str, Any] | None:
    """The metadata of a complete dataset in ``out`` built from the same inputs, if any."""
    try:
        meta = json.loads((out / META_FILE).read_text(encoding="utf-8"))
        if meta["source"]["fingerprint"] != fingerprint:
            return None
        for info in meta["splits"].values():
            if (out / info["file"]).stat().st_size != info["tokens"] * TOKEN_BYTES:
                return None
        return meta
    except (OSError, ValueError, KeyError, TypeError):
        return None


def skipped_result(out: Path, meta: dict[str, Any]) -> PrepareResult:
    splits = {
        s: SplitStats(int(info.get("documents", 0)), int(info["tokens"]), int(info.get("bytes", 0)))
        for s, info in meta["splits"].items()
    }
    return PrepareResult(
        name=meta["name"],
        path=out,
        vocab_size=int(meta["vocab_size"]),
        tokenizer=tokenizer_label(meta["tokenizer"]),
        splits=splits,
        files=[out / info["file"] for info in meta["splits"].values()] + [out / META_FILE],
        seconds=0.0,
        skipped=True,
        inputs=list(meta["source"].get("inputs", [])),
    )


def tokenizer_label(tokenizer: dict[str, Any]) -> str:
    if tokenizer["kind"] == "char":
        return f"char ({len(tokenizer['chars'])} characters)"
    return str(tokenizer.get("name", tokenizer["kind"]))


def write_dataset(
    *,
    name: str,
    out: Path,
    pieces: Iterable[Piece],
    tokenizer: dict[str, Any],
    vocab_size: int,
    separator: list[int],
    source: dict[str, Any],
    num_proc: int = 1,
    total: float | None = None,
    total_unit: str = "docs",
) -> PrepareResult:
    """Tokenize ``pieces`` into ``out``; ``source`` (with its ``fingerprint``) goes in the
    metadata. ``total`` sizes the progress bar: documents, or input bytes with
    ``total_unit="bytes"``."""
    if vocab_size - 1 > MAX_TOKEN_ID:
        raise DatasetError(f"a vocabulary of {vocab_size} does not fit uint16 token files")
    start = time.perf_counter()
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise DatasetError(
            f"cannot create {out}: {e.strerror or e}; choose another --data-dir"
        ) from None
    stats = {s: SplitStats() for s in SPLITS}
    tmp = {s: out / f"{s}.bin.tmp" for s in SPLITS}
    files = {s: open(tmp[s], "wb") for s in SPLITS}  # noqa: SIM115 - closed in finally
    done = False
    try:
        with progress(f"prepare {name}", total, total_unit) as bar:
            for encoded in _encoded(
                _counted(pieces, bar, total_unit), tokenizer, separator, num_proc
            ):
                for split, (ids, docs, nbytes) in encoded.items():
                    files[split].write(ids.tobytes())
                    stats[split].tokens += len(ids)
                    stats[split].documents += docs
                    stats[split].bytes += nbytes
                if total_unit == "docs":
                    bar.advance(sum(e[1] for e in encoded.values()))
                n_tokens = sum(s.tokens for s in stats.values())
                elapsed = time.perf_counter() - start
                bar.describe(
                    f"prepare {name}: {sum(s.documents for s in stats.values()):,} docs, "
                    f"{n_tokens:,} tokens, {n_tokens / max(elapsed, 1e-9):,.0f} tok/s"
                )
        for f in files.values():
            f.flush()
            os.fsync(f.fileno())
            f.close()
        for split in SPLITS:
            if stats[split].tokens < 2:
                raise DatasetError(
                    f"the {split} split of {name} has {stats[split].tokens} tokens; "
                    + (
                        "raise --val-fraction or give more text"
                        if split == "val"
                        else "give more text"
                    )
                )
        meta = {
            "format": "nanogpt-dataset",
            "version": FORMAT_VERSION,
            "name": name,
            "tokenizer": tokenizer,
            "vocab_size": vocab_size,
            "dtype": "uint16",
            "splits": {
                s: {
                    "file": f"{s}.bin",
                    "tokens": st.tokens,
                    "documents": st.documents,
                    "bytes": st.bytes,
                }
                for s, st in stats.items()
            },
            "source": source,
        }
        # Without meta.json the folder is not a dataset: remove it before the bins change.
        (out / META_FILE).unlink(missing_ok=True)
        for split in SPLITS:
            os.replace(tmp[split], out / f"{split}.bin")
        write_meta(out / META_FILE, meta)
        done = True
    except OSError as e:
        raise DatasetError(f"cannot write the dataset to {out}: {e.strerror or e}") from None
    finally:
        for f in files.values():
            f.close()
        if not done:
            for path in tmp.values():
                path.unlink(missing_ok=True)
    seconds = time.perf_counter() - start
    n_tokens = sum(s.tokens for s in stats.values())
    logger.debug(f"{name}: {n_tokens:,} tokens in {seconds:.2f} s")
    return PrepareResult(
        name=name,
        path=out,
        vocab_size=vocab_size,
        tokenizer=tokenizer_label(tokenizer),
        splits=stats,
        files=[out / f"{s}.bin" for s in SPLITS] + [out / META_FILE],
        seconds=seconds,
        inputs=list(source.get("inputs", [])),
    )


def _counted(pieces: Iterable[Piece], bar: Any, unit: str) -> Iterator[Piece]:
    """Advance a bytes progress bar as pieces are read."""
    if unit != "bytes":
        yield from pieces
        return
    for piece in pieces:
        yield piece
        bar.advance(
            len(piece.text.encode("utf-8")) if not piece.text.isascii() else len(piece.text)
        )
