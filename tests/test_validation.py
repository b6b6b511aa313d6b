"""Every value validated once, with its range (issue 23): training options from flags, TOML,
nanoGPT config files and saved runs; the sampling, plotting and prepare options; datasets
whose tokens do not fit their vocabulary; dataset names that would leave the data directory.
Each mistake is one `error:` line naming the option or file, a non-zero exit, no traceback."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from conftest import TINY, as_flags
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from nanogpt_cli.cli.app import main
from nanogpt_cli.config import SPECS, build_config
from nanogpt_cli.config.validate import FLOAT_RANGES, INT_RANGES
from nanogpt_cli.errors import ConfigError, DatasetError


def run_cli(args: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    """Exit code and the one `error:` line of a command that must fail cleanly."""
    capsys.readouterr()
    with pytest.raises(SystemExit) as exit_info:
        main(args)
    out, err = capsys.readouterr()
    assert "Traceback" not in err and "Traceback" not in out, err
    lines = [line for line in err.splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith("error:")]
    assert len(errors) == 1 and lines[-1] == errors[0], err
    return int(exit_info.value.code or 0), errors[0]


# -- training options: flags, files, saved runs -----------------------------------------------

# flag arguments -> what the error line names
BAD_FLAGS: dict[str, tuple[list[str], str]] = {
    "learning rate NaN": (["--learning-rate", "nan"], "--learning-rate must be a finite number"),
    "learning rate infinite": (["--learning-rate", "inf"], "--learning-rate"),
    "learning rate zero": (["--learning-rate", "0"], "--learning-rate"),
    "weight decay NaN": (["--weight-decay", "nan"], "--weight-decay"),
    "weight decay infinite": (["--weight-decay", "inf"], "--weight-decay"),
    "min lr NaN": (["--min-lr", "nan"], "--min-lr"),
    "grad clip NaN": (["--grad-clip", "nan"], "--grad-clip"),
    "grad clip infinite": (["--grad-clip", "inf"], "--grad-clip"),
    "beta1 NaN": (["--beta1", "nan"], "--beta1 must be a finite number in [0, 1)"),
    "beta2 one": (["--beta2", "1"], "--beta2"),
    "dropout NaN": (["--dropout", "nan"], "--dropout"),
    "batch size 10^30": (["--batch-size", str(10**30)], "--batch-size must be at most"),
    "layers 10^30": (["--n-layer", str(10**30)], "--n-layer must be at most"),
    "block size 10^9": (["--block-size", str(10**9)], "--block-size must be at most"),
    "vocab size 10^12": (["--vocab-size", str(10**12)], "--vocab-size"),
    "max iters 10^30": (["--max-iters", str(10**30)], "--max-iters"),
    "dist timeout 10^30": (["--dist-timeout", str(10**30)], "--dist-timeout"),
    "processes 10^6": (["--nproc-per-node", str(10**6)], "--nproc-per-node"),
    "negative seed": (["--seed", "-1"], "--seed must not be negative"),
    "seed past 2^63": (["--seed", str(2**63)], "--seed must be at most 9223372036854775807"),
    "evaluation windows beyond memory": (
        ["--eval-iters", str(2**30), "--batch-size", "64"],
        "an evaluation holds in memory",
    ),
}


@pytest.mark.parametrize("case", list(BAD_FLAGS))
def test_an_option_out_of_range_is_one_line(case: str, capsys: pytest.CaptureFixture[str]) -> None:
    args, expected = BAD_FLAGS[case]
    code, line = run_cli(["train", "--print-config", *args], capsys)
    assert code == 2 and expected in line, line


# TOML (or nanoGPT .py) file text -> what the error line names
BAD_FILES: dict[str, tuple[str, str, str]] = {
    "TOML learning rate NaN": ("lr.toml", "[optim]\nlearning_rate = nan\n", "learning_rate"),
    "TOML grad clip infinite": ("clip.toml", "grad_clip = inf\n", "grad_clip in"),
    "TOML batch size 1e20": ("bs.toml", "[data]\nbatch_size = 1e20\n", "batch_size"),
    "TOML batch size 2^62": ("bs2.toml", f"batch_size = {2**62}\n", "batch_size"),
    "TOML negative seed": ("seed.toml", "[system]\nseed = -5\n", "seed in"),
    "TOML dropout 2": ("drop.toml", "dropout = 2.0\n", "dropout in"),
    "nanoGPT config learning rate 1e999": ("lr.py", "learning_rate = 1e999\n", "learning_rate"),
    "nanoGPT config weight decay negative": ("wd.py", "weight_decay = -0.1\n", "weight_decay"),
}


@pytest.mark.parametrize("case", list(BAD_FILES))
def test_a_config_file_value_out_of_range_is_one_line_naming_it(
    case: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    name, text, expected = BAD_FILES[case]
    path = tmp_path / name
    path.write_text(text)
    code, line = run_cli(["train", "--print-config", "--config", str(path)], capsys)
    assert code == 2 and expected in line and name in line, line


def test_a_saved_run_with_a_bad_value_is_refused_naming_the_option() -> None:
    saved = {"optim": {"learning_rate": math.nan}, "model": {"n_layer": "six"}}
    with pytest.raises(ConfigError) as info:
        build_config(None, base=saved)
    message = str(info.value)
    assert "learning_rate in the run's saved options" in message
    assert "n_layer in the run's saved options" in message
    # An option given again replaces the saved one, and the run's config is valid.
    cfg = build_config(None, base=saved, overrides={"learning_rate": 1e-3, "n_layer": 2})
    assert cfg.optim.learning_rate == 1e-3 and cfg.model.n_layer == 2


def test_the_ends_of_each_range_are_accepted() -> None:
    ends = {
        "dropout": 0.0,
        "min_lr": 0.0,
        "grad_clip": 0.0,
        "weight_decay": 0.0,
        "beta1": 0.0,
        "seed": 2**63 - 1,
        "max_iters": 0,
        "learning_rate": 1e6,  # a diverging run is the user's choice, not a mistake
    }
    cfg = build_config("shakespeare-char", overrides=ends)
    assert cfg.system.seed == 2**63 - 1 and cfg.optim.learning_rate == 1e6
    assert build_config("shakespeare-char", overrides={"seed": 0}).system.seed == 0


NUMERIC = sorted(INT_RANGES | FLOAT_RANGES)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    name=st.sampled_from(NUMERIC),
    value=st.one_of(
        st.floats(allow_nan=True, allow_infinity=True),
        st.integers(min_value=-(2**70), max_value=2**70),
        st.sampled_from([0, 1, -1, 2**63 - 1, 2**63, 10**30, 1e20, math.nan, math.inf]),
    ),
)
def test_any_number_is_in_range_or_a_config_error(name: str, value: float) -> None:
    """Whatever number an option is given, from Python as from a file: a config whose values
    are finite and in range, or a ConfigError naming the option. Never another exception."""
    try:
        cfg = build_config("shakespeare-char", overrides={name: value})
    except ConfigError as e:
        assert SPECS[name].flag in str(e) or name in str(e)
        return
    got = cfg.flat()[name]
    if name in INT_RANGES:
        low, high = INT_RANGES[name]
        assert isinstance(got, int) and low <= got <= high
    else:
        assert math.isfinite(got)


# -- sampling, plotting ------------------------------------------------------------------------


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny trained run (and its prepared dataset beside it)."""
    from conftest import make_text

    from nanogpt_cli.data.prepare import prepare_shakespeare_char
    from nanogpt_cli.train import train

    root = tmp_path_factory.mktemp("validation")
    corpus = root / "corpus.txt"
    corpus.write_text(make_text(), encoding="utf-8")
    prepare_shakespeare_char(source=str(corpus), data_dir=root / "datasets")
    options = {
        **TINY,
        "max_iters": 4,
        "eval_interval": 2,
        "eval_iters": 1,
        "data_dir": str(root / "datasets"),
        "out_dir": str(root / "run"),
    }
    train(build_config("shakespeare-char", overrides=options))
    return root / "run"


