"""``nanogpt prepare``: download and tokenize datasets."""

from __future__ import annotations

from typing import Annotated, Optional

import typer

from .options import DataDir

app = typer.Typer(
    help="Download and tokenize a dataset into train.bin / val.bin + meta.json.",
    no_args_is_help=True,
)


@app.command("shakespeare-char")
def shakespeare_char(
    source: Annotated[
        Optional[str],
        typer.Option(
            "--source",
            help="Local file or URL of the corpus; default: download tinyshakespeare once "
            "into the user cache.",
            show_default="tinyshakespeare from karpathy/char-rnn",
        ),
    ] = None,
    data_dir: DataDir = None,
    force: Annotated[
        bool, typer.Option("--force", help="Rebuild even if already prepared from this source.")
    ] = False,
) -> None:
    """Tinyshakespeare, one token per character (nanoGPT's shakespeare_char).

    Example: nanogpt prepare shakespeare-char --source input.txt
    """
    from ..data.prepare import prepare_shakespeare_char
    from ..log import logger

    result = prepare_shakespeare_char(source=source, data_dir=data_dir, force=force)
    if not result.skipped:
        logger.info(
            f"prepared {result.name} in {result.path}: {result.train_tokens:,} train and "
            f"{result.val_tokens:,} val tokens, vocab {result.vocab_size} "
            f"({result.seconds:.2f} s)"
        )
    logger.info("next: nanogpt train --preset shakespeare-char")
