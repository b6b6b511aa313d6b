from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from nanogpt_cli.config import (
    DEFAULT_PRESET,
    PRESETS,
    TrainConfig,
    build_config,
    config_toml,
    option_specs,
    preset_values,
    read_config_file,
    validate,
)
from nanogpt_cli.errors import ConfigError


def test_option_names_are_unique_across_groups() -> None:
    names = [s.name for s in option_specs()]
    assert len(names) == len(set(names))


def test_every_option_has_help_text() -> None:
    for spec in option_specs():
        assert spec.help.strip(), spec.name


def test_defaults_are_nanogpt_train_py_defaults() -> None:
    cfg = TrainConfig()
    assert (cfg.model.n_layer, cfg.model.n_head, cfg.model.n_embd) == (12, 12, 768)
    assert cfg.model.block_size == 1024 and cfg.model.bias is False
    assert cfg.data.batch_size == 12 and cfg.data.gradient_accumulation_steps == 40
    assert cfg.optim.learning_rate == 6e-4 and cfg.optim.max_iters == 600000
    assert cfg.optim.weight_decay == 0.1 and cfg.optim.beta2 == 0.95
    assert cfg.optim.warmup_iters == 2000 and cfg.optim.grad_clip == 1.0


def test_shakespeare_char_preset_matches_nanogpt_config() -> None:
    cfg = build_config("shakespeare-char")
    assert (cfg.data.batch_size, cfg.model.block_size) == (64, 256)
    assert (cfg.model.n_layer, cfg.model.n_head, cfg.model.n_embd) == (6, 6, 384)
    assert cfg.model.dropout == 0.2 and cfg.optim.learning_rate == 1e-3
    assert cfg.optim.max_iters == 5000 and cfg.optim.min_lr == 1e-4
    assert cfg.optim.beta2 == 0.99 and cfg.optim.warmup_iters == 100
    assert cfg.eval.eval_interval == 250 and cfg.eval.eval_iters == 200
    assert cfg.data.dataset == "shakespeare-char"


def test_cpu_preset_extends_shakespeare_char() -> None:
    cfg = build_config("shakespeare-char-cpu")
    assert (cfg.model.block_size, cfg.data.batch_size) == (64, 12)
    assert (cfg.model.n_layer, cfg.model.n_head, cfg.model.n_embd) == (4, 4, 128)
    assert (cfg.optim.max_iters, cfg.optim.lr_decay_iters) == (2000, 2000)
    assert cfg.model.dropout == 0.0 and cfg.eval.eval_iters == 20
    assert cfg.system.compile is False and cfg.system.device == "cpu"
    # inherited from shakespeare-char
    assert cfg.optim.learning_rate == 1e-3 and cfg.eval.eval_interval == 250


def test_gpt2_preset_is_train_py_defaults_on_openwebtext() -> None:
    cfg = build_config("gpt2-124m")
    assert (cfg.model.n_layer, cfg.model.n_embd, cfg.model.block_size) == (12, 768, 1024)
    assert cfg.data.batch_size * cfg.data.gradient_accumulation_steps == 12 * 40
    assert cfg.data.dataset == "openwebtext"


def test_default_preset_is_shakespeare_char() -> None:
    assert DEFAULT_PRESET == "shakespeare-char"
    assert build_config() == build_config("shakespeare-char")


def test_precedence_defaults_preset_file_flags(tmp_path: Path) -> None:
    config = tmp_path / "run.toml"
    config.write_text("batch_size = 32\nlearning_rate = 5e-4\n[model]\nn_layer = 3\n")
    cfg = build_config("shakespeare-char", config, {"learning_rate": 2e-4, "n_embd": None})
    assert cfg.data.batch_size == 32  # file over preset (64)
    assert cfg.model.n_layer == 3  # grouped table in the file
    assert cfg.optim.learning_rate == 2e-4  # flag over file
    assert cfg.model.n_embd == 384  # None flag = not given: preset value stays
    assert cfg.optim.weight_decay == 0.1  # untouched default


def test_no_preset_means_plain_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("NANOGPT_CPU_KERNELS", raising=False)
    assert build_config(None) == TrainConfig()


def test_validation_collects_every_problem_naming_the_flags() -> None:
    with pytest.raises(ConfigError) as err:
        build_config(
            overrides={"n_embd": 100, "n_head": 6, "batch_size": 0, "device": "tpu", "dropout": 1.5}
        )
    message = str(err.value)
    assert "--n-embd (100) must be divisible by --n-head (6)" in message
    assert "--batch-size must be positive (got 0)" in message
    assert "--device: unknown device 'tpu'" in message
    assert "--dropout" in message
    assert "\n" not in message


def test_unknown_preset_suggests_a_close_name() -> None:
    with pytest.raises(ConfigError, match="did you mean 'shakespeare-char'"):
        build_config("shakespeare-chr")


def test_unknown_option_in_overrides_and_file_suggests(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="unknown option 'batch_sz'; did you mean 'batch_size'"):
        build_config(overrides={"batch_sz": 3})
    config = tmp_path / "c.toml"
    config.write_text("lerning_rate = 1e-3\n[data]\nn_layer = 2\n")
    with pytest.raises(ConfigError) as err:
        build_config(config_file=config)
    assert "did you mean 'learning_rate'" in str(err.value)
    assert "unknown option 'n_layer' in [data]" in str(err.value)


