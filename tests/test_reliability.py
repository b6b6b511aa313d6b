"""Runs survive faults: stop signals checkpoint and resume exactly, SIGKILL at any moment
leaves a checkpoint to resume from, non-finite losses are skipped and never saved."""

from __future__ import annotations

import json
import os
import random
import re
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import torch
from conftest import as_flags
from reliability_child import train_in_child
from safetensors.torch import load_file

from nanogpt_cli.checkpoint import MODEL_FILE, read_checkpoint
from nanogpt_cli.cli.app import _expand_bare_flags
from nanogpt_cli.config import build_config
from nanogpt_cli.errors import CheckpointError, TrainingError
from nanogpt_cli.metrics import read_metrics
from nanogpt_cli.model import GPT
from nanogpt_cli.train import resolve_config, train
from nanogpt_cli.train.signals import StopRequests


def run(options: dict[str, Any], **overrides: Any) -> Any:
    return train(build_config("shakespeare-char", overrides={**options, **overrides}))


def train_losses(out: Path) -> dict[int, float]:
    return {
        r["iter"]: r["loss"] for r in read_metrics(out / "metrics.jsonl") if r["kind"] == "train"
    }


def start(options: dict[str, Any], *extra: str) -> subprocess.Popen[str]:
    cmd = [sys.executable, "-m", "nanogpt_cli", "train", *as_flags(options), *extra]
    return subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


def wait_for_records(out: Path, count: int, process: subprocess.Popen[str]) -> None:
    deadline = time.monotonic() + 120
    metrics = out / "metrics.jsonl"
    while time.monotonic() < deadline and process.poll() is None:
        if metrics.exists() and metrics.read_text().count('"train"') >= count:
            return
        time.sleep(0.05)
    raise AssertionError(f"the run did not log {count} steps: {process.communicate()[1]}")


@pytest.mark.parametrize(("sig", "code"), [(signal.SIGTERM, 143), (signal.SIGINT, 130)])
def test_a_run_stopped_by_a_signal_resumes_to_the_same_losses(
    tiny_options: dict[str, Any], tmp_path: Path, sig: int, code: int
) -> None:
    # K steps straight, against K steps stopped part-way by a signal and resumed: the same
    # losses, loss by loss, and the same final weights, to the last bit.
    options = dict(tiny_options, max_iters=300, lr_decay_iters=300, log_interval=1)
    options["eval_interval"] = 1000
    full = tmp_path / "full"
    run(options, out_dir=str(full))
    part = tmp_path / "part"
    process = start({**options, "out_dir": str(part)})
    wait_for_records(part, 100, process)
    process.send_signal(sig)
    _, err = process.communicate(timeout=60)
    assert process.returncode == code, err
    last = err.strip().splitlines()[-1]
    stopped = int(re.search(r"at iteration (\d+)", last).group(1))  # type: ignore[union-attr]
    assert last.startswith(f"error: stopped by {signal.Signals(sig).name} at iteration")
    assert last.endswith(f"continue with `nanogpt train --out-dir {part} --resume`")
    assert 100 <= stopped < 300 and read_checkpoint(part).state.iter_num == stopped
    run(options, out_dir=str(part), resume=True)
    assert train_losses(part) == train_losses(full)
    a, b = load_file(str(full / MODEL_FILE)), load_file(str(part / MODEL_FILE))
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_a_second_ctrl_c_aborts_at_once() -> None:
    before = signal.getsignal(signal.SIGINT)
    with StopRequests() as stop:
        os.kill(os.getpid(), signal.SIGINT)
        assert stop.signum == signal.SIGINT and stop.name == "SIGINT"
        with pytest.raises(KeyboardInterrupt):
            os.kill(os.getpid(), signal.SIGINT)
    assert signal.getsignal(signal.SIGINT) is before  # put back


