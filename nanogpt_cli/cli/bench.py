"""``nanogpt bench``: time the training step, generation (``bench sample``) and the batch
loader (``bench data``) on this machine."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any, Optional

import typer

from .complete import complete_checkpoint, complete_dataset, complete_init_from
from .options import (
    ConfigFile,
    CpuKernels,
    DataDir,
    Device,
    DType,
    Preset,
    command,
    with_output_options,
    with_training_options,
)

app = typer.Typer(
    help="Time the training step (nanogpt bench), generation (bench sample) and the batch "
    "loader (bench data).",
)

Json = Annotated[bool, typer.Option("--json", help="Print the result as JSON.")]
Steps = Annotated[int, typer.Option("--steps", min=1, help="Timed steps (the median is kept).")]
Warmup = Annotated[
    int, typer.Option("--warmup", min=1, help="Untimed steps first (compilation happens here).")
]
PeakTflops = Annotated[
    Optional[float],
    typer.Option(
        "--peak-tflops",
        help="The device's peak TFLOP/s for MFU.",
        show_default="from a table of GPUs; n/a elsewhere",
    ),
]


def bench_train(
    ctx: typer.Context,
    preset: Preset = None,
    config: ConfigFile = None,
    steps: Steps = 20,
    warmup: Warmup = 3,
    data: Annotated[
        str,
        typer.Option("--data", help="synthetic (random tokens) or real (the --dataset, prepared)."),
    ] = "synthetic",
    peak_tflops: PeakTflops = None,
    profile: Annotated[
        Optional[Path],
        typer.Option(
            "--profile",
            help="Write a torch.profiler trace (Chrome/Perfetto JSON) of 3 more steps here "
            "and show the top operators.",
            show_default=False,
        ),
    ] = None,
    as_json: Json = False,
    **options: Any,
) -> None:
    """Time the training step of a preset's model (or of any training options).

    Reports ms per step (median and spread), tokens/s, MFU against the device's peak, the
    step's floor (its FLOPs at the rate this machine reaches on one large matmul), the
    compile time, and peak memory.

    Examples:
      nanogpt bench --preset shakespeare-char-cpu
      nanogpt bench --preset gpt2-124m --block-size 256 --gradient-accumulation-steps 1
      nanogpt bench --preset gpt2-124m --compile --peak-tflops 989 --json
    """
    if ctx.invoked_subcommand is not None:
        return
    from ..bench import bench_train as run
    from ..config import build_config
    from .process import tune_process

    cfg = build_config(preset or "shakespeare-char", config, options)
    tune_process(cfg.system.device)
    result = run(
        cfg, steps=steps, warmup=warmup, data=data, peak_tflops=peak_tflops, profile=profile
    )
    if as_json:
        typer.echo(json.dumps(result.to_dict(), indent=2))
        return
    _print_train(result)


app.callback(invoke_without_command=True)(with_output_options(with_training_options(bench_train)))


@command(app, "sample")
def bench_sample(
    preset: Preset = None,
    checkpoint: Annotated[
        Optional[Path],
        typer.Option(
            "--checkpoint",
            help="A checkpoint to time; default: random weights of the --preset's shape.",
            autocompletion=complete_checkpoint,
            show_default=False,
        ),
    ] = None,
    init_from: Annotated[
        Optional[str],
        typer.Option(
            "--init-from",
            help="A GPT-2 size or path to time instead.",
            autocompletion=complete_init_from,
            show_default=False,
        ),
    ] = None,
    batch_size: Annotated[
        int, typer.Option("--batch-size", min=1, help="Sequences generated at once.")
    ] = 1,
    new_tokens: Annotated[
        int, typer.Option("--new-tokens", min=1, help="Tokens generated per sequence.")
    ] = 300,
    prompt_tokens: Annotated[
        int, typer.Option("--prompt-tokens", min=1, help="Prompt length in tokens.")
    ] = 1,
    repeats: Annotated[int, typer.Option("--repeats", min=1, help="Runs (median kept).")] = 3,
    kv_cache: Annotated[
        bool, typer.Option("--kv-cache/--no-kv-cache", help="Decode with the KV cache.")
    ] = True,
    compile: Annotated[
        bool,
        typer.Option(
            "--compile/--no-compile",
            help="Decode with the compiled fixed-shape step (compiled in an untimed run).",
        ),
    ] = False,
    device: Device = "auto",
    dtype: DType = "auto",
    cpu_kernels: CpuKernels = None,
    as_json: Json = False,
) -> None:
    """Time generation: time to the first token and tokens per second.

    Examples:
      nanogpt bench sample --preset gpt2-124m --batch-size 8
      nanogpt bench sample --checkpoint out-shakespeare-char --new-tokens 500
    """
    from ..bench import bench_sample as run
    from ..bench import random_model
    from ..config import build_config
    from ..errors import ConfigError
    from .process import tune_process

    if checkpoint is not None and init_from is not None:
        raise ConfigError("give --checkpoint or --init-from, not both")
    source = checkpoint or init_from
    tune_process(device)
    if source is not None:
        from ..sample import Sampler

        sampler = Sampler.from_checkpoint(source, device, dtype, cpu_kernels=cpu_kernels)
        model = sampler.model
    else:
        cfg = build_config(preset or "shakespeare-char", overrides={"cpu_kernels": cpu_kernels})
        model = random_model(cfg, device, dtype)
    result = run(
        model,
        batch_size=batch_size,
        new_tokens=new_tokens,
        prompt_tokens=prompt_tokens,
        repeats=repeats,
        use_cache=kv_cache,
        compile=compile,
    )
    if as_json:
        typer.echo(json.dumps(result.to_dict(), indent=2))
        return
    first, decode = result.first_token_ms, result.decode_tokens_per_s
    total = result.total_tokens_per_s
    _print_rows(
        f"generation, {result.params / 1e6:.2f}M parameters",
        [
            (
                "device",
                f"{result.device} {result.dtype}, KV cache {'on' if kv_cache else 'off'}"
                + (f", compiled in {result.compile_s:.1f} s" if result.compile_s else ""),
            ),
            ("batch", f"{batch_size} x {new_tokens} new tokens, prompt {prompt_tokens}"),
            ("first token", f"{first.median:.1f} ms ({first.min:.1f}-{first.max:.1f})"),
            ("decoding", f"{decode.median:,.0f} tokens/s ({decode.min:,.0f}-{decode.max:,.0f})"),
            ("overall", f"{total.median:,.0f} tokens/s, {result.seconds.median:.2f} s per run"),
            ("runs", str(result.seconds.n)),
        ],
    )


@command(app, "data")
def bench_data(
    dataset: Annotated[
        str,
        typer.Option(
            "--dataset", help="Prepared dataset to read.", autocompletion=complete_dataset
        ),
    ] = "shakespeare-char",
    data_dir: DataDir = None,
    batch_size: Annotated[int, typer.Option("--batch-size", min=1, help="Windows per batch.")] = 12,
    block_size: Annotated[
        int, typer.Option("--block-size", min=1, help="Window length in tokens.")
    ] = 1024,
    batches: Annotated[int, typer.Option("--batches", min=1, help="Batches per run.")] = 500,
    repeats: Annotated[int, typer.Option("--repeats", min=1, help="Runs (median kept).")] = 3,
    device: Device = "auto",
    as_json: Json = False,
) -> None:
    """Time the training batch loader: batches and tokens per second onto the device.

    Example: nanogpt bench data --dataset openwebtext --batch-size 12 --block-size 1024
    """
    from ..bench import bench_data as run
    from ..config import build_config

    cfg = build_config(
        None,
        overrides={
            "dataset": dataset,
            "data_dir": str(data_dir) if data_dir else None,
            "batch_size": batch_size,
            "block_size": block_size,
            "device": device,
        },
    )
    result = run(cfg, batches=batches, repeats=repeats)
    if as_json:
        typer.echo(json.dumps(result.to_dict(), indent=2))
        return
    rate = result.batches_per_s
    _print_rows(
        f"batch loader, {result.dataset}",
        [
            ("device", result.device),
            ("batch", f"{batch_size} x {block_size} tokens"),
            ("batches/s", f"{rate.median:,.0f} ({rate.min:,.0f}-{rate.max:,.0f})"),
            ("tokens/s", f"{result.tokens_per_s:,.0f}"),
            ("runs", f"{rate.n} x {batches} batches"),
        ],
    )


def _print_train(r: Any) -> None:
    m, s = r.model, r.step_ms
    mfu = (
        f"{r.mfu:.1%} of {r.peak_tflops:g} TFLOP/s ({r.peak_source})"
        if r.mfu
        else ("n/a (peak unknown; give --peak-tflops)")
    )
    floor = (
        f"{r.floor_ms:.1f} ms at {r.matmul_tflops * 1000:,.1f} GFLOP/s measured: "
        f"step = {r.vs_floor:.2f}x the floor"
        if r.floor_ms
        else "n/a"
    )
    compile_s = f", of which compiling ~{r.compile_s:.1f} s" if r.compile_s is not None else ""
    _print_rows(
        f"training step, {r.params / 1e6:.2f}M parameters",
        [
            (
                "model",
                f"{m['n_layer']} layers, {m['n_head']} heads, {m['n_embd']} wide, "
                f"vocab {m['vocab_size']:,}",
            ),
            (
                "batch",
                f"{r.batch_size} x {r.block_size} tokens x {r.grad_accum} accumulation = "
                f"{r.tokens_per_step:,} tokens, {r.data} data",
            ),
            ("device", f"{r.device} {r.dtype}, {'compiled' if r.compiled else 'eager'}"),
            (
                "step",
                f"{s.median:.1f} ms median (min {s.min:.1f}, max {s.max:.1f}, "
                f"IQR {s.p25:.1f}-{s.p75:.1f}; {s.n} steps)",
            ),
            ("throughput", f"{r.tokens_per_s:,.0f} tokens/s"),
            ("FLOPs", f"{r.flops_per_step / 1e9:,.2f} GFLOP per step"),
            ("MFU", mfu),
            ("floor", floor),
            ("first step", f"{r.first_step_s:.2f} s{compile_s}"),
            ("memory", f"{r.peak_memory_mb:,.0f} MB {r.memory_kind}"),
        ],
    )
    if r.top_ops:
        from rich.console import Console
        from rich.table import Table

        table = Table(title=f"top operators (trace: {r.trace})", title_justify="left")
        for column in ("operator", "calls/step", "ms/step", "share"):
            table.add_column(column, justify="left" if column == "operator" else "right")
        for op in r.top_ops:
            table.add_row(
                op["op"],
                f"{op['calls_per_step']:g}",
                f"{op['ms_per_step']:.2f}",
                f"{op['share']:.1%}",
            )
        Console().print(table)


def _print_rows(title: str, rows: list[tuple[str, str]]) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=title, title_justify="left", show_header=False)
    table.add_column("", style="bold")
    table.add_column("")
    for name, value in rows:
        table.add_row(name, value)
    Console().print(table)
