"""``nanogpt prepare``: download and tokenize datasets."""

from __future__ import annotations

from enum import Enum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Optional

import typer

from .options import DataDir, command

if TYPE_CHECKING:
    from ..data.build import PrepareResult

app = typer.Typer(
    help="Download and tokenize a dataset into train.bin / val.bin + meta.json.",
    no_args_is_help=True,
)


class TokenizerChoice(str, Enum):
    gpt2 = "gpt2"
    char = "char"


class ValFromChoice(str, Enum):
    auto = "auto"
    end = "end"
    random = "random"


Force = Annotated[
    bool, typer.Option("--force", help="Rebuild even if already prepared from the same inputs.")
]
Source = Annotated[
    Optional[str],
    typer.Option(
        "--source",
        help="Local file or URL of the corpus; default: download tinyshakespeare once "
        "into the user cache.",
        show_default="tinyshakespeare from karpathy/char-rnn",
    ),
]
NumProc = Annotated[
    Optional[int],
    typer.Option(
        "--num-proc",
        min=1,
        max=1024,
        help="Tokenizer worker processes.",
        show_default="CPU cores, at most 8",
    ),
]
Name = Annotated[
    Optional[str],
    typer.Option(
        "--name",
        help="Dataset name (its folder under the data directory).",
        show_default="from the input's name",
    ),
]
Tokenizer = Annotated[
    TokenizerChoice,
    typer.Option("--tokenizer", help="gpt2 (tiktoken's GPT-2 BPE) or char (one per character)."),
]
ValFraction = Annotated[
    float, typer.Option("--val-fraction", help="Share of the corpus held out for validation.")
]
Separator = Annotated[
    str,
    typer.Option(
        "--separator",
        help="Appended after every document: auto (<|endoftext|> for gpt2, a blank line for "
        "char), none, or any text (\\n for a newline).",
    ),
]
Seed = Annotated[
    int, typer.Option("--seed", min=0, max=2**63 - 1, help="Seed of the random val split.")
]


def _next(command: str, data_dir: Path | None) -> str:
    """A command to run next, on the data directory just written to."""
    import shlex

    return f"{command} --data-dir {shlex.quote(str(data_dir))}" if data_dir else command


def _report(result: PrepareResult, next_step: str) -> None:
    from rich.table import Table

    from ..log import get_logger

    logger = get_logger(__name__)
    table = Table(title=f"{result.name} in {result.path}", title_justify="left")
    for column in ("split", "documents", "tokens", "text bytes", "file"):
        table.add_column(column, justify="left" if column in ("split", "file") else "right")
    for split, stats in result.splits.items():
        table.add_row(
            split,
            f"{stats.documents:,}",
            f"{stats.tokens:,}",
            f"{stats.bytes:,}",
            f"{split}.bin",
        )
    logger.table(table, dataset=result.name, path=str(result.path))
    seconds = "skipped" if result.skipped else f"{result.seconds:.2f} s"
    logger.info(
        f"tokenizer {result.tokenizer}, vocab {result.vocab_size:,}, "
        f"{len(result.files)} files, time {seconds}",
        vocab_size=result.vocab_size,
        seconds=None if result.skipped else result.seconds,
    )
    logger.info(f"next: {next_step}")


@command(app, "shakespeare-char")
def shakespeare_char(source: Source = None, data_dir: DataDir = None, force: Force = False) -> None:
    """Tinyshakespeare, one token per character (nanoGPT's shakespeare_char).

    Example: nanogpt prepare shakespeare-char --source input.txt
    """
    from ..data.prepare import prepare_shakespeare_char

    result = prepare_shakespeare_char(source=source, data_dir=data_dir, force=force)
    train, cpu = "nanogpt train", "nanogpt train --preset shakespeare-char-cpu"
    _report(result, f"{_next(train, data_dir)} (on a CPU: {_next(cpu, data_dir)})")


@command(app, "shakespeare")
def shakespeare(source: Source = None, data_dir: DataDir = None, force: Force = False) -> None:
    """Tinyshakespeare with GPT-2's BPE (nanoGPT's shakespeare), 90/10 split.

    Example: nanogpt prepare shakespeare --source input.txt
    """
    from ..data.prepare import prepare_shakespeare

    result = prepare_shakespeare(source=source, data_dir=data_dir, force=force)
    _report(result, _next("nanogpt finetune --dataset shakespeare", data_dir))


