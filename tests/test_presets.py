"""Presets as data: built-in and user preset files, inheritance, --print-config round trips."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from nanogpt_cli.cli.app import app, main
from nanogpt_cli.config import build_config, preset_names, preset_values, read_config_file
from nanogpt_cli.errors import ConfigError

runner = CliRunner()
WIDE = {"COLUMNS": "200", "TERMINAL_WIDTH": "200"}


@pytest.fixture
def user_presets(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("NANOGPT_CONFIG_DIR", str(tmp_path / "config"))
    folder = tmp_path / "config" / "presets"
    folder.mkdir(parents=True)
    return folder


def test_a_user_preset_extends_another_and_lists_only_the_difference(user_presets: Path) -> None:
    (user_presets / "wide.toml").write_text(
        'description = "Wider baby GPT"\nextends = "shakespeare-char-cpu"\n'
        "n_embd = 256\n[optim]\nlearning_rate = 5e-4\n"
    )
    (user_presets / "wider.toml").write_text('extends = "wide"\nn_layer = 8\n')
    assert "wide" in preset_names() and "wider" in preset_names()
    cfg = build_config("wider")
    base = build_config("shakespeare-char-cpu")
    assert (cfg.model.n_layer, cfg.model.n_embd, cfg.optim.learning_rate) == (8, 256, 5e-4)
    assert cfg.data.batch_size == base.data.batch_size == 12  # inherited through two levels
    assert cfg.system.device == "cpu"  # from shakespeare-char-cpu
    assert cfg.data.dataset == "shakespeare-char"  # from shakespeare-char, its own base
    result = runner.invoke(app, ["presets", "list"], env=WIDE)
    assert result.exit_code == 0 and "Wider baby GPT" in result.stdout
    assert "4 x 128" in result.stdout  # shakespeare-char-cpu's model


def test_bad_user_presets_are_clear_errors(user_presets: Path) -> None:
    (user_presets / "typo.toml").write_text('extends = "shakespeare-char"\nbatch_sise = 3\n')
    with pytest.raises(ConfigError, match=r"unknown option 'batch_sise'.*batch_size"):
        preset_values("typo")
    (user_presets / "loop.toml").write_text('extends = "loop2"\n')
    (user_presets / "loop2.toml").write_text('extends = "loop"\n')
    with pytest.raises(ConfigError, match="extends itself through loop -> loop2 -> loop"):
        preset_values("loop")
    (user_presets / "orphan.toml").write_text('extends = "nope"\n')
    with pytest.raises(ConfigError, match="unknown preset 'nope'"):
        preset_values("orphan")
    result = runner.invoke(app, ["presets", "list"], env=WIDE)
    assert result.exit_code == 0 and "invalid" in result.stdout  # the list still shows


@pytest.mark.parametrize("command", ["train", "finetune"])
def test_print_config_round_trips(
    command: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    args = [command, "--print-config", "--batch-size", "7", "--dropout", "0.15"]
    with pytest.raises(SystemExit) as done:
        main(args)
    assert done.value.code == 0
    printed = capsys.readouterr().out
    (tmp_path / "c.toml").write_text(printed)
    assert read_config_file(tmp_path / "c.toml")[1] == []  # valid TOML, known options
    default = "finetune-gpt2" if command == "finetune" else "shakespeare-char"
    expected = build_config(default, overrides={"batch_size": 7, "dropout": 0.15})
    assert build_config(None, tmp_path / "c.toml") == expected
    assert build_config("gpt2-124m", tmp_path / "c.toml") == expected  # the file sets all


def test_presets_show_is_the_resolved_config(tmp_path: Path) -> None:
    result = runner.invoke(app, ["presets", "show", "finetune-gpt2-xl"], env=WIDE)
    assert result.exit_code == 0
    (tmp_path / "p.toml").write_text(result.stdout)
    assert build_config(None, tmp_path / "p.toml") == build_config("finetune-gpt2-xl")
    assert "extends finetune-gpt2" in result.stdout
    result = runner.invoke(app, ["presets", "show", "shakespeare-chr"], env=WIDE)
    assert result.exit_code != 0


def test_every_run_writes_its_config(tiny_options: dict[str, Any]) -> None:
    from nanogpt_cli.train import train

    cfg = build_config("shakespeare-char", overrides={**tiny_options, "max_iters": 2})
    train(cfg)
    written = Path(tiny_options["out_dir"]) / "config.toml"
    assert build_config(None, written) == cfg


@pytest.mark.parametrize(
    ("alias", "preset"),
    [
        ("train_shakespeare_char", "shakespeare-char"),
        ("train_gpt2", "gpt2-124m"),
        ("finetune.gpt2_small", "finetune-gpt2"),
        ("finetune-gpt2_medium", "finetune-gpt2-medium"),
        ("eval_gpt2", "eval-gpt2"),
        ("EVAL.GPT2_XL", "eval-gpt2-xl"),
        ("Shakespeare_Char", "shakespeare-char"),
    ],
)
def test_nanogpts_and_the_original_readmes_preset_names_are_aliases(
    alias: str, preset: str
) -> None:
    assert build_config(alias).flat() == build_config(preset).flat()


def test_presets_list_shows_the_aliases() -> None:
    result = runner.invoke(app, ["presets", "list"], env=WIDE)
    assert result.exit_code == 0, result.output
    row = next(line for line in result.stdout.splitlines() if " eval-gpt2-xl " in line)
    assert "eval_gpt2_xl" in row
    row = next(line for line in result.stdout.splitlines() if " finetune-gpt2 " in line)
    assert "finetune_shakespeare" in row and "finetune.gpt2_small" in row


def test_an_unknown_preset_is_still_refused() -> None:
    with pytest.raises(ConfigError, match="unknown preset 'train_gpt3'"):
        build_config("train_gpt3")
