"""Benchmarks behind ``nanogpt bench``: the training step, generation and the batch loader,
on whatever device there is.

Every timing is a median over repeated runs with its spread, so two commits can be
compared. The training step is measured against two references: the device's peak FLOP/s
(MFU: a table of GPUs, or ``peak_tflops``) and the rate this machine reaches on one large
matrix multiply, measured here (the step's floor: its FLOPs at that rate).
"""

from __future__ import annotations

import dataclasses
import resource
import statistics
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from .config import TrainConfig
from .data.dataset import open_dataset
from .data.loader import BatchLoader
from .errors import ConfigError, DatasetError
from .log import get_logger, progress
from .model import GPT
from .runtime import peak_flops, resolve_device, resolve_dtype
from .train.setup import build_step, start_device, train_batches
from .train.step import TrainStep

logger = get_logger(__name__)

SYNTHETIC_VOCAB = 50304  # GPT-2's vocabulary padded to a multiple of 64, as nanoGPT does


@dataclass
class Spread:
    """Summary of repeated measurements (milliseconds, or whatever was measured)."""

    median: float
    min: float
    max: float
    p25: float
    p75: float
    n: int

    @classmethod
    def of(cls, values: list[float]) -> Spread:
        ordered = sorted(values)
        if len(ordered) >= 2:
            q = statistics.quantiles(ordered, n=4, method="inclusive")
        else:
            q = [ordered[0]] * 3
        return cls(
            median=statistics.median(ordered),
            min=ordered[0],
            max=ordered[-1],
            p25=q[0],
            p75=q[2],
            n=len(ordered),
        )


@dataclass
class TrainBench:
    """One training-step benchmark."""

    device: str
    dtype: str
    compiled: bool
    data: str
    params: int
    model: dict[str, Any]
    batch_size: int
    block_size: int
    grad_accum: int
    kernels: list[str]
    tokens_per_step: int
    flops_per_step: float
    step_ms: Spread
    tokens_per_s: float
    first_step_s: float
    compile_s: float | None
    peak_tflops: float | None
    peak_source: str | None
    mfu: float | None
    matmul_tflops: float | None
    floor_ms: float | None
    vs_floor: float | None
    peak_memory_mb: float
    memory_kind: str
    top_ops: list[dict[str, Any]] = field(default_factory=list)
    trace: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def synchronize(device: torch.device) -> None:
    """Wait for the device's queued work, so a timer measures it."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    elif device.type == "mps":
        torch.mps.synchronize()


def matmul_tflops(
    device: torch.device, dtype: torch.dtype, size: int | None = None, repeats: int = 5
) -> float:
    """The rate of one large square matrix multiply on ``device`` in ``dtype`` (TFLOP/s):
    what this machine's matrix units reach, the reference for a compute-bound step. The
    best of ``repeats`` runs: interference only ever slows a run down. On a CPU in float32
    both the BLAS and oneDNN are timed and the faster counts (on some
    processors oneDNN can be the faster one: ``kernels.onednn``)."""
    size = size or (2048 if device.type == "cpu" else 8192)
    a = torch.randn(size, size, device=device, dtype=dtype)
    b = torch.randn(size, size, device=device, dtype=dtype)
    products: list[Callable[[torch.Tensor, torch.Tensor], torch.Tensor]] = [torch.mm]
    if device.type == "cpu" and dtype == torch.float32 and _onednn_works():
        from .kernels.onednn import onednn_mm

        products.append(onednn_mm)
    times = []
    for product in products:
        for i in range(repeats + 2):
            synchronize(device)
            start = time.perf_counter()
            product(a, b)
            synchronize(device)
            if i >= 2:  # the first two warm up the kernels and the allocator
                times.append(time.perf_counter() - start)
    return 2 * size**3 / min(times) / 1e12


def _onednn_works() -> bool:
    from .kernels import passes_check
    from .kernels.linear import check_onednn

    return torch.backends.mkldnn.is_available() and passes_check("onednn-linear", check_onednn)


def peak_memory_mb(device: torch.device) -> tuple[float, str]:
    """The peak memory of this process so far: the CUDA allocator's, or resident memory."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20, "CUDA allocator peak"
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    # ru_maxrss is in kilobytes on Linux, bytes on macOS
    return rss / (2**20 if sys.platform == "darwin" else 2**10), "peak RSS (process)"


