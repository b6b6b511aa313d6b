"""Processes and signals: the processes of a run end with their launcher however it ends,
and a stop signal reaches every phase of a run (start-up, evaluation) promptly."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from conftest import TINY, as_flags, make_text

from nanogpt_cli.checkpoint import read_checkpoint
from nanogpt_cli.metrics import read_metrics
from nanogpt_cli.train import resolve_config, train
from nanogpt_cli.train.outdir import resume_dir
from nanogpt_cli.train.signals import StopNow, StopRequests

LINUX = sys.platform.startswith("linux")


def nanogpt(*args: str, stderr: Any = subprocess.PIPE, **env: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "nanogpt_cli", *args],
        stdout=subprocess.DEVNULL,
        stderr=stderr,
        text=True,
        env={**os.environ, **env},
    )


def wait_until(done: Any, process: subprocess.Popen[str], what: str, limit: float = 120) -> None:
    """Poll ``done()`` while ``process`` runs (for the state it reaches, not for time)."""
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline and process.poll() is None:
        if done():
            return
        time.sleep(0.02)
    raise AssertionError(f"{what} never happened (exit code {process.poll()})")


def children(parent: int) -> list[int]:
    """PIDs of the processes whose parent is ``parent`` (Linux /proc)."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(stat[1]) == parent:
                found.append(int(entry.name))
    return found


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"  # a zombie has ended; only its parent's wait is missing


def has_record(out: Path, kind: str, iteration: int) -> bool:
    path = out / "metrics.jsonl"
    if not path.exists():
        return False
    for line in path.read_text().splitlines():
        try:
            record = json.loads(line)
        except ValueError:  # a line being written
            continue
        if record.get("kind") == kind and record.get("iter") == iteration:
            return True
    return False


def error_line(err: str) -> str:
    lines = [line for line in err.splitlines() if line.strip()]
    assert lines and "Traceback" not in err, err
    record = json.loads(lines[-1])  # LOG_FORMAT=json: the error is a record too
    return str(record["message"])


# -- no orphans ----------------------------------------------------------------------------


@pytest.mark.skipif(not LINUX, reason="finds processes in /proc")
def test_killing_the_launcher_ends_its_processes(data_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    options = {
        **TINY,
        "gradient_accumulation_steps": 2,
        "max_iters": 1_000_000,
        "lr_decay_iters": 1_000_000,
        "eval_interval": 1_000_000,
        "data_dir": str(data_dir),
        "out_dir": str(out),
        "dist_timeout": 20,
    }
    # The processes inherit the launcher's stderr: a file, which no one has to keep reading.
    with open(tmp_path / "stderr.txt", "w") as err:
        launcher = nanogpt("train", *as_flags(options), "--nproc-per-node", "2", stderr=err)
        try:
            workers: list[int] = []

            def training() -> bool:
                workers[:] = children(launcher.pid)
                return len(workers) == 2 and has_record(out, "train", 5)

            wait_until(training, launcher, "training on 2 processes")
            launcher.kill()
            launcher.wait()
            deadline = time.monotonic() + 5
            while time.monotonic() < deadline and any(alive(w) for w in workers):
                time.sleep(0.05)
            left = [w for w in workers if alive(w)]
        finally:
            for pid in children(launcher.pid) + workers:
                if alive(pid):
                    os.kill(pid, signal.SIGKILL)
    assert not left, f"processes {left} outlived their launcher by 5 s"
    # They were sent SIGTERM: as when the launcher stops them, they saved their last step.
    assert read_checkpoint(resume_dir(out)).state.iter_num >= 5


@pytest.mark.skipif(not LINUX, reason="parent-death signal and /proc")
def test_a_worker_of_a_killed_parent_is_signalled(tmp_path: Path) -> None:
    # The watchdog's promise, without torch: a child that asked to end with its parent is
    # signalled when the parent is killed with SIGKILL, and killed if it ignores that.
    script = tmp_path / "parent.py"
    script.write_text(
        "import subprocess, sys, time\n"
        "child = subprocess.Popen([sys.executable, '-c', "
        "'import signal, time\\n"
        "signal.signal(signal.SIGTERM, signal.SIG_IGN)\\n"
        "from nanogpt_cli.lifeline import end_with_parent\\n"
        "end_with_parent(grace_s=1)\\n"
        'print("ready", flush=True)\\n'
        "time.sleep(600)'])\n"
        "print(child.pid, flush=True)\n"
        "time.sleep(600)\n",
        encoding="utf-8",
    )
    parent = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE, text=True)
    assert parent.stdout is not None
    try:
        child = int(parent.stdout.readline())
        assert parent.stdout.readline().strip() == "ready"
        parent.kill()
        parent.wait()
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and alive(child):
            time.sleep(0.05)
        assert not alive(child)
    finally:
        parent.kill()
        if alive(child):
            os.kill(child, signal.SIGKILL)


