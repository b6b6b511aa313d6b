"""The options reference in docs/configuration.md, generated from the config schema.

docs/configuration.md carries it between markers (docs/update_options.py writes it, a test
checks it), so the reference cannot drift from the dataclasses.
"""

from __future__ import annotations

import typing
from typing import Literal

from ..config import GROUP_TITLES, SPECS, option_flag
from ..config.files import toml_value


def options_reference() -> str:
    """Markdown tables of every option by group: flag, type, default and help text."""

    def cell(text: str) -> str:
        return text.replace("|", "\\|")

    lines: list[str] = []
    for group, title in GROUP_TITLES.items():
        lines += [f"### {title}", "", "| option | type | default | description |"]
        lines.append("| --- | --- | --- | --- |")
        for spec in (s for s in SPECS.values() if s.group == group):
            base = spec.base_type
            if base is bool:
                flag, kind = f"`{spec.flag}` / `--no-{spec.flag[2:]}`", "switch"
            else:
                flag = f"`{spec.flag}`"
                if typing.get_origin(base) is Literal:
                    kind = " \\| ".join(f"`{c}`" for c in typing.get_args(base))
                else:
                    kind = base.__name__
            if spec.default_text is not None:
                default = spec.default_text
            elif spec.default is None:
                default = "unset"
            else:
                default = f"`{toml_value(spec.default)}`"
            lines.append(f"| {flag} | {kind} | {cell(default)} | {cell(spec.help)} |")
            for short, value in spec.shortcuts:
                lines.append(
                    f"| `{option_flag(short)}` | switch | | same as `{spec.flag} {value}` |"
                )
        lines.append("")
    return "\n".join(lines).rstrip() + "\n"
