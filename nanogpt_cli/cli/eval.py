"""``nanogpt eval``: loss, perplexity and bits per byte of a model on a prepared dataset."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Optional

import typer

from .complete import complete_checkpoint, complete_dataset, complete_init_from, complete_preset
from .options import CpuKernels, DataDir, MaybeDevice, MaybeDType


def evaluate(
    checkpoint: Annotated[
        Optional[Path],
        typer.Option(
            "--checkpoint",
            help="Checkpoint directory or file, any format (nanoGPT's ckpt.pt and Hugging "
            "Face folders too).",
            autocompletion=complete_checkpoint,
            show_default=False,
        ),
    ] = None,
    init_from: Annotated[
        Optional[str],
        typer.Option(
            "--init-from",
            help="A GPT-2 size (gpt2, gpt2-medium, gpt2-large, gpt2-xl) or a path, instead "
            "of --checkpoint.",
            autocompletion=complete_init_from,
            show_default=False,
        ),
    ] = None,
    dataset: Annotated[
        Optional[str],
        typer.Option(
            "--dataset",
            help="Prepared dataset name or directory.",
            autocompletion=complete_dataset,
            show_default="the checkpoint's, or the preset's",
        ),
    ] = None,
    data_dir: DataDir = None,
    preset: Annotated[
        Optional[str],
        typer.Option(
            "--preset",
            help="Options to start from, e.g. eval-gpt2 (nanoGPT's eval_gpt2: 500 x 8 "
            "windows of OpenWebText).",
            autocompletion=complete_preset,
            show_default=False,
        ),
    ] = None,
    batch_size: Annotated[
        Optional[int],
        typer.Option(
            "--batch-size", min=1, help="Windows per batch.", show_default="the run's, or 12"
        ),
    ] = None,
    eval_iters: Annotated[
        Optional[int],
        typer.Option(
            "--eval-iters", min=1, help="Batches per split.", show_default="the run's, or 200"
        ),
    ] = None,
    block_size: Annotated[
        Optional[int],
        typer.Option(
            "--block-size", min=1, help="Window length in tokens.", show_default="the model's"
        ),
    ] = None,
    seed: Annotated[
        Optional[int],
        typer.Option(
            "--seed",
            help="Seed the windows are drawn from (the training run's gives its windows).",
            show_default="the run's, or 1337",
        ),
    ] = None,
    split: Annotated[
        Optional[list[str]],
        typer.Option("--split", help="Split to evaluate; repeatable.", show_default="train, val"),
    ] = None,
    meta: Annotated[
        Optional[Path],
        typer.Option(
            "--meta", help="nanoGPT meta.pkl with a ckpt.pt's vocabulary.", show_default=False
        ),
    ] = None,
    output: Annotated[
        Optional[Path],
        typer.Option(
            "--output",
            help="Where to write the results as JSON.",
            show_default="eval.json in the run directory, else ./eval-NAME.json",
        ),
    ] = None,
    device: MaybeDevice = None,
    dtype: MaybeDType = None,
    cpu_kernels: CpuKernels = None,
) -> None:
    """Evaluate a checkpoint or a GPT-2 size: loss, perplexity and bits per byte.

    Examples:
      nanogpt eval --checkpoint out-shakespeare-char
      nanogpt eval --init-from gpt2 --dataset shakespeare
      nanogpt eval --preset eval-gpt2
    """
    from ..errors import ConfigError
    from ..evaluate import evaluate as run_eval
    from .process import tune_process

    if checkpoint is not None and init_from is not None:
        raise ConfigError("give --checkpoint or --init-from, not both")
    source = checkpoint if checkpoint is not None else init_from
    if source is None and preset is not None:
        from ..config import preset_values

        source = preset_values(preset).get("init_from")
    if source is None or source == "scratch":
        raise ConfigError("nothing to evaluate: give --checkpoint PATH or --init-from NAME")
    path = output or _default_output(Path(str(source)))
    _check_output(path)  # before the evaluation, which can take long
    tune_process(device or "auto")
    report = run_eval(
        source,
        dataset=dataset,
        data_dir=data_dir,
        preset=preset,
        batch_size=batch_size,
        eval_iters=eval_iters,
        block_size=block_size,
        seed=seed,
        device=device,
        dtype=dtype,
        cpu_kernels=cpu_kernels,
        splits=tuple(split) if split else ("train", "val"),
        meta=meta,
    )
    _print_table(report)
    from ..safe_files import os_error_line, write_text

    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise ConfigError(os_error_line(e, path.parent, "--output", "creating")) from None
    write_text(path, json.dumps(report.to_dict(), indent=2) + "\n", ConfigError, "--output")
    from ..log import get_logger

    get_logger(__name__).info(f"wrote {path}")


def _check_output(path: Path) -> None:
    """Refuse an ``--output`` that cannot be written (a directory, a read-only place)."""
    import contextlib
    import errno
    import os

    from ..errors import ConfigError
    from ..safe_files import os_error_line

    try:
        if path.is_dir():
            raise ConfigError(
                f"--output {path} is a directory; give a file name, e.g. {path / 'eval.json'}"
            )
        folder = path.parent
        while not folder.exists() and folder != folder.parent:
            folder = folder.parent
        if not os.access(folder, os.W_OK | os.X_OK):
            code = errno.EACCES
            with contextlib.suppress(OSError, AttributeError):  # statvfs: POSIX only
                if os.statvfs(folder).f_flag & os.ST_RDONLY:
                    code = errno.EROFS
            raise OSError(code, os.strerror(code), str(path))
    except OSError as e:
        raise ConfigError(os_error_line(e, path, "--output")) from None


def _default_output(source: Path) -> Path:
    """``eval.json`` in a run directory of ours or nanoGPT's; elsewhere (a Hugging Face
    folder, a GPT-2 size) ``eval-NAME.json`` in the current directory, leaving the model's
    folder as it was."""
    from ..checkpoint import CONFIG_FILE, UNIFIED_FILE

    folder = source if source.is_dir() else source.parent
    if source.exists() and ((folder / CONFIG_FILE).is_file() or (folder / UNIFIED_FILE).is_file()):
        return folder / "eval.json"
    return Path(f"eval-{source.resolve().name if source.exists() else source.name}.json")


def _print_table(report: object) -> None:
    from rich.console import Console
    from rich.table import Table

    from ..evaluate import EvalReport, nanogpt_baseline

    assert isinstance(report, EvalReport)
    caption = (
        f"{report.eval_iters} x {report.batch_size} windows of {report.block_size} "
        f"tokens, seed {report.seed}, {report.device} {report.dtype}"
    )
    baseline = nanogpt_baseline(report.model, report.dataset)
    if baseline is not None:
        caption += f"; nanoGPT's README: train {baseline[1]:.2f}, val {baseline[2]:.2f}"
    table = Table(
        title=f"{report.model} on {report.dataset}",
        title_justify="left",
        caption=caption,
        caption_justify="left",
    )
    for column in ("split", "loss", "perplexity", "bits/byte", "tokens", "bytes"):
        table.add_column(column, justify="left" if column == "split" else "right")
    for split, r in report.splits.items():
        table.add_row(
            split,
            f"{r.loss:.4f}",
            f"{r.perplexity:.2f}",
            f"{r.bits_per_byte:.4f}",
            f"{r.tokens:,}",
            f"{r.bytes:,}",
        )
    Console().print(table)
