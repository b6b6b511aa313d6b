"""BPE and custom-corpus preparation: exact tokens, splits, streaming, errors, no-op re-runs."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from conftest import TINYSHAKESPEARE, make_text

from nanogpt_cli.cli.app import main
from nanogpt_cli.data import sources
from nanogpt_cli.data.dataset import open_dataset
from nanogpt_cli.data.prepare import (
    prepare_hf,
    prepare_openwebtext,
    prepare_shakespeare,
    prepare_text,
)
from nanogpt_cli.errors import DatasetError

EOT = 50256


@pytest.fixture
def enc(gpt2_bpe: Path):
    import tiktoken

    return tiktoken.get_encoding("gpt2")


def tokens(folder: Path, split: str) -> list[int]:
    return np.fromfile(folder / f"{split}.bin", dtype=np.uint16).tolist()


def documents(n: int = 40, seed: int = 0) -> list[str]:
    """Documents with the whitespace, Unicode and punctuation that BPE treats specially."""
    rng = np.random.default_rng(seed)
    words = ["the", "naïve", "café", "  spaced", "tab\there", "日本語", "it's", "x\x1c!", "\u3000y"]
    words += ["123", "end.\n\n", "\n", "don't", "—dash", "a\r\nb", "    indented"]
    return [" ".join(rng.choice(words) for _ in range(int(rng.integers(5, 60)))) for _ in range(n)]


@pytest.mark.skipif(not TINYSHAKESPEARE.exists(), reason="../shared tinyshakespeare is absent")
def test_shakespeare_bpe_gives_nanogpts_token_counts(enc, tmp_path: Path) -> None:
    result = prepare_shakespeare(source=str(TINYSHAKESPEARE), data_dir=tmp_path)
    assert (result.train_tokens, result.val_tokens) == (301_966, 36_059)
    text = TINYSHAKESPEARE.read_text(encoding="utf-8")
    cut = int(len(text) * 0.9)
    assert tokens(result.path, "train") == enc.encode_ordinary(text[:cut])
    assert tokens(result.path, "val") == enc.encode_ordinary(text[cut:])
    meta = json.loads((result.path / "meta.json").read_text())
    assert meta["tokenizer"] == {"kind": "tiktoken", "name": "gpt2"}
    assert meta["vocab_size"] == 50257


def test_a_file_read_in_pieces_encodes_exactly_as_a_whole(
    enc, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    text = "".join(documents(60))
    path = tmp_path / "big.txt"
    path.write_text(text, encoding="utf-8")
    monkeypatch.setattr(sources, "PIECE_BYTES", 97)  # hundreds of cuts, many mid-character
    pieces = list(next(sources.TextFile(path).documents()))
    assert len(pieces) > 50 and "".join(pieces) == text
    assert [t for p in pieces for t in enc.encode_ordinary(p)] == enc.encode_ordinary(text)
    result = prepare_text(
        [path], tokenizer="gpt2", val_fraction=0.25, separator="none", data_dir=tmp_path
    )
    cut = int(len(text) * 0.75)
    assert tokens(result.path, "train") == enc.encode_ordinary(text[:cut])
    assert tokens(result.path, "val") == enc.encode_ordinary(text[cut:])


@pytest.mark.parametrize("num_proc", [1, 2])
def test_jsonl_documents_split_at_random_with_end_of_text(
    enc, tmp_path: Path, num_proc: int
) -> None:
    docs = documents(50)
    path = tmp_path / "docs.jsonl"
    lines = [json.dumps({"text": d, "id": i}) for i, d in enumerate(docs)]
    path.write_text("\n".join(lines[:25]) + "\n\n" + "\n".join(lines[25:]) + "\n")
    result = prepare_text([path], val_fraction=0.2, seed=7, num_proc=num_proc, data_dir=tmp_path)
    rng = np.random.default_rng(7)
    expected: dict[str, list[int]] = {"train": [], "val": []}
    for doc in docs:
        expected["val" if rng.random() < 0.2 else "train"] += [*enc.encode_ordinary(doc), EOT]
    assert tokens(result.path, "train") == expected["train"]
    assert tokens(result.path, "val") == expected["val"]
    assert result.splits["val"].documents == expected["val"].count(EOT) > 0
    assert result.splits["train"].documents + result.splits["val"].documents == 50
    assert open_dataset(str(result.path)).vocab_size == 50257


def test_directories_char_tokenizer_and_separator(tmp_path: Path) -> None:
    corpus = tmp_path / "corpus"
    (corpus / "b").mkdir(parents=True)
    (corpus / "a.txt").write_text("first file\n")
    (corpus / "b" / "c.txt").write_text("second, deeper\n")
    (corpus / "b" / "skip.md").write_text("not matched by the glob")
    result = prepare_text(
        [corpus], name="mine", tokenizer="char", separator="|", val_fraction=0.2, data_dir=tmp_path
    )
    meta = json.loads((tmp_path / "mine" / "meta.json").read_text())
    chars = meta["tokenizer"]["chars"]
    text = "first file\n|second, deeper\n|"
    assert chars == "".join(sorted(set(text)))
    decoded = "".join(chars[i] for i in tokens(result.path, "train") + tokens(result.path, "val"))
    assert decoded == text
    assert result.splits["train"].documents == 2 and result.splits["val"].documents == 1


def test_invalid_input_is_reported_with_file_and_position(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sources, "PIECE_BYTES", 16)
    bad = tmp_path / "bad.txt"
    bad.write_bytes("é".encode() * 20 + b"\xff tail")  # the bad byte is in the third piece
    with pytest.raises(DatasetError, match=r"bad.txt is not valid UTF-8 at byte offset 40"):
        prepare_text([bad], tokenizer="char", data_dir=tmp_path)
    jsonl = tmp_path / "bad.jsonl"
    jsonl.write_text('{"text": "ok"}\n{"text": oops}\n')
    with pytest.raises(DatasetError, match=r"bad.jsonl line 2 is not valid JSON"):
        prepare_text([jsonl], tokenizer="char", data_dir=tmp_path)
    jsonl.write_text('{"body": "ok"}\n')
    with pytest.raises(DatasetError, match=r"no string field 'text' \(it has: body\)"):
        prepare_text([jsonl], tokenizer="char", data_dir=tmp_path)
    with pytest.raises(DatasetError, match="does not exist"):
        prepare_text([tmp_path / "missing.txt"], data_dir=tmp_path)
    with pytest.raises(DatasetError, match="no files matching"):
        prepare_text([tmp_path], glob="*.none", data_dir=tmp_path)


def test_text_prepare_again_is_a_no_op_unless_forced_or_changed(tmp_path: Path) -> None:
    path = tmp_path / "t.txt"
    path.write_text(make_text())
    first = prepare_text([path], tokenizer="char", data_dir=tmp_path)
    again = prepare_text([path], tokenizer="char", data_dir=tmp_path)
    assert again.skipped and again.splits["train"].tokens == first.splits["train"].tokens
    assert not prepare_text([path], tokenizer="char", data_dir=tmp_path, force=True).skipped
    assert not prepare_text([path], tokenizer="char", val_fraction=0.2, data_dir=tmp_path).skipped
    path.write_text(make_text(seed=3))
    assert not prepare_text([path], tokenizer="char", data_dir=tmp_path).skipped
    assert not list((tmp_path / "t").glob("*.tmp"))


def hf_folder(tmp_path: Path, docs: list[str], val: list[str] | None = None) -> Path:
    import datasets

    train = datasets.Dataset.from_dict({"text": docs})
    folder = tmp_path / "hf-data"
    if val is None:
        train.save_to_disk(str(folder))
    else:
        val_ds = datasets.Dataset.from_dict({"text": val})
        datasets.DatasetDict({"train": train, "validation": val_ds}).save_to_disk(str(folder))
    return folder


def test_openwebtext_follows_nanogpts_recipe(enc, tmp_path: Path) -> None:
    docs = documents(30, seed=1)
    folder = hf_folder(tmp_path, docs)
    result = prepare_openwebtext(str(folder), data_dir=tmp_path, num_proc=2)
    # nanoGPT's openwebtext/prepare.py, step by step
    import datasets

    split = datasets.load_from_disk(str(folder)).train_test_split(
        test_size=0.0005, seed=2357, shuffle=True
    )
    for ours, theirs in (("train", "train"), ("val", "test")):
        expected = [t for d in split[theirs]["text"] for t in [*enc.encode_ordinary(d), EOT]]
        assert tokens(result.path, ours) == expected
    assert result.path.name == "openwebtext" and result.splits["val"].documents == 1


def test_hf_json_files_and_a_named_val_split(enc, tmp_path: Path) -> None:
    docs = documents(20, seed=2)
    path = tmp_path / "docs.jsonl"
    path.write_text("".join(json.dumps({"body": d}) + "\n" for d in docs))
    result = prepare_hf(
        "json", data_files=[str(path)], text_column="body", name="j", data_dir=tmp_path
    )
    assert result.splits["val"].documents == 2 and result.splits["train"].documents == 18
    all_tokens = sorted(tokens(result.path, "train") + tokens(result.path, "val"))
    assert all_tokens == sorted(t for d in docs for t in [*enc.encode_ordinary(d), EOT])
    with pytest.raises(DatasetError, match=r"no column 'text'.*--text-column"):
        prepare_hf("json", data_files=[str(path)], data_dir=tmp_path)
    folder = hf_folder(tmp_path, docs[:15], val=docs[15:])
    result = prepare_hf(str(folder), val_split="validation", name="v", data_dir=tmp_path)
    assert tokens(result.path, "val") == [
        t for d in docs[15:] for t in [*enc.encode_ordinary(d), EOT]
    ]
    assert prepare_hf(str(folder), val_split="validation", name="v", data_dir=tmp_path).skipped


def test_prepare_cli_prints_a_summary(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], gpt2_bpe: Path
) -> None:
    path = tmp_path / "docs.jsonl"
    path.write_text("".join(json.dumps({"text": d}) + "\n" for d in documents(30)))
    args = ["prepare", "text", str(path), "--name", "cli", "--data-dir", str(tmp_path)]
    try:
        main([*args, "--num-proc", "1"])
    except SystemExit as e:
        assert not e.code
    err = capsys.readouterr().err
    meta = json.loads((tmp_path / "cli" / "meta.json").read_text())
    assert f"{meta['splits']['train']['tokens']:,}" in err and "documents" in err
    assert "vocab 50,257" in err


def run_cli(args: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as exit_info:
        main(args)
    out, err = capsys.readouterr()
    return int(exit_info.value.code or 0), out, err


@pytest.fixture
def fresh_install(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A user with nothing prepared or cached: the user directories under tmp_path."""
    home = tmp_path / "home"
    for var, path in (
        ("HOME", home),
        ("XDG_CACHE_HOME", home / "cache"),
        ("XDG_DATA_HOME", home / "data"),
        ("XDG_CONFIG_HOME", home / "config"),
    ):
        monkeypatch.setenv(var, str(path))
    for var in ("NANOGPT_DATA_DIR", "NANOGPT_CACHE_DIR", "NANOGPT_CONFIG_DIR"):
        monkeypatch.delenv(var, raising=False)
    return home


