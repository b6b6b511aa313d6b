"""Where a run starts from: scratch, the weights of ``--init-from``, or its own checkpoint.

The resume policy lives here, in one place: ``wants_resume`` decides ``--resume auto``,
``resolve_config`` gives a resumed run its saved options, ``starting_point`` reads the
checkpoint and the model's shape, ``build_model`` loads the weights and ``restore`` puts
the optimizer, scaler, random and loader states back.
"""

from __future__ import annotations

import dataclasses
import shlex
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from ..checkpoint import Checkpoint, load_weights, read_checkpoint, read_pretrained
from ..config import DEFAULT_PRESET, ModelConfig, TrainConfig, build_config, option_flag
from ..data.dataset import Dataset, check_tokenizer
from ..errors import (
    CheckpointDamaged,
    CheckpointError,
    CheckpointMissing,
    ConfigError,
    DatasetError,
    first_line,
)
from ..log import get_logger
from ..model import GPT
from ..state import TrainState
from .distributed import Dist, load_optimizer_state
from .optim import apply_hyperparameters, optimizer_name
from .outdir import resume_dir
from .rng import restore_rng

logger = get_logger(__name__)

# Model fields a resumed run takes from its checkpoint: they fix the weights' shapes.
SHAPE_FIELDS = ("n_layer", "n_head", "n_embd", "block_size", "vocab_size", "bias", "activation")


def wants_resume(mode: str, out_dir: str | Path, overwrite: bool = False) -> bool:
    """Whether a run continues from ``out_dir``'s checkpoint: ``yes``, ``no``, or ``auto``
    (if there is one).

    ``auto`` starts afresh only where there is no checkpoint at all. A checkpoint that is
    there but cannot be read (damaged, truncated, of mismatched files) stops ``yes`` and
    ``auto`` alike with ``CheckpointDamaged``, before anything is written, so a scheduler's
    restart never replaces a trained run; ``auto`` with ``overwrite`` starts afresh over it
    (the fresh run sets the damaged files aside until it saves)."""
    if mode not in ("auto", "yes"):
        return False
    where = resume_dir(out_dir)
    try:
        ckpt = read_checkpoint(where)
        if ckpt.has_optimizer:
            ckpt.optimizer_state()  # memory-mapped: checks the file, loads little
    except CheckpointMissing:
        if mode == "auto":
            logger.info(f"no checkpoint in {out_dir} to resume: starting afresh")
            return False
        return True  # the trainer reports the missing checkpoint
    except CheckpointError as e:
        if mode == "auto" and overwrite:
            logger.warning(f"--overwrite: starting afresh over a damaged checkpoint ({e})")
            return False
        raise _damaged(e, where) from None
    return True


def _damaged(e: CheckpointError, where: Path) -> CheckpointDamaged:
    """The one line for a checkpoint that is there but cannot be resumed: what is wrong and
    the ways on (nothing has been written)."""
    return CheckpointDamaged(
        f"cannot resume: {e}; inspect it with `nanogpt convert-checkpoint info "
        f"{shlex.quote(str(where))}`, or start afresh with --overwrite instead of --resume "
        "(the damaged files are kept aside until the new run saves)"
    )


