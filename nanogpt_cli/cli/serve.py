"""``nanogpt serve``: a checkpoint behind an OpenAI-compatible HTTP API."""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Annotated, Optional

import typer

from ..config import DEFAULT_PRESET, preset_values
from ..errors import ConfigError
from ..serve.server import API_KEY_ENV, DEFAULT_HOST, DEFAULT_PORT
from .complete import complete_checkpoint
from .options import CheckpointPath, CpuKernels, Device, DType, InitFrom, MetaPath

DEFAULT_OUT_DIR = preset_values(DEFAULT_PRESET)["out_dir"]


def serve(
    out_dir: Annotated[
        Path,
        typer.Option(
            "--out-dir",
            help="Run directory whose checkpoint to serve.",
            autocompletion=complete_checkpoint,
        ),
    ] = Path(DEFAULT_OUT_DIR),
    checkpoint: CheckpointPath = None,
    init_from: InitFrom = None,
    meta: MetaPath = None,
    host: Annotated[
        str,
        typer.Option(
            "--host",
            help="Address to listen on; 0.0.0.0 (all interfaces) makes it reachable from "
            "other machines: set --api-key then.",
        ),
    ] = DEFAULT_HOST,
    port: Annotated[
        int, typer.Option("--port", help="Port to listen on; 0 picks a free one.")
    ] = DEFAULT_PORT,
    device: Device = "auto",
    dtype: DType = "auto",
    max_batch: Annotated[
        int,
        typer.Option(
            "--max-batch",
            help="Sequences decoded together; requests beyond it wait in the queue.",
        ),
    ] = 16,
    max_queue: Annotated[
        int,
        typer.Option(
            "--max-queue",
            help="Requests that may wait for a free sequence slot; beyond them the server "
            "answers 503 with Retry-After.",
        ),
    ] = 64,
    max_tokens_cap: Annotated[
        Optional[int],
        typer.Option(
            "--max-tokens-cap",
            help="Largest max_tokens a request may ask for (at most the block size).",
            show_default="the model's block size",
        ),
    ] = None,
    max_n: Annotated[
        int,
        typer.Option(
            "--max-n",
            help="Most completions per request (n x prompts); at most --max-batch.",
        ),
    ] = 16,
    api_key: Annotated[
        Optional[str],
        typer.Option(
            "--api-key",
            help="Require 'Authorization: Bearer KEY' on the API (not on /health). Env: "
            f"{API_KEY_ENV}.",
            envvar=API_KEY_ENV,
            show_default=False,
        ),
    ] = None,
    model_name: Annotated[
        Optional[str],
        typer.Option(
            "--model-name",
            help="The model's name in /v1/models and in responses.",
            show_default="the checkpoint directory's name",
        ),
    ] = None,
    cpu_kernels: CpuKernels = None,
) -> None:
    """Serve a checkpoint over HTTP with OpenAI's completions API.

    POST /v1/completions (streamed or not), GET /v1/models and GET /health; requests that
    arrive while others decode join the running batch. Needs the serve extra:
    pip install 'nanogpt-cli[serve]'. See docs/serving.md.

    Examples:
      nanogpt serve
      nanogpt serve --checkpoint out-shakespeare-char --port 8080
      nanogpt serve --init-from gpt2 --max-batch 8
      NANOGPT_API_KEY=secret nanogpt serve --host 0.0.0.0
    """
    from ..serve.server import ServeOptions
    from ..serve.server import serve as run_server
    from .process import tune_process

    if checkpoint is not None and init_from is not None:
        raise ConfigError("give --checkpoint or --init-from, not both")
    options = ServeOptions(
        host=host,
        port=port,
        max_batch=max_batch,
        max_queue=max_queue,
        max_tokens_cap=max_tokens_cap,
        max_n=max_n,
        api_key=api_key,
        model_name=model_name,
    )
    options.check()  # before the checkpoint is read
    tune_process(device)
    # Ctrl-C is how a server is stopped: not an error
    with contextlib.suppress(KeyboardInterrupt):
        run_server(
            checkpoint or init_from or out_dir,
            options,
            device=device,
            dtype=dtype,
            meta=meta,
            cpu_kernels=cpu_kernels,
        )