def test_train_right_after_install_prepares_the_data(
    fresh_install: Path,
    corpus: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    from conftest import TINY, as_flags

    from nanogpt_cli.paths import data_root

    monkeypatch.setenv("NANOGPT_SHAKESPEARE_URL", corpus.as_uri())
    out = tmp_path / "run"
    short = {"max_iters": 2, "lr_decay_iters": 2, "warmup_iters": 1, "eval_interval": 2}
    options = {**TINY, **short, "eval_iters": 1, "out_dir": str(out)}
    code, _, err = run_cli(
        ["train", "--preset", "shakespeare-char-cpu", *as_flags(options)], capsys
    )
    assert code == 0, err
    assert err.count("preparing it first") == 1 and "iteration 2, " in err
    assert data_root().is_relative_to(fresh_install)
    assert (data_root() / "shakespeare-char" / "meta.json").is_file()
    code, text, err = run_cli(["sample", "--out-dir", str(out), "--max-new-tokens", "20"], capsys)
    assert code == 0 and len(text) >= 20, err


def test_train_offline_is_one_line_naming_source_and_url_variable(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("NANOGPT_SHAKESPEARE_URL", (tmp_path / "missing.txt").as_uri())
    data = tmp_path / "data"
    args = ["train", "--data-dir", str(data), "--out-dir", str(tmp_path / "o"), "--device", "cpu"]
    code, _, err = run_cli(args, capsys)
    error = err.splitlines()[-1]
    assert code == 1 and error.startswith("error: ") and "Traceback" not in err
    assert f"`nanogpt prepare shakespeare-char --source PATH --data-dir {data}`" in error
    assert "NANOGPT_SHAKESPEARE_URL" in error


def test_prepare_next_step_names_the_data_dir(
    tmp_path: Path,
    corpus: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    data = tmp_path / "my data"
    args = ["prepare", "shakespeare-char", "--source", str(corpus), "--data-dir", str(data)]
    code, _, err = run_cli(args, capsys)
    assert code == 0, err
    flag = f"--data-dir '{data}'"
    assert f"next: nanogpt train {flag} (on a CPU: nanogpt train --preset " in err
    assert f"shakespeare-char-cpu {flag})" in err
    monkeypatch.setenv("NANOGPT_DATA_DIR", str(tmp_path / "env"))  # no --data-dir given
    code, _, err = run_cli(["prepare", "shakespeare-char", "--source", str(corpus)], capsys)
    assert "--data-dir" not in err.split("next: ")[1]
