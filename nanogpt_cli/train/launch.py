"""``nanogpt train --nproc-per-node N``: start a run on N processes of this machine with
torchrun's elastic launcher (the standard one; nothing home-made in its place).

The resolved config travels as a JSON file, so every process runs exactly the options this
process resolved; logging settings travel in ``LOG_LEVEL`` / ``LOG_FORMAT``. When a process
fails, the launcher stops the others and the run ends with one line naming the process.
A stop signal to the launcher reaches the processes, which save as a single process does;
the processes end with the launcher even when it is killed (``cli.process``).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import signal
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from ..checkpoint import read_checkpoint
from ..config import TrainConfig
from ..data.first_use import prepare_if_missing
from ..errors import CheckpointError, TrainingError
from ..lifeline import LAUNCHER_PID_ENV
from ..log import current_level, get_logger, output_format
from ..state import TrainResult
from .lock import RunLock, launcher_env
from .outdir import check_fresh_run, check_out_dir, resume_command, resume_dir
from .setup import micro_batches_per_process
from .signals import Interrupted, StopRequests
from .start import wants_resume

logger = get_logger(__name__)


def worker_args(config_path: Path) -> list[str]:
    """What each process runs: ``python -m nanogpt_cli train-worker CONFIG.json``."""
    return ["-m", "nanogpt_cli", "train-worker", str(config_path)]


def launch(cfg: TrainConfig) -> TrainResult:
    """Run ``cfg`` on ``nproc_per_node`` processes; returns the ``TrainResult`` read back from
    the run's checkpoint. A failed process ends the run: ``TrainingError``."""
    # One writer per out-dir: this process holds the lock for the processes it starts.
    with RunLock(check_out_dir(cfg.run.out_dir)) as lock, _environment(launcher_env(lock.out_dir)):
        return _launch(cfg)


