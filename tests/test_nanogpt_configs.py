"""nanoGPT's config files (``config/train_shakespeare_char.py``): read without running any of
them, and resolved to the values nanoGPT's ``train.py`` would use."""

from __future__ import annotations

import ast
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from nanogpt_cli.cli.app import main
from nanogpt_cli.config import build_config
from nanogpt_cli.config.nanogpt_files import parse_nanogpt_file
from nanogpt_cli.errors import ConfigError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib

NANOGPT = Path(__file__).resolve().parents[2] / "shared" / "reference" / "nanoGPT"
# nanoGPT's own config files; any other file found beside them is checked too.
CONFIG_FILES = sorted(
    {
        "train_shakespeare_char.py",
        "train_gpt2.py",
        "finetune_shakespeare.py",
        "eval_gpt2.py",
        "eval_gpt2_medium.py",
        "eval_gpt2_large.py",
        "eval_gpt2_xl.py",
    }
    | {p.name for p in (NANOGPT / "config").glob("*.py")}
)
NOT_LITERAL = object()  # an expression the test does not evaluate (train.py's dtype)


def _value(node: ast.expr) -> Any:
    """A literal, or arithmetic of literals (``5 * 8``), of nanoGPT's own files."""
    allowed = (ast.Constant, ast.BinOp, ast.UnaryOp, ast.operator, ast.unaryop)
    if not all(isinstance(n, allowed) for n in ast.walk(node)):
        return NOT_LITERAL
    return eval(compile(ast.Expression(node), "<nanoGPT>", "eval"), {"__builtins__": {}})


def _assignments(path: Path, stop: str | None = None) -> dict[str, Any]:
    """The top-level ``name = value`` of a nanoGPT file (up to the assignment to ``stop``)."""
    found: dict[str, Any] = {}
    for stmt in ast.parse(path.read_text(encoding="utf-8")).body:
        if isinstance(stmt, ast.Assign) and isinstance(stmt.targets[0], ast.Name):
            if stmt.targets[0].id == stop:
                break
            found[stmt.targets[0].id] = _value(stmt.value)
    return found


def train_py_would_use(config_file: Path) -> dict[str, Any]:
    """What nanoGPT's train.py runs with for ``config_file``, as this project's options.

    train.py's defaults overridden by the file's assignments; train.py's device-dependent
    defaults (device 'cuda', dtype bfloat16-or-float16, compile True) are auto here, which
    chooses the same on a CUDA machine; its DDP backend follows the device here."""
    nano = _assignments(NANOGPT / "train.py", stop="config_keys")
    assert (nano["device"], nano["compile"], nano["dtype"]) == ("cuda", True, NOT_LITERAL)
    nano.update(device="auto", compile=None, dtype="auto")
    nano.update(_assignments(config_file))
    expected: dict[str, Any] = {}
    for key, value in nano.items():
        if key == "backend":
            assert value == "nccl"
        elif key == "init_from":
            resume = value == "resume"
            expected.update(resume="yes" if resume else "no", init_from=value)
            if resume:
                expected["init_from"] = "scratch"
        elif key == "wandb_log":
            expected["tracker"] = "wandb" if value else "none"
        elif key == "dataset":
            expected["dataset"] = {"shakespeare_char": "shakespeare-char"}.get(value, value)
        else:
            expected[key] = value
    return expected


def print_config(args: list[str], capsys: pytest.CaptureFixture[str]) -> dict[str, Any]:
    """``nanogpt ARGS --print-config``, flat: option -> value (None where not set)."""
    with pytest.raises(SystemExit) as exit_info:
        main([*args, "--print-config"])
    out, err = capsys.readouterr()
    assert exit_info.value.code == 0, err
    flat: dict[str, Any] = {}
    for group in tomllib.loads(out).values():
        flat.update(group)
    return flat


