"""Bad input of every kind, across every command (issue 23): each case exits non-zero with
one `error:` line and no traceback, leaves no temporary file behind, and changes no byte of
any checkpoint, dataset or file that was there before it ran.

Each case is a function of the workspace that makes what it needs (a damaged copy of the
run, a config file) and returns the command line and a text the error line must contain.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from conftest import TINY, as_flags, make_text

from nanogpt_cli.cli.app import main

TRAIN = {**TINY, "max_iters": 4, "eval_interval": 2, "eval_iters": 1}
Case = Callable[[dict[str, Path]], tuple[list[str], str]]


@pytest.fixture(scope="module")
def ws(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A prepared dataset, a trained run, its unified and Hugging Face copies, metrics."""
    from nanogpt_cli.checkpoint import convert_checkpoint
    from nanogpt_cli.config import build_config
    from nanogpt_cli.data.prepare import prepare_shakespeare_char
    from nanogpt_cli.train import train

    root = tmp_path_factory.mktemp("bad-inputs")
    data = root / "datasets"
    corpus = root / "corpus.txt"
    corpus.write_text(make_text(), encoding="utf-8")
    prepare_shakespeare_char(source=str(corpus), data_dir=data)
    run = root / "run"
    overrides = {**TRAIN, "data_dir": str(data), "out_dir": str(run)}
    train(build_config("shakespeare-char", overrides=overrides))
    convert_checkpoint(run, root / "unified", "unified")
    convert_checkpoint(run, root / "hf", "huggingface")
    (root / "a-file").write_text("not a directory")
    (root / "other.txt").write_text("some text to prepare\n" * 50)
    return {"root": root, "data": data, "run": run}


def copy_of(ws: dict[str, Path], source: str, name: str, change: Callable[[Path], None]) -> Path:
    """A copy of ``ws[source]`` (a run, or the unified or HF folder) named ``name``, changed."""
    target = ws["root"] / "copies" / name
    if not target.exists():
        shutil.copytree(ws[source] if source in ws else ws["root"] / source, target)
        change(target)
    return target


def edit_json(path: Path, edit: Callable[[dict[str, Any]], Any]) -> None:
    data = json.loads(path.read_text())
    edit(data)
    path.write_text(json.dumps(data))


def damaged(ws: dict[str, Path], name: str, change: Callable[[Path], None]) -> str:
    return str(copy_of(ws, "run", name, change))


def set_model(**values: Any) -> Callable[[Path], None]:
    return lambda p: edit_json(p / "checkpoint.json", lambda d: d["model"].update(values))


def set_hf(**values: Any) -> Callable[[Path], None]:
    return lambda p: edit_json(p / "config.json", lambda d: d.update(values))


def dataset(ws: dict[str, Path], name: str, change: Callable[[Path], None]) -> str:
    """A copy of the prepared dataset named ``name``, changed."""
    target = ws["data"] / name
    if not target.exists():
        shutil.copytree(ws["data"] / "shakespeare-char", target)
        change(target)
    return name


def nan_weights(p: Path) -> None:
    from safetensors.torch import load_file, save_file

    tensors = load_file(str(p / "model.safetensors"))
    first = sorted(tensors)[0]
    tensors[first] = tensors[first].clone().fill_(math.nan)
    save_file(tensors, str(p / "model.safetensors"), metadata={"format": "pt", "iter_num": "4"})


