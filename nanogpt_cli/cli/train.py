"""``nanogpt train``: train a GPT from scratch or resume a run."""

from __future__ import annotations

import shlex
from pathlib import Path
from typing import Annotated, Any, Optional

import typer

from ..config import DEFAULT_PRESET
from ..errors import ConfigError
from .options import ConfigFile, Preset, PrintConfig, with_training_options


def _config_argument(value: Optional[str]) -> Optional[str]:
    """The config file or preset name given as an argument, checked as the command line is
    read: a word that is neither (a stray value) is a usage error."""
    from ..config import is_preset

    try:
        found = value is None or Path(value).is_file() or is_preset(value)
    except (OSError, ValueError):  # a NUL in the name
        found = False
    if not found:
        raise typer.BadParameter(f"no config file or preset {value!r}")
    return value


# The config file given as nanoGPT takes it (nanogpt train config/train_gpt2.py), or a
# preset's name as nanoGPT's early README gave it (python train.py eval_gpt2).
ConfigArgument = Annotated[
    Optional[str],
    typer.Argument(
        help="Config file, as --config: TOML, or a nanoGPT config .py (read, never run); "
        "or a preset's name, as --preset.",
        show_default=False,
        callback=_config_argument,
    ),
]


def config_or_preset(
    argument: str | None, preset: str | None, config: Path | None
) -> tuple[str | None, Path | None]:
    """The preset and config file of a command line: the argument is a config file, or,
    when no file has that name, a preset (nanogpt train eval_gpt2); one of each at most."""
    if argument is not None and not Path(argument).is_file():
        if preset is not None:
            raise ConfigError(f"two presets ({argument} and --preset {preset}); give one")
        return argument, config
    if config is not None and argument is not None:
        raise ConfigError(f"two config files ({argument} and --config {config}); give one")
    return preset, config if config is not None or argument is None else Path(argument)


def train(
    config_file: ConfigArgument = None,
    preset: Preset = None,
    config: ConfigFile = None,
    print_config: PrintConfig = False,
    **options: Any,
) -> None:
    """Train a GPT model.

    Option values come from the preset, then --config FILE.toml, then the flags given here.
    Defaults shown are those of the shakespeare-char preset. With --resume, the resumed
    run's saved options replace the preset. nanoGPT's spelling (--batch_size=32) works too,
    and so do its config files, read without running them (docs/migrating-from-nanogpt.md).

    Examples:
      nanogpt train                                  (baby GPT on shakespeare-char)
      nanogpt train --preset shakespeare-char-cpu    (a few minutes on a laptop CPU)
      nanogpt train --max-iters 1000 --resume
      nanogpt train config/train_shakespeare_char.py (a nanoGPT config file)
      nanogpt train eval_gpt2                        (GPT-2's loss on OpenWebText)
    """
    run(*config_or_preset(config_file, preset, config), print_config, options)


def run(
    preset: str | None,
    config: Path | None,
    print_config: bool,
    options: dict[str, Any],
    default_preset: str = DEFAULT_PRESET,
) -> None:
    """Resolve the options, then print them (``--print-config``) or train and report."""
    from ..config import config_toml
    from ..log import get_logger
    from ..train import final_sample, resolve_config
    from ..train import train as run_training
    from ..train.estimate import summary
    from .process import tune_process

    cfg = resolve_config(preset, config, options, default_preset=default_preset)
    if print_config:
        typer.echo(config_toml(cfg), nl=False)
        return
    tune_process(cfg.system.device)
    result = run_training(cfg)
    if cfg.eval.eval_only:
        _print_losses(cfg, result)
        return
    logger = get_logger(__name__)
    logger.info(summary(result))
    if result.saved and cfg.run.sample_at_end:
        sample = final_sample(cfg, result)
        if sample is not None:
            logger.info("a sample from the model:")
            typer.echo(sample.rstrip("\n"))
    if result.saved or cfg.run.resume == "yes":
        logger.info(f"next: nanogpt sample --out-dir {shlex.quote(str(result.out_dir))}")


def _print_losses(cfg: Any, result: Any) -> None:
    """An evaluation-only run's losses as nanoGPT's README tables them (model, params, train
    loss, val loss), with the README's own row for a GPT-2 size on OpenWebText."""
    from rich.table import Table

    from ..evaluate import nanogpt_baseline
    from ..log import get_logger

    def loss(value: float | None) -> str:
        return "n/a" if value is None else f"{value:.4f}"

    model = cfg.run.init_from  # a GPT-2 size, or a path: named by its folder
    model = Path(result.out_dir if model in ("scratch", "resume") else model).name
    table = Table(title=f"{model} on {cfg.data.dataset}", title_justify="left")
    for column in ("model", "params", "train loss", "val loss"):
        table.add_column(column, justify="left" if column == "model" else "right")
    millions = result.params / 1e6
    params = "n/a" if not millions else f"{millions:.0f}M" if millions >= 10 else f"{millions:.2f}M"
    table.add_row(model, params, loss(result.train_loss), loss(result.val_loss))
    baseline = nanogpt_baseline(model, cfg.data.dataset)
    if baseline is not None:
        readme_params, train, val = baseline
        table.add_row(f"{model} (nanoGPT's README)", readme_params, f"{train:.2f}", f"{val:.2f}")
    get_logger(__name__).table(table)


with_training_options(train)


def train_worker(
    config_file: Annotated[Path, typer.Argument(help="The run's resolved options (JSON).")],
) -> None:
    """One process of a run that nanogpt train --nproc-per-node started (internal)."""
    import json

    from ..config import build_config
    from ..train import train as run_training
    from .process import tune_process

    cfg = build_config(None, base=json.loads(config_file.read_text(encoding="utf-8")))
    tune_process(cfg.system.device)
    run_training(cfg)