def resolve_config(
    preset: str | None = None,
    config_file: str | Path | None = None,
    overrides: Mapping[str, Any] | None = None,
    default_preset: str = DEFAULT_PRESET,
) -> TrainConfig:
    """The config that ``nanogpt train`` runs, ``resume`` decided (``yes`` or ``no``).

    A fresh run is ``build_config(preset or default_preset, config_file, overrides)``.
    A resumed run starts from the config saved with its checkpoint instead of the default
    preset, so ``--resume --max-iters 4000`` changes the step count and nothing else; a
    preset, config file or flag given explicitly still applies on top.
    """
    cfg = build_config(preset or default_preset, config_file, overrides)
    if not wants_resume(cfg.run.resume, cfg.run.out_dir, cfg.run.overwrite):
        cfg.run.resume = "no"
        return cfg
    cfg.run.resume = "yes"
    try:
        ckpt = read_checkpoint(resume_dir(cfg.run.out_dir))  # the latest: its options
    except CheckpointMissing:
        return cfg  # the trainer reports the missing checkpoint
    except CheckpointError as e:
        raise _damaged(e, resume_dir(cfg.run.out_dir)) from None
    saved = dict(ckpt.config or {})
    if ckpt.format in ("unified", "separated"):
        # Keep writing the format found (an original nanoGPT ckpt.pt, a converted one)
        # rather than leave a stale checkpoint beside a newer one of another format.
        saved["run"] = {**saved.get("run", {}), "save_format": ckpt.format}
    if not saved:
        return cfg
    try:
        resumed = build_config(preset, config_file, overrides, base=saved)
        before = build_config(None, base=saved).flat()
    except ConfigError as e:  # the options saved in the checkpoint: edited or damaged
        raise ConfigError(
            f"cannot resume: the options saved in the checkpoint in {ckpt.path} are not "
            f"valid ({e}); inspect them with `nanogpt convert-checkpoint info "
            f"{shlex.quote(str(ckpt.path))}`"
        ) from None
    resumed.run.out_dir = cfg.run.out_dir  # where the checkpoint was found
    resumed.run.resume = "yes"
    changed = [
        f"{option_flag(name)} {before[name]} -> {value}"
        for name, value in resumed.flat().items()
        if name not in ("resume", "out_dir") and before.get(name) != value
    ]
    if changed:
        logger.info("resuming with changed options: " + ", ".join(changed))
    return resumed


@dataclass
class StartingPoint:
    """The weights a run starts from (None: scratch), whether it resumes, and its shape."""

    checkpoint: Checkpoint | None
    resumed: bool
    model_config: ModelConfig


def starting_point(cfg: TrainConfig, dataset: Dataset, out_dir: Path) -> StartingPoint:
    """Read the checkpoint a run resumes (or the ``--init-from`` weights), check that its
    tokenizer is the dataset's, and settle the model's shape."""
    if wants_resume(cfg.run.resume, out_dir):
        ckpt = _resume_checkpoint(cfg, dataset, out_dir)
        return StartingPoint(ckpt, True, _resumed_shape(cfg.model, ckpt.model_config))
    if cfg.run.init_from == "scratch":
        vocab = cfg.model.vocab_size or dataset.vocab_size
        if vocab < dataset.vocab_size:
            raise ConfigError(
                f"--vocab-size {vocab} is smaller than dataset "
                f"'{cfg.data.dataset}''s vocabulary of {dataset.vocab_size}"
            )
        return StartingPoint(None, False, dataclasses.replace(cfg.model, vocab_size=vocab))
    source = cfg.run.init_from
    try:
        ckpt = read_pretrained(source)
    except CheckpointError as e:
        raise CheckpointError(f"--init-from {source}: {e}") from None
    check_tokenizer(ckpt.tokenizer, ckpt.model_config.vocab_size or 0, dataset, source)
    # The shape is the weights'; dropout is this run's.
    shape = dataclasses.replace(ckpt.model_config, dropout=cfg.model.dropout)
    return StartingPoint(ckpt, False, shape)


def _resume_checkpoint(cfg: TrainConfig, dataset: Dataset, out_dir: Path) -> Checkpoint:
    try:
        ckpt = read_checkpoint(out_dir, hint="train without --resume first")
        if ckpt.has_optimizer:
            ckpt.optimizer_state()  # a damaged optimizer.pt stops the run before it starts
    except CheckpointMissing as e:
        raise CheckpointMissing(f"cannot resume: {e}") from None
    except CheckpointError as e:
        raise _damaged(e, out_dir) from None
    if ckpt.tokenizer is None:
        logger.warning(
            f"{ckpt.path} records no tokenizer; assuming it is dataset '{cfg.data.dataset}''s"
        )
    elif ckpt.tokenizer != dataset.tokenizer_info:
        raise DatasetError(
            f"cannot resume: dataset '{cfg.data.dataset}' uses another tokenizer than the "
            f"checkpoint in {out_dir} (trained on '{ckpt.dataset}')"
        )
    return ckpt