@pytest.mark.parametrize("name", CONFIG_FILES)
@pytest.mark.parametrize("spelling", ["--config", "positional"])
def test_nanogpt_config_resolves_to_what_train_py_would_use(
    name: str,
    spelling: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    path = NANOGPT / "config" / name
    if not path.is_file():
        pytest.skip(f"nanoGPT's {name} is not here ({path.parent} is absent or lacks it)")
    monkeypatch.chdir(tmp_path)
    expected = train_py_would_use(path)
    command = "finetune" if name.startswith("finetune") else "train"
    before = time.time()
    args = [command, "--config", str(path)] if spelling == "--config" else [command, str(path)]
    resolved = print_config(args, capsys)
    for key, value in expected.items():
        if value is NOT_LITERAL:  # finetune_shakespeare's 'ft-' + str(time.time())
            assert key == "wandb_run_name"
            prefix, _, stamp = resolved[key].partition("-")
            assert prefix == "ft" and before <= float(stamp) <= time.time()
        else:
            assert resolved.get(key) == value, key
    # the library reads it the same way
    cfg = build_config(config_file=path).flat()
    literal = {k: v for k, v in expected.items() if v is not NOT_LITERAL}
    assert {k: cfg[k] for k in literal} == literal


def test_flags_override_a_nanogpt_config_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """nanoGPT's README CPU line, in this project's spelling of the flags."""
    path = NANOGPT / "config" / "train_shakespeare_char.py"
    if not path.is_file():
        pytest.skip(f"nanoGPT's config files are not here ({path.parent})")
    monkeypatch.chdir(tmp_path)
    flags = {
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
    args = ["train", str(path), "--device", "cpu", "--no-compile"]
    for key, value in flags.items():
        if key not in ("device", "compile"):
            args += [f"--{key.replace('_', '-')}", str(value)]
    resolved = print_config(args, capsys)
    expected = {**train_py_would_use(path), **flags}
    assert {k: resolved.get(k) for k in expected} == expected


def write(tmp_path: Path, text: str, name: str = "config.py") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def test_literals_arithmetic_comments_and_docstrings_are_read(tmp_path: Path) -> None:
    text = (
        '"""A config of my own."""\n'
        "# a comment\n"
        "import time\n"
        "batch_size = 4 * 2  # 8\n"
        "max_iters = 2**10\n"
        "learning_rate = -(-1e-3)\n"
        "min_lr = 1e-3 / 10\n"
        "lr_decay_iters = 1000 // 3 + 7 % 4\n"
        "warmup_iters = +10 - 20 + 20\n"
        "out_dir = 'out-' + \"mine\"\n"
        "vocab_size = None\n"
        "bias = True\n"
        "eval_only = False\n"
    )
    values, lines = parse_nanogpt_file(
        write(tmp_path, text + "shape = (1, -2, [3.5, 'x', None])\n")
    )
    assert values == {
        "batch_size": 8,
        "max_iters": 1024,
        "learning_rate": 1e-3,
        "min_lr": pytest.approx(1e-4),
        "lr_decay_iters": 336,
        "warmup_iters": 10,
        "out_dir": "out-mine",
        "vocab_size": None,
        "bias": True,
        "eval_only": False,
        "shape": (1, -2, [3.5, "x", None]),
    }
    assert (lines["batch_size"], lines["eval_only"], lines["shape"]) == (4, 13, 14)
    cfg = build_config(config_file=write(tmp_path, text))
    assert (cfg.data.batch_size, cfg.optim.max_iters, cfg.run.out_dir) == (8, 1024, "out-mine")
    assert cfg.optim.min_lr == pytest.approx(1e-4) and cfg.model.bias is True


# Files that would create MARKER if they ran; each is refused at the line given.
WOULD_WRITE = [
    ("open(MARKER, 'w').close()\n", 1),
    ("import os\nos.close(os.open(MARKER, os.O_CREAT | os.O_WRONLY))\n", 1),
    ("batch_size = 4\nn_layer = len(open(MARKER, 'w').name)\n", 2),
    ("out_dir = __import__('pathlib').Path(MARKER).touch()\n", 1),
    ("from pathlib import Path\nout_dir = Path(MARKER).touch()\n", 1),
    ("out_dir = (lambda: open(MARKER, 'w'))()\n", 1),
    ("out_dir = [open(MARKER, 'w') for _ in 'x']\n", 1),
    ("out_dir = f\"{open(MARKER, 'w')}\"\n", 1),
    ("import time\nwandb_run_name = 'ft-' + str(open(MARKER, 'w'))\n", 2),
    ("def f():\n    open(MARKER, 'w')\n\n\nf()\n", 1),
    ("if True:\n    open(MARKER, 'w')\n", 1),
    ("with open(MARKER, 'w'):\n    pass\n", 1),
    ("exec(\"open(MARKER, 'w')\")\n", 1),
]
# Code that writes nothing, refused all the same.
REFUSED = [
    ("out_dir = 'x'.__class__.__name__\n", 1),  # an attribute
    ("n_layer = batch_size\n", 1),  # a name, not a literal
    ("import time\nwandb_run_name = str(time.time)\n", 2),
    ("wandb_run_name = 'ft-' + str(time.time())\n", 1),  # without `import time`
    ("batch_size = 2 ** 10 ** 10\n", 1),  # too large to compute
    ("batch_size = 1 // 0\n", 1),
    ("batch_size = 'a' * 3\n", 1),
    ("batch_size += 1\n", 1),
    ("n_layer: int = 4\n", 1),
    ("a, b = 1, 2\n", 1),
    ("42\n", 1),
]


@pytest.mark.parametrize(("code", "line"), WOULD_WRITE + REFUSED)
def test_code_in_a_config_file_is_refused_and_never_runs(
    code: str, line: int, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    marker = tmp_path / "marker"
    path = write(tmp_path, code.replace("MARKER", repr(str(marker))))
    if (code, line) in WOULD_WRITE:  # the file is what it claims: run, it writes the marker
        subprocess.run([sys.executable, str(path)], cwd=tmp_path, check=False)
        assert marker.exists(), code
        marker.unlink()
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ConfigError) as error:
        build_config(config_file=path)
    message = str(error.value)
    statement = path.read_text().splitlines()[line - 1]
    assert "\n" not in message
    assert f"config file {path}, line {line}: refused `" in message
    assert " ".join(statement.split())[:40] in message
    assert not marker.exists()


@pytest.mark.parametrize("terms", [1500, 100_000])
def test_arithmetic_nested_too_deeply_is_refused_in_one_line(terms: int, tmp_path: Path) -> None:
    path = write(tmp_path, "batch_size = " + "1 + " * terms + "1\n")
    with pytest.raises(ConfigError) as error:
        parse_nanogpt_file(path)
    assert f"config file {path}" in str(error.value) and "\n" not in str(error.value)


def test_a_refusal_says_what_to_do(tmp_path: Path) -> None:
    path = write(tmp_path, "import os\n")
    with pytest.raises(ConfigError, match=r"only `import time` may be imported.*remove the line"):
        parse_nanogpt_file(path)
    path = write(tmp_path, "out_dir = os.getcwd()\n")
    with pytest.raises(ConfigError, match=r"`os.getcwd\(\)` is not a literal.*write the value"):
        parse_nanogpt_file(path)


def test_nanogpts_time_stamp_idiom_is_read_without_running_it(tmp_path: Path) -> None:
    path = write(tmp_path, "import time\nwandb_run_name = 'ft-' + str(time.time())\n")
    before = time.time()
    name = build_config(config_file=path).run.wandb_run_name
    assert name is not None and name.startswith("ft-")
    assert before <= float(name.removeprefix("ft-")) <= time.time()


def test_unknown_key_names_the_key_file_and_line_with_a_suggestion(tmp_path: Path) -> None:
    path = write(tmp_path, "batch_size = 4\nbatch_sise = 8\n")
    with pytest.raises(ConfigError) as error:
        build_config(config_file=path)
    message = str(error.value)
    assert "\n" not in message
    assert f"unknown option 'batch_sise' in {path}, line 2; did you mean 'batch_size'?" in message


def test_a_wrong_type_names_the_key(tmp_path: Path) -> None:
    path = write(tmp_path, "n_layer = (1, 2)\n")
    with pytest.raises(ConfigError, match=r"n_layer in .*config.py, line 1: expected int"):
        build_config(config_file=path)


def test_syntax_error_names_the_line(tmp_path: Path) -> None:
    path = write(tmp_path, "batch_size = 4\nn_layer = = 2\n")
    with pytest.raises(ConfigError, match=r"config.py, line 2: not valid Python"):
        build_config(config_file=path)


def test_nanogpt_keys_map_to_options(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "init_from = 'resume'\n"
        "wandb_log = True\n"
        "wandb_project = 'proj'\n"
        "wandb_run_name = 'run-1'\n"
        "dataset = 'shakespeare_char'\n"
        "decay_lr = False\n"
        "backend = 'gloo'\n"
        "device = 'cpu'\n"
        "dtype = 'float16'\n"
        "compile = False\n"
        "gradient_accumulation_steps = 4\n"
        "eval_only = True\n"
        "always_save_checkpoint = False\n"
        "seed = 7\n",  # this project's own options are read too
    )
    cfg = build_config(config_file=path)
    assert (cfg.run.resume, cfg.run.init_from) == ("yes", "scratch")
    assert (cfg.run.tracker, cfg.run.wandb_project, cfg.run.wandb_run_name) == (
        "wandb",
        "proj",
        "run-1",
    )
    assert cfg.data.dataset == "shakespeare-char" and cfg.optim.decay_lr is False
    assert (cfg.system.device, cfg.system.dtype, cfg.system.compile) == ("cpu", "float16", False)
    assert cfg.data.gradient_accumulation_steps == 4 and cfg.eval.eval_only is True
    assert cfg.run.always_save_checkpoint is False and cfg.system.seed == 7

    path = write(tmp_path, "init_from = 'gpt2-medium'\ndataset = 'openwebtext'\n")
    cfg = build_config("finetune-gpt2", config_file=path)
    assert (cfg.run.init_from, cfg.run.resume, cfg.data.dataset) == (
        "gpt2-medium",
        "no",
        "openwebtext",
    )
    # train.py's defaults replace the preset's: a nanoGPT file is read as train.py reads it
    assert (cfg.data.batch_size, cfg.optim.learning_rate) == (12, 6e-4)


@pytest.mark.parametrize(
    ("code", "problem"),
    [
        ("backend = 'mpi'\n", "backend in .*: expected nccl or gloo"),
        ("wandb_log = 'maybe'\n", "wandb_log in .*, line 1: .*true or false"),
        ("dtype = 'float8'\n", "dtype in .*: expected one of"),
    ],
)
def test_bad_nanogpt_values_are_refused(tmp_path: Path, code: str, problem: str) -> None:
    with pytest.raises(ConfigError, match=problem):
        build_config(config_file=write(tmp_path, code))


def test_positional_and_option_config_files(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(tmp_path)
    py = write(tmp_path, "batch_size = 3\n")
    toml = write(tmp_path, "batch_size = 5\n", name="config.toml")
    assert print_config(["train", str(py)], capsys)["batch_size"] == 3
    assert print_config(["train", "--config", str(toml)], capsys)["batch_size"] == 5
    assert print_config(["train", str(toml)], capsys)["batch_size"] == 5  # still TOML
    assert print_config(["finetune", str(py), "--batch-size", "6"], capsys)["batch_size"] == 6
    with pytest.raises(SystemExit) as exit_info:
        main(["train", str(py), "--config", str(toml), "--print-config"])
    assert exit_info.value.code == 2
    assert "two config files" in capsys.readouterr().err


def test_nanogpts_readme_cpu_line_as_typed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """nanoGPT's README CPU line exactly as nanoGPT spells it (config file first, then
    ``--key=value`` flags) resolves to what nanoGPT's train.py would run with."""
    path = NANOGPT / "config" / "train_shakespeare_char.py"
    if not path.is_file():
        pytest.skip(f"nanoGPT's config files are not here ({path.parent})")
    monkeypatch.chdir(tmp_path)
    line = (
        "--device=cpu --compile=False --eval_iters=20 --log_interval=1 --block_size=64 "
        "--batch_size=12 --n_layer=4 --n_head=4 --n_embd=128 --max_iters=2000 "
        "--lr_decay_iters=2000 --dropout=0.0"
    )
    resolved = print_config(["train", str(path), *line.split()], capsys)
    flags = {k.lstrip("-"): v for k, v in (f.split("=") for f in line.split())}
    typed = {key: {"False": False, "cpu": "cpu"}.get(value, value) for key, value in flags.items()}
    typed = {
        key: value if not isinstance(value, str) or key == "device" else float(value)
        for key, value in typed.items()
    }
    expected = {**train_py_would_use(path), **typed}
    assert {k: resolved.get(k) for k in expected} == expected
