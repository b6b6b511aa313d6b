"""One writer per out-dir: the advisory lock a training run holds on ``OUT_DIR/train.lock``.

A run takes it before it writes anything into its out-dir and holds it to the end; a second
run on the same out-dir stops with one line naming the holder (PID, host, since when). The
lock is ``flock`` on POSIX and ``msvcrt.locking`` on Windows: the operating system releases
it when its process dies, however it dies, so a lock file left by a killed run is *stale*
and the next run takes it over with a warning. Where the file system cannot lock (some
network file systems), a holder's PID that is alive on this host counts as held.

Readers (``sample``, ``eval``, ``convert-checkpoint``, ``plot``) take no lock. The lock is a
file of its own, apart from the short lock a checkpoint save takes on the directory itself
(``checkpoint.directory.locked``), so the two never wait on each other.

With ``--nproc-per-node`` the launcher holds the lock and tells its processes so through
``HELD_ENV``; under a bare ``torchrun`` the process of rank 0 holds it.
"""

from __future__ import annotations

import contextlib
import datetime
import errno
import json
import os
import socket
import weakref
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import ConfigError, TrainingError
from ..log import get_logger
from ..safe_files import NOFOLLOW, os_error_line

logger = get_logger(__name__)

LOCK_FILE = "train.lock"
# The lock file of the out-dir whose lock a launcher holds for the processes it starts.
HELD_ENV = "NANOGPT_HELD_RUN_LOCK"
_WINDOWS_OFFSET = 1 << 30  # Windows locks a byte range: one far past the holder's record


@dataclass
class Holder:
    """Who holds (or held) a lock, as its lock file says."""

    pid: int | None
    host: str
    since: str

    def describe(self) -> str:
        return f"process {self.pid or '?'} on {self.host or '?'} (since {self.since or '?'})"

    @classmethod
    def parse(cls, text: str) -> Holder | None:
        try:
            record: Any = json.loads(text)
        except ValueError:
            return None
        if not isinstance(record, dict):
            return None
        pid = record.get("pid")
        return cls(
            pid if isinstance(pid, int) and not isinstance(pid, bool) else None,
            str(record.get("host", "")),
            str(record.get("since", "")),
        )


class RunLock:
    """The lock of ``out_dir``; ``acquire`` creates the directory if needed, ``release``
    removes the lock file and the directories ``acquire`` made if nothing else is in them."""

    def __init__(self, out_dir: Path) -> None:
        self.out_dir = out_dir
        self.path = out_dir / LOCK_FILE
        self._fd: int | None = None
        self._made: list[Path] = []

    @property
    def held(self) -> bool:
        return self._fd is not None

    def acquire(self) -> RunLock:
        self._make_dirs()
        try:
            for _ in range(10):  # the file can be removed by its holder between open and lock
                fd = self._open()
                try:
                    locked = _try_lock(fd)
                    if locked is None:  # the file system cannot lock: go by the PID
                        locked = not _alive_here(_read_holder(fd))
                    if not locked:
                        raise TrainingError(self._held_message(_read_holder(fd)))
                    if _same_file(fd, self.path):
                        self._take(fd)
                        return self
                except BaseException:
                    os.close(fd)
                    raise
                os.close(fd)
            raise TrainingError(f"could not lock {self.path}: it keeps being replaced")
        except BaseException:
            self._remove_dirs()
            raise

    def release(self) -> None:
        fd, self._fd = self._fd, None
        if fd is not None:
            self._closer.detach()
            if os.name == "nt":  # an open file cannot be deleted there
                os.close(fd)
                with contextlib.suppress(OSError):
                    self.path.unlink()
            else:
                with contextlib.suppress(OSError):
                    if _same_file(fd, self.path):
                        self.path.unlink()  # while still locked: no one else holds it yet
                os.close(fd)
        self._remove_dirs()

    def __enter__(self) -> RunLock:
        return self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()

    # -- parts ------------------------------------------------------------------------------

    def _make_dirs(self) -> None:
        missing = []
        folder = self.out_dir
        try:
            while not folder.exists() and folder != folder.parent:
                missing.append(folder)
                folder = folder.parent
            self.out_dir.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise ConfigError(os_error_line(e, self.out_dir, "--out-dir", "creating")) from None
        self._made = missing  # deepest first

    def _remove_dirs(self) -> None:
        """A run that wrote nothing leaves no directory behind."""
        for folder in self._made:
            try:
                folder.rmdir()
            except OSError:
                break  # not empty: the run wrote something
        self._made = []

    def _open(self) -> int:
        try:
            return os.open(self.path, os.O_RDWR | os.O_CREAT | NOFOLLOW, 0o666)
        except OSError as e:
            raise ConfigError(os_error_line(e, self.path, "--out-dir", "creating")) from None

    def _take(self, fd: int) -> None:
        before = _read_holder(fd)
        if before is not None and before.pid not in (None, os.getpid()):
            logger.warning(
                f"{self.path} was left by {before.describe()}, which is no longer running: "
                "this run takes it over"
            )
        record = {
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "since": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
        }
        try:
            os.ftruncate(fd, 0)
            os.lseek(fd, 0, os.SEEK_SET)
            os.write(fd, (json.dumps(record) + "\n").encode())
        except OSError as e:
            raise ConfigError(os_error_line(e, self.path, "--out-dir")) from None
        self._fd = fd
        # A lock whose owner is dropped without release() (a Trainer never closed) is
        # released when it is collected, as when its process ends.
        self._closer = weakref.finalize(self, os.close, fd)

    def _held_message(self, holder: Holder | None) -> str:
        who = holder.describe() if holder is not None else "another process"
        return (
            f"--out-dir {self.out_dir} is in use by another training run: {who} holds "
            f"{self.path}. Wait for it to finish or stop it, or choose another --out-dir"
        )


