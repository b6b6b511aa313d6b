"""Where ``prepare text`` splits a corpus into train and val: at a character position
(``--val-from end``) or document by document at random (``--val-from random``)."""

from __future__ import annotations

from collections.abc import Iterator, Sequence

from .build import Piece
from .sources import TextFile


def all_text(files: Sequence[TextFile]) -> Iterator[str]:
    """The text of ``files``, piece by piece."""
    for f in files:
        for doc in f.documents():
            yield from doc


def split_at_end(files: Sequence[TextFile], cut: int) -> Iterator[Piece]:
    """Everything before character ``cut`` trains, the rest validates (cut mid-piece)."""
    pos = 0
    for f in files:
        for doc in f.documents():
            first = {"train": True, "val": True}  # no piece of this document yet
            previous: str | None = None
            for text in doc:  # hold one piece back to know which is the document's last
                if previous is not None:
                    yield from cut_piece(previous, pos, cut, False, first)
                    pos += len(previous)
                previous = text
            if previous is not None:
                yield from cut_piece(previous, pos, cut, True, first)
                pos += len(previous)


def cut_piece(text: str, pos: int, cut: int, end: bool, first: dict[str, bool]) -> Iterator[Piece]:
    parts = (
        [("train", text, end)]
        if pos + len(text) <= cut
        else [("val", text, end)]
        if pos >= cut
        else [("train", text[: cut - pos], False), ("val", text[cut - pos :], end)]
    )
    for split, part, last in parts:
        yield Piece(split, part, last, first[split])
        first[split] = False


def split_random(files: Sequence[TextFile], val_fraction: float, seed: int) -> Iterator[Piece]:
    """Each document to val with probability ``val_fraction`` (seeded), else to train."""
    import numpy as np

    rng = np.random.default_rng(seed)
    for f in files:
        for doc in f.documents():
            split = "val" if rng.random() < val_fraction else "train"
            previous: str | None = None
            start = True
            for text in doc:
                if previous is not None:
                    yield Piece(split, previous, False, start)
                    start = False
                previous = text
            if previous is not None:
                yield Piece(split, previous, True, start)
