"""nanoGPT's and the fork README's command lines, accepted as typed (issue 22): ``--key=value``
and ``--key value`` for every option, booleans in every spelling, the fork's ``--devices``,
``--precision``, ``--compile_model``, ``--save_*=True``, nanoGPT's ``--init_from=resume``,
``--wandb_log`` and ``--dataset=shakespeare_char``, and the one info line that shows the
command in nanogpt's own spelling."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import pytest

from nanogpt_cli.cli.app import main

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib

ROOT = Path(__file__).resolve().parents[1]
INFO = "in nanogpt's spelling:"


def run(args: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as exit_info:
        main(args)
    out, err = capsys.readouterr()
    return int(exit_info.value.code or 0), out, err


def resolved(args: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[dict[str, Any], str]:
    """The options ``nanogpt train ARGS --print-config`` resolves, flat; its stderr."""
    code, out, err = run(["train", *args, "--print-config"], capsys)
    assert code == 0, err
    groups = tomllib.loads(out)
    return {k: v for group in groups.values() for k, v in group.items()}, err


def info_lines(err: str) -> list[str]:
    return [line for line in err.splitlines() if INFO in line]


def test_nanogpts_readme_cpu_line_resolves_to_its_values(
    capsys: pytest.CaptureFixture[str],
) -> None:
    line = (
        "--device=cpu --compile=False --eval_iters=20 --log_interval=1 --block_size=64 "
        "--batch_size=12 --n_layer=4 --n_head=4 --n_embd=128 --max_iters=2000 "
        "--lr_decay_iters=2000 --dropout=0.0"
    )
    values, err = resolved(line.split(), capsys)
    expected = {
        "device": "cpu",
        "compile": False,
        "eval_iters": 20,
        "log_interval": 1,
        "block_size": 64,
        "batch_size": 12,
        "n_layer": 4,
        "n_head": 4,
        "n_embd": 128,
        "max_iters": 2000,
        "lr_decay_iters": 2000,
        "dropout": 0.0,
    }
    assert {key: values[key] for key in expected} == expected
    # and one line says how nanogpt spells it
    assert len(info_lines(err)) == 1
    assert info_lines(err)[0].endswith(
        "nanogpt train --device cpu --no-compile --eval-iters 20 --log-interval 1 "
        "--block-size 64 --batch-size 12 --n-layer 4 --n-head 4 --n-embd 128 --max-iters 2000 "
        "--lr-decay-iters 2000 --dropout 0.0 --print-config"
    )


def test_the_fork_readmes_cpu_line_resolves_to_its_values(
    capsys: pytest.CaptureFixture[str],
) -> None:
    values, err = resolved(
        ["--devices=1", "--precision=32", "--compile_model=False", "--max_iters=50"], capsys
    )
    assert (values["nproc_per_node"], values["dtype"], values["compile"]) == (1, "float32", False)
    assert values["max_iters"] == 50
    assert info_lines(err)[0].endswith(
        "nanogpt train --nproc-per-node 1 --dtype float32 --no-compile --max-iters 50 "
        "--print-config"
    )


@pytest.mark.parametrize(
    ("precision", "dtype"),
    [
        ("32", "float32"),
        ("32-true", "float32"),
        ("16-mixed", "float16"),
        ("bf16-mixed", "bfloat16"),
    ],
)
def test_precision_is_the_dtype(
    precision: str, dtype: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert resolved(["--precision", precision], capsys)[0]["dtype"] == dtype
    assert resolved([f"--precision={precision}"], capsys)[0]["dtype"] == dtype


@pytest.mark.parametrize(
    ("precision", "instead"),
    [("bf16-true", "bf16-mixed"), ("16-true", "16-mixed"), ("64", "--precision 32"), ("8", "32")],
)
def test_an_unsupported_precision_is_one_line_saying_what_to_use(
    precision: str, instead: str, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, err = run(["train", f"--precision={precision}", "--print-config"], capsys)
    lines = err.strip().splitlines()
    assert code != 0 and not out and len(lines) == 1
    assert lines[0].startswith(f"error: --precision {precision}:") and instead in lines[0]


def test_devices_takes_a_number(capsys: pytest.CaptureFixture[str]) -> None:
    assert resolved(["--devices", "2"], capsys)[0]["nproc_per_node"] == 2
    code, _, err = run(["train", "--devices=auto", "--print-config"], capsys)
    assert code != 0 and "--nproc-per-node" in err and len(err.strip().splitlines()) == 1


@pytest.mark.parametrize(
    ("args", "save_format"),
    [
        (["--save_separate_optimizer=True"], "separated"),
        (["--save_model_only=True"], "model-only"),
        (["--save_model_only", "true"], "model-only"),
        (["--save-model-only"], "model-only"),
        (["--save_model_only=False"], "separated"),  # the preset's
        (["--save-format=unified", "--save_model_only=False"], "unified"),
    ],
)
def test_the_save_shortcuts_take_a_value(
    args: list[str], save_format: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert resolved(args, capsys)[0]["save_format"] == save_format


WORDS = {"True": True, "False": False, "true": True, "false": False, "TRUE": True}
WORDS |= {"1": True, "0": False, "yes": True, "no": False}


@pytest.mark.parametrize("word", list(WORDS))
@pytest.mark.parametrize("name", ["always_save_checkpoint", "always-save-checkpoint"])
def test_booleans_in_every_spelling(
    word: str, name: str, capsys: pytest.CaptureFixture[str]
) -> None:
    for args in ([f"--{name}={word}"], [f"--{name}", word]):
        values, _ = resolved([*args, "--bias=" + word, "--decay_lr", word], capsys)
        expected = WORDS[word]
        assert values["always_save_checkpoint"] is expected, args
        assert values["bias"] is expected and values["decay_lr"] is expected


def test_bare_flags_and_their_no_forms_still_work(capsys: pytest.CaptureFixture[str]) -> None:
    values, err = resolved(["--bias", "--no-decay-lr", "--no-compile"], capsys)
    assert (values["bias"], values["decay_lr"], values["compile"]) == (True, False, False)
    assert not info_lines(err)  # nanogpt's own spelling: nothing to show
    values, _ = resolved(["--no-bias=false", "--no-compile=true"], capsys)
    assert (values["bias"], values["compile"]) == (True, False)


def test_a_flag_followed_by_a_value_that_is_no_boolean_leaves_it(
    capsys: pytest.CaptureFixture[str],
) -> None:
    code, _, err = run(["train", "--bias", "maybe", "--print-config"], capsys)
    assert code == 2 and "maybe" in err
    code, _, err = run(["train", "--bias=maybe", "--print-config"], capsys)
    assert code != 0 and err.startswith("error: --bias takes true or false")


def test_resume_takes_the_booleans(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    out_dir = ["--out-dir", str(tmp_path / "none")]
    assert resolved([*out_dir, "--resume=True"], capsys)[0]["resume"] == "yes"
    assert resolved([*out_dir, "--resume", "false"], capsys)[0]["resume"] == "no"
    assert resolved([*out_dir, "--resume"], capsys)[0]["resume"] == "yes"
    values, err = resolved([*out_dir, "--resume", "yes"], capsys)  # a choice of its own
    assert values["resume"] == "yes" and not info_lines(err)


def test_init_from_resume_means_resume(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    values, err = resolved(["--init_from=resume", "--out-dir", str(tmp_path)], capsys)
    assert (values["resume"], values["init_from"]) == ("yes", "scratch")
    assert f"nanogpt train --resume --out-dir {tmp_path} --print-config" in info_lines(err)[0]
    assert resolved(["--init_from=gpt2-xl"], capsys)[0]["init_from"] == "gpt2-xl"


def test_wandb_log_turns_on_the_wandb_tracker(capsys: pytest.CaptureFixture[str]) -> None:
    args = ["--wandb_log=True", "--wandb_project=p", "--wandb_run_name=r"]
    values, _ = resolved(args, capsys)
    assert (values["tracker"], values["wandb_project"], values["wandb_run_name"]) == (
        "wandb",
        "p",
        "r",
    )
    assert resolved(["--wandb_log"], capsys)[0]["tracker"] == "wandb"
    values, err = resolved(["--wandb_log=False"], capsys)
    assert values["tracker"] == "none" and "--tracker none" in info_lines(err)[0]


def test_nanogpts_dataset_folder_names_are_nanogpts_datasets(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert resolved(["--dataset=shakespeare_char"], capsys)[0]["dataset"] == "shakespeare-char"
    assert resolved(["--dataset", "my_books"], capsys)[0]["dataset"] == "my_books"


def test_a_dataset_spelled_with_underscores_is_hinted(tmp_path: Path) -> None:
    from nanogpt_cli.data.dataset import open_dataset
    from nanogpt_cli.errors import DatasetError

    with pytest.raises(DatasetError, match="'shakespeare-char'"):
        open_dataset("shakespeare_char", tmp_path)


def test_the_info_line_is_shown_once_and_not_with_quiet(
    capsys: pytest.CaptureFixture[str],
) -> None:
    _, err = resolved(["--batch_size=32", "--compile=False"], capsys)
    assert len(info_lines(err)) == 1
    assert info_lines(err)[0].endswith("nanogpt train --batch-size 32 --no-compile --print-config")
    assert not info_lines(resolved(["--batch_size=32", "--quiet"], capsys)[1])
    assert not info_lines(resolved(["--batch-size=32", "--max-iters", "5"], capsys)[1])


def test_other_commands_take_boolean_values_too(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run(["presets", "list", "--quiet=False"], capsys)
    assert code == 0 and "shakespeare-char" in out, err


def test_a_group_rewrites_its_own_options_only() -> None:
    from nanogpt_cli.cli.spellings import rewrite

    class Flag:
        param_type_name, name, is_bool_flag, is_flag = "option", "compile", True, True
        opts, secondary_opts = ["--compile"], ["--no-compile"]

    done = rewrite([Flag()], ["--compile=False", "sample", "--compile=True"], group=True)
    assert done.parsed == ["--no-compile", "sample", "--compile=True"]


def test_a_group_reads_the_spellings_of_its_own_options(
    capsys: pytest.CaptureFixture[str],
) -> None:
    code, out, err = run(["bench", "--compile=False", "--batch_size", "4", "--help"], capsys)
    assert code == 0 and "Usage: nanogpt bench" in out, err


def test_shell_completion_sees_the_arguments_as_typed() -> None:
    from types import SimpleNamespace

    from nanogpt_cli.cli.spellings import parse_args_hook

    args = ["--precision=64", "--compile=maybe"]  # errors in a real parse
    ctx = SimpleNamespace(resilient_parsing=True)
    assert parse_args_hook(None, ctx, list(args)) == args


def test_the_table_reads_config_file_values_too() -> None:
    """The reader of nanoGPT's config files gets Python values, not the command line's
    strings: the same table takes both."""
    from nanogpt_cli.config.nanogpt_keys import nanogpt_values
    from nanogpt_cli.errors import ConfigError

    assert nanogpt_values("init_from", "resume") == {"resume": "yes"}
    assert nanogpt_values("init_from", "gpt2") == {"init_from": "gpt2"}
    assert nanogpt_values("wandb_log", True) == {"tracker": "wandb"}
    assert nanogpt_values("wandb_log", False) == {"tracker": "none"}
    assert nanogpt_values("dataset", "shakespeare_char") == {"dataset": "shakespeare-char"}
    assert nanogpt_values("precision", 32) == {"dtype": "float32"}
    assert nanogpt_values("devices", 2) == {"nproc_per_node": 2}
    assert nanogpt_values("compile_model", False) == {"compile": False}
    assert nanogpt_values("batch_size", 32) == {"batch_size": 32}  # a key of nanogpt's own
    with pytest.raises(ConfigError, match="wandb_log takes true or false"):
        nanogpt_values("wandb_log", "sometimes")


def test_the_docs_show_every_key_of_the_table() -> None:
    from nanogpt_cli.config.nanogpt_keys import NANOGPT_KEYS

    text = (ROOT / "docs" / "migrating-from-nanogpt.md").read_text(encoding="utf-8")
    section = text.split("## Command-line spellings", 1)[1].split("\n## ", 1)[0]
    for key in NANOGPT_KEYS:
        assert f"--{key}" in section, key


@pytest.mark.parametrize(
    ("argument", "preset"),
    [("eval_gpt2", "eval-gpt2"), ("train_shakespeare_char", "shakespeare-char")],
)
def test_a_preset_named_as_nanogpts_early_readme_did(
    argument: str, preset: str, capsys: pytest.CaptureFixture[str]
) -> None:
    # nanoGPT's early README: python train.py eval_gpt2
    values, err = resolved([argument, "--max_iters=7"], capsys)
    assert values == {**resolved(["--preset", preset, "--max-iters", "7"], capsys)[0]}
    shown = f"nanogpt train --preset {preset} --max-iters 7 --print-config"
    assert info_lines(err)[0].endswith(shown)


def test_a_preset_alias_is_shown_by_its_name_here(capsys: pytest.CaptureFixture[str]) -> None:
    _, err = resolved(["--preset", "train_gpt2"], capsys)
    assert info_lines(err)[0].endswith("nanogpt train --preset gpt2-124m --print-config")
    assert not info_lines(resolved(["--preset", "gpt2-124m"], capsys)[1])


def test_a_word_that_is_no_file_and_no_preset_is_a_usage_error(
    capsys: pytest.CaptureFixture[str],
) -> None:
    code, _, err = run(["train", "eval_gpt3", "--print-config"], capsys)
    assert code == 2 and "no config file or preset 'eval_gpt3'" in err
    code, _, err = run(["train", "eval_gpt2", "--preset", "gpt2-124m", "--print-config"], capsys)
    assert code == 2 and "two presets (eval_gpt2 and --preset gpt2-124m)" in err


def test_an_evaluation_only_run_prints_nanogpts_table(
    tiny_options: dict[str, Any], capsys: pytest.CaptureFixture[str]
) -> None:
    import json

    from conftest import as_flags

    code, _, err = run(["train", *as_flags(tiny_options), "--eval_only=True"], capsys)
    assert code == 0, err
    out_dir = Path(tiny_options["out_dir"])
    record = json.loads((out_dir / "metrics.jsonl").read_text().splitlines()[-1])
    row = next(line for line in err.splitlines() if line.startswith("│ out "))
    cells = [cell.strip() for cell in row.strip("│ ").split("│")]
    assert cells[2:] == [f"{record['train_loss']:.4f}", f"{record['val_loss']:.4f}"]
    assert "params" in err and "train loss" in err and "val loss" in err


def test_gpt2_on_openwebtext_is_shown_beside_nanogpts_readme(
    capsys: pytest.CaptureFixture[str],
) -> None:
    from nanogpt_cli.cli.train import _print_losses
    from nanogpt_cli.config import build_config
    from nanogpt_cli.evaluate import nanogpt_baseline
    from nanogpt_cli.state import TrainResult

    cfg = build_config("eval_gpt2_medium")
    result = TrainResult(Path("out"), 0, 2.84, 2.8412, 2.8501, False, 1.0, params=353_772_544)
    _print_losses(cfg, result)
    err = capsys.readouterr().err
    assert "│ gpt2-medium                    │   354M │     2.8501 │   2.8412 │" in err
    assert "│ gpt2-medium (nanoGPT's README) │   350M │       2.85 │     2.84 │" in err
    assert nanogpt_baseline("gpt2-xl", "openwebtext") == ("1558M", 2.56, 2.54)
    assert nanogpt_baseline("gpt2", "shakespeare") is None