def bench_train(
    cfg: TrainConfig,
    *,
    steps: int = 20,
    warmup: int = 3,
    data: str = "synthetic",
    peak_tflops: float | None = None,
    measure_floor: bool = True,
    profile: Path | None = None,
) -> TrainBench:
    """Time ``steps`` optimizer steps of the model ``cfg`` describes, after ``warmup``.

    ``data`` is ``synthetic`` (random tokens; no dataset needed) or ``real`` (batches of
    ``cfg.data.dataset`` through the training loader). ``profile`` writes a torch.profiler
    trace of a few more steps there and fills ``top_ops``.
    """
    if steps < 1 or warmup < 1:
        raise ConfigError("--steps and --warmup must be at least 1")
    if data not in ("synthetic", "real"):
        raise ConfigError(f"--data {data!r}: use synthetic or real")
    device, dtype = start_device(cfg)
    batch, block = cfg.data.batch_size, cfg.model.block_size
    fetch, vocab, source, close = _batches(cfg, data, device)
    model_cfg = dataclasses.replace(cfg.model, vocab_size=vocab)
    parts = build_step(cfg, GPT(model_cfg), device, dtype)
    model, step = parts.model, parts.step
    model.train()
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    tokens = parts.tokens_per_step
    flops = model.flops_per_token(block) * tokens
    kernels = f", CPU kernels: {', '.join(parts.kernels)}" if parts.kernels else ""
    logger.info(
        f"bench: {model.num_params() / 1e6:.2f}M parameters, {tokens:,} tokens per step "
        f"({parts.micro_batches} x {batch} x {block}; {flops / 1e9:,.1f} GFLOP), {device} "
        f"{str(dtype).removeprefix('torch.')}{kernels}, {source} data"
    )
    times: list[float] = []
    top_ops: list[dict[str, Any]] = []
    try:
        x, y = fetch()
        with progress("bench", total=warmup + steps, unit="steps") as bar:
            for _ in range(warmup + steps):
                synchronize(device)
                start = time.perf_counter()
                x, y = step(x, y, fetch)
                synchronize(device)
                times.append(time.perf_counter() - start)
                bar.advance()
        if profile is not None:
            top_ops = _profile(step, x, y, fetch, device, profile)
    finally:
        close()
    first_step_s = times[0]
    step_ms = Spread.of([t * 1000 for t in times[warmup:]])
    memory, memory_kind = peak_memory_mb(device)
    peak, peak_source = _peak(device, dtype, peak_tflops)
    seconds = step_ms.median / 1000
    measured = matmul_tflops(device, dtype) if measure_floor else None
    floor_ms = flops / (measured * 1e12) * 1000 if measured else None
    return TrainBench(
        device=str(device),
        dtype=str(dtype).removeprefix("torch."),
        compiled=step.compiled,
        data=source,
        params=model.num_params(),
        model={k: getattr(model_cfg, k) for k in ("n_layer", "n_head", "n_embd", "vocab_size")},
        batch_size=batch,
        block_size=block,
        grad_accum=parts.micro_batches,
        kernels=parts.kernels,
        tokens_per_step=tokens,
        flops_per_step=flops,
        step_ms=step_ms,
        tokens_per_s=tokens / seconds,
        first_step_s=first_step_s,
        compile_s=max(0.0, first_step_s - seconds) if step.compiled else None,
        peak_tflops=peak / 1e12 if peak else None,
        peak_source=peak_source,
        mfu=flops / seconds / peak if peak else None,
        matmul_tflops=measured,
        floor_ms=floor_ms,
        vs_floor=step_ms.median / floor_ms if floor_ms else None,
        peak_memory_mb=memory,
        memory_kind=memory_kind,
        top_ops=top_ops,
        trace=str(profile) if profile is not None else None,
    )


def _peak(
    device: torch.device, dtype: torch.dtype, given: float | None
) -> tuple[float | None, str | None]:
    if given is not None:
        if given <= 0:
            raise ConfigError(f"--peak-tflops must be positive (got {given})")
        return given * 1e12, "--peak-tflops"
    table = peak_flops(device, dtype)
    if table is None:
        return None, None
    return table, f"table: {torch.cuda.get_device_name(device)}"


