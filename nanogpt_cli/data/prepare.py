"""``nanogpt prepare``: turn a corpus into ``train.bin`` / ``val.bin`` + ``meta.json``.

Every dataset goes through the same streaming builder (``build.write_dataset``); what
differs is where the documents come from and how they are split:

- ``shakespeare-char`` / ``shakespeare``: tinyshakespeare, characters or GPT-2 BPE; the
  first 90% of the text trains and the last 10% validates, as nanoGPT does.
- ``text``: local text files, directories and JSONL.
- ``hf`` / ``openwebtext``: Hugging Face datasets (hub, local folder, or files).
"""

from __future__ import annotations

import hashlib
import json
import os
import shlex
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, Literal

from ..errors import ConfigError, DatasetError
from ..log import get_logger
from ..paths import dataset_dir
from .build import Piece, PrepareResult, existing_dataset, skipped_result, write_dataset
from .download import download, is_url, sha256_of
from .sources import DEFAULT_GLOB, files_fingerprint, find_files
from .splits import all_text, split_at_end, split_random

logger = get_logger(__name__)

__all__ = [
    "PrepareResult",
    "prepare_hf",
    "prepare_openwebtext",
    "prepare_shakespeare",
    "prepare_shakespeare_char",
    "prepare_text",
]

TINYSHAKESPEARE_URL = (
    "https://raw.githubusercontent.com/karpathy/char-rnn/master/data/tinyshakespeare/input.txt"
)
TINYSHAKESPEARE_SHA256 = "86c4e6aa9db7c042ec79f339dcb96d42b0075e16b8fc2e86bf0ca57e2dc565ed"
SHAKESPEARE_URL_ENV = "NANOGPT_SHAKESPEARE_URL"  # another place to download it from
SHAKESPEARE_VAL_FRACTION = 0.1  # nanoGPT: the first 90% trains, the last 10% validates
OPENWEBTEXT_VAL_FRACTION = 0.0005  # nanoGPT's openwebtext/prepare.py
OPENWEBTEXT_SEED = 2357
DEFAULT_SEED = 2357

TokenizerName = Literal["gpt2", "char"]
ValFrom = Literal["auto", "end", "random"]
GPT2_EOT_TEXT = "<|endoftext|>"


def default_num_proc() -> int:
    return max(1, min(8, os.cpu_count() or 1))


# -- tinyshakespeare ----------------------------------------------------------------------


def _tinyshakespeare(source: str | None, name: str, data_dir: str | Path | None) -> Path:
    """The corpus: ``source`` (a file or URL), else ``$NANOGPT_SHAKESPEARE_URL``, else the
    default URL. Only the default download's sha256 is known, so only it is checked."""
    again = f"nanogpt prepare {name} --source PATH"
    again += f" --data-dir {shlex.quote(str(data_dir))}" if data_dir else ""
    hint = (
        f"offline, get tinyshakespeare's input.txt elsewhere and run `{again}`, or set "
        f"{SHAKESPEARE_URL_ENV} to a mirror or a file:// URL of a copy"
    )
    if source is None:
        url = os.environ.get(SHAKESPEARE_URL_ENV) or TINYSHAKESPEARE_URL
        if url == TINYSHAKESPEARE_URL:
            return download(url, "tinyshakespeare.txt", TINYSHAKESPEARE_SHA256, hint=hint)
        if not is_url(url):
            raise DatasetError(
                f"{SHAKESPEARE_URL_ENV}={url} is not a URL; use http(s)://... or, for a local "
                "file, file:///absolute/path/input.txt"
            )
        path = _download_url(url, hint)
        sha = sha256_of(path)  # logged, not checked: only the default file's is known
        logger.info(f"tinyshakespeare from {url} ({SHAKESPEARE_URL_ENV}), sha256 {sha}")
        return path
    if is_url(source):
        return _download_url(source, hint)
    return Path(source).expanduser()


def _download_url(url: str, hint: str) -> Path:
    url_hash = hashlib.sha1(url.encode()).hexdigest()[:12]
    return download(url, f"tinyshakespeare-{url_hash}.txt", hint=hint)


