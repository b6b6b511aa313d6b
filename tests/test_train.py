from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pytest
import torch

from nanogpt_cli.checkpoint import (
    CONFIG_FILE,
    MODEL_FILE,
    OPTIMIZER_FILE,
    read_checkpoint,
)
from nanogpt_cli.config import build_config
from nanogpt_cli.errors import CheckpointError, ConfigError, DatasetError
from nanogpt_cli.metrics import read_metrics
from nanogpt_cli.train import train
from nanogpt_cli.train.optim import learning_rate


def run(options: dict[str, Any], **overrides: Any):
    return train(build_config("shakespeare-char", overrides={**options, **overrides}))


def losses(out_dir: Path, kind: str, key: str) -> dict[int, float]:
    return {r["iter"]: r[key] for r in read_metrics(out_dir / "metrics.jsonl") if r["kind"] == kind}


def test_tiny_run_lowers_loss_and_writes_checkpoint_and_metrics(
    tiny_options: dict[str, Any],
) -> None:
    result = run(tiny_options)
    out = Path(tiny_options["out_dir"])
    assert result.iter_num == 40 and result.saved
    for name in (MODEL_FILE, OPTIMIZER_FILE, CONFIG_FILE):
        assert (out / name).is_file(), name
    evals = losses(out, "eval", "val_loss")
    assert sorted(evals) == [0, 20, 40]
    assert evals[40] < evals[0] - 0.5
    assert abs(evals[0] - math.log(read_checkpoint(out).model_config.vocab_size)) < 0.2
    train_records = [r for r in read_metrics(out / "metrics.jsonl") if r["kind"] == "train"]
    assert [r["iter"] for r in train_records] == [5, 10, 15, 20, 25, 30, 35, 40]
    for r in train_records:
        assert {"loss", "lr", "ms", "tokens_per_s"} <= set(r)
        assert r["tokens_per_s"] > 0 and r["ms"] > 0
    ckpt = read_checkpoint(out)
    assert ckpt.state.iter_num == 40 and ckpt.dataset == "shakespeare-char"
    assert ckpt.state.best_val_loss == pytest.approx(evals[40])
    assert ckpt.config is not None and ckpt.config["optim"]["max_iters"] == 40


@pytest.mark.parametrize(
    ("grad_clip", "clip_frac"), [(1e-6, 1.0), (1e6, 0.0), (0.0, None)], ids=["all", "none", "off"]
)
def test_gradient_norm_and_clipping_rate_are_logged(
    tiny_options: dict[str, Any], grad_clip: float, clip_frac: float | None
) -> None:
    run(tiny_options, grad_clip=grad_clip, max_iters=10)
    records = [
        r
        for r in read_metrics(Path(tiny_options["out_dir"]) / "metrics.jsonl")
        if r["kind"] == "train"
    ]
    assert len(records) == 2
    for r in records:
        assert r["clip_frac"] == clip_frac
        if grad_clip > 0:
            assert r["grad_norm"] > 0
        else:
            assert r["grad_norm"] is None


@pytest.mark.parametrize(
    ("extra", "stop_at"),
    [({}, 20), ({"dropout": 0.1, "gradient_accumulation_steps": 2}, 13)],
    ids=["plain", "dropout-accumulation-mid-interval"],
)
def test_resume_continues_exactly_where_it_stopped(
    tiny_options: dict[str, Any], tmp_path: Path, extra: dict[str, Any], stop_at: int
) -> None:
    # Uninterrupted: 40 iterations. Interrupted: stop_at, then resumed to 40. On the CPU the
    # resumed run must reproduce every later loss and the final weights to the last bit.
    full = dict(tiny_options, **extra, log_interval=1, out_dir=str(tmp_path / "full"))
    run(full)
    part = dict(full, out_dir=str(tmp_path / "part"))
    first = run(part, max_iters=stop_at, lr_decay_iters=40)
    assert first.iter_num == stop_at and read_checkpoint(part["out_dir"]).state.iter_num == stop_at
    resumed = run(part, resume=True)
    assert resumed.iter_num == 40
    full_train = losses(Path(full["out_dir"]), "train", "loss")
    part_train = losses(Path(part["out_dir"]), "train", "loss")
    assert part_train == full_train
    final = {}
    for name in ("full", "part"):
        from safetensors.torch import load_file

        final[name] = load_file(str(tmp_path / name / MODEL_FILE))
    assert all(torch.equal(final["full"][k], final["part"][k]) for k in final["full"])


