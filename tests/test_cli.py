from __future__ import annotations

import io
import itertools
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from conftest import as_flags
from typer.testing import CliRunner

import nanogpt_cli
from nanogpt_cli.cli.app import app, main
from nanogpt_cli.config import GROUP_TITLES, TrainConfig, option_specs

runner = CliRunner()
WIDE = {"COLUMNS": "250", "NO_COLOR": "1"}


def run_main(args: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as exit_info:
        main(args)
    out, err = capsys.readouterr()
    return int(exit_info.value.code or 0), out, err


def test_cli_import_loads_no_heavy_modules() -> None:
    code = (
        "import sys, nanogpt_cli.cli.app\n"
        "heavy = [m for m in ('torch', 'numpy', 'transformers', 'datasets', 'safetensors')"
        " if m in sys.modules]\n"
        "print(','.join(heavy))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""


def test_help_loads_no_heavy_modules() -> None:
    code = (
        "import sys\nfrom nanogpt_cli.cli.app import main\n"
        "try:\n    main(['train', '--help'])\nexcept SystemExit:\n    pass\n"
        "print('TORCH' if 'torch' in sys.modules else 'CLEAN')\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip().endswith("CLEAN")


def test_root_help_and_command_completion_import_no_command() -> None:
    """`nanogpt --help` and completing a command name load none of the command modules."""
    code = (
        "import sys\nfrom nanogpt_cli.cli.app import main\n"
        "try:\n    main(sys.argv[1:])\nexcept SystemExit:\n    pass\n"
        "loaded = sorted(m for m in sys.modules if m.startswith('nanogpt_cli.')"
        " or m in ('typer.rich_utils', 'nanogpt_cli.config'))\n"
        "print('LOADED', ','.join(loaded))\n"
    )
    env = {
        **os.environ,
        "_NANOGPT_COMPLETE": "complete_bash",
        "COMP_WORDS": "nanogpt ",
        "COMP_CWORD": "1",
    }
    for args, extra in (([], {}), (["--help"], {}), ([], env)):
        out = subprocess.run(
            [sys.executable, "-c", code, *args],
            capture_output=True,
            text=True,
            check=True,
            env=extra or None,
        ).stdout
        loaded = out.rsplit("LOADED", 1)[1].split()[0].split(",") if "LOADED " in out else []
        assert set(loaded) <= {
            "nanogpt_cli.cli",
            "nanogpt_cli.cli.app",
            "nanogpt_cli.errors",
            "nanogpt_cli.cli.roothelp",
        }, (args, loaded)
        assert "train" in out


def test_root_help_lines_match_the_commands_own_help() -> None:
    """The root's command table says what each command's own help says, and lists them all."""
    from typer.main import get_command

    from nanogpt_cli.cli.app import COMMANDS

    root = get_command(app)
    for name, entry in COMMANDS.items():
        cmd = root.get_command(None, name)  # type: ignore[attr-defined]
        assert cmd is not None and cmd.name == name and cmd.hidden == entry.hidden
        if not entry.hidden:
            assert (cmd.help or "").split("\n\n")[0].replace("\n", " ") == entry.help, name
    result = runner.invoke(app, ["--help"], env=WIDE)
    assert result.exit_code == 0
    listed = [ln.split()[1] for ln in result.stdout.splitlines() if ln.startswith("│ ")]
    visible = [n for n, e in COMMANDS.items() if not e.hidden]
    assert listed[-len(visible) :] == visible
    assert {"--version", "--help", "--install-completion"} <= set(listed)
    # narrow terminals wrap the help inside the panels, every line the same width
    result = runner.invoke(app, ["--help"], env={"COLUMNS": "60", "NO_COLOR": "1"})
    boxed = [ln for ln in result.stdout.splitlines() if ln and ln[0] in "╭│╰"]
    assert boxed and {len(ln) for ln in boxed} == {60}


def test_version() -> None:
    result = runner.invoke(app, ["--version"])
    assert result.exit_code == 0 and result.stdout.strip() == f"nanogpt {nanogpt_cli.__version__}"


def test_python_dash_m() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "nanogpt_cli", "--version"],
        capture_output=True,
        text=True,
        check=True,
    )
    assert out.stdout.strip() == f"nanogpt {nanogpt_cli.__version__}"


def test_short_help_flag() -> None:
    result = runner.invoke(app, ["-h"], env=WIDE)
    assert result.exit_code == 0
    for command in ("prepare", "train", "sample"):
        assert command in result.stdout


def test_train_help_lists_every_option_with_type_and_default() -> None:
    result = runner.invoke(app, ["train", "--help"], env=WIDE)
    assert result.exit_code == 0
    lines = result.stdout.splitlines()
    for spec in option_specs():
        # option rows of the help panels start with the panel border
        at = next((i for i, ln in enumerate(lines) if ln.startswith(f"│ {spec.flag} ")), None)
        assert at is not None, f"{spec.flag} missing from train --help"
        line = lines[at]
        # the row's help may go on below its first line
        rest = itertools.takewhile(lambda ln: ln.startswith("│   "), lines[at + 1 :])
        assert "[default:" in " ".join([line, *rest]), f"{spec.flag} shows no default"
        # a type: a metavar, a list of choices, or a boolean switch's --no- form
        types = ("<int>", "<float>", "<str>", "|", "--no-" + spec.flag[2:])
        assert any(t in line for t in types), spec.flag
    for title in GROUP_TITLES.values():
        assert f"─ {title} " in result.stdout
    # The shown defaults are those of the default preset.
    assert (
        next(ln for ln in lines if ln.startswith("│ --batch-size ")).rstrip(" │").endswith(": 64]")
    )
    # help text is shown as written: brackets are not read as markup
    assert "pip install 'nanogpt-cli[tensorboard]'" in result.stdout


def _commands() -> list[tuple[list[str], Any]]:
    """Every visible command and group, with its words after `nanogpt`."""
    from typer.main import get_command

    found = []

    def walk(cmd: Any, words: list[str]) -> None:
        found.append((words, cmd))
        for name in cmd.list_commands(None) if hasattr(cmd, "list_commands") else ():
            sub = cmd.get_command(None, name)
            if sub is not None and not sub.hidden:
                walk(sub, [*words, name])

    walk(get_command(app), [])
    return found


@pytest.mark.parametrize("columns", [80, 60])
def test_every_help_fits_narrow_terminals_without_cutting_option_names(columns: int) -> None:
    commands = _commands()
    assert len(commands) > 20  # the root, the commands, the groups' subcommands
    for words, cmd in commands:
        result = runner.invoke(
            app, [*words, "--help"], env={"COLUMNS": str(columns), "NO_COLOR": "1"}
        )
        assert result.exit_code == 0, words
        out = result.stdout
        assert "…" not in out, words
        boxed = [ln for ln in out.splitlines() if ln and ln[0] in "╭│╰"]
        assert boxed and {len(ln) for ln in boxed} == {columns}, words
        shown = set(out.replace("│", " ").split())
        for param in cmd.params:
            if getattr(param, "hidden", False):
                continue
            for name in (*param.opts, *param.secondary_opts):
                assert name in shown, f"{' '.join(words)} --help at {columns} columns cuts {name}"
    # every option keeps its type and default, if on its own line
    out = runner.invoke(app, ["train", "--help"], env={"COLUMNS": "80", "NO_COLOR": "1"}).stdout
    assert out.count("[default:") >= len([s for s in option_specs() if s.default is not None])
    assert "--always-save-checkpoint / --no-always-save-checkpoint" in out
    assert "separated|unified|model-only" in out and "auto|fp32|bf16|fp16" in out


def test_help_text_is_never_read_as_markup() -> None:
    import typer

    from nanogpt_cli.cli.roothelp import HelpCommand

    demo = typer.Typer()

    @demo.command(cls=HelpCommand)
    def cmd(
        extra: str = typer.Option("x", help="pip install 'pkg[extra]'; [bold]not bold[/bold]"),
    ) -> None:
        """Runs [red]as written[/red], [link]."""

    result = runner.invoke(demo, ["--help"], env=WIDE)
    assert result.exit_code == 0
    assert "pip install 'pkg[extra]'; [bold]not bold[/bold]" in result.stdout
    assert "Runs [red]as written[/red], [link]." in result.stdout


@pytest.mark.parametrize(
    ("spelling", "name"),
    [
        ("fp32", "float32"),
        ("float32", "float32"),
        ("bf16", "bfloat16"),
        ("BFloat16", "bfloat16"),
        ("fp16", "float16"),
        ("float16", "float16"),
        ("auto", "auto"),
    ],
)
def test_every_dtype_option_takes_every_spelling(spelling: str, name: str) -> None:
    takers = []
    for words, cmd in _commands():
        if not any("--dtype" in p.opts for p in cmd.params):
            continue
        takers.append(" ".join(words))
        required = [f"x{i}" for i, p in enumerate(cmd.params) if p.required]
        help_text = next(p.help for p in cmd.params if "--dtype" in p.opts)
        assert "fp32|float32, bf16|bfloat16 or fp16|float16" in help_text, words
        if name == "auto" and "convert-checkpoint" in words:  # an export has a real dtype
            with pytest.raises(Exception, match="unknown dtype 'auto'"):
                cmd.make_context(" ".join(words), [*required, "--dtype", spelling])
            continue
        ctx = cmd.make_context(" ".join(words), [*required, "--dtype", spelling])
        assert ctx.params["dtype"] == name, words
    assert {
        "train",
        "finetune",
        "sample",
        "eval",
        "bench",
        "bench sample",
        "convert-checkpoint to-model-only",
        "convert-checkpoint from-hf",
    } <= set(takers)


@pytest.fixture
def captured(monkeypatch: pytest.MonkeyPatch) -> list[TrainConfig]:
    """Patch the training library call and keep the config the CLI built."""
    from nanogpt_cli.train import TrainResult

    seen: list[TrainConfig] = []

    def fake_train(cfg: TrainConfig) -> TrainResult:
        seen.append(cfg)
        return TrainResult(Path(cfg.run.out_dir), 0, float("inf"), None, None, False, 0.0)

    monkeypatch.setattr("nanogpt_cli.train.train", fake_train)
    return seen


def test_nanogpt_spelling_is_accepted(captured: list[TrainConfig]) -> None:
    result = runner.invoke(
        app,
        ["train", "--batch_size=32", "--n_layer", "3", "--no-decay_lr", "--learning-rate", "3e-4"],
    )
    assert result.exit_code == 0, result.output
    cfg = captured[0]
    assert (cfg.data.batch_size, cfg.model.n_layer, cfg.optim.learning_rate) == (32, 3, 3e-4)
    assert cfg.optim.decay_lr is False


def test_flags_override_config_file_and_preset(tmp_path: Path, captured: list[TrainConfig]) -> None:
    config = tmp_path / "c.toml"
    config.write_text("batch_size = 20\nmax_iters = 7\n")
    result = runner.invoke(
        app,
        ["train", "--preset", "shakespeare-char-cpu", "--config", str(config), "--max-iters", "9"],
    )
    assert result.exit_code == 0, result.output
    cfg = captured[0]
    assert (cfg.data.batch_size, cfg.optim.max_iters, cfg.model.n_embd) == (20, 9, 128)


def test_lr_decay_below_warmup_trains_with_a_warning(
    captured: list[TrainConfig],
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr("nanogpt_cli.config.resolve._warned", set())  # none given yet
    # the preset warms up for 100 steps; nanoGPT's schedule then holds min_lr
    status, _, err = run_main(["train", "--max-iters", "20", "--lr-decay-iters", "20"], capsys)
    assert status == 0, err
    assert (captured[0].optim.warmup_iters, captured[0].optim.lr_decay_iters) == (100, 20)
    assert err.count("--lr-decay-iters (20) is below --warmup-iters (100)") == 1


def test_no_flags_trains_the_default_preset(captured: list[TrainConfig]) -> None:
    assert runner.invoke(app, ["train"]).exit_code == 0
    assert captured[0].model.n_embd == 384 and captured[0].data.dataset == "shakespeare-char"


@pytest.mark.parametrize(
    ("args", "code", "expected"),
    [
        (["train", "--batch-sz", "3"], 2, "No such option: --batch-sz"),
        (["train", "--batch-size", "abc"], 2, "'--batch-size'"),
        (["train", "--preset", "gpt2-124"], 2, "did you mean 'gpt2-124m'"),
        (["train", "--n-embd", "100", "--batch-size", "0"], 2, "must be divisible by --n-head"),
        (["train", "--device", "tpu"], 2, "unknown device 'tpu'"),
        (["frobnicate"], 2, "No such command"),
        (["sample", "--dtype", "fp64"], 2, "'--dtype'"),
        (["sample", "--device", "tpu"], 2, "unknown device 'tpu'"),
    ],
)
def test_user_errors_are_one_line(
    args: list[str], code: int, expected: str, capsys: pytest.CaptureFixture[str]
) -> None:
    status, _, err = run_main(args, capsys)
    assert status == code
    assert err.startswith("error: ") and expected in err
    assert err.count("\n") == 1 and "Traceback" not in err


def test_missing_dataset_error_names_prepare_command(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # (shakespeare-char and shakespeare are prepared on first use; openwebtext never is)
    args = ["train", "--dataset", "openwebtext", "--data-dir", str(tmp_path)]
    status, _, err = run_main([*args, "--out-dir", str(tmp_path / "o"), "--device", "cpu"], capsys)
    assert status == 1 and err.count("\n") == 1
    assert f"run `nanogpt prepare openwebtext --data-dir {tmp_path}`" in err


def test_missing_checkpoint_says_where_it_looked(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    status, _, err = run_main(["sample", "--out-dir", str(tmp_path / "none")], capsys)
    assert status == 1 and f"no checkpoint in {tmp_path / 'none'}" in err


def test_debug_variable_shows_the_traceback(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from nanogpt_cli.errors import CheckpointError

    monkeypatch.setenv("NANOGPT_DEBUG", "1")
    with pytest.raises(CheckpointError):
        main(["sample", "--out-dir", str(tmp_path / "none")])


def test_prepare_train_sample_end_to_end(
    tmp_path: Path,
    corpus: Path,
    tiny_options: dict[str, Any],
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    data = tmp_path / "cli-data"
    status, _, err = run_main(
        ["prepare", "shakespeare-char", "--source", str(corpus), "--data-dir", str(data)], capsys
    )
    assert status == 0 and "train.bin" in err and "tokenizer char" in err
    options = dict(tiny_options, data_dir=str(data), max_iters=20)
    status, _, err = run_main(["train", *as_flags(options)], capsys)
    assert status == 0, err
    assert "eval at iter 20" in err and "iteration 20, 2,560 tokens" in err

    args = [
        "sample",
        "--out-dir",
        options["out_dir"],
        "--start",
        "ROMEO:",
        "--max-new-tokens",
        "50",
        "--temperature",
        "0",
    ]
    status, greedy, _ = run_main(args, capsys)
    assert status == 0 and greedy.startswith("ROMEO:") and len(greedy) == len("ROMEO:") + 51
    status, uncached, _ = run_main([*args, "--no-kv-cache"], capsys)
    assert uncached == greedy

    prompt = tmp_path / "prompt.txt"
    prompt.write_text("JULIET:")
    status, out, _ = run_main(
        [
            "sample",
            "--checkpoint",
            options["out_dir"],
            "--start",
            f"FILE:{prompt}",
            "--num-samples",
            "3",
            "--max-new-tokens",
            "10",
        ],
        capsys,
    )
    assert status == 0 and out.count("---------------") == 2 and out.count("JULIET:") == 3
    # --start -: the prompt from standard input
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(b"JULIET:")))
    sample_args = ["sample", "--checkpoint", options["out_dir"], "--max-new-tokens", "10"]
    status, out, _ = run_main([*sample_args, "--start", "-", "--temperature", "0"], capsys)
    assert status == 0 and out.startswith("JULIET:") and len(out) == len("JULIET:") + 11

    status, _, err = run_main(
        ["sample", "--out-dir", options["out_dir"], "--start", f"FILE:{tmp_path / 'nope.txt'}"],
        capsys,
    )
    assert status == 2 and "does not exist" in err
    status, _, err = run_main(
        ["sample", "--out-dir", options["out_dir"], "--top-k", "1000"], capsys
    )
    assert status == 2 and "larger than the vocabulary" in err
    status, _, err = run_main(
        ["sample", "--out-dir", options["out_dir"], "--temperature", "-1"], capsys
    )
    assert status == 2 and "--temperature must not be negative" in err


def test_start_dash_reads_the_prompt_from_standard_input(monkeypatch: pytest.MonkeyPatch) -> None:
    from nanogpt_cli.cli.sample import _read_prompt
    from nanogpt_cli.errors import ConfigError

    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO("ROMEO: ¿qué?\n".encode())))
    assert _read_prompt("-") == "ROMEO: ¿qué?\n"
    assert _read_prompt("a - b") == "a - b" and _read_prompt("--") == "--"  # text as given
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(b"\xff\xfe")))
    with pytest.raises(ConfigError, match="--start -: standard input is not UTF-8"):
        _read_prompt("-")
    monkeypatch.setattr(sys, "stdin", None)
    with pytest.raises(ConfigError, match="no standard input"):
        _read_prompt("-")