# -- stop signals reach every phase --------------------------------------------------------


def test_a_stop_during_an_evaluation_ends_it_and_saves_the_last_step(
    tiny_options: dict[str, Any],
) -> None:
    # A model whose evaluation runs for tens of seconds on a CPU (thousands of forward
    # passes); 10 steps into a resumed run, SIGINT arrives as its evaluation at iter 20
    # starts. The evaluation stops there, its partial result dropped, the state of
    # iteration 20 is saved and the run ends with 130.
    out = Path(tiny_options["out_dir"])
    options = {
        **tiny_options,
        "n_embd": 128,
        "n_head": 4,
        "block_size": 64,
        "max_iters": 10,
        "eval_interval": 10,
    }
    train(resolve_config(None, None, options))
    long_eval = {**options, "max_iters": 20, "eval_interval": 20, "eval_iters": 16_000}
    run = nanogpt("train", *as_flags(long_eval), "--resume", LOG_FORMAT="json")
    wait_until(lambda: has_record(out, "train", 20), run, "the step before the evaluation")
    signalled = time.monotonic()
    run.send_signal(signal.SIGINT)
    _, err = run.communicate(timeout=300)
    took = time.monotonic() - signalled
    assert run.returncode == 130, err
    assert error_line(err) == (
        f"stopped by SIGINT at iteration 20; continue with `nanogpt train --out-dir {out} --resume`"
    )
    assert not has_record(out, "eval", 20)  # stopped during it: no (partial) result
    assert read_checkpoint(resume_dir(out)).state.iter_num == 20  # what --resume reads
    assert took < 15, f"{took:.1f} s from the signal to the end"  # the evaluation takes >30 s
    # Resuming makes the evaluation that the stop interrupted (a short one, this time).
    train(resolve_config(None, None, {**long_eval, "eval_iters": 4, "resume": True}))
    evals = [r["iter"] for r in read_metrics(out / "metrics.jsonl") if r["kind"] == "eval"]
    assert evals == [0, 10, 20]


def test_a_stop_during_start_up_ends_the_run_at_once(tmp_path: Path) -> None:
    # Preparing a large corpus on first use, the longest start-up work: SIGTERM there ends
    # the run with its one line and 143, without waiting for the preparation to finish.
    corpus = tmp_path / "big.txt"
    corpus.write_text(make_text(n_lines=600_000), encoding="utf-8")  # ~20 MB
    data, out = tmp_path / "datasets", tmp_path / "out"
    options = {**TINY, "data_dir": str(data), "out_dir": str(out)}
    run = nanogpt(
        "train",
        *as_flags(options),
        LOG_FORMAT="json",
        NANOGPT_SHAKESPEARE_URL=corpus.as_uri(),
    )
    err = ""

    def preparing() -> bool:
        nonlocal err
        assert run.stderr is not None
        err += run.stderr.readline()
        return "preparing it first" in err

    wait_until(preparing, run, "the preparation")
    run.send_signal(signal.SIGTERM)
    rest = run.communicate(timeout=120)[1]
    assert run.returncode == 143, err + rest
    assert error_line(rest) == "stopped by SIGTERM before the first step; nothing was saved"
    assert not (data / "shakespeare-char" / "meta.json").exists()  # it did not run on
    assert not [p for p in data.rglob("*") if p.is_file()]  # nor left partial files
    assert not (out / "metrics.jsonl").exists()


def test_a_second_ctrl_c_says_that_it_stopped_without_saving() -> None:
    with StopRequests(aborted="aborted; nothing saved") as stop:
        os.kill(os.getpid(), signal.SIGINT)
        assert stop.signum == signal.SIGINT
        with pytest.raises(StopNow, match="aborted; nothing saved") as raised:
            os.kill(os.getpid(), signal.SIGINT)
    assert raised.value.exit_code == 130
    assert isinstance(raised.value, KeyboardInterrupt)  # no `except Exception` swallows it
    with StopRequests(at_once=True), pytest.raises(StopNow, match="before the first step"):
        os.kill(os.getpid(), signal.SIGTERM)
