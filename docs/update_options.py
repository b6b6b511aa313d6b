"""Rewrite the options reference in docs/configuration.md from the config dataclasses.

Usage: python docs/update_options.py   (tests/test_docs.py fails when it is out of date)
"""

from __future__ import annotations

import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from nanogpt_cli.cli.reference import options_reference  # noqa: E402

DOC = HERE / "configuration.md"
BEGIN = "<!-- options reference: written by docs/update_options.py from nanogpt_cli/config -->"
END = "<!-- end of options reference -->"


def with_reference(text: str) -> str:
    """``text`` with the part between the markers replaced by the current reference."""
    head, found, rest = text.partition(BEGIN)
    _, found_end, tail = rest.partition(END)
    if not (found and found_end):
        raise SystemExit(f"{DOC} lacks the markers {BEGIN!r} ... {END!r}")
    return f"{head}{BEGIN}\n\n{options_reference()}\n{END}{tail}"


if __name__ == "__main__":
    DOC.write_text(with_reference(DOC.read_text(encoding="utf-8")), encoding="utf-8")
    print(f"wrote {DOC}")
