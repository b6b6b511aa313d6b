"""``nanogpt prepare``: turn a corpus into train/val token files."""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import dataclass
from pathlib import Path

from ..errors import DatasetError
from ..log import logger
from ..paths import dataset_dir
from .dataset import META_FILE, TOKEN_BYTES, write_meta, write_tokens
from .download import download, is_url
from .tokenizer import CharTokenizer

TINYSHAKESPEARE_URL = (
    "https://raw.githubusercontent.com/karpathy/char-rnn/master/data/tinyshakespeare/input.txt"
)
TINYSHAKESPEARE_SHA256 = "86c4e6aa9db7c042ec79f339dcb96d42b0075e16b8fc2e86bf0ca57e2dc565ed"
TRAIN_FRACTION = 0.9  # nanoGPT's split: the first 90% trains, the last 10% validates
FORMAT_VERSION = 1


@dataclass
class PrepareResult:
    """What a prepare step wrote (or found already written)."""

    name: str
    path: Path
    vocab_size: int
    train_tokens: int
    val_tokens: int
    seconds: float
    skipped: bool = False


def read_text(path: Path) -> tuple[str, str]:
    """A UTF-8 file's text and its sha256; clear errors for missing, empty or invalid files."""
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise DatasetError(f"{path} does not exist") from None
    except IsADirectoryError:
        raise DatasetError(f"{path} is a directory; pass a text file") from None
    except OSError as e:
        raise DatasetError(f"cannot read {path}: {e.strerror}") from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise DatasetError(
            f"{path} is not valid UTF-8 at byte offset {e.start}; convert it to UTF-8"
        ) from None
    if not text:
        raise DatasetError(f"{path} is empty; there is nothing to train on")
    return text, hashlib.sha256(raw).hexdigest()


def prepare_shakespeare_char(
    source: str | None = None, data_dir: str | Path | None = None, force: bool = False
) -> PrepareResult:
    """Tinyshakespeare, one token per character, as nanoGPT's ``shakespeare_char`` dataset.

    ``source`` is a local file or a URL; by default the corpus is downloaded once into the
    user cache.
    """
    if source is None:
        path = download(TINYSHAKESPEARE_URL, "tinyshakespeare.txt", TINYSHAKESPEARE_SHA256)
        location = TINYSHAKESPEARE_URL
    elif is_url(source):
        url_hash = hashlib.sha1(source.encode()).hexdigest()[:12]
        path = download(source, f"tinyshakespeare-{url_hash}.txt")
        location = source
    else:
        path = Path(source).expanduser()
        location = str(path.resolve())
    text, sha256 = read_text(path)
    return prepare_char_text(
        text, "shakespeare-char", data_dir, {"location": location, "sha256": sha256}, force
    )


def prepare_char_text(
    text: str,
    name: str,
    data_dir: str | Path | None,
    source: dict[str, str],
    force: bool = False,
) -> PrepareResult:
    """Character-level tokens of ``text``, split 90/10, written under the dataset's name."""
    import numpy as np

    start = time.perf_counter()
    out = dataset_dir(name, data_dir)
    existing = _already_prepared(out, source["sha256"])
    if existing is not None and not force:
        logger.info(f"{name} is already prepared in {out} (use --force to rebuild)")
        return PrepareResult(
            name,
            out,
            existing["vocab_size"],
            existing["splits"]["train"]["tokens"],
            existing["splits"]["val"]["tokens"],
            0.0,
            skipped=True,
        )

    tokenizer = CharTokenizer.from_text(text)
    if tokenizer.vocab_size > 1 << 16:
        raise DatasetError(
            f"{name} has {tokenizer.vocab_size} distinct characters; uint16 tokens hold 65536"
        )
    # Map characters to ids with numpy: the text as code points, looked up in the sorted
    # vocabulary. Python's per-character loop would take seconds on large corpora.
    codepoints = np.frombuffer(text.encode("utf-32-le"), dtype=np.uint32)
    vocab = np.array([ord(c) for c in tokenizer.itos], dtype=np.uint32)
    ids = np.searchsorted(vocab, codepoints).astype(np.uint16)
    n_train = int(len(ids) * TRAIN_FRACTION)
    splits = {"train": ids[:n_train], "val": ids[n_train:]}
    if len(splits["val"]) < 2:
        raise DatasetError(
            f"the text for {name} has {len(ids)} characters; too short for a validation split"
        )

    try:
        out.mkdir(parents=True, exist_ok=True)
        for split, tokens in splits.items():
            write_tokens(out / f"{split}.bin", tokens)
    except OSError as e:
        raise DatasetError(
            f"cannot write the dataset to {out}: {e.strerror or e}; choose another --data-dir"
        ) from None
    meta = {
        "format": "nanogpt-dataset",
        "version": FORMAT_VERSION,
        "name": name,
        "tokenizer": tokenizer.to_dict(),
        "vocab_size": tokenizer.vocab_size,
        "dtype": "uint16",
        "splits": {s: {"file": f"{s}.bin", "tokens": len(t)} for s, t in splits.items()},
        "source": source,
    }
    write_meta(out / META_FILE, meta)
    return PrepareResult(
        name,
        out,
        tokenizer.vocab_size,
        len(splits["train"]),
        len(splits["val"]),
        time.perf_counter() - start,
    )


def _already_prepared(out: Path, sha256: str) -> dict | None:
    """The existing metadata if ``out`` holds a complete dataset built from the same source."""
    try:
        meta = json.loads((out / META_FILE).read_text(encoding="utf-8"))
        if meta["source"]["sha256"] != sha256:
            return None
        for info in meta["splits"].values():
            if (out / info["file"]).stat().st_size != info["tokens"] * TOKEN_BYTES:
                return None
        return meta
    except (OSError, ValueError, KeyError, TypeError):
        return None
