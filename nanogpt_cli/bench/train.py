"""The training-step benchmark behind ``nanogpt bench``: the step a run trains with
(``train.setup``), timed after warm-up, against the device's peak and the machine's floor."""

from __future__ import annotations

import dataclasses
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from ..config import TrainConfig
from ..data.first_use import open_or_prepare
from ..errors import ConfigError
from ..log import get_logger
from ..model import GPT
from ..progress import progress
from ..runtime import peak_flops
from ..train.estimate import duration, seconds
from ..train.setup import build_step, start_device, train_batches
from ..train.step import TrainStep
from .common import (
    SYNTHETIC_VOCAB,
    Spread,
    dataset_vocab,
    matmul_tflops,
    peak_memory_mb,
    synchronize,
)

logger = get_logger(__name__)

LONG_BENCH_S = 5 * 60  # past this, a benchmark says how to make it shorter


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
        # A few passes first, which change nothing, say how long the steps will take (and
        # compile, where the step is compiled).
        probe = step.measure(x, y)
        _announce(probe.step_s, warmup + steps)
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
    # The first step as a run meets it: compilation (done by the probe's first pass) included.
    compile_s = max(0.0, probe.first_s - probe.micro_s) if step.compiled else None
    first_step_s = times[0] + (compile_s or 0.0)
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
        compile_s=compile_s,
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


def _announce(step_s: float, count: int) -> None:
    """Say before the steps start how long they will take; warn when that is long."""
    total = step_s * count
    logger.info(f"bench: about {seconds(step_s)} per step, {duration(total)} for {count} steps")
    if total > LONG_BENCH_S:
        logger.warning(
            f"this benchmark will take about {duration(total)}; fewer --steps and --warmup, "
            "a smaller --batch-size or a smaller model finish sooner"
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
        dataset = open_or_prepare(cfg.data.dataset, cfg.data.data_dir)
        loader = train_batches(cfg, dataset.split_path("train"), block, device)
        vocab = cfg.model.vocab_size or dataset.vocab_size
        return loader.next, vocab, dataset.name, loader.close
    vocab = cfg.model.vocab_size or dataset_vocab(cfg) or SYNTHETIC_VOCAB
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