@command(app, "text")
def text(
    paths: Annotated[
        list[str],
        typer.Argument(help="Text files, JSONL files or directories (searched recursively)."),
    ],
    name: Name = None,
    tokenizer: Tokenizer = TokenizerChoice.gpt2,
    val_fraction: ValFraction = 0.1,
    val_from: Annotated[
        ValFromChoice,
        typer.Option(
            "--val-from",
            help="Where the val split comes from: end (the last part of the text), random "
            "(seeded random documents), auto (random when any input is JSONL, else end).",
        ),
    ] = ValFromChoice.auto,
    separator: Separator = "auto",
    glob: Annotated[
        str, typer.Option("--glob", help="File name pattern searched for in directories.")
    ] = "*.txt",
    text_field: Annotated[
        str, typer.Option("--text-field", help="Field of each JSONL object that holds the text.")
    ] = "text",
    seed: Seed = 2357,
    num_proc: NumProc = None,
    data_dir: DataDir = None,
    force: Force = False,
) -> None:
    """Your own text: files, directories and JSONL (one document per line).

    Example: nanogpt prepare text notes/ books/*.txt --name mybooks
    """
    from ..data.prepare import default_num_proc, prepare_text

    result = prepare_text(
        paths,
        name=name,
        tokenizer=tokenizer.value,
        val_fraction=val_fraction,
        val_from=val_from.value,
        separator=separator,
        glob=glob,
        text_field=text_field,
        seed=seed,
        num_proc=num_proc or default_num_proc(),
        data_dir=data_dir,
        force=force,
    )
    _report(result, _next(f"nanogpt train --dataset {result.name}", data_dir))


@command(app, "hf")
def hf(
    source: Annotated[
        str,
        typer.Argument(
            help="Hugging Face dataset: a hub name, a local dataset folder, or a builder "
            "(json, text, parquet, csv) with --data-files."
        ),
    ],
    data_files: Annotated[
        Optional[list[str]],
        typer.Option("--data-files", help="Files for a builder such as json; repeatable."),
    ] = None,
    config_name: Annotated[
        Optional[str], typer.Option("--config-name", help="The dataset's configuration.")
    ] = None,
    split: Annotated[str, typer.Option("--split", help="Split to read.")] = "train",
    val_split: Annotated[
        Optional[str],
        typer.Option(
            "--val-split",
            help="Split to use for validation instead of holding out --val-fraction of --split.",
        ),
    ] = None,
    text_column: Annotated[
        str, typer.Option("--text-column", help="Column that holds the text.")
    ] = "text",
    name: Name = None,
    tokenizer: Tokenizer = TokenizerChoice.gpt2,
    val_fraction: ValFraction = 0.1,
    separator: Separator = "auto",
    seed: Seed = 2357,
    num_proc: NumProc = None,
    data_dir: DataDir = None,
    force: Force = False,
) -> None:
    """Any Hugging Face dataset, from the hub or local files.

    Example: nanogpt prepare hf json --data-files articles.jsonl --name wiki
    """
    from ..data.prepare import default_num_proc, prepare_hf

    result = prepare_hf(
        source,
        name=name,
        config_name=config_name,
        split=split,
        val_split=val_split,
        data_files=data_files,
        text_column=text_column,
        tokenizer=tokenizer.value,
        val_fraction=val_fraction,
        seed=seed,
        separator=separator,
        num_proc=num_proc or default_num_proc(),
        data_dir=data_dir,
        force=force,
    )
    _report(result, _next(f"nanogpt train --dataset {result.name}", data_dir))


@command(app, "openwebtext")
def openwebtext(
    source: Annotated[
        str,
        typer.Option(
            "--source", help="Hub name or local copy of the dataset (a folder or save_to_disk)."
        ),
    ] = "openwebtext",
    num_proc: NumProc = None,
    data_dir: DataDir = None,
    force: Force = False,
) -> None:
    """OpenWebText with GPT-2's BPE, nanoGPT's recipe (0.0005 val split, seed 2357).

    Downloads about 55 GB into the Hugging Face cache and writes about 17 GB of tokens.
    """
    from ..data.prepare import default_num_proc, prepare_openwebtext

    result = prepare_openwebtext(
        source, num_proc=num_proc or default_num_proc(), data_dir=data_dir, force=force
    )
    _report(result, _next("nanogpt train --preset gpt2-124m", data_dir))
