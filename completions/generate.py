"""Write the shell completion scripts in this folder from the nanogpt app.

Each file is what ``nanogpt --show-completion`` (Typer) prints when run from that shell:
a small function that asks ``nanogpt`` itself for completions at every Tab press, so
commands, options, preset names, dataset names and checkpoint paths are always current.
Regenerate after upgrading Typer; ``--check`` reports files that are out of date (a test
runs it).

Usage: python completions/generate.py [--check]   (needs bash, zsh and fish installed)
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
FILES = {"bash": "nanogpt.bash", "zsh": "_nanogpt", "fish": "nanogpt.fish"}


def nanogpt_executable() -> str:
    """The nanogpt of this Python (the console script beside it), else the one on PATH."""
    beside = Path(sys.executable).with_name("nanogpt")
    found = str(beside) if beside.exists() else shutil.which("nanogpt")
    if found is None:
        sys.exit("nanogpt is not installed: pip install -e . first")
    return found


def script(shell: str, nanogpt: str) -> str:
    """The completion script for ``shell``, printed by nanogpt running under that shell.

    Typer detects the shell from the parent process; the trailing ``; true`` keeps the shell
    from replacing itself with nanogpt, so the shell stays the parent.
    """
    done = subprocess.run(
        [shell, "-c", f"'{nanogpt}' --show-completion; true"],
        capture_output=True,
        text=True,
        check=True,
    )
    return done.stdout.rstrip("\n") + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="only report stale files")
    parser.add_argument("--shell", choices=FILES, action="append", help="only these shells")
    args = parser.parse_args()
    nanogpt = nanogpt_executable()
    stale = []
    for shell in args.shell or FILES:
        if shutil.which(shell) is None:
            print(f"skipped {FILES[shell]}: {shell} is not installed", file=sys.stderr)
            continue
        path = HERE / FILES[shell]
        text = script(shell, nanogpt)
        if args.check:
            if not path.is_file() or path.read_text() != text:
                stale.append(path.name)
        else:
            path.write_text(text)
            print(f"wrote {path}")
    if stale:
        print(f"out of date: {', '.join(stale)}; run python completions/generate.py")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
