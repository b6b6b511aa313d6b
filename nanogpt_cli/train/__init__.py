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
from ..errors import first_line
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
        return launch(cfg)
    trainer = Trainer(cfg)
    try:
        return trainer.run()
    finally:
        trainer.close()


def final_sample(cfg: TrainConfig, result: TrainResult) -> str | None:
    """A short sample from the run's checkpoint (``sample.sample_of_run``), what
    ``nanogpt train`` prints at the end; None, with a warning, if it cannot be made: a run
    that trained and saved never fails here."""
    import torch

    from ..log import get_logger
    from ..sample import sample_of_run

    if torch.cuda.is_available():
        torch.cuda.empty_cache()  # what training left cached
    try:
        return sample_of_run(
            result.out_dir,
            device=cfg.system.device,
            seed=cfg.system.seed,
            cpu_kernels=cfg.system.cpu_kernels,
        )
    except Exception as e:  # the run is done; its sample is a bonus
        get_logger(__name__).warning(f"no sample at the end: {first_line(e)}")
        return None


__all__ = ["TrainResult", "TrainState", "Trainer", "final_sample", "resolve_config", "train"]
