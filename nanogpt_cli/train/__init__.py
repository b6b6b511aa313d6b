"""The training engine."""

from .engine import Trainer, TrainResult, train

__all__ = ["TrainResult", "Trainer", "train"]
