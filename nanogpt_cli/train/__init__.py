"""The training engine."""

from .engine import Trainer, TrainResult, resolve_config, train

__all__ = ["TrainResult", "Trainer", "resolve_config", "train"]
