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
            "--batch-size",
            min=1,
            help="Windows per batch (with --tasks: requests, 16 by default).",
            show_default="the run's, or 12",
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
    tasks: Annotated[
        Optional[str],
        typer.Option(
            "--tasks",
            help="lm-evaluation-harness tasks, groups or tags, comma-separated (e.g. "
            "hellaswag,lambada_openai), instead of the loss evaluation; needs pip install "
            "'nanogpt-cli[eval]'.",
            show_default=False,
        ),
    ] = None,
    num_fewshot: Annotated[
        Optional[int],
        typer.Option(
            "--num-fewshot", min=0, help="Examples before each question.", show_default="the task's"
        ),
    ] = None,
    limit: Annotated[
        Optional[float],
        typer.Option(
            "--limit",
            min=0,
            help="Documents per task: the first N (below 1: that share); for quick checks.",
            show_default="all",
        ),
    ] = None,
    output_path: Annotated[
        Optional[Path],
        typer.Option(
            "--output-path",
            help="Where to write the --tasks results (the harness's JSON).",
            show_default="eval-tasks.json beside eval.json, else ./eval-tasks-NAME.json",
        ),
    ] = None,
    include_path: Annotated[
        Optional[Path],
        typer.Option(
            "--include-path",
            help="Folder of your own task YAML files for --tasks.",
            show_default=False,
        ),
    ] = None,
    device: MaybeDevice = None,
    dtype: MaybeDType = None,
    cpu_kernels: CpuKernels = None,
) -> None:
    """Evaluate a checkpoint or a GPT-2 size: loss, perplexity, bits per byte, or tasks.

    With --tasks, benchmark tasks instead (HellaSwag, LAMBADA, any lm-evaluation-harness
    task, or your own with --include-path).

    Examples:
      nanogpt eval --checkpoint out-shakespeare-char
      nanogpt eval --init-from gpt2 --dataset shakespeare
      nanogpt eval --preset eval-gpt2
      nanogpt eval --init-from gpt2 --tasks hellaswag,lambada_openai
    """
    from ..errors import ConfigError
    from .process import tune_process

    if checkpoint is not None and init_from is not None:
        raise ConfigError("give --checkpoint or --init-from, not both")
    source = checkpoint if checkpoint is not None else init_from
    if source is None and preset is not None:
        from ..config import preset_values

        source = preset_values(preset).get("init_from")
    if source is None or source == "scratch":
        raise ConfigError("nothing to evaluate: give --checkpoint PATH or --init-from NAME")
    task_options = {
        "--num-fewshot": num_fewshot,
        "--limit": limit,
        "--output-path": output_path,
        "--include-path": include_path,
    }
    if tasks is not None:
        loss_options = {
            "--dataset": dataset,
            "--eval-iters": eval_iters,
            "--block-size": block_size,
            "--seed": seed,
            "--split": split,
            "--output": output,
        }
        given = [flag for flag, value in loss_options.items() if value is not None]
        if given:
            raise ConfigError(
                f"{', '.join(given)} set the loss evaluation, not --tasks"
                + ("; use --output-path" if output is not None else "")
            )
        path = output_path or _default_output(Path(str(source)), "eval-tasks")
        _check_output(path, "--output-path")
        tune_process(device or "auto")
        _run_tasks(
            source,
            tasks,
            num_fewshot,
            limit,
            batch_size,
            path,
            include_path,
            device,
            dtype,
            meta,
            cpu_kernels,
        )
        return
    given = [flag for flag, value in task_options.items() if value is not None]
    if given:
        raise ConfigError(f"{', '.join(given)} go with --tasks")
    from ..evaluate import evaluate as run_eval

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


def _run_tasks(
    source: str | Path,
    tasks: str,
    num_fewshot: int | None,
    limit: float | None,
    batch_size: int | None,
    path: Path,
    include_path: Path | None,
    device: str | None,
    dtype: str | None,
    meta: Path | None,
    cpu_kernels: str | None,
) -> None:
    from ..log import get_logger
    from ..tasks import results_table, run_tasks  # the install hint, without lm_eval

    results = run_tasks(
        source,
        tasks,
        num_fewshot=num_fewshot,
        limit=limit,
        batch_size=batch_size,
        output_path=path,
        include_path=include_path,
        device=device,
        dtype=dtype,
        meta=meta,
        cpu_kernels=cpu_kernels,
    )
    typer.echo(results_table(results))
    get_logger(__name__).info(f"wrote {path}")


def _check_output(path: Path, flag: str = "--output") -> None:
    """Refuse an ``--output`` that cannot be written (a directory, a read-only place)."""
    import contextlib
    import errno
    import os

    from ..errors import ConfigError
    from ..safe_files import os_error_line

    try:
        if path.is_dir():
            raise ConfigError(
                f"{flag} {path} is a directory; give a file name, e.g. {path / 'eval.json'}"
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
        raise ConfigError(os_error_line(e, path, flag)) from None


def _default_output(source: Path, stem: str = "eval") -> Path:
    """``eval.json`` (``STEM.json``) in a run directory of ours or nanoGPT's; elsewhere (a
    Hugging Face folder, a GPT-2 size) ``eval-NAME.json`` in the current directory, leaving
    the model's folder as it was."""
    from ..checkpoint import CONFIG_FILE, UNIFIED_FILE

    folder = source if source.is_dir() else source.parent
    if source.exists() and ((folder / CONFIG_FILE).is_file() or (folder / UNIFIED_FILE).is_file()):
        return folder / f"{stem}.json"
    return Path(f"{stem}-{source.resolve().name if source.exists() else source.name}.json")


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
