"""nanogpt bench: the training step, generation and the loader, run on the CPU with a tiny
model under a fake clock (every reading a tick after the one before), so the numbers it
derives (FLOPs, MFU, floor, rates) are checked exactly and never depend on the machine."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import torch
from conftest import TINY, as_flags

from nanogpt_cli.bench import (
    Spread,
    bench_data,
    bench_sample,
    bench_train,
    common,
    data,
    random_model,
    sample,
    train,
)
from nanogpt_cli.cli.app import main
from nanogpt_cli.config import build_config
from nanogpt_cli.errors import ConfigError
from nanogpt_cli.runtime import peak_flops

BENCH = {k: v for k, v in TINY.items() if k not in ("max_iters", "lr_decay_iters")}


TICK = 1 / 64  # seconds between two readings of the fake clock (exact in binary)
MS = TICK * 1000


def tiny_config(**overrides: Any) -> Any:
    return build_config("shakespeare-char", overrides={**BENCH, **overrides})


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> None:
    """bench's clock advances by TICK at every reading, whatever the work in between."""
    now = [0.0]

    def perf_counter() -> float:
        now[0] += TICK
        return now[0]

    fake = SimpleNamespace(perf_counter=perf_counter)
    for module in (common, train, sample, data):  # each benchmark reads the clock itself
        monkeypatch.setattr(module, "time", fake)


def test_spread_summarises_measurements() -> None:
    s = Spread.of([5.0, 1.0, 4.0, 2.0, 3.0])
    assert (s.median, s.min, s.max, s.p25, s.p75, s.n) == (3.0, 1.0, 5.0, 2.0, 4.0, 5)
    assert Spread.of([7.0]).p75 == 7.0


def test_train_step_numbers_follow_from_the_measurement(data_dir: Path, clock: None) -> None:
    cfg = tiny_config(vocab_size=64)
    r = bench_train(cfg, steps=4, warmup=1, peak_tflops=0.5)
    assert r.step_ms == Spread(median=MS, min=MS, max=MS, p25=MS, p75=MS, n=4)
    assert r.tokens_per_step == 8 * 16 and r.model["vocab_size"] == 64
    assert r.tokens_per_s == pytest.approx(r.tokens_per_step / TICK)
    assert r.mfu == pytest.approx(r.flops_per_step / TICK / 0.5e12)
    assert r.peak_source == "--peak-tflops"
    assert r.matmul_tflops == pytest.approx(2 * 2048**3 / TICK / 1e12)  # one product a tick
    assert r.floor_ms == pytest.approx(r.flops_per_step / (r.matmul_tflops * 1e12) * 1000)
    assert r.vs_floor == pytest.approx(MS / r.floor_ms)
    assert r.compile_s is None and not r.compiled and r.data == "synthetic"
    assert r.peak_memory_mb > 0 and r.memory_kind.startswith("peak RSS")


def test_flops_per_step_is_six_n_plus_attention(data_dir: Path) -> None:
    r = bench_train(tiny_config(vocab_size=64), steps=1, warmup=1, measure_floor=False)
    n, layers, width, block = r.params, 2, 32, 16
    assert r.flops_per_step == (6 * n + 12 * layers * width * block) * r.tokens_per_step
    assert r.floor_ms is None and r.mfu is None  # CPU: no peak in the table


def test_synthetic_data_takes_the_prepared_datasets_vocabulary(data_dir: Path) -> None:
    from nanogpt_cli.data.dataset import open_dataset

    vocab = open_dataset("shakespeare-char", data_dir).vocab_size
    r = bench_train(tiny_config(), steps=1, warmup=1, measure_floor=False)
    assert r.model["vocab_size"] == vocab
    real = bench_train(tiny_config(), steps=2, warmup=1, data="real", measure_floor=False)
    assert real.data == "shakespeare-char" and real.model["vocab_size"] == vocab


def test_profile_writes_a_trace_and_ranks_operators(data_dir: Path, tmp_path: Path) -> None:
    trace = tmp_path / "trace.json"
    r = bench_train(tiny_config(), steps=1, warmup=1, measure_floor=False, profile=trace)
    assert json.loads(trace.read_text())["traceEvents"]
    ops = [op["op"] for op in r.top_ops]
    assert {"aten::mm", "aten::addmm", "mkldnn::_linear_pointwise"} & set(ops)
    shares = [op["share"] for op in r.top_ops]
    assert shares == sorted(shares, reverse=True) and 0 < sum(shares) <= 1.0 + 1e-9


def test_bad_arguments_are_clear_errors(data_dir: Path) -> None:
    with pytest.raises(ConfigError, match="--data"):
        bench_train(tiny_config(), data="imagenet")
    with pytest.raises(ConfigError, match="--peak-tflops"):
        bench_train(tiny_config(), steps=1, warmup=1, peak_tflops=-1, measure_floor=False)


