"""The training loop behind ``nanogpt train``: ``Trainer``.

Setting up is delegated: where the run starts from (``start``), the step and its parts
(``setup``), health checks (``health``); the trainer runs the loop, evaluates, reports and
saves. ``train`` (the package's entry point) decides whether to start several processes.
"""

from __future__ import annotations

import copy
import time
from pathlib import Path
from typing import Any

import torch

from ..checkpoint import Checkpoint, save_checkpoint
from ..config import TrainConfig, config_toml
from ..data.first_use import open_or_prepare
from ..errors import ConfigError, TrainingError
from ..evaluate import EvaluationStopped, evaluation_recorded, evaluation_windows, split_losses
from ..log import get_logger
from ..metrics import METRICS_FILE, MetricsWriter, NullMetrics
from ..progress import Progress, progress
from ..runtime import peak_flops
from ..safe_files import write_text
from ..state import TrainResult, TrainState
from ..trackers import make_tracker
from .distributed import PEER_ERRORS, full_state, init_distributed, is_peer_failure, peer_failure
from .estimate import LONG_RUN_S, duration, estimate_run
from .health import Health
from .lock import RunLock, held_by_launcher
from .optim import describe as describe_optimizer
from .optim import learning_rate, set_learning_rate
from .outdir import (
    LAST_DIR,
    RUN_CONFIG_FILE,
    SetAside,
    check_fresh_run,
    check_out_dir,
    holds_checkpoint,
    make_out_dir,
    resume_command,
    resume_dir,
)
from .report import eta, report_interval
from .rng import capture_rng
from .setup import build_step, micro_batches_per_process, start_device, train_batches
from .signals import Interrupted, StopCheck, StopRequests
from .start import build_model, restore, starting_point, wants_resume

logger = get_logger(__name__)