BAD_SAMPLING: dict[str, tuple[list[str], str]] = {
    "temperature NaN": (["--temperature", "nan"], "--temperature must be a finite number"),
    "temperature infinite": (["--temperature", "inf"], "--temperature"),
    "temperature negative": (["--temperature", "-1"], "--temperature"),
    "top-k negative": (["--top-k", "-3"], "--top-k must be positive"),
    "a hundred million samples": (["--num-samples", "100000000"], "--num-samples"),
    "a trillion new tokens": (["--max-new-tokens", str(10**12)], "--max-new-tokens"),
    "negative new tokens": (["--max-new-tokens", "-1"], "--max-new-tokens"),
    "window stride 0": (["--window-stride", "0"], "--window-stride must be between 1"),
    "window stride past the block": (["--window-stride", "17"], "--window-stride"),
    "seed past 2^63": (["--seed", str(2**64)], "--seed must be between 0 and"),
    "negative seed": (["--seed", "-1"], "--seed"),
}


@pytest.mark.parametrize("case", list(BAD_SAMPLING))
def test_a_sampling_option_out_of_range_is_one_line(
    case: str, run_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    args, expected = BAD_SAMPLING[case]
    base = ["sample", "--checkpoint", str(run_dir), "--device", "cpu", "--max-new-tokens", "4"]
    code, line = run_cli([*base, *args], capsys)
    assert code == 2 and expected in line, line


def test_many_samples_say_how_many_fit_before_allocating(
    run_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A batch larger than the device's memory is refused with the number that fits,
    before its KV cache is made (here the machine has, say, 1 MiB)."""
    from nanogpt_cli import sample as sampling
    from nanogpt_cli.sample import Sampler

    sampler = Sampler.from_checkpoint(run_dir, device="cpu")
    monkeypatch.setattr(sampling, "device_memory", lambda device: 2**20)
    with pytest.raises(ConfigError, match=r"--num-samples 1000 needs about .* at most \d+"):
        sampler.stream("\n", 4, num_samples=1000)
    assert len(list(sampler.stream("\n", 4, num_samples=2))) == 4  # a small batch still runs


def test_a_window_stride_of_one_is_nanogpts_window(run_dir: Path) -> None:
    from nanogpt_cli.sample import Sampler

    sampler = Sampler.from_checkpoint(run_dir, device="cpu")
    slid = [t.item() for t in sampler.stream("\n", 40, temperature=0, window_stride=1)]
    uncached = sampler.stream("\n", 40, temperature=0, window_stride=1, use_cache=False)
    assert slid == [t.item() for t in uncached]


@pytest.mark.parametrize(
    ("flag", "value"), [("--width", "100000000"), ("--height", "100000000"), ("--width", "10")]
)
def test_a_chart_size_out_of_range_is_one_line(
    flag: str, value: str, run_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, line = run_cli(["plot", str(run_dir), flag, value], capsys)
    assert code == 2 and flag in line and "range" in line, line


def test_render_chart_refuses_a_huge_size(run_dir: Path) -> None:
    from nanogpt_cli.errors import MetricsError
    from nanogpt_cli.plot import load_runs, render_chart

    runs = load_runs([run_dir])
    with pytest.raises(MetricsError, match="--width must be between 40 and 1000"):
        render_chart(runs, width=10**8)
    with pytest.raises(MetricsError, match="--height must be between 5 and 500"):
        render_chart(runs, width=80, height=10**8)
    assert "┤" in render_chart(runs, width=1000, height=500).plain


# -- datasets ----------------------------------------------------------------------------------


def edit_meta(path: Path, **fields: Any) -> None:
    meta = json.loads((path / "meta.json").read_text())
    meta.update(fields)
    (path / "meta.json").write_text(json.dumps(meta))


def test_prepare_records_the_largest_token_and_opening_trusts_it(
    data_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from nanogpt_cli.data import dataset as datasets

    path = data_dir / "shakespeare-char"
    meta = json.loads((path / "meta.json").read_text())
    for split in ("train", "val"):
        record = meta["max_token"][split]
        tokens = np.fromfile(path / f"{split}.bin", dtype=np.uint16)
        assert record["max"] == int(tokens.max()) < meta["vocab_size"]
        assert record["bytes"] == (path / f"{split}.bin").stat().st_size

    def no_scan(path: Path) -> int:
        raise AssertionError(f"{path} read again")

    monkeypatch.setattr(datasets, "scan_max_token", no_scan)
    before = (path / "meta.json").read_bytes()
    datasets.open_dataset("shakespeare-char", data_dir)
    assert (path / "meta.json").read_bytes() == before  # nothing to record


def test_a_changed_bin_is_checked_again(data_dir: Path) -> None:
    from nanogpt_cli.data.dataset import open_dataset

    path = data_dir / "shakespeare-char"
    vocab = json.loads((path / "meta.json").read_text())["vocab_size"]
    with open(path / "val.bin", "ab") as f:
        f.write(np.array([vocab + 7], dtype=np.uint16).tobytes())
    with pytest.raises(DatasetError) as info:
        open_dataset("shakespeare-char", data_dir)
    message = str(info.value)
    assert "val.bin" in message and f"token {vocab + 7}" in message
    assert f"vocabulary of {vocab} tokens" in message


def test_a_dataset_without_the_record_is_scanned_once_and_recorded(data_dir: Path) -> None:
    from nanogpt_cli.data.dataset import open_dataset

    path = data_dir / "shakespeare-char"
    meta = json.loads((path / "meta.json").read_text())
    expected = meta.pop("max_token")
    (path / "meta.json").write_text(json.dumps(meta))  # as an older version wrote it
    open_dataset("shakespeare-char", data_dir)
    assert json.loads((path / "meta.json").read_text())["max_token"] == expected
    assert not [p.name for p in path.iterdir() if p.name.endswith(".tmp")]


def test_a_dataset_in_a_read_only_folder_is_still_checked(
    data_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Where meta.json cannot be written, the record is not kept but the check is made."""
    from nanogpt_cli.data import dataset as datasets

    def read_only(*args: Any, **kwargs: Any) -> None:
        raise PermissionError(13, "Permission denied")

    path = data_dir / "shakespeare-char"
    edit_meta(path, max_token={}, vocab_size=3)
    monkeypatch.setattr(datasets, "write_meta", read_only)
    with pytest.raises(DatasetError, match=r"train\.bin holds token"):
        datasets.open_dataset("shakespeare-char", data_dir)
    assert json.loads((path / "meta.json").read_text())["max_token"] == {}


@pytest.mark.parametrize("command", ["train", "eval"])
def test_tokens_beyond_the_vocabulary_are_one_line(
    command: str,
    tiny_options: dict[str, Any],
    data_dir: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Today's IndexError in the embedding, found when the dataset is opened instead."""
    if command == "eval":  # a model trained on the dataset before its meta.json was damaged
        from nanogpt_cli.train import train

        train(build_config(overrides={**tiny_options, "max_iters": 2, "eval_interval": 2}))
    edit_meta(data_dir / "shakespeare-char", vocab_size=5)
    if command == "train":
        args = ["train", *as_flags(tiny_options)]
    else:
        args = ["eval", "--checkpoint", tiny_options["out_dir"], "--data-dir", str(data_dir)]
        args += ["--dataset", "shakespeare-char", "--eval-iters", "1"]
    code, line = run_cli(args, capsys)
    assert code == 1 and "train.bin holds token" in line and "vocabulary of 5 tokens" in line


@pytest.mark.parametrize(
    ("fields", "expected"),
    [
        ({"vocab_size": "many"}, "'vocab_size' should be int"),
        ({"vocab_size": True}, "'vocab_size' should be int"),
        ({"vocab_size": 10**9}, "vocab_size 1000000000 is not between 1 and 65536"),
        ({"vocab_size": 0}, "vocab_size 0 is not between"),
        ({"tokenizer": ["a", "b"]}, "'tokenizer' should be an object"),
        ({"name": 3}, "'name' should be str"),
        ({"max_token": [1]}, "'max_token' should be an object"),
    ],
)
def test_meta_json_fields_of_the_wrong_type_are_one_line(
    fields: dict[str, Any],
    expected: str,
    tiny_options: dict[str, Any],
    data_dir: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    edit_meta(data_dir / "shakespeare-char", **fields)
    code, line = run_cli(["train", *as_flags(tiny_options)], capsys)
    assert code == 1 and "meta.json" in line and expected in line, line


# -- dataset names -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "name", ["../escaped", "a/b", "a\\b", "..", ".", ".hidden", "", " ", "/abs/escaped", "x" * 300]
)
def test_prepare_name_is_one_folder_of_the_data_directory(
    name: str, tmp_path: Path, corpus: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = tmp_path / "deep" / "datasets"
    args = ["prepare", "text", str(corpus), "--tokenizer", "char", "--data-dir", str(data)]
    before = sorted(p for p in tmp_path.rglob("*"))
    code, line = run_cli([*args, "--name", name], capsys)
    assert code == 2 and line.startswith("error: --name") and "one folder name" in line, line
    assert sorted(p for p in tmp_path.rglob("*")) == before  # nothing written anywhere
    assert not Path("/abs/escaped").exists()


def test_prepare_name_with_dots_and_dashes_works(tmp_path: Path, corpus: Path) -> None:
    from nanogpt_cli.data.dataset import open_dataset
    from nanogpt_cli.data.prepare import prepare_text

    result = prepare_text([corpus], name="my-books_v1.2", tokenizer="char", data_dir=tmp_path)
    assert result.path == tmp_path / "my-books_v1.2"
    assert open_dataset("my-books_v1.2", tmp_path).vocab_size == result.vocab_size


@pytest.mark.parametrize(("flag", "value"), [("--num-proc", "100000000"), ("--seed", "-1")])
def test_prepare_numbers_out_of_range_are_one_line(
    flag: str, value: str, tmp_path: Path, corpus: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    args = ["prepare", "text", str(corpus), "--tokenizer", "char", "--data-dir", str(tmp_path)]
    code, line = run_cli([*args, flag, value], capsys)
    assert code == 2 and flag in line, line


@pytest.mark.parametrize(
    "info",
    [[1, 2], "chars", {"kind": "tiktoken", "name": ["gpt2"]}, {"kind": "char", "chars": 7}],
)
def test_a_tokenizer_record_of_the_wrong_type_is_a_dataset_error(info: Any) -> None:
    from nanogpt_cli.data.tokenizer import tokenizer_from_dict

    with pytest.raises(DatasetError):
        tokenizer_from_dict(info)