def held_by_launcher(out_dir: Path) -> bool:
    """Whether the launcher that started this process holds ``out_dir``'s lock for it."""
    held = os.environ.get(HELD_ENV)
    return bool(held) and _key(out_dir) == held


def launcher_env(out_dir: Path) -> dict[str, str]:
    """What a launcher holding ``out_dir``'s lock puts in its processes' environment."""
    return {HELD_ENV: _key(out_dir)}


def _key(out_dir: Path) -> str:
    return str((Path(out_dir).expanduser().absolute() / LOCK_FILE).resolve())


def _try_lock(fd: int) -> bool | None:
    """True if locked, False if another process holds the lock, None if it cannot lock."""
    try:
        import fcntl
    except ImportError:
        return _try_lock_windows(fd)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    except OSError as e:
        if e.errno in (errno.EAGAIN, errno.EACCES):
            return False
        return None  # ENOLCK, EOPNOTSUPP, EINVAL: a file system without locks
    return True


def _try_lock_windows(fd: int) -> bool | None:  # pragma: no cover - Windows only
    import msvcrt

    os.lseek(fd, _WINDOWS_OFFSET, os.SEEK_SET)
    try:
        msvcrt.locking(fd, msvcrt.LK_NBLCK, 1)  # type: ignore[attr-defined]
    except OSError as e:
        return False if e.errno in (errno.EACCES, errno.EDEADLK) else None
    finally:
        os.lseek(fd, 0, os.SEEK_SET)
    return True


def _read_holder(fd: int) -> Holder | None:
    try:
        os.lseek(fd, 0, os.SEEK_SET)
        text = os.read(fd, 4096).decode("utf-8", "replace")
    except OSError:
        return None
    return Holder.parse(text) if text.strip() else None


def _alive_here(holder: Holder | None) -> bool:
    """Whether ``holder`` may still run: alive on this host, or on another (unknowable)."""
    if holder is None or holder.pid is None:
        return False
    if holder.host and holder.host != socket.gethostname():
        return True
    try:
        os.kill(holder.pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # EPERM: someone else's live process
        return True
    return True


def _same_file(fd: int, path: Path) -> bool:
    try:
        a, b = os.fstat(fd), os.stat(path, follow_symlinks=False)
    except OSError:
        return False
    return (a.st_dev, a.st_ino) == (b.st_dev, b.st_ino)
