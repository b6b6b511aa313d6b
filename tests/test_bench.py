"""nanogpt bench: the training step, generation and the loader, timed on the CPU with a
tiny model; the numbers it derives (FLOPs, MFU, floor) follow from what it measured."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch
from conftest import TINY, as_flags

from nanogpt_cli.bench import Spread, bench_data, bench_sample, bench_train, random_model
from nanogpt_cli.cli.app import main
from nanogpt_cli.config import build_config
from nanogpt_cli.errors import ConfigError
from nanogpt_cli.train.device import peak_flops

BENCH = {k: v for k, v in TINY.items() if k not in ("max_iters", "lr_decay_iters")}


def tiny_config(**overrides: Any) -> Any:
    return build_config("shakespeare-char", overrides={**BENCH, **overrides})


def test_spread_summarises_measurements() -> None:
    s = Spread.of([5.0, 1.0, 4.0, 2.0, 3.0])
    assert (s.median, s.min, s.max, s.p25, s.p75, s.n) == (3.0, 1.0, 5.0, 2.0, 4.0, 5)
    assert Spread.of([7.0]).p75 == 7.0


def test_train_step_numbers_follow_from_the_measurement(data_dir: Path) -> None:
    cfg = tiny_config(vocab_size=64)
    r = bench_train(cfg, steps=4, warmup=1, peak_tflops=0.5)
    assert r.step_ms.n == 4 and 0 < r.step_ms.min <= r.step_ms.median <= r.step_ms.max
    assert r.tokens_per_step == 8 * 16 and r.model["vocab_size"] == 64
    assert r.tokens_per_s == pytest.approx(r.tokens_per_step / (r.step_ms.median / 1000))
    assert r.mfu == pytest.approx(r.flops_per_step / (r.step_ms.median / 1000) / 0.5e12)
    assert r.peak_source == "--peak-tflops"
    assert r.matmul_tflops is not None and r.matmul_tflops > 0
    assert r.floor_ms == pytest.approx(r.flops_per_step / (r.matmul_tflops * 1e12) * 1000)
    assert r.vs_floor == pytest.approx(r.step_ms.median / r.floor_ms)
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


def test_generation_bench(data_dir: Path) -> None:
    model = random_model(tiny_config())
    cached = bench_sample(model, batch_size=2, new_tokens=24, repeats=2)
    assert cached.first_token_ms.n == 2 and cached.first_token_ms.median > 0
    assert cached.decode_tokens_per_s.median > 0 and cached.kv_cache
    total = cached.total_tokens_per_s.median
    assert total == pytest.approx(2 * 24 / cached.seconds.median, rel=0.5)
    uncached = bench_sample(model, batch_size=2, new_tokens=24, repeats=1, use_cache=False)
    assert not uncached.kv_cache and uncached.new_tokens == 24


def test_loader_bench(data_dir: Path) -> None:
    r = bench_data(tiny_config(), batches=50, repeats=2)
    assert r.batches_per_s.n == 2 and r.batches_per_s.median > 0
    assert r.tokens_per_s == pytest.approx(r.batches_per_s.median * 8 * 16)


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
