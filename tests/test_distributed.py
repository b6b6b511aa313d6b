"""Distributed training on the CPU: gloo, 2 processes started by torchrun's elastic launcher
(``nanogpt train --nproc-per-node 2``), DDP and FSDP2, against one process."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from conftest import TINY, as_flags
from safetensors.torch import load_file

from nanogpt_cli.checkpoint import MODEL_FILE, read_checkpoint
from nanogpt_cli.config import build_config
from nanogpt_cli.data.loader import BatchLoader, RankBatches
from nanogpt_cli.errors import ConfigError
from nanogpt_cli.evaluate import _share
from nanogpt_cli.metrics import read_metrics
from nanogpt_cli.train import train
from nanogpt_cli.train.distributed import _by_index, _by_name

# 20 steps of 4 micro-batches (2 per process), evaluated and saved every 10.
RUN = {**TINY, "gradient_accumulation_steps": 4, "max_iters": 20, "eval_interval": 10}
RUN["lr_decay_iters"] = 40
TOLERANCE = 1e-5

# The test process's own SIGINT handler (ignored where it was started in the background)
SIGINT_AT_START = signal.getsignal(signal.SIGINT)


def run(options: dict[str, Any], out: Path, **overrides: Any) -> Path:
    train(build_config("shakespeare-char", overrides={**options, "out_dir": str(out), **overrides}))
    return out


def losses(out: Path) -> dict[tuple[str, int], float]:
    return {
        (r["kind"], r["iter"]): r["loss"] if r["kind"] == "train" else r["val_loss"]
        for r in read_metrics(out / "metrics.jsonl")
    }


def assert_same_run(a: Path, b: Path, after: int = -1) -> None:
    la, lb = losses(a), losses(b)
    keys = [k for k in la if k[1] > after]
    assert keys and all(k in lb for k in keys)
    assert max(abs(la[k] - lb[k]) for k in keys) < TOLERANCE
    wa, wb = load_file(str(a / MODEL_FILE)), load_file(str(b / MODEL_FILE))
    assert max((wa[k] - wb[k]).abs().max().item() for k in wa) < TOLERANCE


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """One process, 20 and 40 steps; 2 processes with DDP and FSDP, 20 steps each."""
    from conftest import make_text

    from nanogpt_cli.data.prepare import prepare_shakespeare_char

    root = tmp_path_factory.mktemp("dist")
    corpus = root / "corpus.txt"
    corpus.write_text(make_text(), encoding="utf-8")
    data = root / "datasets"
    prepare_shakespeare_char(source=str(corpus), data_dir=data)
    options = {**RUN, "data_dir": str(data), "dist_timeout": 60}
    return {
        "options": options,  # type: ignore[dict-item]
        "one": run(options, root / "one"),
        "one40": run(options, root / "one40", max_iters=40),
        "ddp": run(options, root / "ddp", nproc_per_node=2),
        "fsdp": run(options, root / "fsdp", nproc_per_node=2, strategy="fsdp"),
    }


def test_two_ddp_processes_equal_one_with_the_same_global_batch(runs: dict[str, Path]) -> None:
    assert_same_run(runs["one"], runs["ddp"])
    # the launcher leaves this process's signal handlers as they were
    assert signal.getsignal(signal.SIGINT) is SIGINT_AT_START
    assert read_checkpoint(runs["ddp"]).state.iter_num == 20


def test_two_fsdp_processes_equal_one_with_the_same_global_batch(runs: dict[str, Path]) -> None:
    assert_same_run(runs["one"], runs["fsdp"])
    # the checkpoint is the full model, in the usual format
    assert read_checkpoint(runs["fsdp"]).format == "separated"


def test_fsdp_with_the_cpu_loss_head_equals_one_process(
    runs: dict[str, Path], tmp_path: Path
) -> None:
    """A vocabulary padded to 8192 takes the fused CPU loss head (kernels.loss_head) in
    every process; sharded, it still equals one process."""
    from nanogpt_cli.kernels.loss_head import MIN_VOCAB

    options = {**runs["options"], "vocab_size": 2 * MIN_VOCAB, "max_iters": 10}  # type: ignore[dict-item]
    one = run(options, tmp_path / "one")
    fsdp = run(options, tmp_path / "fsdp", nproc_per_node=2, strategy="fsdp")
    assert_same_run(one, fsdp)


def test_a_two_process_checkpoint_resumes_in_one(runs: dict[str, Path], tmp_path: Path) -> None:
    import shutil

    resumed = tmp_path / "resumed"
    shutil.copytree(runs["fsdp"], resumed)
    run(runs["options"], resumed, resume=True, max_iters=40)  # type: ignore[arg-type]
    assert_same_run(runs["one40"], resumed, after=20)


def test_a_one_process_checkpoint_resumes_in_two(runs: dict[str, Path], tmp_path: Path) -> None:
    import shutil

    resumed = tmp_path / "resumed"
    shutil.copytree(runs["one"], resumed)
    options = runs["options"]
    run(options, resumed, resume=True, max_iters=40, nproc_per_node=2)  # type: ignore[arg-type]
    assert_same_run(runs["one40"], resumed, after=20)


def test_a_global_batch_that_does_not_divide_is_refused_before_starting(
    tiny_options: dict[str, Any],
) -> None:
    with pytest.raises(ConfigError, match="multiple of 2"):
        train(
            build_config(
                "shakespeare-char",
                overrides={**tiny_options, "gradient_accumulation_steps": 3, "nproc_per_node": 2},
            )
        )


def test_total_batch_tokens_sets_the_accumulation(tiny_options: dict[str, Any]) -> None:
    from nanogpt_cli.train.setup import micro_batches_per_step

    cfg = build_config("shakespeare-char", overrides={**tiny_options, "total_batch_tokens": 512})
    assert micro_batches_per_step(cfg) == 512 // (8 * 16)
    with pytest.raises(ConfigError, match="--total-batch-tokens"):
        build_config("shakespeare-char", overrides={**tiny_options, "total_batch_tokens": 100})


def _workers(launcher: int) -> dict[int, int]:
    """rank -> pid of the training processes under ``launcher`` (Linux /proc)."""
    found = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            environ = (entry / "environ").read_bytes().split(b"\0")
        except OSError:
            continue
        if int(stat[1]) != launcher:
            continue
        for item in environ:
            if item.startswith(b"RANK="):
                found[int(item[5:])] = int(entry.name)
    return found


def test_the_process_killed_by_a_signal_is_named_as_the_cause() -> None:
    """The peers of a killed process fail too, and may exit before the launcher notices the
    kill: the report names the killed (or crashed) one first, the launcher's SIGTERM last."""
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError, ProcessFailure

    from nanogpt_cli.train.launch import _failures

    def report(codes: dict[int, int]) -> str:
        failures = {r: ProcessFailure(r, 1000 + r, code, "") for r, code in codes.items()}
        for failure in failures.values():
            failure.timestamp = 1_700_000_000  # all seen in the same second
        return _failures(ChildFailedError("train", failures), 3)

    killed = "process 1 of 3 was killed by SIGKILL (1 more stopped)"
    assert report({0: 1, 1: -signal.SIGKILL}) == killed
    assert report({0: -signal.SIGTERM, 2: -signal.SIGKILL, 1: 1}).startswith(
        "process 2 of 3 was killed by SIGKILL"
    )
    assert report({1: 1, 2: 3}).startswith("process 1 of 3 exited with code 1")
    # an abort is no outside cause: the earliest failure (the same second: the lower rank)
    assert report({1: -signal.SIGABRT, 0: 1}).startswith("process 0 of 3 exited with code 1")


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="finds processes in /proc")
def test_killing_one_process_ends_the_whole_run(data_dir: Path, tmp_path: Path) -> None:
    options = {
        **TINY,
        "gradient_accumulation_steps": 2,
        "max_iters": 1_000_000,
        "eval_interval": 1_000_000,
        "data_dir": str(data_dir),
        "out_dir": str(tmp_path / "out"),
        "dist_timeout": 20,
    }
    cmd = [
        sys.executable,
        "-m",
        "nanogpt_cli",
        "train",
        *as_flags(options),
        "--nproc-per-node",
        "2",
    ]
    launcher = subprocess.Popen(cmd, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 120
        workers: dict[int, int] = {}
        while time.monotonic() < deadline and launcher.poll() is None:
            workers = _workers(launcher.pid)
            metrics = tmp_path / "out" / "metrics.jsonl"
            if len(workers) == 2 and metrics.exists() and "train" in metrics.read_text():
                break
            time.sleep(0.5)
        assert len(workers) == 2, "the two training processes did not start"
        killed = time.monotonic()
        os.kill(workers[1], signal.SIGKILL)
        _, err = launcher.communicate(timeout=options["dist_timeout"] + 30)
        ended = time.monotonic() - killed
    finally:
        if launcher.poll() is None:
            launcher.kill()
    assert launcher.returncode != 0 and ended < options["dist_timeout"]
    last = [line for line in err.splitlines() if line.strip()][-1]
    assert last.startswith("error: the run ended: process 1 of 2 was killed by SIGKILL"), err


def test_each_process_reads_its_share_of_the_same_batches(data_dir: Path) -> None:
    path = data_dir / "shakespeare-char" / "train.bin"

    def loader() -> BatchLoader:
        return BatchLoader(path, 16, 2, torch.device("cpu"), seed=5)

    single = RankBatches(loader(), rank=0, world=1, per_step=4)
    stream = [single.next()[0] for _ in range(12)]  # 3 steps of 4 micro-batches
    ranks = [RankBatches(loader(), rank=r, world=2, per_step=4) for r in range(2)]
    for step in range(3):
        for r, batches in enumerate(ranks):
            for i in range(2):
                assert torch.equal(batches.next()[0], stream[step * 4 + r * 2 + i])
    # A state saved at a step boundary (by rank 0) resumes any number of processes.
    saved = ranks[0].state()
    again = RankBatches(loader(), rank=1, world=2, per_step=4)
    again.load_state(saved)
    more = [single.next()[0] for _ in range(4)]
    assert torch.equal(again.next()[0], more[2]) and torch.equal(again.next()[0], more[3])


def test_optimizer_state_converts_between_names_and_positions() -> None:
    model = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.LayerNorm(4))
    from nanogpt_cli.config import OptimConfig
    from nanogpt_cli.train.optim import build_optimizer

    optimizer = build_optimizer(model, OptimConfig())
    model(torch.randn(2, 3)).sum().backward()
    optimizer.step()
    by_position = optimizer.state_dict()
    by_name = _by_name(by_position, optimizer, model)
    assert set(by_name["state"]) == {"0.weight", "0.bias", "1.weight", "1.bias"}
    assert by_name["param_groups"][0]["params"] == ["0.weight"]  # decayed: matrices only
    back = _by_index(by_name)
    assert back["param_groups"] == by_position["param_groups"]
    for i, state in by_position["state"].items():
        assert all(torch.equal(state[k], back["state"][i][k]) for k in state)


def test_evaluation_shares_are_equal_and_padding_is_ignored() -> None:
    class Two:
        world, rank = 2, 1

    windows = torch.arange(5 * 4).view(5, 4)
    share = _share(windows, Two())
    assert share.shape == (3, 4)
    assert torch.equal(share[:2], windows[3:]) and (share[2] == -1).all()
    assert np.array_equal(_share(windows, None).numpy(), windows.numpy())