def prepare_shakespeare_char(
    source: str | None = None, data_dir: str | Path | None = None, force: bool = False
) -> PrepareResult:
    """Tinyshakespeare, one token per character, as nanoGPT's ``shakespeare_char`` dataset.

    ``source`` is a local file or a URL; by default the corpus is downloaded once into the
    user cache.
    """
    return prepare_text(
        [_tinyshakespeare(source, "shakespeare-char", data_dir)],
        name="shakespeare-char",
        tokenizer="char",
        val_fraction=SHAKESPEARE_VAL_FRACTION,
        val_from="end",
        separator="none",
        data_dir=data_dir,
        force=force,
    )


def prepare_shakespeare(
    source: str | None = None,
    data_dir: str | Path | None = None,
    force: bool = False,
) -> PrepareResult:
    """Tinyshakespeare with GPT-2's BPE, as nanoGPT's ``shakespeare`` dataset."""
    return prepare_text(
        [_tinyshakespeare(source, "shakespeare", data_dir)],
        name="shakespeare",
        tokenizer="gpt2",
        val_fraction=SHAKESPEARE_VAL_FRACTION,
        val_from="end",
        separator="none",
        data_dir=data_dir,
        force=force,
    )


# -- local files --------------------------------------------------------------------------


def prepare_text(
    paths: Sequence[str | Path],
    *,
    name: str | None = None,
    tokenizer: TokenizerName = "gpt2",
    val_fraction: float = 0.1,
    val_from: ValFrom = "auto",
    separator: str = "auto",
    glob: str = DEFAULT_GLOB,
    text_field: str = "text",
    seed: int = DEFAULT_SEED,
    num_proc: int = 1,
    data_dir: str | Path | None = None,
    force: bool = False,
) -> PrepareResult:
    """Text files, directories (searched recursively for ``glob``) and JSONL files.

    Each text file is one document, each JSONL line another (its ``text_field``). The val
    split is the last ``val_fraction`` of the text (``val_from="end"``, the default for
    plain text) or a seeded random ``val_fraction`` of the documents (``"random"``, the
    default when any input is JSONL). ``separator`` follows every document: ``auto`` is
    ``<|endoftext|>`` for GPT-2's BPE and a blank line for characters; ``none`` or any text.
    """
    _check_fraction(val_fraction)
    if name is not None:
        check_dataset_name(name)
    files = find_files(paths, glob, text_field)
    name = check_dataset_name(
        name or _name_from(files[0].path.stem if len(paths) == 1 else "corpus")
    )
    if val_from == "auto":
        val_from = "random" if any(f.is_jsonl for f in files) else "end"
    options = {
        "tokenizer": tokenizer,
        "val_fraction": val_fraction,
        "val_from": val_from,
        "separator": separator,
        "seed": seed,
        "text_field": text_field,
    }
    out = dataset_dir(name, data_dir)
    fingerprint = files_fingerprint(files, options)
    if not force and (meta := existing_dataset(out, fingerprint)) is not None:
        logger.info(f"{name} is already prepared in {out} from the same inputs (--force rebuilds)")
        return skipped_result(out, meta)

    chars: str | None = None
    total_chars = 0
    if tokenizer == "char" or val_from == "end":  # a first pass: the vocabulary, the length
        seen: set[str] = set()
        for text in all_text(files):
            total_chars += len(text)
            if tokenizer == "char":
                seen.update(text)
        if total_chars == 0:
            inputs = ", ".join(str(p) for p in paths)
            raise DatasetError(f"{inputs} is empty; there is nothing to train on")
        chars = "".join(sorted(seen)) if tokenizer == "char" else None
    tok, vocab_size, sep = _tokenizer(tokenizer, separator, chars)
    if val_from == "end":
        pieces = split_at_end(files, int(total_chars * (1 - val_fraction)))
    else:
        pieces = split_random(files, val_fraction, seed)
    source = {
        "kind": "files",
        "inputs": [str(f.path.resolve()) for f in files][:1000],
        "files": len(files),
        "options": options,
        "fingerprint": fingerprint,
    }
    return write_dataset(
        name=name,
        out=out,
        pieces=pieces,
        tokenizer=tok,
        vocab_size=vocab_size,
        separator=sep,
        source=source,
        num_proc=num_proc,
        total=sum(f.size() for f in files),
        total_unit="bytes",
    )


# -- Hugging Face datasets ----------------------------------------------------------------