def test_resume_starts_from_the_saved_config(tiny_options: dict[str, Any]) -> None:
    from nanogpt_cli.train import resolve_config

    run(tiny_options, max_iters=10, beta2=0.9)
    # Only --resume, --max-iters and --out-dir given: everything else comes from the run,
    # not from the default preset (whose batch size is 64 and dropout 0.2).
    cfg = resolve_config(
        None, None, {"resume": True, "max_iters": 20, "out_dir": tiny_options["out_dir"]}
    )
    assert cfg.data.batch_size == 8 and cfg.model.dropout == 0.0 and cfg.optim.beta2 == 0.9
    assert cfg.optim.max_iters == 20 and cfg.data.data_dir == tiny_options["data_dir"]
    # A flag given explicitly still wins, and reaches the restored optimizer.
    cfg = resolve_config(
        None, None, {"resume": True, "beta2": 0.95, "out_dir": tiny_options["out_dir"]}
    )
    assert cfg.optim.beta2 == 0.95
    from nanogpt_cli.train import Trainer

    trainer = Trainer(cfg)
    assert {g["betas"] for g in trainer.optimizer.param_groups} == {(0.9, 0.95)}


def test_resume_does_not_repeat_the_checkpoint_evaluation(tiny_options: dict[str, Any]) -> None:
    run(tiny_options, max_iters=20)
    run(tiny_options, max_iters=40, resume=True)
    out = Path(tiny_options["out_dir"])
    evals = [r["iter"] for r in read_metrics(out / "metrics.jsonl") if r["kind"] == "eval"]
    assert evals == [0, 20, 40]


def test_a_fresh_run_starts_a_fresh_metrics_file(tiny_options: dict[str, Any]) -> None:
    run(tiny_options, max_iters=10)
    run(tiny_options, max_iters=5, overwrite=True)
    out = Path(tiny_options["out_dir"])
    assert max(r["iter"] for r in read_metrics(out / "metrics.jsonl")) == 5


def test_resume_without_checkpoint_says_where_it_looked(tiny_options: dict[str, Any]) -> None:
    with pytest.raises(
        CheckpointError, match=r"cannot resume: no checkpoint in .*without --resume"
    ):
        run(tiny_options, resume=True)


def test_resume_keeps_checkpoint_shape_and_warns(tiny_options: dict[str, Any]) -> None:
    run(tiny_options, max_iters=10)
    result = run(tiny_options, resume=True, max_iters=20, n_layer=3)
    assert result.iter_num == 20
    assert read_checkpoint(tiny_options["out_dir"]).model_config.n_layer == 2


def test_eval_only_evaluates_once_and_saves_nothing(tiny_options: dict[str, Any]) -> None:
    result = run(tiny_options, eval_only=True)
    out = Path(tiny_options["out_dir"])
    assert result.iter_num == 0 and not result.saved
    assert list(losses(out, "eval", "val_loss")) == [0]
    assert not (out / MODEL_FILE).exists()


def test_a_run_whose_evaluations_never_improve_still_saves_at_the_end(
    tiny_options: dict[str, Any],
) -> None:
    run(tiny_options, max_iters=5)
    out = Path(tiny_options["out_dir"])
    meta = json.loads((out / CONFIG_FILE).read_text())
    meta["train"]["best_val_loss"] = 0.0  # no evaluation can beat this
    (out / CONFIG_FILE).write_text(json.dumps(meta))
    result = run(tiny_options, max_iters=8, resume=True)
    assert result.saved
    # The end of the run is saved beside the better checkpoint, which stays (issue 23).
    ckpt = read_checkpoint(out / "last")
    assert ckpt.state.iter_num == 8 and ckpt.state.best_val_loss == 0.0
    assert read_checkpoint(out).state.iter_num == 5


def test_gradient_accumulation_equals_the_larger_batch(
    tiny_options: dict[str, Any], tmp_path: Path
) -> None:
    # Two micro-batches of 4 draw the same windows as one batch of 8, so the steps match.
    common = dict(tiny_options, max_iters=10, log_interval=1, eval_interval=1000)
    run(dict(common, batch_size=8, out_dir=str(tmp_path / "big")))
    run(dict(common, batch_size=4, gradient_accumulation_steps=2, out_dir=str(tmp_path / "accum")))
    big = losses(tmp_path / "big", "train", "loss")
    accum = losses(tmp_path / "accum", "train", "loss")
    assert big.keys() == accum.keys()
    for it in big:
        assert accum[it] == pytest.approx(big[it], abs=1e-5)
    record = next(
        r for r in read_metrics(tmp_path / "accum" / "metrics.jsonl") if r["kind"] == "train"
    )
    assert record["tokens_per_s"] * record["ms"] / 1000 == pytest.approx(2 * 4 * 16)