@pytest.mark.skipif(not hasattr(signal, "SIGKILL"), reason="needs SIGKILL")
def test_sigkill_at_random_moments_always_leaves_a_checkpoint_to_resume(
    tiny_options: dict[str, Any], tmp_path: Path
) -> None:
    import multiprocessing

    out = tmp_path / "out"
    # A checkpoint at every other step: kills land before, during and after saves.
    options = dict(
        tiny_options,
        out_dir=str(out),
        max_iters=100_000,
        lr_decay_iters=100_000,
        eval_interval=2,
        eval_iters=1,
        always_save_checkpoint=True,
        log_interval=1,
        resume="auto",
    )
    # Children forked from a server that imported torch once: each starts in milliseconds.
    context = multiprocessing.get_context("forkserver")
    preload = ["torch", "torch._dynamo", "nanogpt_cli.train.engine", "reliability_child"]
    context.set_forkserver_preload(preload)  # torch.optim imports dynamo on first use
    rng = random.Random(0)
    metrics = out / "metrics.jsonl"
    resumed = 0
    for _ in range(20):
        logged = len(read_metrics(metrics)) if metrics.exists() else 0
        before = read_iteration(out)
        child = context.Process(target=train_in_child, args=(options,))
        child.start()
        deadline = time.monotonic() + 60

        # Two new records; and the first run must have saved once, however slow the machine,
        # since every later run is to resume a checkpoint: it saves at iteration 2, then logs
        # iteration 3 (the checkpoint itself is not read while it may be being written).
        while len(new := read_metrics(metrics) if metrics.exists() else []) <= logged + 1 or (
            before is None and not any(r["kind"] == "train" and r["iter"] >= 3 for r in new)
        ):
            assert child.is_alive() and time.monotonic() < deadline, "training did not start"
            time.sleep(0.01)
        time.sleep(rng.uniform(0.0, 0.3))
        os.kill(child.pid, signal.SIGKILL)  # type: ignore[arg-type]
        child.join(30)
        new = read_metrics(metrics)[logged:]
        if before is not None:
            # resumed from the checkpoint: the next step is the one after it
            steps = [r["iter"] for r in new if r["kind"] == "train"]
            assert steps and steps[0] == before + 1, (before, steps[:3])
            resumed += 1
        assert read_iteration(out) is not None or before is None, "a checkpoint was lost"
    assert resumed >= 19  # every run but the first resumed a checkpoint
    last = read_iteration(out) or 0
    final = run(options, max_iters=last + 4)
    assert final.iter_num == last + 4


def read_iteration(out: Path) -> int | None:
    """The iteration of the checkpoint a resume continues from (the best, or ``last`` when
    newer), or None when there is none yet; any other problem (a half-written or unreadable
    checkpoint) fails the test."""
    from nanogpt_cli.train.outdir import resume_dir

    try:
        return read_checkpoint(resume_dir(out)).state.iter_num
    except CheckpointError as e:
        if "no checkpoint" in str(e) or "not exist" in str(e):
            return None
        raise


def loss_times(factor: float, step: int, until: int, accum: int = 1) -> Any:
    """A GPT.forward whose training loss is multiplied by ``factor`` from optimizer step
    ``step`` to ``until`` (counted in this process's training forward passes)."""
    forward = GPT.forward
    calls = {"n": 0}

    def patched(self: GPT, *args: Any, **kwargs: Any) -> Any:
        logits, loss = forward(self, *args, **kwargs)
        if self.training and loss is not None:
            calls["n"] += 1
            if step <= (calls["n"] - 1) // accum + 1 <= until:
                loss = loss * factor
        return logits, loss

    return patched


def patch_forward(monkeypatch: pytest.MonkeyPatch, forward: Any) -> None:
    """Train with ``forward``, its passes counted from the first step: the passes that
    estimate the run's time beforehand are left out."""
    from nanogpt_cli.train.step import StepTimes, TrainStep

    monkeypatch.setattr(GPT, "forward", forward)
    monkeypatch.setattr(TrainStep, "measure", lambda self, x, y: StepTimes(0, 0, 0, 0))


def nan_from(step: int, until: int, accum: int = 1) -> Any:
    """A GPT.forward with a NaN training loss from step ``step`` to ``until``."""
    return loss_times(float("nan"), step, until, accum)


