"""``nanogpt convert-checkpoint`` (alias ``convert``): move checkpoints between formats."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any, Optional

import typer

from ..errors import CheckpointError
from .complete import complete_checkpoint
from .options import ExportDType, command

app = typer.Typer(
    help="Convert checkpoints between formats (unified ckpt.pt, separated, model-only, "
    "Hugging Face) and describe them. Alias: nanogpt convert.",
    no_args_is_help=True,
)

Src = Annotated[
    Path,
    typer.Argument(
        help="Source checkpoint: a directory or a file.", autocompletion=complete_checkpoint
    ),
]
Dst = Annotated[Path, typer.Argument(help="Destination directory (or .pt file for unified).")]
Verify = Annotated[
    bool,
    typer.Option("--verify", help="Load both sides and compare their logits on a fixed input."),
]
Force = Annotated[
    bool, typer.Option("--force", help="Replace a checkpoint already at the destination.")
]
Meta = Annotated[
    Optional[Path],
    typer.Option(
        "--meta",
        help="nanoGPT meta.pkl with the character vocabulary (for a ckpt.pt without one "
        "beside it).",
        show_default=False,
    ),
]
# Verification fails above this difference where both sides hold the same float32 weights.
FP32_TOLERANCE = 1e-4


def _run(
    src: str | Path,
    dst: Path,
    to: str,
    *,
    source_format: str | None = None,
    dtype: str | None = None,
    meta: Path | None = None,
    verify: bool = False,
    force: bool = False,
) -> None:
    from ..checkpoint import convert_checkpoint

    result = convert_checkpoint(
        src,
        dst,
        to,
        source_format=source_format,
        dtype=dtype,
        meta=meta,
        verify=verify,
        force=force,
    )
    typer.echo(f"read {result.source.format} checkpoint {result.source.path}")
    typer.echo(f"wrote {result.format} checkpoint {result.dst}:")
    for path in result.files:
        typer.echo(f"  {path.name:<28} {_size(path.stat().st_size):>10}")
    for note in result.notes:
        typer.echo(f"note: {note}")
    if result.max_abs_diff is not None:
        reader = f" (target run as {result.verified_as})" if result.verified_as else ""
        typer.echo(f"verify: max abs logit difference {result.max_abs_diff:.3g}{reader}")
        checked = result.max_abs_diff
        if result.file_diff is not None:
            # A unified export: the activation's share of the difference is expected (the
            # warning above says so); the file's own share must be float32-exact.
            checked = result.file_diff
            if result.file_diff != result.max_abs_diff:
                typer.echo(
                    f"verify: max abs logit difference {result.file_diff:.3g} apart from the "
                    "activation (source weights under exact GELU too; nanogpt's own loader)"
                )
        exact = dtype in (None, "float32")
        if exact and not checked <= FP32_TOLERANCE:
            raise CheckpointError(
                f"verification failed: logits differ by {checked:.3g} "
                f"(more than {FP32_TOLERANCE:g})"
            )


def _size(n: int) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024  # type: ignore[assignment]
    return str(n)


@command(app, "unified-to-separated")
def unified_to_separated(
    src: Src, dst: Dst, verify: Verify = False, force: Force = False, meta: Meta = None
) -> None:
    """Split a unified ckpt.pt (nanoGPT's or ours) into a separated checkpoint.

    Writes model.safetensors, optimizer.pt and checkpoint.json into DST.
    """
    _run(src, dst, "separated", source_format="unified", meta=meta, verify=verify, force=force)


@command(app, "separated-to-unified")
def separated_to_unified(src: Src, dst: Dst, verify: Verify = False, force: Force = False) -> None:
    """Join a separated checkpoint into one nanoGPT-compatible ckpt.pt.

    nanoGPT's sample.py and train.py --init_from=resume read it; a character vocabulary
    goes into a meta.pkl beside it.
    """
    _run(src, dst, "unified", source_format="separated", verify=verify, force=force)


@command(app, "to-model-only")
def to_model_only(
    src: Src,
    dst: Dst,
    dtype: ExportDType = "fp32",
    verify: Verify = False,
    force: Force = False,
    meta: Meta = None,
) -> None:
    """Export the weights alone, ready for inference.

    model.safetensors + checkpoint.json: a third of a unified checkpoint's size in fp32, a
    sixth in bf16.
    """
    _run(src, dst, "model-only", dtype=dtype, meta=meta, verify=verify, force=force)


@command(app, "to-hf")
def to_hf(
    src: Src, dst: Dst, verify: Verify = False, force: Force = False, meta: Meta = None
) -> None:
    """Export a Hugging Face transformers folder: GPT-2, or Llama for RoPE + RMSNorm + SwiGLU.

    AutoModelForCausalLM.from_pretrained(DST) loads it as it is; tokenizer files are
    written where they can be had. Options neither architecture computes are refused.
    """
    _run(src, dst, "huggingface", meta=meta, verify=verify, force=force)


@command(app, "from-hf")
def from_hf(
    src: Annotated[
        str,
        typer.Argument(help="Hugging Face GPT-2 or Llama folder, or hub id (e.g. gpt2)."),
    ],
    dst: Dst,
    dtype: ExportDType = "fp32",
    verify: Verify = False,
    force: Force = False,
) -> None:
    """Import a Hugging Face GPT-2 or Llama model as a model-only checkpoint."""
    _run(
        src,
        dst,
        "model-only",
        source_format="huggingface",
        dtype=dtype,
        verify=verify,
        force=force,
    )


@command(app, "info")
def info(
    path: Annotated[
        Path,
        typer.Argument(
            help="Checkpoint directory or file, any format.", autocompletion=complete_checkpoint
        ),
    ],
    meta: Meta = None,
    as_json: Annotated[
        bool,
        typer.Option(
            "--json", help="Print JSON instead of text (keys: written_by, best_val_loss, ...)."
        ),
    ] = False,
) -> None:
    """Format, parameter count, model config, dtype, iteration, best val loss and file sizes."""
    from ..checkpoint import checkpoint_info

    data = checkpoint_info(path, meta=meta)
    if as_json:
        typer.echo(json.dumps(data, indent=2))
        return
    for key, value in data.items():
        if key == "files":
            typer.echo("files:")
            for name, size in value.items():
                typer.echo(f"  {name}  {_size(size)} ({size:,} bytes)")
        elif key == "model":
            typer.echo("model: " + ", ".join(f"{k}={v}" for k, v in value.items()))
        elif key == "notes":
            for note in value:
                typer.echo(f"note: {note}")
        else:  # written_by: "written by"
            typer.echo(f"{key.replace('_', ' ')}: {_format_value(key, value)}")


def _format_value(key: str, value: Any) -> str:
    if value is None:
        return "n/a"
    if key == "parameters":
        return f"{value:,} ({value / 1e6:.2f}M)"
    if isinstance(value, float):
        return f"{value:.4f}"
    return str(value)