def test_optimizer_state_round_trips(tiny_options: dict[str, Any]) -> None:
    run(tiny_options, max_iters=5)
    ckpt = read_checkpoint(tiny_options["out_dir"])
    state = ckpt.optimizer_state()
    steps = [s["step"] for s in state["optimizer"]["state"].values()]
    assert all(float(s) == 5 for s in steps)


def test_interrupted_save_is_detected(tiny_options: dict[str, Any]) -> None:
    run(tiny_options, max_iters=5)
    out = Path(tiny_options["out_dir"])
    meta = json.loads((out / CONFIG_FILE).read_text())
    meta["train"]["iter_num"] = 6  # as if the JSON of a later save landed alone
    (out / CONFIG_FILE).write_text(json.dumps(meta))
    with pytest.raises(CheckpointError, match="a save was interrupted"):
        read_checkpoint(out)


def test_missing_dataset_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match="nanogpt prepare openwebtext"):
        run(
            {
                "dataset": "openwebtext",  # (shakespeare-char would be prepared on first use)
                "data_dir": str(tmp_path / "none"),
                "out_dir": str(tmp_path / "o"),
                "device": "cpu",
            }
        )


def test_out_dir_that_is_a_file(tiny_options: dict[str, Any], tmp_path: Path) -> None:
    (tmp_path / "file").write_text("x")
    with pytest.raises(ConfigError, match="is a file"):
        run(tiny_options, out_dir=str(tmp_path / "file"))


def test_block_size_larger_than_data(tiny_options: dict[str, Any], data_dir: Path) -> None:
    val_tokens = (data_dir / "shakespeare-char" / "val.bin").stat().st_size // 2
    with pytest.raises(DatasetError, match="use a smaller --block-size"):
        run(tiny_options, block_size=val_tokens + 10)


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")
def test_cuda_on_a_machine_without_it(tiny_options: dict[str, Any]) -> None:
    from nanogpt_cli.errors import DeviceError

    with pytest.raises(DeviceError, match="no CUDA GPU"):
        run(tiny_options, device="cuda")


def test_learning_rate_schedule() -> None:
    cfg = build_config(
        None,
        overrides={"learning_rate": 1.0, "min_lr": 0.1, "warmup_iters": 10, "lr_decay_iters": 110},
    ).optim
    assert learning_rate(0, cfg) == pytest.approx(1 / 11)
    assert learning_rate(9, cfg) == pytest.approx(10 / 11)
    assert learning_rate(10, cfg) == pytest.approx(1.0)
    assert learning_rate(60, cfg) == pytest.approx(0.55)  # half way down the cosine
    assert learning_rate(110, cfg) == pytest.approx(0.1)
    assert learning_rate(500, cfg) == pytest.approx(0.1)
    cfg.decay_lr = False
    assert learning_rate(500, cfg) == 1.0


def nanogpt_get_lr(it: int, lr: float, min_lr: float, warmup: int, decay: int) -> float:
    """nanoGPT's train.py get_lr, as it is written there."""
    if it < warmup:
        return lr * (it + 1) / (warmup + 1)
    if it > decay:
        return min_lr
    decay_ratio = (it - warmup) / (decay - warmup)
    assert 0 <= decay_ratio <= 1
    coeff = 0.5 * (1.0 + math.cos(math.pi * decay_ratio))
    return min_lr + coeff * (lr - min_lr)


@pytest.mark.parametrize(("warmup", "decay"), [(10, 110), (100, 20), (100, 0), (0, 50), (5, 6)])
def test_learning_rate_schedule_is_nanogpts(warmup: int, decay: int) -> None:
    """Also where --lr-decay-iters is below --warmup-iters (accepted with a warning): the
    warmup, then the minimum rate."""
    values = {"learning_rate": 1e-3, "min_lr": 1e-4, "warmup_iters": warmup}
    cfg = build_config(None, overrides={**values, "lr_decay_iters": decay}).optim
    for it in range(0, 2 * max(warmup, decay) + 3):
        expected = nanogpt_get_lr(it, 1e-3, 1e-4, warmup, decay)
        assert learning_rate(it, cfg) == pytest.approx(expected, rel=1e-12), it
    if decay < warmup:
        assert learning_rate(warmup - 1, cfg) == pytest.approx(1e-3 * warmup / (warmup + 1))
        assert learning_rate(warmup, cfg) == 1e-4