def _launch(cfg: TrainConfig) -> TrainResult:
    from torch.distributed.elastic.multiprocessing.api import SignalException
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.launcher.api import LaunchConfig, elastic_launch

    n = cfg.system.nproc_per_node
    micro_batches_per_process(cfg, n)  # a config that cannot run fails before starting any
    tokens_at_start = 0
    if wants_resume(cfg.run.resume, cfg.run.out_dir):
        with contextlib.suppress(CheckpointError):  # the processes report a missing one
            tokens_at_start = read_checkpoint(resume_dir(cfg.run.out_dir)).state.tokens_seen
    elif not cfg.eval.eval_only:
        check_fresh_run(check_out_dir(cfg.run.out_dir), cfg.run.overwrite)
    with StopRequests(at_once=True):  # nothing to save yet: a stop signal stops at once
        prepare_if_missing(cfg.data.dataset, cfg.data.data_dir)  # once, before the processes
    start = time.perf_counter()
    # The launcher's own notices ("sending SIGTERM to ...") would bury the one line below.
    logging.getLogger("torch.distributed.elastic").setLevel(logging.CRITICAL)
    env = {"LOG_LEVEL": current_level(), "LOG_FORMAT": output_format()}
    # The processes end with this one, even when it is killed (cli.process.end_with_launcher).
    env[LAUNCHER_PID_ENV] = str(os.getpid())
    # The machine's cores shared among the processes (torchrun would give each one).
    env["OMP_NUM_THREADS"] = os.environ.get("OMP_NUM_THREADS") or str(
        max(1, (os.cpu_count() or 1) // n)
    )
    config = LaunchConfig(
        min_nodes=1,
        max_nodes=1,
        nproc_per_node=n,
        run_id=f"nanogpt-{uuid.uuid4()}",
        rdzv_backend="c10d",
        rdzv_endpoint="localhost:0",  # torchrun --standalone: a local rendezvous
        max_restarts=0,
    )
    logger.info(f"starting {n} processes (torchrun's elastic launcher)")
    with tempfile.TemporaryDirectory(prefix="nanogpt-run-") as tmp:
        path = Path(tmp) / "config.json"
        path.write_text(json.dumps(cfg.to_dict()), encoding="utf-8")
        try:
            with _environment(env), _signal_handlers():  # the processes inherit env
                elastic_launch(config, sys.executable)(*worker_args(path))
        except ChildFailedError as e:
            raise TrainingError(
                f"the run ended: {_failures(e, n)}; continue with "
                f"`{resume_command(cfg.run.out_dir)}`"
            ) from None
        except SignalException as e:  # the launcher passed it on to the processes
            raise _stopped(cfg, e.sigval) from None
    try:
        ckpt = read_checkpoint(resume_dir(cfg.run.out_dir))
        iter_num, best = ckpt.state.iter_num, ckpt.state.best_val_loss
        tokens = ckpt.state.tokens_seen - tokens_at_start
    except CheckpointError:  # an evaluation-only run saves none
        iter_num, best, tokens = cfg.optim.max_iters, float("inf"), 0
    train_loss, val_loss = None, None
    if cfg.eval.eval_only:
        train_loss, val_loss = _last_evaluation(Path(cfg.run.out_dir))
    return TrainResult(
        out_dir=Path(cfg.run.out_dir),
        iter_num=iter_num,
        best_val_loss=best,
        val_loss=val_loss,
        train_loss=train_loss,
        saved=True,
        seconds=time.perf_counter() - start,
        tokens=tokens,
    )


def _stopped(cfg: TrainConfig, signum: int) -> Interrupted:
    """What a run stopped by a signal to the launcher ends with, once its processes have
    saved (they were sent the same signal) and stopped."""
    name = signal.Signals(signum).name
    try:
        saved = read_checkpoint(resume_dir(cfg.run.out_dir)).state.iter_num
    except CheckpointError:
        return Interrupted(f"stopped by {name}; no checkpoint was saved", signum)
    return Interrupted(
        f"stopped by {name}; the last checkpoint is of iteration {saved}: continue with "
        f"`{resume_command(cfg.run.out_dir)}`",
        signum,
    )


def _last_evaluation(out_dir: Path) -> tuple[float | None, float | None]:
    """(train loss, val loss) of the last evaluation the processes wrote to the run's
    metrics; (None, None) if there is none."""
    from ..errors import MetricsError
    from ..metrics import METRICS_FILE, read_metrics

    try:
        records = read_metrics(out_dir / METRICS_FILE)
    except MetricsError:
        return None, None
    last = next((r for r in reversed(records) if r.get("kind") == "eval"), {})
    return last.get("train_loss"), last.get("val_loss")


@contextlib.contextmanager
def _environment(values: dict[str, str]) -> Iterator[None]:
    """``values`` in ``os.environ`` for the duration, the previous values restored after."""
    before = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for key, value in before.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


@contextlib.contextmanager
def _signal_handlers() -> Iterator[None]:
    """The launcher installs its own handlers (to stop the processes on Ctrl-C); put the
    previous ones back afterwards."""
    names = ("SIGINT", "SIGTERM", "SIGHUP", "SIGQUIT")  # what torch's launcher handles
    signals = [getattr(signal, name) for name in names if hasattr(signal, name)]
    before = {s: signal.getsignal(s) for s in signals}
    try:
        yield
    finally:
        for s, handler in before.items():
            if handler is not None:
                signal.signal(s, handler)


def _failures(error: object, n: int) -> str:
    """Which process failed first, and how (its own error line is printed above).

    A process killed from outside or crashed (SIGKILL, as the out-of-memory killer sends,
    or SIGSEGV, SIGBUS, SIGILL, SIGFPE) is the cause whenever there is one: its peers'
    errors follow from it, and one of them may have exited before the launcher noticed the
    kill. Otherwise the earliest failure; the launcher's own SIGTERM to the rest comes last.
    """
    outside = {signal.SIGKILL, signal.SIGSEGV, signal.SIGBUS, signal.SIGILL, signal.SIGFPE}

    def cause(item: tuple[int, Any]) -> tuple[int, float, int]:
        rank, failure = item
        code = failure.exitcode
        order = 0 if -code in outside else 2 if code == -signal.SIGTERM else 1
        return order, failure.timestamp, rank

    rank, first = min(error.failures.items(), key=cause)  # type: ignore[attr-defined]
    code = first.exitcode
    how = f"was killed by {first.signal_name()}" if code < 0 else f"exited with code {code}"
    others = len(error.failures) - 1  # type: ignore[attr-defined]
    return f"process {rank} of {n} {how}" + (f" ({others} more stopped)" if others else "")
