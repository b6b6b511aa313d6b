"""``nanogpt presets``: list the presets and show one as a config file."""

from __future__ import annotations

from typing import Annotated

import typer

from .complete import complete_preset
from .options import command

app = typer.Typer(
    help="List presets, or show one as a TOML config file to save and edit.",
    no_args_is_help=True,
)


def _model(values: dict[str, object]) -> str:
    init = values.get("init_from", "scratch")
    if init != "scratch":
        return f"from {init}"
    return f"{values['n_layer']} x {values['n_embd']}"


@command(app, "list")
def list_presets() -> None:
    """Every preset: built-in ones and your own (TOML files in the presets directory)."""
    from rich.console import Console
    from rich.table import Table

    from ..config import (
        TrainConfig,
        apply_values,
        get_preset,
        preset_aliases,
        preset_names,
        preset_values,
    )
    from ..errors import ConfigError
    from ..paths import user_presets_dir

    table = Table(title="presets", title_justify="left")
    table.add_column("name", no_wrap=True)
    table.add_column("model", no_wrap=True)
    table.add_column("data", no_wrap=True)
    table.add_column("description")
    table.add_column("also")
    for name in preset_names():
        try:
            cfg = apply_values(TrainConfig(), preset_values(name))
            description = str(get_preset(name).get("description", ""))
            values = cfg.flat()
            also = ", ".join(preset_aliases(name))
            table.add_row(name, _model(values), str(values["dataset"]), description, also)
        except ConfigError as e:
            table.add_row(name, "", "", f"[red]invalid: {e}[/red]", "")
    console = Console()
    console.print(table)
    console.print(f"Your own presets: {user_presets_dir()}/NAME.toml (see `nanogpt presets show`)")
    console.print("Names under 'also' (nanoGPT's and the original README's) work as --preset too.")


@command(app, "show")
def show(
    name: Annotated[
        str, typer.Argument(help="Preset name.", autocompletion=complete_preset, show_default=False)
    ],
) -> None:
    """The full resolved config of a preset as TOML, ready to save and edit.

    Example: nanogpt presets show shakespeare-char-cpu > my.toml; nanogpt train --config my.toml
    """
    from ..config import build_config, config_toml, get_preset

    definition = get_preset(name)
    header = f"preset {name}: {definition.get('description', '')}"
    if definition.get("extends"):
        header += f"\nextends {definition['extends']}"
    typer.echo(config_toml(build_config(name), header), nl=False)