def test_non_finite_steps_are_skipped_and_logged(
    tiny_options: dict[str, Any],
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    patch_forward(monkeypatch, nan_from(12, 14))
    result = run(tiny_options, max_iters=20, eval_interval=10, log_interval=5)
    assert result.iter_num == 20
    err = capsys.readouterr().err
    assert [int(i) for i in re.findall(r"iteration (\d+) skipped", err)] == [12, 13, 14]
    weights = load_file(str(Path(tiny_options["out_dir"]) / MODEL_FILE))
    assert all(torch.isfinite(w).all() for w in weights.values())
    losses = train_losses(Path(tiny_options["out_dir"]))
    assert all(v == v for v in losses.values())  # the mean leaves the skipped steps out


def test_a_nan_loss_never_reaches_the_saved_checkpoint(
    tiny_options: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    out = Path(tiny_options["out_dir"])
    run(tiny_options, max_iters=10, eval_interval=10)
    saved = load_file(str(out / MODEL_FILE))
    patch_forward(monkeypatch, nan_from(1, 10**9))
    with pytest.raises(TrainingError, match="3 steps in a row had a non-finite loss"):
        run(
            tiny_options,
            resume=True,
            max_iters=40,
            eval_interval=2,
            always_save_checkpoint=True,
            max_bad_steps=3,
            log_interval=1,
        )
    after = load_file(str(out / MODEL_FILE))
    assert all(torch.equal(saved[k], after[k]) for k in saved)  # never replaced


def test_resume_auto_starts_afresh_or_resumes(tiny_options: dict[str, Any]) -> None:
    first = train(resolve_config(None, None, {**tiny_options, "max_iters": 10, "resume": "auto"}))
    assert first.iter_num == 10  # no checkpoint: a fresh run
    again = train(resolve_config(None, None, {**tiny_options, "max_iters": 20, "resume": "auto"}))
    assert again.iter_num == 20 and read_checkpoint(tiny_options["out_dir"]).state.iter_num == 20
    records = read_metrics(Path(tiny_options["out_dir"]) / "metrics.jsonl")
    assert [r["iter"] for r in records if r["kind"] == "eval"] == [0, 10, 20]  # resumed


def test_resume_flag_takes_an_optional_value() -> None:
    assert _expand_bare_flags(["train", "--resume"]) == ["train", "--resume", "yes"]
    assert _expand_bare_flags(["train", "--resume", "--max-iters", "5"]) == [
        "train",
        "--resume",
        "yes",
        "--max-iters",
        "5",
    ]
    assert _expand_bare_flags(["train", "--resume", "auto"]) == ["train", "--resume", "auto"]
    assert _expand_bare_flags(["train", "--no-resume"]) == ["train", "--resume", "no"]
    assert _expand_bare_flags(["train", "--resume=auto"]) == ["train", "--resume=auto"]
    assert build_config(overrides={"resume": True}).run.resume == "yes"
    assert json.dumps(build_config(overrides={"resume": False}).run.resume) == '"no"'


def test_non_finite_weights_are_never_saved(tiny_options: dict[str, Any]) -> None:
    from nanogpt_cli.train.engine import Trainer

    out = Path(tiny_options["out_dir"])
    run(tiny_options, max_iters=5, eval_interval=5)
    before = (out / MODEL_FILE).read_bytes()
    trainer = Trainer(build_config("shakespeare-char", overrides={**tiny_options, "resume": True}))
    with torch.no_grad():
        trainer.model.lm_head.weight[0, 0] = float("nan")
    with pytest.raises(TrainingError, match="not overwritten"):
        trainer.save(trainer.train_loader.state())
    assert (out / MODEL_FILE).read_bytes() == before


@pytest.mark.skipif(not hasattr(signal, "SIGUSR1"), reason="no SIGUSR1 here")
def test_a_preemption_warning_stops_like_sigterm() -> None:
    from nanogpt_cli.train.signals import Interrupted

    with StopRequests() as stop:
        os.kill(os.getpid(), signal.SIGUSR1)
        assert stop.signum == signal.SIGUSR1
    assert Interrupted("stopped", signal.SIGUSR1).exit_code == 138


def test_a_loss_spike_is_logged_with_the_gradient_norm(
    tiny_options: dict[str, Any],
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    patch_forward(monkeypatch, loss_times(3.0, 15, 15))  # one step, three times
    run(tiny_options, max_iters=20, log_interval=1)
    warnings = [line for line in capsys.readouterr().err.splitlines() if "loss spike" in line]
    assert len(warnings) == 1 and "iteration 15" in warnings[0]
    assert "gradient norm" in warnings[0]
