"""Where the text of a corpus comes from: local text files, directories, JSONL, HF datasets.

A source yields *documents*, each as one or more pieces of text, so that a file of any size
streams through in bounded memory. Text files are cut into pieces only where GPT-2's
pre-tokenizer splits anyway (see ``safe_cut``), so encoding the pieces one by one gives
exactly the tokens of encoding the whole document.
"""

from __future__ import annotations

import codecs
import hashlib
import json
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

from ..errors import DatasetError

PIECE_BYTES = 1 << 20  # text files are read and tokenized about this much at a time
JSONL_SUFFIXES = (".jsonl", ".ndjson")
DEFAULT_GLOB = "*.txt"


def safe_cut(text: str, min_pos: int = 1) -> int:
    """The last position ``p >= min_pos`` where ``text[p-1]`` is not whitespace and
    ``text[p]`` is; 0 if there is none.

    GPT-2's pre-tokenizer never puts a non-whitespace character and the whitespace after
    it in one piece, and its pattern looks ahead only through whitespace, so the text on
    either side of such a position encodes to the same tokens alone as within the whole.
    """
    # Only a space or newline counts on the right: Python's isspace() admits characters
    # (U+001C..U+001F) that the pattern's \s does not. On the left, isspace() errs safe.
    p = len(text) - 1
    while p >= min_pos:
        if text[p] in " \n" and not text[p - 1].isspace():
            return p
        p -= 1
    return 0


@dataclass
class TextFile:
    """One local file: plain text (one document) or JSONL (one document per line)."""

    path: Path
    text_field: str = "text"

    @property
    def is_jsonl(self) -> bool:
        return self.path.suffix.lower() in JSONL_SUFFIXES

    def size(self) -> int:
        return self.path.stat().st_size

    def documents(self, piece_bytes: int | None = None) -> Iterator[Iterator[str]]:
        """Each document as an iterator of its pieces (of about ``piece_bytes``)."""
        if self.is_jsonl:
            yield from (iter([text]) for text in self._jsonl_texts())
        else:
            yield self._pieces(piece_bytes or PIECE_BYTES)

    def _pieces(self, piece_bytes: int) -> Iterator[str]:
        decoder = codecs.getincrementaldecoder("utf-8")(errors="strict")
        consumed = 0  # bytes handed to the decoder so far
        carry = ""
        with _open(self.path) as f:
            while True:
                raw = f.read(piece_bytes)
                pending = len(decoder.getstate()[0])
                try:
                    text = decoder.decode(raw, final=not raw)
                except UnicodeDecodeError as e:
                    offset = consumed - pending + e.start
                    raise DatasetError(
                        f"{self.path} is not valid UTF-8 at byte offset {offset}; "
                        "convert it to UTF-8"
                    ) from None
                consumed += len(raw)
                carry += text
                if not raw:
                    break
                cut = safe_cut(carry)
                if cut:
                    yield carry[:cut]
                    carry = carry[cut:]
        if carry:
            yield carry

    def _jsonl_texts(self) -> Iterator[str]:
        offset = 0
        with _open(self.path) as f:
            for line_no, raw in enumerate(f, 1):
                start, offset = offset, offset + len(raw)
                if not raw.strip():
                    continue
                try:
                    line = raw.decode("utf-8")
                except UnicodeDecodeError as e:
                    raise DatasetError(
                        f"{self.path} is not valid UTF-8 at byte offset {start + e.start} "
                        f"(line {line_no}); convert it to UTF-8"
                    ) from None
                try:
                    record = json.loads(line)
                except json.JSONDecodeError as e:
                    raise DatasetError(
                        f"{self.path} line {line_no} is not valid JSON ({e.msg}); "
                        "JSONL needs one JSON object per line"
                    ) from None
                text = record.get(self.text_field) if isinstance(record, dict) else None
                if not isinstance(text, str):
                    keys = ", ".join(record) if isinstance(record, dict) else type(record).__name__
                    raise DatasetError(
                        f"{self.path} line {line_no} has no string field '{self.text_field}' "
                        f"(it has: {keys}); choose the field with --text-field"
                    )
                yield text


@contextmanager
def _open(path: Path) -> Iterator[BinaryIO]:
    try:
        f = open(path, "rb")  # noqa: SIM115 - closed below; open errors get our message
    except OSError as e:
        raise DatasetError(f"cannot read {path}: {e.strerror or e}") from None
    with f:
        yield f


def find_files(
    paths: Sequence[str | Path], glob: str = DEFAULT_GLOB, text_field: str = "text"
) -> list[TextFile]:
    """The files named by ``paths``: files as given, directories searched recursively for
    ``glob`` (sorted, so the order never depends on the file system)."""
    if not paths:
        raise DatasetError("no input given; pass text files, JSONL files or directories")
    files: list[TextFile] = []
    for given in paths:
        path = Path(given).expanduser()
        if path.is_dir():
            found = sorted(p for p in path.rglob(glob) if p.is_file())
            if not found:
                raise DatasetError(f"{path} holds no files matching '{glob}'; see --glob")
            files += [TextFile(p, text_field) for p in found]
        elif path.is_file():
            files.append(TextFile(path, text_field))
        else:
            raise DatasetError(f"{path} does not exist")
    return files


def files_fingerprint(files: Sequence[TextFile], options: dict[str, Any]) -> str:
    """Changes when any input file (path, size, modification time) or option changes."""
    h = hashlib.sha256(json.dumps(options, sort_keys=True).encode())
    for f in files:
        st = f.path.stat()
        h.update(f"{f.path.resolve()}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
    return h.hexdigest()