class Trainer:
    def __init__(self, cfg: TrainConfig) -> None:
        self.cfg = cfg
        self.out_dir = check_out_dir(cfg.run.out_dir)
        self._stop = StopRequests(
            at_once=True,
            aborted="stopped at once by a second Ctrl-C, without saving; the last checkpoint "
            f"saved, if any, is intact: continue with `{resume_command(self.out_dir)}`",
        )
        self.dist = init_distributed(cfg.system)
        self._lock: RunLock | None = None
        try:
            # One writer per out-dir, from before the first write to the end (rank 0 holds
            # it for a distributed run; the launcher, for the processes it started).
            if self.main and not held_by_launcher(self.out_dir):
                self._lock = RunLock(self.out_dir).acquire()
            with self._stop:  # until the loop starts, a stop signal stops at once
                self._setup(cfg)
        except BaseException:
            self.close()
            raise

    def close(self) -> None:
        """Leave the process group of a distributed run; release the out-dir."""
        try:
            if self.dist is not None:
                self.dist.close()
        finally:
            if self._lock is not None:
                self._lock.release()
                self._lock = None

    @property
    def main(self) -> bool:
        """Whether this process logs, writes metrics and saves checkpoints (rank 0)."""
        return self.dist is None or self.dist.main

    def _setup(self, cfg: TrainConfig) -> None:
        world = self.dist.world if self.dist else 1
        micro_batches_per_process(cfg, world)  # a config that cannot run fails before loading
        resume = wants_resume(cfg.run.resume, self.out_dir)
        cfg.run.resume = "yes" if resume else "no"
        if not resume and not cfg.eval.eval_only:  # every process: they agree
            check_fresh_run(self.out_dir, cfg.run.overwrite)
        self.device, self.dtype = start_device(cfg, self.dist)
        self.dataset = open_or_prepare(cfg.data.dataset, cfg.data.data_dir, self.dist)
        # A run resumes from its latest checkpoint (OUT_DIR/last when that is newer).
        begin = starting_point(
            cfg, self.dataset, resume_dir(self.out_dir) if resume else self.out_dir
        )
        self.resumed = begin.resumed
        # Whether OUT_DIR holds this run's best checkpoint, which only a better one replaces.
        self._best_saved = begin.resumed and holds_checkpoint(self.out_dir)
        self._last_skip = self._last_eval = -1  # iterations
        self.model = build_model(cfg, begin)
        self.model_config = self.model.config
        self.parts = build_step(cfg, self.model, self.device, self.dtype, self.dist)
        self.optimizer, self.step = self.parts.optimizer, self.parts.step
        self.tokens_per_iter = self.parts.tokens_per_step
        train_split = self.dataset.split_path("train")
        self.train_loader = train_batches(
            cfg, train_split, self.model_config.block_size, self.device, self.dist
        )
        self.state = TrainState()
        if begin.resumed and begin.checkpoint is not None:
            self.state = restore(
                begin.checkpoint,
                cfg,
                self.model,
                self.optimizer,
                self.parts.scaler,
                self.train_loader,
                self.dist,
            )
        if self.dist is not None and self.dist.rank > 0:
            # Dropout masks differ between processes (rank 0's continue the saved stream).
            torch.manual_seed(cfg.system.seed + 7919 * self.dist.rank + self.state.iter_num)
        # Evaluation uses the same windows every time: evaluations are comparable with each
        # other, cost no loader work, and leave the training batch stream untouched.
        self.eval_windows = evaluation_windows(
            self.dataset,
            self.model_config.block_size,
            cfg.data.batch_size,
            cfg.eval.eval_iters,
            cfg.system.seed,
            self.device,
        )
        self.tasks = None  # --eval-tasks: looked up now, run in rank 0 at evaluations
        if cfg.eval.eval_tasks and self.main:
            from .tasks import TrainingTasks

            self.tasks = TrainingTasks.of(cfg.eval)
        self.peak = peak_flops(self.device, self.dtype)
        self.health = Health(cfg.optim.max_bad_steps)
        self._check = StopCheck(self._stop, self.dist, self.device)
        self._warned_slow = False
        self._aside: SetAside | None = None

    # -- the loop --------------------------------------------------------------------------

    def _metrics(self, append: bool) -> MetricsWriter | NullMetrics:
        """metrics.jsonl and the tracker, in rank 0; nothing in the other processes. An
        evaluation-only run adds to the run's records, and to its W&B run."""
        cfg = self.cfg
        if not self.main:
            return NullMetrics()
        tracker = make_tracker(
            cfg.run.tracker,
            self.out_dir,
            cfg.to_dict(),
            project=cfg.run.wandb_project,
            run_name=cfg.run.wandb_run_name,
            resumed=append,
        )
        try:
            return MetricsWriter(
                self.out_dir / METRICS_FILE, append=append, trackers=[tracker] if tracker else []
            )
        except BaseException:
            if tracker is not None:
                tracker.close(failed=True)
            raise

    def run(self) -> TrainResult:
        cfg, state = self.cfg, self.state
        start_time = time.perf_counter()
        n_params = self.model.num_params()
        how = [_dtype_name(self.dtype)]
        if self.step.compiled:
            how.append("compiled")
        if self.parts.kernels:
            how.append("CPU kernels: " + ", ".join(self.parts.kernels))
        logger.info(
            f"{'evaluating' if cfg.eval.eval_only else 'training'} {n_params / 1e6:.2f}M "
            f"parameters on {self.device} ({'; '.join(how)}), "
            f"{self.tokens_per_iter:,} tokens per step, dataset {self.dataset.name}"
        )
        logger.debug(
            f"{describe_optimizer(self.optimizer, cfg.optim)}; "
            f"{self.parts.micro_batches} micro-batches of {cfg.data.batch_size} per step"
        )
        if not cfg.eval.eval_only:
            with self._stop:
                self._estimate()
        if self.main:
            make_out_dir(self.out_dir)
            if cfg.run.overwrite and not self.resumed and not cfg.eval.eval_only:
                self._aside = SetAside.previous_run(self.out_dir)
        tokens_at_start = state.tokens_seen
        try:
            if self.main:
                write_run_config(self.out_dir / RUN_CONFIG_FILE, cfg)
            # A fresh run starts a fresh metrics file; resuming or evaluating adds to it.
            metrics = self._metrics(append=self.resumed or cfg.eval.eval_only)
        except BaseException:
            self._keep_previous_run()
            raise
        failed = True
        self._stop.at_once = False  # from here on, a stop lets the step finish, then saves
        try:
            # On a terminal a live line shows the progress and the per-interval lines go to
            # --verbose; in a log file those lines are the progress (no bar, no extra lines).
            with (
                self._stop,
                progress("train", total=cfg.optim.max_iters, unit="iters", every=None) as bar,
            ):
                bar.update(completed=state.iter_num)
                try:
                    saved, train_loss, val_loss = self._loop(metrics, bar)
                except PEER_ERRORS as e:
                    if self.dist is None or not is_peer_failure(e):
                        raise
                    raise peer_failure(e, resume_command(self.out_dir)) from None
            failed = False
        finally:
            metrics.close(failed=failed)
            self.train_loader.close()
            self._keep_previous_run()
        return TrainResult(
            out_dir=self.out_dir,
            iter_num=state.iter_num,
            best_val_loss=state.best_val_loss,
            val_loss=val_loss,
            train_loss=train_loss,
            saved=saved,
            seconds=time.perf_counter() - start_time,
            tokens=state.tokens_seen - tokens_at_start,
            params=n_params,
        )

    def _keep_previous_run(self) -> None:
        """An ``--overwrite`` run that saved nothing puts the previous run back."""
        if self._aside is not None:
            self._aside.restore()
            self._aside = None

    def _estimate(self) -> None:
        """Log what the run will cost, from a few timed passes (which change nothing),
        before its first step and first evaluation; warn, off CUDA, when it is long."""
        cfg, state = self.cfg, self.state
        if state.iter_num >= cfg.optim.max_iters:
            return
        window = self.eval_windows["train"][: cfg.data.batch_size]
        times = self.step.measure(window[:, :-1], window[:, 1:])
        estimate = estimate_run(
            state.iter_num,
            cfg.optim.max_iters,
            cfg.eval.eval_interval,
            -(-cfg.eval.eval_iters // (self.dist.world if self.dist else 1)),
            times.step_s,
            times.eval_s,
            resumed=self.resumed,
        )
        logger.info(f"this run: {estimate.describe()}")
        if estimate.total_s > LONG_RUN_S and self.device.type != "cuda":
            self._warned_slow = True
            logger.warning(
                f"this run will take about {duration(estimate.total_s)} on "
                f"{self.device.type.upper()}; a smaller model trains in minutes "
                "(--preset shakespeare-char-cpu), or give fewer --max-iters"
            )

    def _loop(
        self, metrics: MetricsWriter | NullMetrics, bar: Progress
    ) -> tuple[bool, float | None, float | None]:
        """Train to ``max_iters``; returns whether a checkpoint was saved and the last losses."""
        cfg, state = self.cfg, self.state
        saved = False
        val_loss = train_loss = None
        self.model.train()
        pending_loader_state = self.train_loader.state()
        x, y = self.train_loader.next()

        def fetch() -> tuple[torch.Tensor, torch.Tensor]:
            # The loader's state before each batch: a checkpoint resumes by drawing it again.
            nonlocal pending_loader_state
            pending_loader_state = self.train_loader.state()
            return self.train_loader.next()

        t_log, iters_since_log = time.perf_counter(), 0
        first_iter = state.iter_num
        # A run stopped during an evaluation saved the state before it: resuming makes it.
        redo = self.resumed and not cfg.eval.eval_only and not self._evaluated_at(first_iter)
        while True:
            it = state.iter_num
            lr = learning_rate(it, cfg.optim)
            set_learning_rate(self.optimizer, lr, cfg.optim)

            last = it >= cfg.optim.max_iters
            # A resumed run does not repeat the evaluation its checkpoint already made.
            repeat = self.resumed and it == first_iter and not cfg.eval.eval_only and not redo
            if (it % cfg.eval.eval_interval == 0 or last or cfg.eval.eval_only) and not repeat:
                try:
                    losses = self.evaluate()
                except EvaluationStopped:  # its partial result is dropped
                    self._stopped(pending_loader_state, trained=it > first_iter)
                train_loss, val_loss = losses["train"], losses["val"]
                improved = val_loss < state.best_val_loss and self._trusted(it, val_loss)
                logger.info(
                    f"eval at iter {it}: train loss {train_loss:.4f}, val loss {val_loss:.4f}"
                    + (" (best)" if improved else ""),
                    iter=it,
                    train_loss=train_loss,
                    val_loss=val_loss,
                    best=improved,
                )
                metrics.write(
                    "eval",
                    iter=it,
                    tokens=state.tokens_seen,
                    train_loss=train_loss,
                    val_loss=val_loss,
                    lr=lr,
                )
                if self.tasks is not None and self.tasks.due(it, last):
                    scores = self.tasks.run(self.model, self.dataset.tokenizer_info, self)
                    metrics.write("tasks", iter=it, tokens=state.tokens_seen, **scores)
                if improved:
                    state.best_val_loss = val_loss
                if cfg.eval.eval_only:
                    break
                # Never save the untrained model at the start of a fresh run.
                if (improved or cfg.run.always_save_checkpoint) and (it > first_iter or redo):
                    self.save(pending_loader_state, best=improved)
                    saved = True
                t_log, iters_since_log = time.perf_counter(), 0
            if last:
                break

            x, y = self.step(x, y, fetch)
            state.iter_num += 1
            state.tokens_seen += self.tokens_per_iter
            iters_since_log += 1
            bar.advance()

            at_log = state.iter_num % cfg.run.log_interval == 0
            if at_log:
                report = self.step.read()
                self.health.check_steps(report, state.iter_num)
                if any(report.bad):
                    self._last_skip = state.iter_num
                now = time.perf_counter()
                dt = (now - t_log) / iters_since_log
                if report_interval(self, metrics, bar, lr, report, dt) and not self._warned_slow:
                    self._warned_slow = True
                    logger.warning(
                        f"this run will take about {duration(eta(self, dt))} on the CPU; "
                        "a smaller model trains in minutes, e.g. --preset shakespeare-char-cpu"
                    )
                t_log, iters_since_log = now, 0
            if self._check.after_step(at_log):
                self._stopped(pending_loader_state, trained=True)
        # A run always leaves a checkpoint behind, even if no evaluation improved.
        if not saved and not cfg.eval.eval_only and state.iter_num > first_iter:
            self.save(pending_loader_state)
            saved = True
        return saved, train_loss, val_loss

    def _stopped(self, loader_state: dict[str, Any], trained: bool) -> None:
        """End the run on a stop signal: save the last completed step (if this run made
        one; an evaluation-only run saves nothing), then raise ``Interrupted``."""
        cfg, state = self.cfg, self.state
        saved = trained and not cfg.eval.eval_only
        if saved:
            # A run stopped before it saved on its own replaces nothing: the run that
            # --overwrite set aside stays beside the stopped run's checkpoint.
            self.save(loader_state, replace_previous=False)
        if self._aside is not None:
            logger.warning(
                f"the run that --overwrite was to replace is still in "
                f"{self._aside.folder}; delete it when it is no longer needed"
            )
            self._aside = None
        stopped = f"stopped by {self._stop.name}"
        if cfg.eval.eval_only:
            message = f"{stopped} during the evaluation; nothing was saved"
        elif saved or self.resumed:
            message = (
                f"{stopped} at iteration {state.iter_num}; continue with "
                f"`{resume_command(self.out_dir)}`"
            )
        else:
            message = f"{stopped} during the first evaluation, before any step; nothing was saved"
        raise Interrupted(message, self._stop.signum or 15)

    def _evaluated_at(self, it: int) -> bool:
        """Whether the run's metrics record its evaluation at iteration ``it`` (rank 0 reads
        them for every process)."""
        found = self.main and evaluation_recorded(self.out_dir / METRICS_FILE, it)
        if self.dist is not None:
            found = bool(self.dist.sum(torch.tensor([float(found)], device=self.device)).item())
        return found

    def _trusted(self, it: int, val_loss: float) -> bool:
        """Whether an evaluation at ``it`` may make the best checkpoint: not if a step since
        the previous evaluation was skipped as non-finite (a run that diverges can still
        score well for a moment)."""
        pending = torch.tensor([float(self.step.skipped_since_read())], device=self.device)
        if self.dist is not None:
            pending = self.dist.sum(pending)  # the processes agree, so they save together
        if pending.item():
            self._last_skip = it
        trusted = self._last_skip <= self._last_eval
        self._last_eval = it
        if not trusted:
            logger.warning(
                f"val loss {val_loss:.4f} at iter {it} follows steps skipped as non-finite: "
                "it does not replace the best checkpoint"
            )
        return trusted

    def evaluate(self) -> dict[str, float]:
        """Mean loss over the fixed evaluation windows of each split (shared among the
        processes of a distributed run)."""
        return split_losses(
            self.model,
            self.eval_windows,
            self.device,
            self.dtype,
            self.dist,
            self._check.evaluating,
        )

    def save(
        self, loader_state: dict[str, Any], replace_previous: bool = True, best: bool = False
    ) -> None:
        """Write the checkpoint; ``loader_state`` is the loader's state before the batch
        that is already drawn for the next step, so a resumed run draws it again. The first
        save of an ``--overwrite`` run deletes the run it replaces (``replace_previous``).

        OUT_DIR keeps the best checkpoint: a state that is not the ``best`` evaluated goes
        to OUT_DIR/last once OUT_DIR holds one of this run (``--resume`` takes the newer).

        Every process of a distributed run calls this (FSDP gathers the shards); rank 0
        writes, in the usual formats, the full state.
        """
        weights, optimizer_state = full_state(self.model, self.optimizer, self.dist)
        if not self.main:
            return
        if not all(torch.isfinite(w).all() for w in weights.values()):
            raise TrainingError(
                f"the weights are not finite at iteration {self.state.iter_num}; the checkpoint "
                f"in {self.out_dir} was not overwritten. Lower --learning-rate or set --grad-clip"
            )
        self.state.rng = {**capture_rng(), "loader": loader_state}
        fmt = self.cfg.run.save_format
        ckpt = Checkpoint(
            model_config=self.model_config,
            tokenizer=self.dataset.tokenizer_info,
            state=self.state,
            dataset=self.dataset.name,
            config=self.cfg.to_dict(),
            _weights=weights,
            _optimizer=None
            if fmt == "model-only"
            else {"optimizer": optimizer_state, "scaler": self.parts.scaler.state_dict()},
        )
        target = self.out_dir if best or not self._best_saved else self.out_dir / LAST_DIR
        files = save_checkpoint(ckpt, target, fmt)
        self._best_saved = True
        if self._aside is not None and replace_previous:  # the new run has a checkpoint
            self._aside.discard()
            self._aside = None
        logger.info(
            f"saved {fmt} checkpoint at iter {self.state.iter_num} to "
            f"{files[0] if fmt == 'unified' else target}"
            + ("" if target == self.out_dir else " (the best stays in the out-dir)")
        )


def write_run_config(path: Path, cfg: TrainConfig) -> None:
    """The run's resolved options as TOML: ``nanogpt train --config`` repeats the run."""
    from .. import __version__

    header = (
        f"Options of the run in {path.parent}, written by nanogpt {__version__}.\n"
        f"Repeat it with: nanogpt train --config {path}"
    )
    repeat = copy.deepcopy(cfg)
    repeat.run.resume = "no"  # a repeat starts afresh (add --resume to continue instead)
    repeat.run.overwrite = False  # and never replaces a run unless told to
    write_text(path, config_toml(repeat, header), ConfigError, "--out-dir")


def _dtype_name(dtype: torch.dtype) -> str:
    return str(dtype).removeprefix("torch.")