def _batches(
    cfg: TrainConfig, data: str, device: torch.device
) -> tuple[Callable[[], tuple[torch.Tensor, torch.Tensor]], int, str, Callable[[], None]]:
    """A batch source, the vocabulary size, a name for the data and what to close."""
    batch, block = cfg.data.batch_size, cfg.model.block_size
    if data == "real":
        dataset = open_dataset(cfg.data.dataset, cfg.data.data_dir)
        loader = train_batches(cfg, dataset.split_path("train"), block, device)
        vocab = cfg.model.vocab_size or dataset.vocab_size
        return loader.next, vocab, dataset.name, loader.close
    vocab = cfg.model.vocab_size or _dataset_vocab(cfg) or SYNTHETIC_VOCAB
    # A few batches drawn up front and cycled: the step is timed, not the random generator.
    generator = torch.Generator().manual_seed(cfg.system.seed)
    pool = [
        torch.randint(0, vocab, (batch, block + 1), generator=generator).to(device)
        for _ in range(4)
    ]
    cycle: Iterator[torch.Tensor] = (pool[i % len(pool)] for i in range(sys.maxsize))

    def fetch() -> tuple[torch.Tensor, torch.Tensor]:
        tokens = next(cycle)
        return tokens[:, :-1], tokens[:, 1:]

    return fetch, vocab, "synthetic", lambda: None


def _dataset_vocab(cfg: TrainConfig) -> int | None:
    """The vocabulary of the preset's dataset, if it is prepared (so synthetic data has the
    shape of the real model)."""
    try:
        return open_dataset(cfg.data.dataset, cfg.data.data_dir).vocab_size
    except DatasetError:
        return None


def _profile(
    step: TrainStep,
    x: torch.Tensor,
    y: torch.Tensor,
    fetch: Callable[[], tuple[torch.Tensor, torch.Tensor]],
    device: torch.device,
    path: Path,
    steps: int = 3,
) -> list[dict[str, Any]]:
    from torch.profiler import ProfilerActivity, profile

    activities = [ProfilerActivity.CPU]
    if device.type == "cuda":
        activities.append(ProfilerActivity.CUDA)
    path.parent.mkdir(parents=True, exist_ok=True)
    with profile(activities=activities) as prof:
        for _ in range(steps):
            x, y = step(x, y, fetch)
        synchronize(device)
    prof.export_chrome_trace(str(path))
    on_gpu = device.type == "cuda"
    events = [e for e in prof.key_averages() if not e.key.startswith("ProfilerStep")]

    def self_us(e: Any) -> float:
        return float(e.self_device_time_total if on_gpu else e.self_cpu_time_total)

    total = sum(self_us(e) for e in events) or 1.0
    top = sorted(events, key=self_us, reverse=True)[:15]
    return [
        {
            "op": e.key,
            "calls_per_step": e.count / steps,
            "ms_per_step": self_us(e) / steps / 1000,
            "share": self_us(e) / total,
        }
        for e in top
    ]


# -- generation -----------------------------------------------------------------------------


