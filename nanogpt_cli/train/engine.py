"""The training loop behind ``nanogpt train``."""

from __future__ import annotations

import copy
import dataclasses
import math
import os
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from ..checkpoint import (
    Checkpoint,
    TrainState,
    load_weights,
    read_checkpoint,
    read_pretrained,
    save_checkpoint,
)
from ..config import (
    DEFAULT_PRESET,
    ModelConfig,
    TrainConfig,
    build_config,
    config_toml,
    micro_batches_per_step,
    option_flag,
)
from ..data.dataset import check_tokenizer, open_dataset
from ..data.loader import BatchLoader, RankBatches
from ..errors import CheckpointError, ConfigError, DatasetError, TrainingError
from ..log import Progress, get_logger, progress
from ..model import GPT
from .device import (
    peak_flops,
    resolve_device,
    resolve_dtype,
    setup_backends,
    use_compile,
)
from .distributed import (
    PEER_ERRORS,
    full_state,
    init_distributed,
    is_peer_failure,
    load_optimizer_state,
    peer_failure,
    under_torchrun,
    wrap_model,
)
from .evaluate import evaluation_windows, split_losses
from .metrics import METRICS_FILE, MetricsWriter, NullMetrics
from .optim import apply_hyperparameters, build_optimizer, learning_rate
from .signals import Interrupted, StopRequests
from .state import capture_rng, restore_rng
from .step import StepReport, TrainStep
from .trackers import make_tracker

logger = get_logger(__name__)

RUN_CONFIG_FILE = "config.toml"
# An interval's loss above SPIKE x the moving average (factor EMA per interval) of the
# ones before is a spike, once SPIKE_AFTER intervals have set the average.
SPIKE, EMA, SPIKE_AFTER = 1.5, 0.1, 5
# Model fields a resumed run takes from its checkpoint: they fix the weights' shapes.
SHAPE_FIELDS = ("n_layer", "n_head", "n_embd", "block_size", "vocab_size", "bias", "activation")


@dataclass
class TrainResult:
    """How a training run ended."""

    out_dir: Path
    iter_num: int
    best_val_loss: float
    val_loss: float | None
    train_loss: float | None
    saved: bool
    seconds: float


def train(cfg: TrainConfig) -> TrainResult:
    """Train (or resume, or only evaluate) as ``cfg`` says; see ``TrainConfig``.

    With ``nproc_per_node`` > 1 outside torchrun, the run is started on that many processes
    of this machine through torchrun (see ``launch``); under torchrun, this process trains
    its share.
    """
    if cfg.system.nproc_per_node > 1 and not under_torchrun():
        from .launch import launch

        return launch(cfg)
    trainer = Trainer(cfg)
    try:
        return trainer.run()
    finally:
        trainer.close()


def resolve_config(
    preset: str | None = None,
    config_file: str | Path | None = None,
    overrides: Mapping[str, Any] | None = None,
    default_preset: str = DEFAULT_PRESET,
) -> TrainConfig:
    """The config that ``nanogpt train`` runs.

    A fresh run is ``build_config(preset or default_preset, config_file, overrides)``.
    A resumed run starts from the config saved with its checkpoint instead of the default
    preset, so ``--resume --max-iters 4000`` changes the step count and nothing else; a
    preset, config file or flag given explicitly still applies on top.
    """
    cfg = build_config(preset or default_preset, config_file, overrides)
    if cfg.eval.resume == "no":
        return cfg
    try:
        ckpt = read_checkpoint(cfg.eval.out_dir)
    except CheckpointError:
        if cfg.eval.resume == "auto":  # nothing to resume: a fresh run
            logger.info(f"no checkpoint in {cfg.eval.out_dir} to resume: starting afresh")
            cfg.eval.resume = "no"
        return cfg  # else the trainer reports the missing checkpoint
    saved = dict(ckpt.config or {})
    if ckpt.format in ("unified", "separated"):
        # Keep writing the format found (an original nanoGPT ckpt.pt, a converted one)
        # rather than leave a stale checkpoint beside a newer one of another format.
        saved["eval"] = {**saved.get("eval", {}), "save_format": ckpt.format}
    if not saved:
        return cfg
    resumed = build_config(preset, config_file, overrides, base=saved)
    resumed.eval.out_dir = cfg.eval.out_dir  # where the checkpoint was found
    resumed.eval.resume = "yes"
    before = build_config(None, base=saved).flat()
    changed = [
        f"{option_flag(name)} {before[name]} -> {value}"
        for name, value in resumed.flat().items()
        if name not in ("resume", "out_dir") and before.get(name) != value
    ]
    if changed:
        logger.info("resuming with changed options: " + ", ".join(changed))
    return resumed


