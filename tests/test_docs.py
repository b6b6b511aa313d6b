"""The docs match the code: the options reference is generated, and every `nanogpt` command
shown in README.md and docs/ names a real command with real options."""

from __future__ import annotations

import re
import shlex
import sys
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
# Flags the docs show on purpose as mistakes (the error examples).
WRONG_ON_PURPOSE = {"--batch-sz"}


def test_configuration_reference_is_generated_from_the_dataclasses() -> None:
    sys.path.insert(0, str(ROOT / "docs"))
    try:
        import update_options
    finally:
        sys.path.remove(str(ROOT / "docs"))
    text = (ROOT / "docs" / "configuration.md").read_text(encoding="utf-8")
    assert update_options.with_reference(text) == text, "run python docs/update_options.py"


def test_reference_lists_every_option() -> None:
    from nanogpt_cli.cli.reference import options_reference
    from nanogpt_cli.config import option_specs

    reference = options_reference()
    for spec in option_specs():
        assert f"| `{spec.flag}`" in reference, spec.flag
        assert spec.help.replace("|", "\\|") in reference, spec.flag


def command_lines() -> list[tuple[str, str]]:
    found = []
    for doc in DOCS:
        for line in doc.read_text(encoding="utf-8").splitlines():
            if line.startswith("$ nanogpt"):
                found.append((doc.name, line[2:]))
    return found


def _resolve(root: Any, words: list[str]) -> tuple[Any, list[str]]:
    cmd = root
    while words and hasattr(cmd, "list_commands") and words[0] in cmd.list_commands(None):
        cmd = cmd.get_command(None, words.pop(0))
    return cmd, words


@pytest.mark.parametrize(("doc", "line"), command_lines())
def test_documented_commands_exist_with_their_options(doc: str, line: str) -> None:
    from typer.main import get_command

    from nanogpt_cli.cli.app import app

    # Synopsis lines ("[--source PATH_OR_URL]") are checked without their brackets.
    words = [w.strip("[]") for w in shlex.split(line, comments=True)[1:]]
    root = get_command(app)
    cmd, rest = _resolve(root, words)
    runs = not hasattr(cmd, "list_commands") or cmd.invoke_without_command  # `nanogpt bench`
    # `nanogpt --install-completion`: the root's own options, checked below
    runs = runs or (cmd is root and bool(rest) and all(w.startswith("-") for w in rest))
    assert runs, f"{doc}: `{line}` names no command"
    known = {opt for param in cmd.params for opt in (*param.opts, *param.secondary_opts)}
    known |= {"--help", "-h"}
    # nanoGPT's and the fork README's spellings (--devices=1) as the command reads them
    from nanogpt_cli.cli.spellings import rewrite

    for word in rewrite(cmd.params, rest).parsed:
        flag = word.split("=", 1)[0]
        if flag.startswith("-") and flag not in WRONG_ON_PURPOSE and flag != "--OPTION":
            assert flag.replace("_", "-") in known, f"{doc}: `{line}`: {cmd.name} has no {flag}"


def test_every_readme_timing_names_its_processor() -> None:
    """A time measured on one machine says which (the processor changes between machines,
    and the numbers with it)."""
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    timing = re.compile(r"(?<![\w.])~?\d+(?:\.\d+)?\s?(?:s|ms|seconds|minutes|hours)\b")
    processor = re.compile(r"Xeon|EPYC|Zen \d|Apple M\d|H100|H200|A100")
    for paragraph in re.split(r"\n\s*\n", text):
        if timing.search(paragraph):
            assert processor.search(paragraph), f"a timing without its machine: {paragraph!r}"


MIGRATING = ROOT / "docs" / "migrating-from-nanogpt.md"
# Stand-ins for nanoGPT's config files that the migration guide names, as nanoGPT writes
# them (the guide's commands run from a nanoGPT checkout); nanoGPT's own are checked key by
# key in test_nanogpt_configs.py.
NANOGPT_CONFIG_STAND_INS = {
    "train_shakespeare_char.py": "out_dir = 'out-shakespeare-char'\n"
    "dataset = 'shakespeare_char'\nbatch_size = 64\nblock_size = 256 # context\n"
    "n_layer = 6\nlearning_rate = 1e-3\nmax_iters = 5000\nwandb_log = False\n",
    "train_gpt2.py": "wandb_log = True\nwandb_project = 'owt'\nwandb_run_name = 'gpt2-124M'\n"
    "batch_size = 12\nblock_size = 1024\ngradient_accumulation_steps = 5 * 8\n"
    "max_iters = 600000\nweight_decay = 1e-1\n",
    "finetune_shakespeare.py": "import time\n\nout_dir = 'out-shakespeare'\n"
    "wandb_run_name = 'ft-' + str(time.time())\ndataset = 'shakespeare'\n"
    "init_from = 'gpt2-xl'\nbatch_size = 1\ngradient_accumulation_steps = 32\n"
    "learning_rate = 3e-5\ndecay_lr = False\n",
    "eval_gpt2.py": "batch_size = 8\neval_iters = 500\neval_only = True\n"
    "wandb_log = False\ninit_from = 'gpt2'\n",
}


@pytest.mark.parametrize("line", [line for doc, line in command_lines() if doc == MIGRATING.name])
def test_every_command_of_the_migration_guide_runs(
    line: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Each command of docs/migrating-from-nanogpt.md, typed in a nanoGPT checkout: a
    training command resolves its options (``--print-config``: nothing trains), any other
    runs as it is; each exits 0."""
    from nanogpt_cli.cli.app import main

    (tmp_path / "config").mkdir()
    for name, text in NANOGPT_CONFIG_STAND_INS.items():
        (tmp_path / "config" / name).write_text(text, encoding="utf-8")
    monkeypatch.chdir(tmp_path)
    words = shlex.split(line)[1:]
    if words[0] in ("train", "finetune") and "--print-config" not in words:
        words.append("--print-config")
    with pytest.raises(SystemExit) as exit_info:
        main(words)
    out, err = capsys.readouterr()
    assert exit_info.value.code in (0, None), f"`{line}`: {err}"
    assert out.strip(), f"`{line}` printed nothing"