@dataclass
class SampleBench:
    """One generation benchmark: ``batch_size`` rows, ``new_tokens`` each."""

    device: str
    dtype: str
    params: int
    batch_size: int
    prompt_tokens: int
    new_tokens: int
    kv_cache: bool
    compiled: bool
    compile_s: float | None  # the untimed first run, which compiles the decode step
    first_token_ms: Spread
    decode_tokens_per_s: Spread
    total_tokens_per_s: Spread
    seconds: Spread

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def bench_sample(
    model: GPT,
    *,
    batch_size: int = 1,
    new_tokens: int = 300,
    prompt_tokens: int = 1,
    repeats: int = 3,
    use_cache: bool = True,
    compile: bool = False,
    seed: int = 1337,
) -> SampleBench:
    """Greedy generation of ``new_tokens`` tokens for ``batch_size`` rows, ``repeats`` times:
    time to the first token (the prompt's forward pass included) and decoding speed. With
    ``compile``, one untimed run first compiles the decode step (``compile_s``)."""
    from .sample import generate

    if min(batch_size, new_tokens, prompt_tokens, repeats) < 1:
        raise ConfigError("--batch-size, --new-tokens, --prompt-tokens and --repeats must be >= 1")
    param = next(model.parameters())
    device = param.device
    vocab = model.config.vocab_size or SYNTHETIC_VOCAB
    generator = torch.Generator().manual_seed(seed)
    prompt = torch.randint(0, vocab, (batch_size, prompt_tokens), generator=generator).to(device)
    model.eval()
    compile_s = None
    if compile:
        synchronize(device)
        start = time.perf_counter()
        for _ in generate(model, prompt, min(new_tokens, 3), temperature=0.0, compile=True):
            pass
        synchronize(device)
        compile_s = time.perf_counter() - start
    first, decode, total, seconds = [], [], [], []
    for _ in range(repeats):
        synchronize(device)
        start = time.perf_counter()
        stream = generate(
            model, prompt, new_tokens, temperature=0.0, use_cache=use_cache, compile=compile
        )
        first_at = None
        for token in stream:
            if first_at is None:
                token.cpu()  # the first token reaches the host: what a user waits for
                first_at = time.perf_counter()
        synchronize(device)
        end = time.perf_counter()
        assert first_at is not None
        first.append((first_at - start) * 1000)
        rest = end - first_at
        decode.append(batch_size * (new_tokens - 1) / rest if new_tokens > 1 and rest > 0 else 0)
        total.append(batch_size * new_tokens / (end - start))
        seconds.append(end - start)
    return SampleBench(
        device=str(device),
        dtype=str(param.dtype).removeprefix("torch."),
        params=model.num_params(),
        batch_size=batch_size,
        prompt_tokens=prompt_tokens,
        new_tokens=new_tokens,
        kv_cache=use_cache,
        compiled=compile,
        compile_s=compile_s,
        first_token_ms=Spread.of(first),
        decode_tokens_per_s=Spread.of(decode),
        total_tokens_per_s=Spread.of(total),
        seconds=Spread.of(seconds),
    )


def random_model(cfg: TrainConfig, device: str = "auto", dtype: str = "auto") -> GPT:
    """A model of ``cfg``'s shape with random weights, on ``device``, in eval mode, with the
    CPU kernels of ``cfg.system.cpu_kernels``; the vocabulary is the config's, else its
    dataset's (if prepared), else GPT-2's."""
    from .kernels import apply_kernels

    dev = resolve_device(device)
    vocab = cfg.model.vocab_size or _dataset_vocab(cfg) or SYNTHETIC_VOCAB
    model = GPT(dataclasses.replace(cfg.model, vocab_size=vocab))
    model.to(device=dev, dtype=resolve_dtype(dtype, dev)).eval()
    apply_kernels(model, cfg.system.cpu_kernels)
    return model


# -- the batch loader -------------------------------------------------------------------------


@dataclass
class DataBench:
    """Batches per second of the training loader on a prepared dataset."""

    dataset: str
    device: str
    batch_size: int
    block_size: int
    batches: int
    batches_per_s: Spread
    tokens_per_s: float

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def bench_data(cfg: TrainConfig, *, batches: int = 500, repeats: int = 3) -> DataBench:
    """Draw ``batches`` batches from ``cfg``'s dataset through the training loader (onto the
    device, as training does), ``repeats`` times."""
    if batches < 1 or repeats < 1:
        raise ConfigError("--batches and --repeats must be at least 1")
    device = resolve_device(cfg.system.device)
    dataset = open_dataset(cfg.data.dataset, cfg.data.data_dir)
    block, batch = cfg.model.block_size, cfg.data.batch_size
    loader = BatchLoader(dataset.split_path("train"), block, batch, device, seed=0)
    rates = []
    try:
        for _ in range(repeats):
            synchronize(device)
            start = time.perf_counter()
            for _ in range(batches):
                loader.next()
            synchronize(device)
            rates.append(batches / (time.perf_counter() - start))
    finally:
        loader.close()
    spread = Spread.of(rates)
    return DataBench(
        dataset=dataset.name,
        device=str(device),
        batch_size=batch,
        block_size=block,
        batches=batches,
        batches_per_s=spread,
        tokens_per_s=spread.median * batch * block,
    )


__all__ = [
    "DataBench",
    "SampleBench",
    "Spread",
    "TrainBench",
    "bench_data",
    "bench_sample",
    "bench_train",
    "matmul_tflops",
    "random_model",
]