def test_console_script_is_installed() -> None:
    script = Path(sys.executable).parent / "nanogpt"
    if not script.exists():
        pytest.skip("package not installed with its console script")
    out = subprocess.run(
        [str(script), "--version"],
        capture_output=True,
        text=True,
        env={**os.environ, "NANOGPT_DEBUG": ""},
        check=True,
    )
    assert out.stdout.startswith("nanogpt ")


@pytest.mark.parametrize("args", [[], ["prepare"]])
def test_a_group_without_command_shows_help_and_succeeds(
    args: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    status, out, err = run_main(args, capsys)
    assert status == 0 and "Usage" in out + err and "error" not in err


def test_a_distributed_process_ends_without_finalizing_the_interpreter(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A process that joined a process group leaves through os._exit with the command's
    status (gloo's threads can still be releasing tensors, which aborts a finalizing
    interpreter); any other process exits as usual."""
    import os

    import nanogpt_cli.cli.app as app_module
    import nanogpt_cli.train.distributed as distributed

    exits: list[int] = []

    def fake_exit(status: int) -> None:
        exits.append(status)
        raise SystemExit(status)  # the real one never returns

    monkeypatch.setattr(os, "_exit", fake_exit)
    monkeypatch.setattr(sys, "argv", ["nanogpt", "--version"])
    with pytest.raises(SystemExit):
        main()
    assert exits == []
    monkeypatch.setattr(distributed, "_joined", True)
    with pytest.raises(SystemExit):
        main()
    assert exits == [0]
    monkeypatch.setattr(sys, "argv", ["nanogpt", "no-such-command"])
    with pytest.raises(SystemExit):
        main()
    assert len(exits) == 2 and exits[1] != 0

    def bug(argv: list[str]) -> None:
        raise RuntimeError("a bug")

    monkeypatch.setattr(app_module, "_main", bug)  # an uncaught exception: status 1
    with pytest.raises(SystemExit):
        main()
    assert exits[2] == 1


def test_process_entry_point_exempts_survivors_from_the_final_gc(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """As the process's entry point (no argv given), main freezes the heap on the way out,
    errors included, so the interpreter's exit skips a collection over all of torch's
    objects; called with arguments, as a library or a test does, it leaves the GC alone. Not
    where triton is loaded (CUDA builds of torch): its objects, never collected, would each
    be reported as leaked."""
    import gc
    import types

    frozen: list[bool] = []
    monkeypatch.setattr(gc, "freeze", lambda: frozen.append(True))
    monkeypatch.delitem(sys.modules, "triton", raising=False)
    monkeypatch.setattr(sys, "argv", ["nanogpt", "--version"])
    with pytest.raises(SystemExit) as exit_info:
        main()
    assert exit_info.value.code in (0, None) and frozen == [True]
    monkeypatch.setattr(sys, "argv", ["nanogpt", "no-such-command"])
    with pytest.raises(SystemExit) as exit_info:
        main()
    assert exit_info.value.code != 0 and frozen == [True, True]
    assert run_main(["--version"], capsys)[0] == 0
    assert frozen == [True, True]
    monkeypatch.setitem(sys.modules, "triton", types.ModuleType("triton"))
    monkeypatch.setattr(sys, "argv", ["nanogpt", "--version"])
    with pytest.raises(SystemExit):
        main()
    assert frozen == [True, True]