def load_hf_dataset(
    source: str,
    *,
    config_name: str | None = None,
    split: str = "train",
    data_files: Sequence[str] | None = None,
    num_proc: int = 1,
) -> Any:
    """One split of a Hugging Face dataset: a hub name, a builder such as ``json`` with
    ``data_files``, a local dataset folder, or a folder written by ``save_to_disk``."""
    import datasets

    path = Path(source).expanduser()
    try:
        if path.is_dir() and (path / "dataset_dict.json").is_file():
            return datasets.load_from_disk(str(path))[split]
        if path.is_dir() and (path / "state.json").is_file():
            return datasets.load_from_disk(str(path))
        return datasets.load_dataset(
            str(path) if path.exists() else source,
            config_name,
            split=split,
            data_files=list(data_files) if data_files else None,
            num_proc=num_proc if num_proc > 1 else None,
        )
    except KeyError:
        raise DatasetError(f"{source} has no split '{split}'; choose one with --split") from None
    except Exception as e:  # network, unknown dataset, bad files: one clear line
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise DatasetError(f"cannot load the dataset {source}: {first}") from None


def prepare_hf(
    source: str,
    *,
    name: str | None = None,
    config_name: str | None = None,
    split: str = "train",
    val_split: str | None = None,
    data_files: Sequence[str] | None = None,
    text_column: str = "text",
    tokenizer: TokenizerName = "gpt2",
    val_fraction: float = 0.1,
    seed: int = DEFAULT_SEED,
    separator: str = "auto",
    num_proc: int = 1,
    data_dir: str | Path | None = None,
    force: bool = False,
) -> PrepareResult:
    """A Hugging Face dataset (hub name, local folder or files via a builder like ``json``).

    The val split is the dataset's own ``val_split`` if given, else a seeded random
    ``val_fraction`` of the documents of ``split`` (``Dataset.train_test_split``, as
    nanoGPT's openwebtext recipe does).
    """
    _check_fraction(val_fraction)
    if name is not None:
        check_dataset_name(name)
    train = load_hf_dataset(
        source, config_name=config_name, split=split, data_files=data_files, num_proc=num_proc
    )
    if text_column not in train.column_names:
        raise DatasetError(
            f"{source} has no column '{text_column}' (it has: {', '.join(train.column_names)}); "
            "choose one with --text-column"
        )
    if val_split is not None:
        val = load_hf_dataset(
            source,
            config_name=config_name,
            split=val_split,
            data_files=data_files,
            num_proc=num_proc,
        )
    else:
        if len(train) < 2:
            raise DatasetError(f"{source} has {len(train)} document(s); too few to split")
        parts = train.train_test_split(test_size=val_fraction, seed=seed, shuffle=True)
        train, val = parts["train"], parts["test"]
    name = check_dataset_name(
        name or _name_from(Path(source).name if Path(source).exists() else source)
    )
    options = {
        "source": source,
        "config_name": config_name,
        "split": split,
        "val_split": val_split,
        "data_files": list(data_files or []),
        "text_column": text_column,
        "tokenizer": tokenizer,
        "val_fraction": val_fraction if val_split is None else None,
        "seed": seed,
        "separator": separator,
    }
    fingerprint = _hf_fingerprint((train, val), options)
    out = dataset_dir(name, data_dir)
    if fingerprint and not force and (meta := existing_dataset(out, fingerprint)) is not None:
        logger.info(f"{name} is already prepared in {out} from the same inputs (--force rebuilds)")
        return skipped_result(out, meta)
    chars = None
    if tokenizer == "char":
        seen: set[str] = set()
        for ds in (train, val):
            for batch in ds.iter(batch_size=1000):
                for text in batch[text_column]:
                    seen.update(text)
        chars = "".join(sorted(seen))
    tok, vocab_size, sep = _tokenizer(tokenizer, separator, chars)
    return write_dataset(
        name=name,
        out=out,
        pieces=_hf_pieces({"train": train, "val": val}, text_column),
        tokenizer=tok,
        vocab_size=vocab_size,
        separator=sep,
        source={
            "kind": "huggingface",
            "inputs": [source, *(data_files or [])][:1000],
            "options": options,
            "fingerprint": fingerprint,
        },
        num_proc=num_proc,
        total=len(train) + len(val),
        total_unit="docs",
    )


