"""``nanogpt sample``: generate text from a trained model."""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Annotated, Optional

import typer

from ..config import DEFAULT_PRESET, preset_values
from ..errors import ConfigError
from .complete import complete_checkpoint
from .options import CheckpointPath, CpuKernels, Device, DType, InitFrom, MetaPath

DEFAULT_OUT_DIR = preset_values(DEFAULT_PRESET)["out_dir"]
DEFAULT_TOP_K = 200


def sample(
    out_dir: Annotated[
        Path,
        typer.Option(
            "--out-dir",
            help="Run directory whose checkpoint to load.",
            autocompletion=complete_checkpoint,
        ),
    ] = Path(DEFAULT_OUT_DIR),
    checkpoint: CheckpointPath = None,
    init_from: InitFrom = None,
    meta: MetaPath = None,
    start: Annotated[
        str,
        typer.Option(
            "--start",
            help="Prompt text; FILE:path reads it from a file, - from standard input.",
            show_default="a newline",
        ),
    ] = "\n",
    num_samples: Annotated[int, typer.Option("--num-samples", help="Samples to draw.")] = 1,
    max_new_tokens: Annotated[
        int, typer.Option("--max-new-tokens", help="Tokens to generate per sample.")
    ] = 500,
    temperature: Annotated[
        float,
        typer.Option("--temperature", help="Sampling temperature; 0 is greedy (deterministic)."),
    ] = 0.8,
    top_k: Annotated[
        Optional[int],
        typer.Option(
            "--top-k",
            help="Sample from the k most likely tokens only.",
            show_default=f"{DEFAULT_TOP_K}, capped at the vocabulary size",
        ),
    ] = None,
    top_p: Annotated[
        Optional[float],
        typer.Option(
            "--top-p",
            help="Nucleus sampling: keep the most likely tokens whose probabilities add up to "
            "this (0 < p <= 1).",
            show_default="off",
        ),
    ] = None,
    min_p: Annotated[
        Optional[float],
        typer.Option(
            "--min-p",
            help="Drop tokens less likely than this times the most likely token (0 to 1).",
            show_default="off",
        ),
    ] = None,
    repetition_penalty: Annotated[
        float,
        typer.Option(
            "--repetition-penalty",
            help="Penalise every token already in the text, the prompt's too (CTRL's, as "
            "transformers: > 1 repeats less; 1 is none; applies at --temperature 0 too).",
        ),
    ] = 1.0,
    stop: Annotated[
        Optional[list[str]],
        typer.Option(
            "--stop",
            help="End a sample at this text, which is not printed (repeatable; each sample of "
            "a batch ends on its own); \\n stands for a newline.",
            show_default="none",
        ),
    ] = None,
    max_time: Annotated[
        Optional[float],
        typer.Option(
            "--max-time",
            help="Stop generating after this many seconds and print what is there (checked "
            "after each token: at least one comes).",
            show_default="no limit",
        ),
    ] = None,
    seed: Annotated[int, typer.Option("--seed", help="Random seed.")] = 1337,
    interactive: Annotated[
        bool,
        typer.Option(
            "--interactive",
            help="A prompt loop: each line is a prompt, its continuation streams back; "
            "/temperature 0.5-style commands change the settings (/help); Ctrl-C stops a "
            "generation, Ctrl-D leaves.",
            show_default="off",
        ),
    ] = False,
    device: Device = "auto",
    dtype: DType = "auto",
    kv_cache: Annotated[
        bool,
        typer.Option(
            "--kv-cache/--no-kv-cache", help="Cache keys and values (much faster; same output)."
        ),
    ] = True,
    compile: Annotated[
        Optional[bool],
        typer.Option(
            "--compile/--no-compile",
            help="Decode with a compiled fixed-shape step (a CUDA graph on GPUs); the first "
            "tokens wait for the compilation.",
            show_default="auto: on CUDA, off elsewhere",
        ),
    ] = None,
    window_stride: Annotated[
        Optional[int],
        typer.Option(
            "--window-stride",
            help="Past block_size tokens, move the context window by this many tokens "
            "(1: nanoGPT's sliding window, slowest).",
            show_default="block_size / 4",
        ),
    ] = None,
    cpu_kernels: CpuKernels = None,
) -> None:
    """Generate text from a checkpoint, streamed to stdout.

    Examples:
      nanogpt sample
      nanogpt sample --start "ROMEO:" --temperature 0 --max-new-tokens 200
      nanogpt sample --checkpoint out-shakespeare-char --start FILE:prompt.txt
      echo "ROMEO:" | nanogpt sample --start -
      nanogpt sample --checkpoint nanoGPT/out/ckpt.pt --meta nanoGPT/data/shakespeare_char/meta.pkl
      nanogpt sample --init-from gpt2-xl --start "What is the answer to life?"
      nanogpt sample --top-p 0.9 --repetition-penalty 1.2 --stop "\\n\\n"
      nanogpt sample --interactive
    """
    from ..log import get_logger
    from ..progress import progress
    from ..runtime import use_compile
    from ..sample import Sampler, check_ending, check_sampling
    from ..sampling import SamplingSettings, unescape
    from .process import tune_process

    if interactive and (start != "\n" or num_samples != 1):
        raise ConfigError(
            "--interactive reads its prompts at its own prompt, one sample each; drop --start "
            "and --num-samples"
        )
    prompt = "" if interactive else _read_prompt(start)
    if checkpoint is not None and init_from is not None:
        raise ConfigError("give --checkpoint or --init-from, not both")
    stops = tuple(unescape(s) for s in stop or ())
    settings = SamplingSettings(
        temperature, DEFAULT_TOP_K if top_k is None else top_k, top_p, min_p, repetition_penalty
    )
    # before the model is loaded
    check_sampling(temperature, top_k, num_samples, max_new_tokens, seed)
    settings.check()
    check_ending(stops, max_time)
    source = checkpoint or init_from or out_dir
    tune_process(device)
    sampler = Sampler.from_checkpoint(
        source, device=device, dtype=dtype, meta=meta, cpu_kernels=cpu_kernels
    )
    vocab = sampler.tokenizer.vocab_size
    if top_k is not None and top_k > vocab:
        raise ConfigError(f"--top-k {top_k} is larger than the vocabulary ({vocab} tokens)")
    options = dict(
        use_cache=kv_cache,
        window_stride=window_stride,
        # auto compiles only with the cache; an explicit --compile --no-kv-cache is an error
        compile=use_compile(compile, sampler.device) and (kv_cache or compile is True),
    )
    if interactive:
        from ..interactive import Session, history_path, prompt_loop

        session = Session(settings, max_new_tokens, seed, stops, max_time, sampler.device)
        prompt_loop(sampler, session, history=history_path(), **options)
        return
    stream = sampler.stream_text(
        prompt,
        max_new_tokens,
        num_samples=num_samples,
        settings=settings,
        seed=seed,
        stop=stops,
        max_time=max_time,
        **options,
    )
    # The first sample streams as it is generated; the others of the batch follow it.
    typer.echo(prompt, nl=False)
    start_time, first_token, generated = time.perf_counter(), None, 0
    # The text itself shows the progress on a terminal; a bar only when it goes to a file.
    with progress(
        "sample", max_new_tokens, "tokens", every=None, show=not sys.stdout.isatty()
    ) as bar:
        for pieces in stream:
            first_token = first_token or time.perf_counter()
            typer.echo(pieces[0], nl=False)
            if generated < max(s.tokens for s in stream.samples):
                generated += 1
                bar.advance()
    typer.echo("")
    seconds = time.perf_counter() - start_time
    logger = get_logger(__name__)
    if stream.timed_out:
        per = f"{generated} token{'s' if generated != 1 else ''}"
        logger.info(f"stopped after --max-time {max_time:g} s, at {per} per sample")
    if generated:
        assert first_token is not None
        total = sum(s.tokens for s in stream.samples)
        rate = total / seconds
        what = f"{num_samples} samples x {generated}" if num_samples > 1 else f"{generated}"
        logger.info(
            f"{what} tokens in {seconds:.2f} s ({rate:,.0f} tokens/s, first after "
            f"{(first_token - start_time) * 1000:.0f} ms)",
            tokens=total,
            seconds=seconds,
            tokens_per_s=rate,
        )
    for kept in stream.samples[1:]:
        typer.echo("---------------")
        typer.echo(prompt + kept.text)


def _read_prompt(start: str) -> str:
    """--start's prompt: the text given, a file's (FILE:path), or standard input's (-).
    The library takes the text; where it comes from is the command line's business."""
    if start == "-":
        return _read_stdin()
    if not start.startswith("FILE:"):
        return start
    path = Path(start[len("FILE:") :]).expanduser()
    try:
        return path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"--start {start}: {path} does not exist") from None
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError(f"--start {start}: cannot read {path}: {e}") from None


def _read_stdin() -> str:
    """The whole of standard input, as UTF-8 text (the prompt of ``--start -``)."""
    if sys.stdin is None:
        raise ConfigError("--start -: there is no standard input; give the prompt as text")
    if sys.stdin.isatty():
        from ..log import get_logger

        get_logger(__name__).info("reading the prompt from standard input (end it with Ctrl-D)")
    data = sys.stdin.buffer.read() if hasattr(sys.stdin, "buffer") else sys.stdin.read()
    if isinstance(data, str):
        return data
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise ConfigError(f"--start -: standard input is not UTF-8 text ({e})") from None