@pytest.mark.parametrize("dtype", ["bfloat16", "float16"])
def test_mixed_precision_runs_on_cpu(tiny_options: dict[str, Any], dtype: str) -> None:
    # The autocast and gradient-scaler path that CUDA takes, exercised on the CPU.
    result = run(tiny_options, dtype=dtype, max_iters=6, eval_interval=3, log_interval=3)
    assert result.saved and math.isfinite(result.best_val_loss)
    scaler = read_checkpoint(tiny_options["out_dir"]).optimizer_state()["scaler"]
    if dtype == "float16":
        assert scaler["scale"] > 0  # the scaler was enabled and its state saved
    else:
        assert not scaler  # bfloat16 needs no loss scaling


def test_save_interrupted_during_renames_is_finished_on_load(
    tiny_options: dict[str, Any],
) -> None:
    import os

    run(tiny_options, max_iters=5)
    out = Path(tiny_options["out_dir"])
    run(dict(tiny_options, out_dir=str(out / "next")), max_iters=7)
    # Stage the iteration-7 files as a save does, then "crash" after renaming the model only.
    for name in (MODEL_FILE, OPTIMIZER_FILE, CONFIG_FILE):
        os.replace(out / "next" / name, out / (name + ".tmp"))
    os.replace(out / (MODEL_FILE + ".tmp"), out / MODEL_FILE)
    ckpt = read_checkpoint(out)
    assert ckpt.state.iter_num == 7 and ckpt.optimizer_state()["optimizer"]["state"]
    assert not list(out.glob("*.tmp"))


def test_save_interrupted_before_its_json_leaves_the_previous_checkpoint(
    tiny_options: dict[str, Any],
) -> None:
    run(tiny_options, max_iters=5)
    out = Path(tiny_options["out_dir"])
    (out / (MODEL_FILE + ".tmp")).write_bytes(b"half a model")
    (out / (CONFIG_FILE + ".tmp")).write_text('{"format": "nanogpt-chec')  # cut short
    assert read_checkpoint(out).state.iter_num == 5
    assert not list(out.glob("*.tmp"))


def test_disk_full_while_saving_keeps_the_previous_checkpoint(
    tiny_options: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    import errno

    run(tiny_options, max_iters=5)
    out = Path(tiny_options["out_dir"])
    before = (out / MODEL_FILE).read_bytes()

    def full_disk(*args: Any, **kwargs: Any) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(torch, "save", full_disk)
    with pytest.raises(CheckpointError, match=r"No space left on device.*previous checkpoint"):
        run(tiny_options, max_iters=10, resume=True, always_save_checkpoint=True)
    assert (out / MODEL_FILE).read_bytes() == before
    assert read_checkpoint(out).state.iter_num == 5
    assert not list(out.glob("*.tmp"))


def test_compile_failure_falls_back_to_eager(
    tiny_options: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    # Compilation happens on the first call; when it fails there, training goes on eagerly.
    def broken_compile(model: torch.nn.Module) -> Any:
        def call(*args: Any, **kwargs: Any) -> Any:
            raise RuntimeError("no C++ compiler found")

        return call

    monkeypatch.setattr(torch, "compile", broken_compile)
    result = run(tiny_options, compile=True, max_iters=4, eval_interval=2)
    assert result.iter_num == 4 and result.saved


def test_total_batch_tokens_is_the_step_the_run_takes_and_logs(
    tiny_options: dict[str, Any],
) -> None:
    """--total-batch-tokens sets the micro-batches a step runs (one derivation, shared with
    nanogpt bench), and the start-up lines say so."""
    from loguru import logger

    lines: list[str] = []
    logger.enable("nanogpt_cli")
    sink = logger.add(lambda m: lines.append(m.record["message"]), level="DEBUG")
    try:
        run(tiny_options, max_iters=2, total_batch_tokens=3 * 8 * 16)
    finally:
        logger.remove(sink)
        logger.disable("nanogpt_cli")
    records = read_metrics(Path(tiny_options["out_dir"]) / "metrics.jsonl")
    assert [r["tokens"] for r in records if r["kind"] == "eval"][-1] == 2 * 3 * 8 * 16
    assert any("384 tokens per step" in line for line in lines)
    assert any("3 micro-batches of 8 per step" in line for line in lines)