class Trainer:
    def __init__(self, cfg: TrainConfig) -> None:
        self.cfg = cfg
        self.out_dir = _prepare_out_dir(cfg.eval.out_dir)
        self.dist = init_distributed(cfg.system)
        try:
            self._setup(cfg)
        except BaseException:
            self.close()
            raise

    def close(self) -> None:
        """Leave the process group of a distributed run."""
        if self.dist is not None:
            self.dist.close()

    @property
    def main(self) -> bool:
        """Whether this process logs, writes metrics and saves checkpoints (rank 0)."""
        return self.dist is None or self.dist.main

    def _setup(self, cfg: TrainConfig) -> None:
        self.device = self.dist.device if self.dist else resolve_device(cfg.system.device)
        self.dtype = resolve_dtype(cfg.system.dtype, self.device)
        setup_backends(self.device)
        torch.manual_seed(cfg.system.seed)  # the same initial weights in every process
        world = self.dist.world if self.dist else 1
        self.micro_batches = micro_batches_per_step(cfg)
        if self.micro_batches % world:
            raise ConfigError(
                f"{self.micro_batches} micro-batches per step do not divide among {world} "
                "processes; set --gradient-accumulation-steps (or --total-batch-tokens) to a "
                f"multiple of {world}"
            )

        self.dataset = open_dataset(cfg.data.dataset, cfg.data.data_dir)
        resume_from = self._resume_checkpoint() if self._wants_resume() else None
        self.resumed = resume_from is not None
        init = None
        if resume_from is None and cfg.eval.init_from != "scratch":
            init = self._init_checkpoint()
        self.model_config = self._model_config(resume_from or init)
        self.model = GPT(self.model_config)
        if init is not None:
            self._load_initial_weights(init)
        if resume_from is not None:
            load_weights(resume_from, self.model)
        self.model.to(self.device)
        # Wrapped (DDP) or sharded in place (FSDP) before the optimizer sees the parameters.
        module, sync = wrap_model(self.model, self.dist) if self.dist else (self.model, None)
        self.optimizer = build_optimizer(self.model, cfg.optim)
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=self.dtype == torch.float16)
        self.state = TrainState()
        self.train_loader = RankBatches(
            BatchLoader(
                self.dataset.split_path("train"),
                self.model_config.block_size,
                cfg.data.batch_size,
                self.device,
                seed=cfg.system.seed,
            ),
            rank=self.dist.rank if self.dist else 0,
            world=world,
            per_step=self.micro_batches,
        )
        if resume_from is not None:
            self._restore(resume_from)
        if self.dist is not None and self.dist.rank > 0:
            # Dropout masks differ between processes (rank 0's continue the saved stream).
            torch.manual_seed(cfg.system.seed + 7919 * self.dist.rank + self.state.iter_num)
        self.step = TrainStep(
            self.model,
            self.optimizer,
            self.scaler,
            grad_accum=self.micro_batches // world,
            grad_clip=cfg.optim.grad_clip,
            device=self.device,
            dtype=self.dtype,
            compile=use_compile(cfg.system.compile, self.device),
            module=module,
            sync=sync,
            dist=self.dist,
        )
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
        self.peak = peak_flops(self.device, self.dtype)
        self._warned_slow = False
        self._bad_streak = 0  # steps skipped in a row
        self._loss_ema: float | None = None
        self._ema_intervals = 0
        self._stop = StopRequests()
        self.tokens_per_iter = (
            self.micro_batches * cfg.data.batch_size * self.model_config.block_size
        )

    # -- setup ---------------------------------------------------------------------------

    def _wants_resume(self) -> bool:
        """Whether this run continues from out_dir's checkpoint (``auto``: if it has one)."""
        mode = self.cfg.eval.resume
        if mode != "auto":
            return mode == "yes"
        try:
            read_checkpoint(self.out_dir)
        except CheckpointError:
            logger.info(f"no checkpoint in {self.out_dir} to resume: starting afresh")
            return False
        return True

    def _resume_checkpoint(self) -> Checkpoint:
        try:
            ckpt = read_checkpoint(self.out_dir, hint="train without --resume first")
        except CheckpointError as e:
            raise CheckpointError(f"cannot resume: {e}") from None
        if ckpt.tokenizer is None:
            logger.warning(
                f"{ckpt.path} records no tokenizer; assuming it is dataset "
                f"'{self.cfg.data.dataset}''s"
            )
        elif ckpt.tokenizer != self.dataset.tokenizer_info:
            raise DatasetError(
                f"cannot resume: dataset '{self.cfg.data.dataset}' uses another tokenizer than "
                f"the checkpoint in {self.out_dir} (trained on '{ckpt.dataset}')"
            )
        return ckpt

    def _init_checkpoint(self) -> Checkpoint:
        source = self.cfg.eval.init_from
        try:
            ckpt = read_pretrained(source)
        except CheckpointError as e:
            raise CheckpointError(f"--init-from {source}: {e}") from None
        check_tokenizer(ckpt.tokenizer, ckpt.model_config.vocab_size or 0, self.dataset, source)
        return ckpt

    def _load_initial_weights(self, ckpt: Checkpoint) -> None:
        load_weights(ckpt, self.model)
        wanted = self.cfg.model.block_size
        if wanted > self.model_config.block_size:
            raise ConfigError(
                f"--block-size {wanted} is larger than the context of the weights in "
                f"{self.cfg.eval.init_from} ({self.model_config.block_size}); give --block-size "
                f"{self.model_config.block_size} or less"
            )
        if wanted < self.model_config.block_size:
            self.model.crop_block_size(wanted)
            self.model_config = self.model.config
        logger.info(
            f"initialised from {self.cfg.eval.init_from}: {self.model_config.n_layer} layers, "
            f"{self.model_config.n_head} heads, {self.model_config.n_embd} wide, context "
            f"{self.model_config.block_size}"
        )

    def _model_config(self, ckpt: Checkpoint | None) -> ModelConfig:
        wanted = self.cfg.model
        if ckpt is None:
            vocab = wanted.vocab_size or self.dataset.vocab_size
            if vocab < self.dataset.vocab_size:
                raise ConfigError(
                    f"--vocab-size {vocab} is smaller than dataset "
                    f"'{self.cfg.data.dataset}''s vocabulary of {self.dataset.vocab_size}"
                )
            return dataclasses.replace(wanted, vocab_size=vocab)
        saved = ckpt.model_config
        if not self.resumed:  # --init-from: the shape is the weights'
            return dataclasses.replace(saved, dropout=wanted.dropout)
        for name in SHAPE_FIELDS:
            if name == "vocab_size" and wanted.vocab_size is None:
                continue
            if getattr(wanted, name) != getattr(saved, name):
                logger.warning(
                    f"resuming: --{name.replace('_', '-')} {getattr(wanted, name)} ignored, "
                    f"the checkpoint has {getattr(saved, name)}"
                )
        return dataclasses.replace(saved, dropout=wanted.dropout)

    def _restore(self, ckpt: Checkpoint) -> None:
        """The optimizer, scaler, iteration, random and loader states of ``ckpt`` (its
        weights are already in the model)."""
        saved = ckpt.optimizer_state()
        try:
            load_optimizer_state(self.model, self.optimizer, saved["optimizer"], self.dist)
        except (ValueError, KeyError) as e:
            raise CheckpointError(
                f"the optimizer state in {ckpt.path} does not fit this model ({e})"
            ) from None
        _check_optimizer_shapes(self.optimizer, ckpt)
        apply_hyperparameters(self.optimizer, self.cfg.optim)
        if saved.get("scaler"):
            self.scaler.load_state_dict(saved["scaler"])
        self.state = dataclasses.replace(ckpt.state)
        restore_rng(ckpt.state.rng)
        if "loader" in ckpt.state.rng:
            self.train_loader.load_state(ckpt.state.rng["loader"])
        logger.info(f"resuming from {ckpt.path} at iteration {self.state.iter_num}")

    # -- the loop --------------------------------------------------------------------------

    def _metrics(self, append: bool) -> MetricsWriter | NullMetrics:
        """metrics.jsonl and the tracker, in rank 0; nothing in the other processes. An
        evaluation-only run adds to the run's records, and to its W&B run."""
        cfg = self.cfg
        if not self.main:
            return NullMetrics()
        tracker = make_tracker(
            cfg.eval.tracker,
            self.out_dir,
            cfg.to_dict(),
            project=cfg.eval.wandb_project,
            run_name=cfg.eval.wandb_run_name,
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
        logger.info(
            f"training {n_params / 1e6:.2f}M parameters on {self.device} ({_dtype_name(self.dtype)}"
            f"{', compiled' if self.step.compiled else ''}), {self.tokens_per_iter:,} tokens per "
            "step, "
            f"dataset {self.dataset.name}"
        )
        decayed, undecayed = (len(g["params"]) for g in self.optimizer.param_groups)
        logger.debug(
            f"AdamW{' (fused)' if self.optimizer.defaults.get('fused') else ''}: {decayed} "
            f"tensors with weight decay {cfg.optim.weight_decay}, {undecayed} without; "
            f"{cfg.data.gradient_accumulation_steps} micro-batches of {cfg.data.batch_size} "
            "per step"
        )
        if self.main:
            write_run_config(self.out_dir / RUN_CONFIG_FILE, cfg)
        # A fresh run starts a fresh metrics file; resuming or evaluating adds to it.
        append = self.resumed or cfg.eval.eval_only
        metrics = self._metrics(append)
        failed = True
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
                    raise peer_failure(e, self.dist) from None
            failed = False
        finally:
            metrics.close(failed=failed)
            self.train_loader.close()
        return TrainResult(
            out_dir=self.out_dir,
            iter_num=state.iter_num,
            best_val_loss=state.best_val_loss,
            val_loss=val_loss,
            train_loss=train_loss,
            saved=saved,
            seconds=time.perf_counter() - start_time,
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
        while True:
            it = state.iter_num
            lr = learning_rate(it, cfg.optim)
            for group in self.optimizer.param_groups:
                group["lr"] = lr

            last = it >= cfg.optim.max_iters
            # A resumed run does not repeat the evaluation its checkpoint already made.
            repeat = self.resumed and it == first_iter and not cfg.eval.eval_only
            if (it % cfg.eval.eval_interval == 0 or last or cfg.eval.eval_only) and not repeat:
                losses = self.evaluate()
                train_loss, val_loss = losses["train"], losses["val"]
                improved = val_loss < state.best_val_loss
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
                if improved:
                    state.best_val_loss = val_loss
                if cfg.eval.eval_only:
                    break
                # Never save the untrained model at the start of a fresh run.
                if (improved or cfg.eval.always_save_checkpoint) and it > first_iter:
                    self.save(pending_loader_state)
                    saved = True
                t_log, iters_since_log = time.perf_counter(), 0
            if last:
                break

            x, y = self.step(x, y, fetch)
            state.iter_num += 1
            state.tokens_seen += self.tokens_per_iter
            iters_since_log += 1
            bar.advance()

            at_log = state.iter_num % cfg.eval.log_interval == 0
            if at_log:
                report = self.step.read()
                self._check_health(report)
                now = time.perf_counter()
                self._report(metrics, bar, lr, report, (now - t_log) / iters_since_log)
                t_log, iters_since_log = now, 0
            if self._stop_requested(at_log):
                self.save(pending_loader_state)
                raise Interrupted(
                    f"stopped by {self._stop.name} at iteration {state.iter_num}; the "
                    f"checkpoint in {self.out_dir} continues it with --resume",
                    self._stop.signum or 15,
                )
        # A run always leaves a checkpoint behind, even if no evaluation improved.
        if not saved and not cfg.eval.eval_only and state.iter_num > first_iter:
            self.save(pending_loader_state)
            saved = True
        return saved, train_loss, val_loss

    def _stop_requested(self, at_log: bool) -> bool:
        """Whether a stop signal arrived. The processes of a distributed run agree on it at
        log intervals (their signals arrive at different steps)."""
        if self.dist is None:
            return self._stop.signum is not None
        if not at_log:
            return False
        flag = torch.tensor([float(self._stop.signum or 0)], device=self.device)
        agreed = int(self.dist.sum(flag).item())
        if agreed and self._stop.signum is None:
            self._stop.signum = 15  # another process was told to stop
        return agreed > 0

    def _check_health(self, report: StepReport) -> None:
        """Log the steps that were skipped (non-finite loss or gradient) and stop the run
        after ``max_bad_steps`` of them in a row."""
        first = self.state.iter_num - len(report.bad) + 1
        for i, bad in enumerate(report.bad):
            if not bad:
                self._bad_streak = 0
                continue
            self._bad_streak += 1
            logger.warning(
                f"iteration {first + i} skipped: loss {report.losses[i]:.4g}, gradient norm "
                f"{report.norms[i]:.4g} (not finite); the weights are unchanged",
                iter=first + i,
            )
            if self._bad_streak >= self.cfg.optim.max_bad_steps:
                raise TrainingError(
                    f"{self._bad_streak} steps in a row had a non-finite loss or gradient (up "
                    f"to iteration {first + i}); the run stops with the weights of before. "
                    "Lower --learning-rate, set --grad-clip, or train in float32/bfloat16; "
                    "resume from the last checkpoint with --resume"
                )

    def _report(
        self,
        metrics: MetricsWriter | NullMetrics,
        bar: Progress,
        lr: float,
        report: StepReport,
        dt: float,
    ) -> None:
        """The log line, metrics record and progress status of one log interval."""
        state, cfg = self.state, self.cfg
        loss, grad_norm, clip_frac = report.loss, report.grad_norm, report.clip_frac
        tokens_per_s = self.tokens_per_iter / dt
        flops_per_iter = self.model.flops_per_token() * self.tokens_per_iter
        mfu = flops_per_iter / dt / self.peak if self.peak else None
        eta = (cfg.optim.max_iters - state.iter_num) * dt
        grad = (
            f", grad norm {grad_norm:.2f} (clipped {clip_frac:.0%})"
            if grad_norm is not None and clip_frac is not None
            else ""
        )
        line = (
            f"iter {state.iter_num}: loss {loss:.4f}, lr {lr:.2e}{grad}, "
            f"{dt * 1000:.1f} ms/iter, {tokens_per_s:,.0f} tok/s, "
            f"mfu {'n/a' if mfu is None else f'{mfu:.1%}'}, eta {_duration(eta)}"
        )
        fields = {
            "iter": state.iter_num,
            "loss": loss,
            "lr": lr,
            "grad_norm": grad_norm,
            "clip_frac": clip_frac,
            "ms": dt * 1000,
            "tokens_per_s": tokens_per_s,
            "mfu": mfu,
        }
        (logger.debug if bar.live else logger.info)(line, **fields)
        bar.status(f"loss {loss:.4f} · {tokens_per_s:,.0f} tok/s · {dt * 1000:.1f} ms/it ·")
        metrics.write(
            "train",
            iter=state.iter_num,
            tokens=state.tokens_seen,
            loss=loss,
            lr=lr,
            ms=dt * 1000,
            tokens_per_s=tokens_per_s,
            mfu=mfu,
            grad_norm=grad_norm,
            clip_frac=clip_frac,
        )
        if not self._warned_slow and self.device.type == "cpu" and eta > 3600:
            self._warned_slow = True
            logger.warning(
                f"this run will take about {_duration(eta)} on the CPU; "
                "a smaller model trains in minutes, e.g. --preset shakespeare-char-cpu"
            )
        self._watch_for_spikes(loss, grad_norm)

    def _watch_for_spikes(self, loss: float, grad_norm: float | None) -> None:
        """Warn when an interval's loss jumps well above the recent ones (a spike often
        follows a large gradient: the norm is in the message)."""
        if not math.isfinite(loss):
            return
        recent = self._loss_ema
        if recent is not None and self._ema_intervals >= SPIKE_AFTER and loss > SPIKE * recent:
            norm = f", gradient norm {grad_norm:.3g}" if grad_norm is not None else ""
            logger.warning(
                f"loss spike at iteration {self.state.iter_num}: {loss:.4f}, "
                f"{loss / recent:.1f}x the recent {recent:.4f}{norm}",
                iter=self.state.iter_num,
                loss=loss,
                grad_norm=grad_norm,
            )
        self._loss_ema = loss if recent is None else recent + EMA * (loss - recent)
        self._ema_intervals += 1

    def evaluate(self) -> dict[str, float]:
        """Mean loss over the fixed evaluation windows of each split (shared among the
        processes of a distributed run)."""
        return split_losses(self.model, self.eval_windows, self.device, self.dtype, self.dist)

    def save(self, loader_state: dict[str, Any]) -> None:
        """Write the checkpoint; ``loader_state`` is the loader's state before the batch
        that is already drawn for the next step, so a resumed run draws it again.

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
        fmt = self.cfg.eval.save_format
        ckpt = Checkpoint(
            model_config=self.model_config,
            tokenizer=self.dataset.tokenizer_info,
            state=self.state,
            dataset=self.dataset.name,
            config=self.cfg.to_dict(),
            _weights=weights,
            _optimizer=None
            if fmt == "model-only"
            else {"optimizer": optimizer_state, "scaler": self.scaler.state_dict()},
        )
        files = save_checkpoint(ckpt, self.out_dir, fmt)
        logger.info(
            f"saved {fmt} checkpoint at iter {self.state.iter_num} to "
            f"{files[0] if fmt == 'unified' else self.out_dir}"
        )


def _check_optimizer_shapes(optimizer: torch.optim.Optimizer, ckpt: Checkpoint) -> None:
    for group in optimizer.param_groups:
        for p in group["params"]:
            for key, value in optimizer.state.get(p, {}).items():
                if isinstance(value, torch.Tensor) and value.dim() and value.shape != p.shape:
                    raise CheckpointError(
                        f"the optimizer state in {ckpt.path} does not fit this model "
                        f"({key} of shape {tuple(value.shape)} for a parameter of shape "
                        f"{tuple(p.shape)}); it was written for another parameter order"
                    )


def write_run_config(path: Path, cfg: TrainConfig) -> None:
    """The run's resolved options as TOML: ``nanogpt train --config`` repeats the run."""
    from .. import __version__

    header = (
        f"Options of the run in {path.parent}, written by nanogpt {__version__}.\n"
        f"Repeat it with: nanogpt train --config {path}"
    )
    repeat = copy.deepcopy(cfg)
    repeat.eval.resume = "no"  # a repeat starts afresh (add --resume to continue instead)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(config_toml(repeat, header), encoding="utf-8")
    os.replace(tmp, path)


def _prepare_out_dir(out_dir: str) -> Path:
    path = Path(out_dir).expanduser()
    if path.exists() and not path.is_dir():
        raise ConfigError(f"--out-dir {path} is a file; choose a directory")
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise ConfigError(f"cannot create --out-dir {path}: {e.strerror}") from None
    if not os.access(path, os.W_OK | os.X_OK):
        raise ConfigError(f"--out-dir {path} is not writable; choose another directory")
    return path


def _dtype_name(dtype: torch.dtype) -> str:
    return str(dtype).removeprefix("torch.")


def _duration(seconds: float) -> str:
    seconds = max(0, int(seconds))
    if seconds >= 3600:
        return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"
    return f"{seconds // 60}m{seconds % 60:02d}s"
