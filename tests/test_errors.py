"""Bad input gets a clear answer: one line saying what is wrong and what to do, a non-zero
exit code, no traceback. One case per mistake a user makes."""

from __future__ import annotations

import errno
import json
import shutil
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from conftest import TINY, as_flags, make_text

from nanogpt_cli.cli.app import main

TRAIN = {**TINY, "max_iters": 4, "eval_interval": 2, "eval_iters": 1}


@pytest.fixture(scope="module")
def ws(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Datasets (one more with another vocabulary, broken .bin files) and a checkpoint."""
    from nanogpt_cli.config import build_config
    from nanogpt_cli.data.prepare import prepare_shakespeare_char
    from nanogpt_cli.train import train

    root = tmp_path_factory.mktemp("errors")
    data = root / "datasets"
    corpus = root / "corpus.txt"
    corpus.write_text(make_text(), encoding="utf-8")
    prepare_shakespeare_char(source=str(corpus), data_dir=data)
    other = root / "other.txt"
    other.write_text("xyz 123 " * 400, encoding="utf-8")
    prepare_shakespeare_char(source=str(other), data_dir=data / "_other")
    shutil.move(str(data / "_other" / "shakespeare-char"), str(data / "other"))
    for name, size in (("odd", 1001), ("empty", 0)):
        shutil.copytree(data / "shakespeare-char", data / name)
        with open(data / name / "train.bin", "r+b") as f:
            f.truncate(size)
    run = root / "run"
    train(
        build_config(
            "shakespeare-char", overrides={**TRAIN, "data_dir": str(data), "out_dir": str(run)}
        )
    )
    bad_text = root / "bad.txt"
    bad_text.write_bytes(b"fine text\nthen \xff\xfe bytes")
    (root / "empty.txt").write_text("")
    (root / "a-file").write_text("not a directory")
    return {"root": root, "data": data, "run": run, "bad_text": bad_text}


def train_args(ws: dict[str, Path], **options: Any) -> list[str]:
    return ["train", *as_flags({**TRAIN, "data_dir": str(ws["data"]), **options})]


def copy_run(ws: dict[str, Path], name: str, change: Callable[[Path], None]) -> Path:
    target = ws["root"] / name
    if not target.exists():
        shutil.copytree(ws["run"], target)
        change(target)
    return target


def edit_json(path: Path, edit: Callable[[dict[str, Any]], None]) -> None:
    data = json.loads(path.read_text())
    edit(data)
    path.write_text(json.dumps(data))


# case -> (arguments, exit code, what the line says)
CASES: dict[str, Callable[[dict[str, Path]], tuple[list[str], int, str]]] = {
    "dataset not prepared": lambda ws: (
        train_args(ws, dataset="nothing-here", out_dir=str(ws["root"] / "o1")),
        1,
        "is not prepared",
    ),
    "dataset of another tokenizer than the checkpoint": lambda ws: (
        [
            "eval",
            "--checkpoint",
            str(ws["run"]),
            "--dataset",
            "other",
            "--data-dir",
            str(ws["data"]),
        ],
        1,
        "tokeniz",
    ),
    "block size larger than the data": lambda ws: (
        train_args(ws, block_size=100_000, out_dir=str(ws["root"] / "o2")),
        1,
        "use a smaller --block-size",
    ),
    "block size larger than the model": lambda ws: (
        train_args(ws, init_from=str(ws["run"]), block_size=64, out_dir=str(ws["root"] / "o3")),
        2,
        "is larger than the context of the weights",
    ),
    ".bin of an odd size": lambda ws: (
        train_args(ws, dataset="odd", out_dir=str(ws["root"] / "o4")),
        1,
        "not a whole number of uint16 tokens",
    ),
    "empty .bin": lambda ws: (
        train_args(ws, dataset="empty", out_dir=str(ws["root"] / "o5")),
        1,
        "is empty; prepare the dataset again",
    ),
    "empty text": lambda ws: (
        ["prepare", "text", str(ws["root"] / "empty.txt"), "--tokenizer", "char"],
        1,
        "empty",
    ),
    "text that is not UTF-8": lambda ws: (
        [
            "prepare",
            "text",
            str(ws["bad_text"]),
            "--tokenizer",
            "char",
            "--data-dir",
            str(ws["root"] / "d"),
        ],
        1,
        "bad.txt",
    ),
    "unknown preset": lambda ws: (["train", "--preset", "shakespear"], 2, "did you mean"),
    "unknown option": lambda ws: (["train", "--batch-sz", "3"], 2, "No such option: --batch-sz"),
    "wrong type": lambda ws: (["train", "--batch-size", "abc"], 2, "'abc' is not a valid int"),
    "zero size": lambda ws: (["train", "--batch-size", "0"], 2, "--batch-size must be positive"),
    "negative size": lambda ws: (["train", "--n-layer", "-2"], 2, "--n-layer must be positive"),
    "n_embd not divisible by n_head": lambda ws: (
        ["train", "--n-embd", "100", "--n-head", "3"],
        2,
        "must be divisible by --n-head",
    ),
    "out_dir is a file": lambda ws: (
        train_args(ws, out_dir=str(ws["root"] / "a-file")),
        2,
        "is a file; choose a directory",
    ),
    "out_dir not writable": lambda ws: (
        train_args(ws, out_dir="/proc/self"),
        2,
        "is not writable; choose another --out-dir",
    ),
    "checkpoint missing": lambda ws: (
        ["sample", "--checkpoint", str(ws["root"] / "no-run")],
        1,
        "no-run",
    ),
    "checkpoint truncated": lambda ws: (
        [
            "sample",
            "--checkpoint",
            str(copy_run(ws, "cut", lambda p: (p / "model.safetensors").write_bytes(b"\0" * 99))),
        ],
        1,
        "is not a readable safetensors file",
    ),
    "checkpoint of an incompatible model": lambda ws: (
        [
            "sample",
            "--checkpoint",
            str(
                copy_run(
                    ws,
                    "wide",
                    lambda p: edit_json(
                        p / "checkpoint.json", lambda d: d["model"].update(n_embd=64)
                    ),
                )
            ),
        ],
        1,
        "do not fit this model",
    ),
    "--start FILE: pointing nowhere": lambda ws: (
        ["sample", "--checkpoint", str(ws["run"]), "--start", "FILE:/no/such/prompt.txt"],
        2,
        "does not exist",
    ),
    "top_k larger than the vocabulary": lambda ws: (
        ["sample", "--checkpoint", str(ws["run"]), "--top-k", "100000"],
        2,
        "larger than the vocabulary",
    ),
    "negative temperature": lambda ws: (
        ["sample", "--checkpoint", str(ws["run"]), "--temperature", "-1"],
        2,
        "--temperature must not be negative",
    ),
    "unknown device": lambda ws: (["train", "--device", "tpu"], 2, "unknown device 'tpu'"),
    "CUDA on a machine without it": lambda ws: (
        train_args(ws, device="cuda", out_dir=str(ws["root"] / "o6")),
        1,
        "sees no CUDA GPU",
    ),
}


@pytest.mark.parametrize("case", list(CASES))
def test_a_mistake_is_one_clear_line(
    case: str, ws: dict[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    import torch

    if case == "CUDA on a machine without it" and torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    if case == "out_dir not writable" and not sys.platform.startswith("linux"):
        pytest.skip("uses /proc")
    args, code, expected = CASES[case](ws)
    capsys.readouterr()
    with pytest.raises(SystemExit) as exit_info:
        main(args)
    out, err = capsys.readouterr()
    lines = [line for line in err.splitlines() if line.strip()]
    assert exit_info.value.code == code, err
    assert lines and lines[-1].startswith("error: ") and expected in lines[-1], err
    assert "Traceback" not in err and "Traceback" not in out
    errors = [line for line in lines if line.startswith("error:")]
    assert len(errors) == 1


def test_a_full_disk_while_saving_keeps_the_previous_checkpoint(
    ws: dict[str, Path], capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from safetensors import torch as safetensors_torch

    run = copy_run(ws, "full-disk", lambda p: None)
    before = {p.name: p.read_bytes() for p in run.iterdir() if p.is_file()}

    def no_space(*args: Any, **kwargs: Any) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(safetensors_torch, "save_file", no_space)
    with pytest.raises(SystemExit) as exit_info:
        main(train_args(ws, out_dir=str(run), resume="yes", max_iters=8))
    err = capsys.readouterr().err
    assert exit_info.value.code == 1 and "Traceback" not in err
    last = [line for line in err.splitlines() if line.strip()][-1]
    assert last.startswith("error: ") and "No space left on device" in last and "intact" in last
    for name in ("model.safetensors", "optimizer.pt", "checkpoint.json"):
        assert (run / name).read_bytes() == before[name]