def write(ws: dict[str, Path], name: str, text: str) -> str:
    path = ws["root"] / "files" / name
    path.parent.mkdir(exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return str(path)


def train_args(ws: dict[str, Path], out: str, **options: Any) -> list[str]:
    """A fresh tiny run into its own out-dir, with ``options`` (flags as strings allowed)."""
    flags = {**TRAIN, "data_dir": str(ws["data"]), "out_dir": str(ws["root"] / "outs" / out)}
    return ["train", *as_flags({**flags, **options})]


def sample_args(checkpoint: str, *more: str) -> list[str]:
    return ["sample", "--checkpoint", checkpoint, "--max-new-tokens", "4", *more]


def resume_args(ws: dict[str, Path], run: str, mode: str = "auto") -> list[str]:
    return [
        "train",
        *as_flags({**TRAIN, "data_dir": str(ws["data"])}),
        "--out-dir",
        run,
        "--resume",
        mode,
    ]


def symlinked_metrics(ws: dict[str, Path]) -> list[str]:
    out = ws["root"] / "outs" / "symlinked-metrics"
    out.mkdir(parents=True, exist_ok=True)
    target = ws["root"] / "files" / "precious.txt"
    target.parent.mkdir(exist_ok=True)
    target.write_text("keep me\n")
    if not (out / "metrics.jsonl").is_symlink():
        (out / "metrics.jsonl").symlink_to(target)
    return ["train", *as_flags({**TRAIN, "data_dir": str(ws["data"]), "out_dir": str(out)})]


CASES: dict[str, Case] = {
    # Options of a training run, as flags.
    "learning rate NaN": lambda ws: (
        train_args(ws, "lr-nan", learning_rate="nan"),
        "--learning-rate",
    ),
    "learning rate infinite": lambda ws: (
        train_args(ws, "lr-inf", learning_rate="inf"),
        "--learning-rate",
    ),
    "weight decay NaN": lambda ws: (train_args(ws, "wd", weight_decay="nan"), "--weight-decay"),
    "min lr NaN": lambda ws: (train_args(ws, "min-lr", min_lr="nan"), "--min-lr"),
    "grad clip NaN": lambda ws: (train_args(ws, "clip", grad_clip="nan"), "--grad-clip"),
    "beta2 NaN": lambda ws: (train_args(ws, "beta2", beta2="nan"), "--beta2"),
    "dropout above 1": lambda ws: (train_args(ws, "dropout", dropout="1.5"), "--dropout"),
    "batch size 10^30": lambda ws: (train_args(ws, "bs", batch_size=str(10**30)), "--batch-size"),
    "layers 10^30": lambda ws: (train_args(ws, "nl", n_layer=str(10**30)), "--n-layer"),
    "negative seed": lambda ws: (train_args(ws, "seed-neg", seed="-1"), "--seed"),
    "seed past 2^63": lambda ws: (train_args(ws, "seed-big", seed=str(2**64)), "--seed"),
    "negative max iters": lambda ws: (train_args(ws, "mi", max_iters="-1"), "--max-iters"),
    "zero eval interval": lambda ws: (train_args(ws, "ei", eval_interval="0"), "--eval-interval"),
    "zero eval iters": lambda ws: (train_args(ws, "eit", eval_iters="0"), "--eval-iters"),
    "zero block size": lambda ws: (train_args(ws, "blk", block_size="0"), "--block-size"),
    "zero accumulation": lambda ws: (
        train_args(ws, "gas", gradient_accumulation_steps="0"),
        "--gradient-accumulation-steps",
    ),
    "unknown dtype": lambda ws: (train_args(ws, "dt", dtype="fp8"), "fp8"),
    "unknown cpu kernels mode": lambda ws: (train_args(ws, "ck", cpu_kernels="maybe"), "maybe"),
    "out-dir name over 255 characters": lambda ws: (train_args(ws, "x" * 300), "too long"),
    "out-dir under a file": lambda ws: (
        train_args(ws, "unused", out_dir=str(ws["root"] / "a-file" / "run")),
        "a-file",
    ),
    "metrics.jsonl a symlink": lambda ws: (symlinked_metrics(ws), "metrics.jsonl"),
    # Options in a TOML file, and nanoGPT config files with code in them.
    "TOML learning rate NaN": lambda ws: (
        train_args(ws, "t1", config=write(ws, "nan.toml", "[optim]\nlearning_rate = nan\n")),
        "learning_rate",
    ),
    "TOML batch size 1e20": lambda ws: (
        train_args(ws, "t2", config=write(ws, "big.toml", "[data]\nbatch_size = 1e20\n")),
        "batch_size",
    ),
    "TOML batch size a string": lambda ws: (
        train_args(ws, "t3", config=write(ws, "str.toml", '[data]\nbatch_size = "big"\n')),
        "batch_size",
    ),
    "TOML that is not TOML": lambda ws: (
        train_args(ws, "t4", config=write(ws, "broken.toml", "[data\nbatch_size = 3\n")),
        "broken.toml",
    ),
    "TOML unknown key": lambda ws: (
        train_args(ws, "t5", config=write(ws, "typo.toml", "[data]\nbatch_sise = 3\n")),
        "batch_sise",
    ),
    "config file missing": lambda ws: (
        train_args(ws, "t6", config=str(ws["root"] / "files" / "absent.toml")),
        "absent.toml",
    ),
    "nanoGPT config importing os": lambda ws: (
        train_args(ws, "p1", config=write(ws, "imp.py", "import os\nbatch_size = 4\n")),
        "import os",
    ),
    "nanoGPT config calling a function": lambda ws: (
        train_args(ws, "p2", config=write(ws, "call.py", "batch_size = int('4')\n")),
        "line 1",
    ),
    "nanoGPT config reading an attribute": lambda ws: (
        train_args(ws, "p3", config=write(ws, "attr.py", "import time\nx = time.time\n")),
        "line 2",
    ),
    # Damaged or hostile checkpoints, sampled.
    "checkpoint.json not JSON": lambda ws: (
        sample_args(damaged(ws, "json", lambda p: (p / "checkpoint.json").write_text("{oops"))),
        "checkpoint.json",
    ),
    "checkpoint.json n_layer a string": lambda ws: (
        sample_args(damaged(ws, "n-layer-str", set_model(n_layer="six"))),
        "n_layer",
    ),
    "checkpoint.json model a list": lambda ws: (
        sample_args(
            damaged(
                ws,
                "model-list",
                lambda p: edit_json(p / "checkpoint.json", lambda d: d.update(model=[1, 2])),
            )
        ),
        "model",
    ),
    "checkpoint.json iter_num a string": lambda ws: (
        sample_args(
            damaged(
                ws,
                "iter-str",
                lambda p: edit_json(
                    p / "checkpoint.json", lambda d: d["train"].update(iter_num="four")
                ),
            )
        ),
        "iter_num",
    ),
    "checkpoint asking for a million layers": lambda ws: (
        sample_args(damaged(ws, "million", set_model(n_layer=1_000_000))),
        "n_layer",
    ),
    "checkpoint asking for a billion positions": lambda ws: (
        sample_args(damaged(ws, "billion", set_model(block_size=10**9))),
        "block_size",
    ),
    "checkpoint with NaN weights": lambda ws: (
        sample_args(damaged(ws, "nan-weights", nan_weights)),
        "non-finite",
    ),
    "model.safetensors random bytes": lambda ws: (
        sample_args(
            damaged(
                ws,
                "random-model",
                lambda p: (p / "model.safetensors").write_bytes(os.urandom(4096)),
            )
        ),
        "model.safetensors",
    ),
    "model.safetensors missing": lambda ws: (
        sample_args(damaged(ws, "no-model", lambda p: (p / "model.safetensors").unlink())),
        "model.safetensors",
    ),
    "ckpt.pt random bytes": lambda ws: (
        sample_args(
            str(
                copy_of(
                    ws,
                    "unified",
                    "random-ckpt",
                    lambda p: (p / "ckpt.pt").write_bytes(os.urandom(4096)),
                )
                / "ckpt.pt"
            )
        ),
        "ckpt.pt",
    ),
    "ckpt.pt truncated": lambda ws: (
        sample_args(
            str(
                copy_of(
                    ws,
                    "unified",
                    "cut-ckpt",
                    lambda p: (p / "ckpt.pt").write_bytes((p / "ckpt.pt").read_bytes()[:2000]),
                )
                / "ckpt.pt"
            )
        ),
        "ckpt.pt",
    ),
    "HF n_embd not divisible by n_head": lambda ws: (
        sample_args(str(copy_of(ws, "hf", "hf-heads", set_hf(n_head=5)))),
        "n_head",
    ),
    "HF config.json not JSON": lambda ws: (
        sample_args(
            str(copy_of(ws, "hf", "hf-json", lambda p: (p / "config.json").write_text("[1,")))
        ),
        "config.json",
    ),
    "HF config asking for a million layers": lambda ws: (
        sample_args(str(copy_of(ws, "hf", "hf-million", set_hf(n_layer=1_000_000)))),
        "n_layer",
    ),
    "HF config asking for a billion positions": lambda ws: (
        sample_args(str(copy_of(ws, "hf", "hf-billion", set_hf(n_positions=10**9)))),
        "n_positions",
    ),
    # Resuming a damaged run: refused, nothing touched.
    "resume auto, checkpoint.json not JSON": lambda ws: (
        resume_args(ws, damaged(ws, "r-json", lambda p: (p / "checkpoint.json").write_text("{"))),
        "--overwrite",
    ),
    "resume auto, model truncated": lambda ws: (
        resume_args(
            ws,
            damaged(
                ws,
                "r-model",
                lambda p: (p / "model.safetensors").write_bytes(
                    (p / "model.safetensors").read_bytes()[:100]
                ),
            ),
        ),
        "model.safetensors",
    ),
    "resume, optimizer.pt random bytes": lambda ws: (
        resume_args(
            ws,
            damaged(ws, "r-opt", lambda p: (p / "optimizer.pt").write_bytes(os.urandom(999))),
            "yes",
        ),
        "optimizer.pt",
    ),
    "resume auto, a field of the wrong type": lambda ws: (
        resume_args(ws, damaged(ws, "r-type", set_model(n_head="two"))),
        "n_head",
    ),
    # Datasets that do not agree with themselves, and dataset names.
    "tokens beyond the vocabulary (train)": lambda ws: (
        train_args(
            ws,
            "vocab",
            dataset=dataset(
                ws,
                "small-vocab",
                lambda p: edit_json(p / "meta.json", lambda d: d.update(vocab_size=5)),
            ),
        ),
        "vocab",
    ),
    "tokens beyond the vocabulary (eval)": lambda ws: (
        [
            "eval",
            "--checkpoint",
            str(ws["run"]),
            "--data-dir",
            str(ws["data"]),
            "--dataset",
            dataset(
                ws,
                "small-vocab",
                lambda p: edit_json(p / "meta.json", lambda d: d.update(vocab_size=5)),
            ),
            "--eval-iters",
            "1",
        ],
        "vocab",
    ),
    "meta.json not JSON": lambda ws: (
        train_args(
            ws, "meta", dataset=dataset(ws, "bad-meta", lambda p: (p / "meta.json").write_text("{"))
        ),
        "meta.json",
    ),
    "meta.json vocab_size a string": lambda ws: (
        train_args(
            ws,
            "meta2",
            dataset=dataset(
                ws,
                "str-vocab",
                lambda p: edit_json(p / "meta.json", lambda d: d.update(vocab_size="many")),
            ),
        ),
        "vocab_size",
    ),
    "prepare --name escaping the data directory": lambda ws: (
        [
            "prepare",
            "text",
            str(ws["root"] / "other.txt"),
            "--tokenizer",
            "char",
            "--name",
            "../escaped",
            "--data-dir",
            str(ws["data"]),
        ],
        "--name",
    ),
    "prepare --name with a separator": lambda ws: (
        [
            "prepare",
            "text",
            str(ws["root"] / "other.txt"),
            "--tokenizer",
            "char",
            "--name",
            "a/b",
            "--data-dir",
            str(ws["data"]),
        ],
        "--name",
    ),
    "prepare --val-fraction 2": lambda ws: (
        [
            "prepare",
            "text",
            str(ws["root"] / "other.txt"),
            "--tokenizer",
            "char",
            "--val-fraction",
            "2",
            "--data-dir",
            str(ws["data"]),
        ],
        "--val-fraction",
    ),
    "prepare a file that is not there": lambda ws: (
        [
            "prepare",
            "text",
            str(ws["root"] / "absent.txt"),
            "--tokenizer",
            "char",
            "--data-dir",
            str(ws["data"]),
        ],
        "absent.txt",
    ),
    # Sampling options.
    "temperature NaN": lambda ws: (
        sample_args(str(ws["run"]), "--temperature", "nan"),
        "--temperature",
    ),
    "temperature infinite": lambda ws: (
        sample_args(str(ws["run"]), "--temperature", "inf"),
        "--temperature",
    ),
    "a hundred million samples": lambda ws: (
        sample_args(str(ws["run"]), "--num-samples", "100000000"),
        "--num-samples",
    ),
    "a trillion new tokens": lambda ws: (
        sample_args(str(ws["run"]), "--max-new-tokens", str(10**12)),
        "--max-new-tokens",
    ),
    "window stride 0": lambda ws: (
        sample_args(str(ws["run"]), "--window-stride", "0"),
        "--window-stride",
    ),
    "negative top-k": lambda ws: (sample_args(str(ws["run"]), "--top-k", "-3"), "--top-k"),
    "sample seed past 2^63": lambda ws: (
        sample_args(str(ws["run"]), "--seed", str(2**64)),
        "--seed",
    ),
    # Evaluation.
    "eval --output onto a directory": lambda ws: (
        ["eval", "--checkpoint", str(ws["run"]), "--eval-iters", "1", "--output", str(ws["root"])],
        str(ws["root"]),
    ),
    "eval --output under a file": lambda ws: (
        [
            "eval",
            "--checkpoint",
            str(ws["run"]),
            "--eval-iters",
            "1",
            "--output",
            str(ws["root"] / "a-file" / "eval.json"),
        ],
        "a-file",
    ),
    "eval --eval-iters 0": lambda ws: (
        ["eval", "--checkpoint", str(ws["run"]), "--eval-iters", "0"],
        "--eval-iters",
    ),
    "eval of a checkpoint that is not there": lambda ws: (
        ["eval", "--checkpoint", str(ws["root"] / "no-run")],
        "no-run",
    ),
    # Charts.
    "plot --width 10^8": lambda ws: (["plot", str(ws["run"]), "--width", "100000000"], "--width"),
    "plot --height 10^8": lambda ws: (
        ["plot", str(ws["run"]), "--height", "100000000"],
        "--height",
    ),
    "plot of metrics that are not JSON": lambda ws: (
        [
            "plot",
            str(
                copy_of(
                    ws,
                    "run",
                    "bad-metrics",
                    lambda p: (p / "metrics.jsonl").write_text("not json\n{}\n"),
                )
            ),
        ],
        "metrics.jsonl",
    ),
    "plot of a folder without metrics": lambda ws: (["plot", str(ws["data"])], "metrics"),
    # Conversion and the rest.
    "convert info of random bytes": lambda ws: (
        [
            "convert-checkpoint",
            "info",
            str(
                copy_of(
                    ws,
                    "unified",
                    "info-random",
                    lambda p: (p / "ckpt.pt").write_bytes(os.urandom(512)),
                )
                / "ckpt.pt"
            ),
        ],
        "ckpt.pt",
    ),
    "convert from nothing": lambda ws: (
        ["convert-checkpoint", "to-hf", str(ws["root"] / "nothing"), str(ws["root"] / "x-hf")],
        "nothing",
    ),
    "unknown preset": lambda ws: (["presets", "show", "train_gpt3"], "train_gpt3"),
    "bench with zero layers": lambda ws: (["bench", "--n-layer", "0", "--steps", "1"], "--n-layer"),
}


def snapshot(root: Path) -> dict[str, str]:
    """Every file under ``root`` (links as their targets' text), by path: its digest."""
    found = {}
    for path in root.rglob("*"):
        if path.is_file() and not path.is_symlink():
            found[str(path.relative_to(root))] = hashlib.sha256(path.read_bytes()).hexdigest()
    return found


@pytest.mark.parametrize("case", list(CASES))
def test_bad_input_is_one_line_and_changes_nothing(
    case: str,
    ws: dict[str, Path],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.chdir(tmp_path)  # where a command might drop files of its own
    args, expected = CASES[case](ws)
    before = snapshot(ws["root"])
    capsys.readouterr()
    with pytest.raises(SystemExit) as exit_info:
        main(args)
    out, err = capsys.readouterr()
    lines = [line for line in err.splitlines() if line.strip()]
    assert exit_info.value.code not in (0, None), f"{case}: exit 0\n{err}"
    assert "Traceback" not in err and "Traceback" not in out, err
    errors = [line for line in lines if line.startswith("error:")]
    assert len(errors) == 1 and lines[-1] == errors[0], err
    assert expected in errors[0], err
    after = snapshot(ws["root"])
    changed = [name for name, digest in before.items() if after.get(name) != digest]
    assert not changed, f"{case} changed {changed}"
    temporary = [n for n in after if n not in before and (".tmp" in n or "/tmp" in n)]
    temporary += [str(p) for p in tmp_path.rglob("*")]
    assert not temporary, f"{case} left {temporary}"


def test_the_table_has_sixty_cases_or_more() -> None:
    assert len(CASES) >= 60