def _resumed_shape(wanted: ModelConfig, saved: ModelConfig) -> ModelConfig:
    """The checkpoint's shape (flags that ask for another one are ignored, with a
    warning), with this run's dropout."""
    for name in SHAPE_FIELDS:
        if name == "vocab_size" and wanted.vocab_size is None:
            continue
        if getattr(wanted, name) != getattr(saved, name):
            logger.warning(
                f"resuming: {option_flag(name)} {getattr(wanted, name)} ignored, the checkpoint "
                f"has {getattr(saved, name)}"
            )
    return dataclasses.replace(saved, dropout=wanted.dropout)


def build_model(cfg: TrainConfig, start: StartingPoint) -> GPT:
    """The model of ``start``, its weights loaded; ``--init-from`` weights are cropped to
    ``--block-size``."""
    model = GPT(start.model_config)
    if start.checkpoint is None:
        return model
    load_weights(start.checkpoint, model)
    if start.resumed:
        return model
    wanted, have = cfg.model.block_size, model.config.block_size
    if wanted > have:
        raise ConfigError(
            f"--block-size {wanted} is larger than the context of the weights in "
            f"{cfg.run.init_from} ({have}); give --block-size {have} or less"
        )
    if wanted < have:
        model.crop_block_size(wanted)
    m = model.config
    logger.info(
        f"initialised from {cfg.run.init_from}: {m.n_layer} layers, {m.n_head} heads, "
        f"{m.n_embd} wide, context {m.block_size}"
    )
    return model


def restore(
    ckpt: Checkpoint,
    cfg: TrainConfig,
    model: GPT,
    optimizer: torch.optim.Optimizer,
    scaler: torch.amp.GradScaler,
    loader: Any,
    dist: Dist | None,
) -> TrainState:
    """Put back the optimizer, scaler, random and loader states of ``ckpt`` (its weights
    are already in the model); returns its training state."""
    saved = ckpt.optimizer_state()
    if isinstance(saved.get("optimizer"), dict):
        found = optimizer_name(saved["optimizer"])
        if found != cfg.optim.optimizer:
            raise ConfigError(
                f"cannot resume with --optimizer {cfg.optim.optimizer}: the checkpoint in "
                f"{ckpt.path} was trained with {found}; resume with --optimizer {found}, or "
                "start afresh with --overwrite (or another --out-dir)"
            )
    try:
        load_optimizer_state(model, optimizer, saved["optimizer"], dist)
    except (ValueError, KeyError) as e:
        raise CheckpointError(
            f"the optimizer state in {ckpt.path} does not fit this model ({e})"
        ) from None
    _check_optimizer_shapes(optimizer, ckpt)
    apply_hyperparameters(optimizer, cfg.optim)
    if saved.get("scaler"):
        scaler.load_state_dict(saved["scaler"])
    try:  # the random and loader states come from the checkpoint's JSON: untrusted
        restore_rng(ckpt.state.rng)
        if "loader" in ckpt.state.rng:
            loader.load_state(ckpt.state.rng["loader"])
    except (TypeError, ValueError, KeyError, IndexError, RuntimeError, OverflowError) as e:
        raise CheckpointDamaged(
            f"cannot resume: the random-generator or loader state in {ckpt.path} is damaged "
            f"({type(e).__name__}: {first_line(e)})"
        ) from None
    logger.info(f"resuming from {ckpt.path} at iteration {ckpt.state.iter_num}")
    return dataclasses.replace(ckpt.state)


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