def prepare_openwebtext(
    source: str = "openwebtext",
    *,
    num_proc: int = 1,
    data_dir: str | Path | None = None,
    force: bool = False,
) -> PrepareResult:
    """OpenWebText as nanoGPT's openwebtext/prepare.py makes it: a 0.0005 val split with
    seed 2357, GPT-2's BPE, ``<|endoftext|>`` after every document."""
    return prepare_hf(
        source,
        name="openwebtext",
        tokenizer="gpt2",
        val_fraction=OPENWEBTEXT_VAL_FRACTION,
        seed=OPENWEBTEXT_SEED,
        separator="auto",
        num_proc=num_proc,
        data_dir=data_dir,
        force=force,
    )


def _hf_pieces(splits: dict[str, Any], column: str) -> Iterator[Piece]:
    for split, ds in splits.items():
        for batch in ds.iter(batch_size=1000):
            for text in batch[column]:
                if not isinstance(text, str):
                    raise DatasetError(f"column '{column}' holds {type(text).__name__}, not text")
                yield Piece(split, text, True)


def _hf_fingerprint(datasets_: Sequence[Any], options: dict[str, Any]) -> str | None:
    """From the dataset's Arrow cache files; None for an in-memory dataset (always rebuilt)."""
    h = hashlib.sha256(json.dumps(options, sort_keys=True).encode())
    for ds in datasets_:
        files = ds.cache_files
        if not files:
            return None
        for entry in files:
            path = Path(entry["filename"])
            st = path.stat()
            h.update(f"{path}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
        h.update(f"{len(ds)}\n".encode())
    return h.hexdigest()


# -- shared -------------------------------------------------------------------------------


MAX_NAME_BYTES = 255  # a folder name's limit on the usual file systems


def _check_fraction(val_fraction: float) -> None:
    if not 0 < val_fraction < 1:
        raise DatasetError(f"--val-fraction must be between 0 and 1, got {val_fraction}")


def check_dataset_name(name: str) -> str:
    """``name`` if it can name a dataset: one folder of the data directory. A name with a
    separator, ``..`` or a leading dot would be read as a path, and writing the dataset
    there would leave the data directory (``--name ../escaped``)."""
    problem = None
    if not name.strip():
        problem = "is empty"
    elif "/" in name or "\\" in name or (os.altsep and os.altsep in name):
        problem = "holds a path separator"
    elif name.startswith("."):
        problem = "starts with a dot (read as a path: '.', '..', a hidden folder)"
    elif any(ord(c) < 32 or c == "\x7f" for c in name):
        problem = "holds a control character"
    elif len(name.encode("utf-8", "surrogateescape")) > MAX_NAME_BYTES:
        problem = f"is longer than {MAX_NAME_BYTES} bytes, the most a folder name can have"
    if problem is not None:
        raise ConfigError(
            f"--name {name[:60]!r} {problem}; a dataset name is one folder name of the data "
            "directory (letters, digits, '-', '_', '.'); use --data-dir to put it elsewhere"
        )
    return name


def _name_from(stem: str) -> str:
    name = "".join(c if c.isalnum() or c in "-_." else "-" for c in stem.strip("/")).strip("-.")
    return name or "corpus"


def _tokenizer(
    kind: str, separator: str, chars: str | None
) -> tuple[dict[str, Any], int, list[int]]:
    """The tokenizer description, its vocabulary size and the separator's token ids."""
    sep_text = _separator_text(kind, separator)
    if kind == "char":
        assert chars is not None
        chars = "".join(sorted(set(chars) | set(sep_text or "")))
        info: dict[str, Any] = {"kind": "char", "chars": chars}
        ids = [chars.index(c) for c in sep_text or ""]
        return info, len(chars), ids
    if kind != "gpt2":
        raise DatasetError(f"unknown tokenizer {kind!r}; use gpt2 or char")
    from .tokenizer import TiktokenTokenizer

    tok = TiktokenTokenizer("gpt2")
    if sep_text is None:
        ids = []
    elif sep_text == GPT2_EOT_TEXT:
        ids = [tok.encoding.eot_token]
    else:
        ids = tok.encoding.encode_ordinary(sep_text)
    return tok.to_dict(), tok.vocab_size, ids


def _separator_text(kind: str, separator: str) -> str | None:
    if separator == "none":
        return None
    if separator == "auto":
        return GPT2_EOT_TEXT if kind == "gpt2" else "\n\n"
    text = separator.replace("\\n", "\n").replace("\\t", "\t")
    if kind == "char" and text == GPT2_EOT_TEXT:
        raise DatasetError("<|endoftext|> is not a character; choose another --separator")
    return text
