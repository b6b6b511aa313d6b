"""Stopping a run cleanly: SIGINT (Ctrl-C), SIGTERM and SIGUSR1 (a scheduler's warning
before preemption) let the current step finish (an evaluation stops between its passes),
save a checkpoint and end the run with exit code 128 + the signal's number (130, 143, 138).
Before the first step (preparing data, compiling, reading the dataset) there is nothing to
save: the first signal stops at once (``StopNow``). A second Ctrl-C aborts at once too.
"""

from __future__ import annotations

import signal
import threading
from types import FrameType, TracebackType
from typing import Any

import torch

from ..errors import NanoGPTError
from ..log import get_logger

logger = get_logger(__name__)

# Forward passes between two agreed checks for a stop during an evaluation on a GPU, where a
# pass takes milliseconds (on a CPU a pass can take a good fraction of a second: every one).
EVAL_AGREE_EVERY = 16

STOP_SIGNALS = tuple(
    s for s in (signal.SIGINT, signal.SIGTERM, getattr(signal, "SIGUSR1", None)) if s is not None
)


class Interrupted(NanoGPTError):
    """The run stopped on a signal, after saving a checkpoint."""

    def __init__(self, message: str, signum: int) -> None:
        super().__init__(message)
        self.exit_code = 128 + signum


class StopNow(KeyboardInterrupt):
    """Raised from a signal handler, wherever the main thread is, when waiting for the end
    of the step is not wanted: before the first step, or on a second Ctrl-C. A
    ``KeyboardInterrupt`` (no ``except Exception`` swallows it) that carries its one line
    and the exit code, 128 + the signal's number."""

    def __init__(self, message: str, signum: int) -> None:
        super().__init__(message)
        self.exit_code = 128 + signum


class StopRequests:
    """While entered, the stop signals set ``signum`` instead of ending the process; the
    training loop looks at it between steps. With ``at_once`` (before the loop starts) the
    first signal raises ``StopNow`` instead; ``aborted`` is the line a second Ctrl-C ends
    with. Only the main thread can take signals: in any other thread this does nothing."""

    def __init__(self, at_once: bool = False, aborted: str = "") -> None:
        self.signum: int | None = None
        self.at_once = at_once
        self.aborted = aborted or "stopped at once by a second Ctrl-C, without saving"
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
        if self.at_once:
            name = signal.Signals(signum).name
            raise StopNow(f"stopped by {name} before the first step; nothing was saved", signum)
        if self.signum is not None and signum == signal.SIGINT:
            raise StopNow(self.aborted, signum)  # Ctrl-C again: the user wants out now
        if self.signum is None:
            logger.warning(
                f"{signal.Signals(signum).name} received: finishing this step and saving a "
                "checkpoint (Ctrl-C again to stop at once)"
            )
        self.signum = self.signum or signum

    @property
    def name(self) -> str:
        return signal.Signals(self.signum).name if self.signum else ""


class StopCheck:
    """Whether to stop: asked by the training loop after every step and by an evaluation
    after every forward pass. The processes of a distributed run get a signal at different
    moments, so they agree (an all-reduce of the flag, ``dist``) at log intervals and every
    few evaluation passes, and all stop at the same point."""

    def __init__(self, requests: StopRequests, dist: Any, device: torch.device) -> None:
        self.requests, self.dist, self.device = requests, dist, device
        self._passes = 0

    def after_step(self, at_log: bool) -> bool:
        if self.dist is None:
            return self.requests.signum is not None
        return at_log and self._agreed()

    def evaluating(self) -> bool:
        if self.dist is None:
            return self.requests.signum is not None
        self._passes += 1  # the same count in every process: each runs as many passes
        every = 1 if self.device.type == "cpu" else EVAL_AGREE_EVERY
        return self._passes % every == 0 and self._agreed()

    def _agreed(self) -> bool:
        flag = torch.tensor([float(self.requests.signum or 0)], device=self.device)
        agreed = int(self.dist.sum(flag).item())
        if agreed and self.requests.signum is None:
            self.requests.signum = 15  # another process was told to stop
        return agreed > 0