def test_config_file_type_errors(tmp_path: Path) -> None:
    config = tmp_path / "c.toml"
    config.write_text('batch_size = "big"\ncompile = 1\ndtype = "fp64"\ndropout = 0\n')
    values, problems = read_config_file(config)
    assert values == {"dropout": 0.0}  # int widens to float
    assert any("batch_size" in p and "expected int" in p for p in problems)
    assert any("compile" in p and "expected bool" in p for p in problems)
    assert any("dtype" in p and "expected one of" in p for p in problems)


def test_config_file_missing_or_invalid(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        build_config(config_file=tmp_path / "nope.toml")
    bad = tmp_path / "bad.toml"
    bad.write_text("batch_size = = 3")
    with pytest.raises(ConfigError, match="not valid TOML"):
        build_config(config_file=bad)


def test_lr_decay_before_warmup_is_accepted_with_a_warning(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from nanogpt_cli.config.validate import config_warnings
    from nanogpt_cli.log import configure_logging

    monkeypatch.setattr("nanogpt_cli.config.resolve._warned", set())  # none given yet
    configure_logging()
    capsys.readouterr()
    cfg = build_config(overrides={"warmup_iters": 97, "lr_decay_iters": 43})
    assert (cfg.optim.warmup_iters, cfg.optim.lr_decay_iters) == (97, 43)
    (warning,) = config_warnings(cfg)
    assert "--lr-decay-iters (43) is below --warmup-iters (97)" in warning
    assert "stays at --min-lr" in warning
    err = capsys.readouterr().err
    assert err.count("is below --warmup-iters") == 1 and "warning:" in err
    build_config(overrides={"warmup_iters": 97, "lr_decay_iters": 43})  # built again
    assert "is below" not in capsys.readouterr().err  # one warning per process
    # no warning where the schedule decays as asked, or does not decay at all
    assert config_warnings(build_config(overrides={"warmup_iters": 50})) == []
    off = {"warmup_iters": 100, "lr_decay_iters": 50, "decay_lr": False}
    assert config_warnings(build_config(overrides=off)) == []


def test_dtype_takes_every_spelling(tmp_path: Path) -> None:
    for spelling, name in [
        ("fp32", "float32"),
        ("float32", "float32"),
        ("BF16", "bfloat16"),
        ("bfloat16", "bfloat16"),
        ("fp16", "float16"),
        ("Float16", "float16"),
        ("auto", "auto"),
    ]:
        assert build_config(overrides={"dtype": spelling}).system.dtype == name
        config = tmp_path / "c.toml"
        config.write_text(f'[system]\ndtype = "{spelling}"\n')
        assert build_config(config_file=config).system.dtype == name
        # a saved run's options (resume) are read the same way
        assert build_config(None, base={"system": {"dtype": spelling}}).system.dtype == name
    with pytest.raises(ConfigError, match=r"expected one of auto, float32.*\(or fp32, bf16"):
        build_config(overrides={"dtype": "fp64"})


def test_validate_catches_wrong_types_set_from_python() -> None:
    cfg = TrainConfig()
    cfg.data.batch_size = "12"  # type: ignore[assignment]
    assert any("--batch-size" in p for p in validate(cfg))


def test_presets_are_valid_and_toml_round_trips(tmp_path: Path) -> None:
    for name in PRESETS:
        cfg = build_config(name)
        path = tmp_path / f"{name}.toml"
        path.write_text(config_toml(cfg))
        assert build_config(None, path) == cfg, name


def test_preset_values_are_known_options() -> None:
    names = {s.name for s in option_specs()}
    for preset in PRESETS:
        assert set(preset_values(preset)) <= names


def test_config_is_plain_dataclasses() -> None:
    cfg = build_config()
    assert dataclasses.is_dataclass(cfg)
    assert cfg.to_dict()["model"]["n_layer"] == cfg.model.n_layer
    assert cfg.flat()["batch_size"] == cfg.data.batch_size


def test_config_files_of_older_versions_still_read(tmp_path: Path) -> None:
    """Before the [run] section the run's options (out_dir, resume, ...) were in [eval]: such
    a file (a run's config.toml) reads as before; elsewhere an option in the wrong section is
    an error."""
    old = tmp_path / "config.toml"
    old.write_text(
        '[eval]\neval_interval = 7\nout_dir = "out-old"\nresume = "no"\nlog_interval = 3\n'
        "[system]\nseed = 5\n"
    )
    cfg = build_config(None, old)
    assert (cfg.eval.eval_interval, cfg.run.out_dir, cfg.run.log_interval) == (7, "out-old", 3)
    assert cfg.system.seed == 5
    wrong = tmp_path / "wrong.toml"
    wrong.write_text('[model]\nout_dir = "x"\n')
    with pytest.raises(ConfigError, match=r"unknown option 'out_dir' in \[model\]"):
        build_config(None, wrong)
    # and the file a run writes now reads back to the same config
    written = tmp_path / "new.toml"
    written.write_text(config_toml(cfg))
    assert build_config(None, written) == cfg
