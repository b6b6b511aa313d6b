"""The training engine.

The engine's names load on first use, so light parts of this package (``metrics``,
``trackers``) import without torch: ``nanogpt plot`` reads metrics files with them.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .engine import Trainer, TrainResult, resolve_config, train

__all__ = ["TrainResult", "Trainer", "resolve_config", "train"]


def __getattr__(name: str) -> Any:
    if name in __all__:
        from . import engine

        return getattr(engine, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
