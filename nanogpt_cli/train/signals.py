"""Stopping a run cleanly: SIGINT (Ctrl-C), SIGTERM and SIGUSR1 (a scheduler's warning
before preemption) let the current step finish, save a checkpoint and end the run with
exit code 128 + the signal's number (130, 143, 138). A second Ctrl-C aborts at once.
"""

from __future__ import annotations

import signal
import threading
from types import FrameType, TracebackType
from typing import Any

from ..errors import NanoGPTError
from ..log import get_logger

logger = get_logger(__name__)

STOP_SIGNALS = tuple(
    s for s in (signal.SIGINT, signal.SIGTERM, getattr(signal, "SIGUSR1", None)) if s is not None
)


class Interrupted(NanoGPTError):
    """The run stopped on a signal, after saving a checkpoint."""

    def __init__(self, message: str, signum: int) -> None:
        super().__init__(message)
        self.exit_code = 128 + signum


class StopRequests:
    """While entered, the stop signals set ``signum`` instead of ending the process; the
    training loop looks at it between steps. Only the main thread can take signals: in any
    other thread this does nothing."""

    def __init__(self) -> None:
        self.signum: int | None = None
        self._previous: dict[int, Any] = {}

    def __enter__(self) -> StopRequests:
        if threading.current_thread() is threading.main_thread():
            for s in STOP_SIGNALS:
                self._previous[s] = signal.signal(s, self._handle)
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        for s, handler in self._previous.items():
            signal.signal(s, handler)
        self._previous.clear()

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        if self.signum is not None and signum == signal.SIGINT:
            raise KeyboardInterrupt  # Ctrl-C again: the user wants out now
        if self.signum is None:
            logger.warning(
                f"{signal.Signals(signum).name} received: finishing this step and saving a "
                "checkpoint (Ctrl-C again to stop at once)"
            )
        self.signum = self.signum or signum

    @property
    def name(self) -> str:
        return signal.Signals(self.signum).name if self.signum else ""
