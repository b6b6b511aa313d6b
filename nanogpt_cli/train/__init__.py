"""The training engine: ``train(cfg)`` runs a config from ``config.build_config`` (or
``resolve_config``, which also gives a resumed run its saved options).

- ``start``: where a run starts from (scratch, ``--init-from``, its own checkpoint);
- ``setup``: the device, the model's training step and its batches (shared with
  ``nanogpt bench``);
- ``engine``: the ``Trainer`` loop: evaluation, logging, checkpoints;
- ``step``, ``optim``, ``health``, ``signals``, ``rng``: its parts;
- ``distributed`` and ``launch``: several processes, through torchrun.
"""

from __future__ import annotations

from ..config import TrainConfig
from ..data.first_use import prepare_if_missing
from ..state import TrainResult, TrainState
from .distributed import under_torchrun
from .engine import Trainer
from .launch import launch
from .start import resolve_config


def train(cfg: TrainConfig) -> TrainResult:
    """Train (or resume, or only evaluate) as ``cfg`` says; see ``TrainConfig``.

    With ``nproc_per_node`` > 1 outside torchrun, the run is started on that many processes
    of this machine through torchrun (``launch``), each of which comes back here; under
    torchrun, this process trains its share.
    """
    if cfg.system.nproc_per_node > 1 and not under_torchrun():
        prepare_if_missing(cfg.data.dataset, cfg.data.data_dir)  # once, before the processes
        result, main = launch(cfg), True
    else:
        trainer = Trainer(cfg)
        try:
            result = trainer.run()
        finally:
            trainer.close()
        main = trainer.main
    if main and result.saved and cfg.run.sample_at_end and not cfg.eval.eval_only:
        result.sample = _sample(cfg, result)
    return result


def _sample(cfg: TrainConfig, result: TrainResult) -> str | None:
    """What the model learned, in a few lines; a failure here never fails the run."""
    from ..errors import NanoGPTError
    from ..log import get_logger
    from ..sample import sample_of_run

    try:
        return sample_of_run(
            result.out_dir,
            device=cfg.system.device,
            seed=cfg.system.seed,
            cpu_kernels=cfg.system.cpu_kernels,
        )
    except NanoGPTError as e:
        get_logger(__name__).warning(f"no sample at the end: {e}")
        return None


__all__ = ["TrainResult", "TrainState", "Trainer", "resolve_config", "train"]
