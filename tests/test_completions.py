"""Shell completion: the shipped scripts are current and complete commands, presets,
datasets and checkpoints; a completion request imports no torch."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
COMPLETIONS = ROOT / "completions"
NANOGPT = Path(sys.executable).with_name("nanogpt")

needs_console_script = pytest.mark.skipif(
    not NANOGPT.exists(), reason="the nanogpt console script is not installed beside python"
)


def env_with_nanogpt(**extra: str) -> dict[str, str]:
    return {**os.environ, "PATH": f"{NANOGPT.parent}{os.pathsep}{os.environ['PATH']}", **extra}


@needs_console_script
@pytest.mark.parametrize("shell", ["bash", "zsh", "fish"])
def test_shipped_scripts_are_what_the_app_generates(shell: str) -> None:
    if shutil.which(shell) is None:
        pytest.skip(f"{shell} is not installed here; its script cannot be regenerated")
    done = subprocess.run(
        [sys.executable, str(COMPLETIONS / "generate.py"), "--check", "--shell", shell],
        capture_output=True,
        text=True,
        env=env_with_nanogpt(),
    )
    assert done.returncode == 0, done.stdout + done.stderr


def bash_complete(line: str, env: dict[str, str]) -> list[str]:
    """What the shipped bash script offers for ``line`` (the cursor at its end)."""
    words = line.split()
    if line.endswith(" "):
        words.append("")
    quoted = " ".join(f"'{w}'" for w in words)
    program = (
        f"source {COMPLETIONS / 'nanogpt.bash'}\n"
        f"COMP_WORDS=({quoted}); COMP_CWORD={len(words) - 1}\n"
        "_nanogpt_completion nanogpt\n"
        'printf "%s\\n" "${COMPREPLY[@]}"\n'
    )
    done = subprocess.run(
        ["bash", "-c", program], capture_output=True, text=True, env=env, check=True
    )
    return [w for w in done.stdout.splitlines() if w]


@pytest.fixture
def workspace(tmp_path: Path) -> tuple[Path, dict[str, str]]:
    """A data directory with two prepared datasets and a folder with two checkpoints."""
    data = tmp_path / "data"
    for name in ("shakespeare-char", "novels"):
        (data / name).mkdir(parents=True)
        (data / name / "meta.json").write_text("{}")
    (data / "not-prepared").mkdir()
    runs = tmp_path / "runs"
    (runs / "out-small").mkdir(parents=True)
    (runs / "out-small" / "checkpoint.json").write_text("{}")
    (runs / "out-nano").mkdir()
    (runs / "out-nano" / "ckpt.pt").write_bytes(b"")
    (runs / "out-empty").mkdir()
    env = env_with_nanogpt(NANOGPT_DATA_DIR=str(data), NANOGPT_CONFIG_DIR=str(tmp_path / "cfg"))
    return runs, env


@needs_console_script
def test_bash_completes_commands_presets_datasets_and_checkpoints(
    workspace: tuple[Path, dict[str, str]],
) -> None:
    runs, env = workspace
    assert bash_complete("nanogpt tr", env) == ["train"]
    commands = bash_complete("nanogpt ", env)
    assert {"prepare", "train", "finetune", "sample", "eval", "plot", "presets"} <= set(commands)
    assert bash_complete("nanogpt prepare shakespeare", env) == ["shakespeare-char", "shakespeare"]
    presets = bash_complete("nanogpt train --preset shakespeare", env)
    assert presets == [
        "shakespeare-char",
        "shakespeare-char-cpu",
        "shakespeare-char-speedrun",
        "shakespeare-char-speedrun-cpu",
    ]
    assert "finetune-gpt2-xl" in bash_complete("nanogpt finetune --preset finetune-", env)
    assert bash_complete("nanogpt train --dataset ", env) == ["novels", "shakespeare-char"]
    assert bash_complete("nanogpt train --batch-si", env) == ["--batch-size"]
    checkpoints = bash_complete(f"nanogpt sample --checkpoint {runs}/out-", env)
    assert checkpoints == [f"{runs}/out-nano", f"{runs}/out-small"]
    assert bash_complete(f"nanogpt convert info {runs}/out-s", env) == [f"{runs}/out-small"]
    assert bash_complete("nanogpt sample --init-from gpt2-", env)[:3] == [
        "gpt2-medium",
        "gpt2-large",
        "gpt2-xl",
    ]


@needs_console_script
def test_fish_completes_from_the_shipped_script(workspace: tuple[Path, dict[str, str]]) -> None:
    if shutil.which("fish") is None:
        pytest.skip("fish is not installed here")
    _, env = workspace
    program = f"source {COMPLETIONS / 'nanogpt.fish'}; complete -C 'nanogpt train --preset shak'"
    done = subprocess.run(
        ["fish", "-c", program],
        capture_output=True,
        text=True,
        env=env,
        check=True,
    )
    offered = [line.split("\t")[0] for line in done.stdout.splitlines()]
    assert offered == ["shakespeare-char", "shakespeare-char-cpu"]


def test_a_completion_request_imports_no_torch(workspace: tuple[Path, dict[str, str]]) -> None:
    _, env = workspace
    program = (
        "import sys\n"
        "from nanogpt_cli.cli.app import main\n"
        "try:\n    main([])\nexcept SystemExit:\n    pass\n"
        "heavy = [m for m in ('torch', 'numpy', 'transformers', 'datasets') if m in sys.modules]\n"
        "print('heavy:', heavy, file=sys.stderr)\n"
    )
    env = {
        **env,
        "_NANOGPT_COMPLETE": "complete_bash",
        "COMP_WORDS": "nanogpt train --dataset ",
        "COMP_CWORD": "3",
    }
    done = subprocess.run(
        [sys.executable, "-c", program], capture_output=True, text=True, env=env, check=True
    )
    assert done.stdout.split() == ["novels", "shakespeare-char"]
    assert "heavy: []" in done.stderr


def test_checkpoint_names_match_the_checkpoint_package() -> None:
    from nanogpt_cli.checkpoint.directory import CONFIG_FILE, MODEL_FILE
    from nanogpt_cli.checkpoint.hf import HF_CONFIG
    from nanogpt_cli.checkpoint.unified import UNIFIED_FILE, UNIFIED_SUFFIXES
    from nanogpt_cli.cli.complete import (
        CHECKPOINT_FILES,
        CHECKPOINT_SUFFIXES,
        DATASET_META,
        METRICS_FILE,
    )
    from nanogpt_cli.data.dataset import META_FILE
    from nanogpt_cli.metrics import METRICS_FILE as WRITTEN

    assert set(CHECKPOINT_FILES) == {CONFIG_FILE, MODEL_FILE, UNIFIED_FILE, HF_CONFIG}
    assert CHECKPOINT_SUFFIXES == UNIFIED_SUFFIXES
    assert DATASET_META == META_FILE and METRICS_FILE == WRITTEN


def test_unreadable_entries_are_skipped(
    workspace: tuple[Path, dict[str, str]], monkeypatch: pytest.MonkeyPatch
) -> None:
    from nanogpt_cli.cli.complete import complete_checkpoint

    runs, _ = workspace
    original = Path.is_file

    def is_file(self: Path) -> bool:
        if self.parent.name == "out-small":  # as if out-small may not be entered
            raise PermissionError(13, "Permission denied", str(self))
        return original(self)

    monkeypatch.setattr(Path, "is_file", is_file)
    assert complete_checkpoint(f"{runs}/out-") == [f"{runs}/out-nano"]
    assert complete_checkpoint(f"{runs}/no-such-dir/x") == []
    assert complete_checkpoint(f"{runs}/out-nano/ckpt.pt/") == []


def test_the_readme_bash_steps_work_on_a_fresh_machine(tmp_path: Path) -> None:
    """The README's manual bash steps, run as written in an empty home, give a new
    interactive bash the completion (nothing else installed)."""
    import re

    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    section = readme.split("## Shell completion", 1)[1].split("\n## ", 1)[0]
    steps = re.findall(r"```sh\n(.*?)```", section, re.S)[0]
    assert "~/.bashrc" in steps
    home = tmp_path / "home"
    home.mkdir()
    env = {"HOME": str(home), "PATH": os.environ["PATH"], "TERM": "dumb"}
    subprocess.run(["bash", "-e", "-c", steps], cwd=ROOT, env=env, check=True)
    shell = subprocess.run(
        ["bash", "-i", "-c", "complete -p nanogpt"],
        env=env,
        capture_output=True,
        text=True,
    )
    assert shell.returncode == 0 and "nanogpt" in shell.stdout, shell.stderr