def test_the_gpu_peak_table_knows_hopper(monkeypatch: pytest.MonkeyPatch) -> None:
    # nanoGPT's bench.py assumes an A100 everywhere (MFU over 100% on an H100).
    names = {
        "NVIDIA H100 80GB HBM3": 989e12,
        "NVIDIA H100 PCIe": 756e12,
        "NVIDIA H200": 989e12,
        "NVIDIA A100-SXM4-80GB": 312e12,
        "NVIDIA GeForce RTX 4090": 165.2e12,
    }
    cuda = torch.device("cuda")
    for name, bf16 in names.items():
        monkeypatch.setattr(torch.cuda, "get_device_name", lambda *_, name=name: name)
        assert peak_flops(cuda, torch.bfloat16) == pytest.approx(bf16)
        assert peak_flops(cuda, torch.float32) == pytest.approx(bf16 / 2)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda *_: "Some Future GPU")
    assert peak_flops(cuda, torch.bfloat16) is None


def test_generation_bench(data_dir: Path, clock: None) -> None:
    """A run reads the clock at its start, at the first token and at its end: one tick to
    the first token, one for the other 23 of each of the 2 rows."""
    model = random_model(tiny_config())
    cached = bench_sample(model, batch_size=2, new_tokens=24, repeats=2)
    assert cached.first_token_ms == Spread.of([MS, MS]) and cached.kv_cache
    assert cached.decode_tokens_per_s.median == pytest.approx(2 * 23 / TICK)
    assert cached.total_tokens_per_s.median == pytest.approx(2 * 24 / (2 * TICK))
    assert cached.seconds.median == pytest.approx(2 * TICK)
    uncached = bench_sample(model, batch_size=2, new_tokens=24, repeats=1, use_cache=False)
    assert not uncached.kv_cache and uncached.new_tokens == 24


def test_loader_bench(data_dir: Path, clock: None) -> None:
    r = bench_data(tiny_config(), batches=50, repeats=2)
    assert r.batches_per_s == Spread.of([50 / TICK, 50 / TICK])
    assert r.tokens_per_s == pytest.approx(50 / TICK * 8 * 16)


def test_total_batch_tokens_sets_the_micro_batches_measured(
    data_dir: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """--total-batch-tokens is what the step runs: 3 micro-batches of 8 x 16 tokens."""
    from nanogpt_cli.model import GPT
    from nanogpt_cli.train.step import StepTimes, TrainStep

    # (the estimate's passes before the steps are left out of the count)
    monkeypatch.setattr(TrainStep, "measure", lambda self, x, y: StepTimes(0, 0, 0, 0))
    forwards: list[int] = []
    forward = GPT.forward
    monkeypatch.setattr(GPT, "forward", lambda *a, **k: forwards.append(1) or forward(*a, **k))
    r = bench_train(
        tiny_config(total_batch_tokens=3 * 8 * 16), steps=2, warmup=1, measure_floor=False
    )
    assert (r.grad_accum, r.tokens_per_step) == (3, 3 * 8 * 16)
    assert len(forwards) == 3 * (1 + 2)
    flags = [*as_flags(BENCH), "--total-batch-tokens", "384"]
    code, out, _ = run(["bench", *flags, "--steps", "1", "--warmup", "1", "--json"], capsys)
    assert code == 0 and json.loads(out)["grad_accum"] == 3


def run(args: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    capsys.readouterr()
    with pytest.raises(SystemExit) as exit_info:
        main(args)
    out, err = capsys.readouterr()
    return int(exit_info.value.code or 0), out, err


def test_cli_json_and_tables(data_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    flags = as_flags(BENCH)
    code, out, _ = run(["bench", *flags, "--steps", "2", "--warmup", "1", "--json"], capsys)
    assert code == 0
    result = json.loads(out)
    assert result["step_ms"]["n"] == 2 and result["vs_floor"] > 0
    code, out, _ = run(["bench", *flags, "--steps", "2", "--warmup", "1"], capsys)
    assert code == 0 and "training step" in out and "x the floor" in out
    code, out, _ = run(["bench", "sample", "--new-tokens", "5", "--repeats", "1", "--json"], capsys)
    assert code == 0 and json.loads(out)["new_tokens"] == 5
    code, out, _ = run(["bench", "data", "--block-size", "16", "--batches", "10", "--json"], capsys)
    assert code == 0 and json.loads(out)["dataset"] == "shakespeare-char"
    code, _, err = run(["bench", *flags, "--data", "imagenet"], capsys)
    assert code == 2 and err.startswith("error: --data 'imagenet'")
