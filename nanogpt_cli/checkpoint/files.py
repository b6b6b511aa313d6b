"""Writing a checkpoint's files safely: never through a link someone else put there, with
the mode of any other file the user writes, and failures told in words.

Each file is first written under a temporary name: any leftover of that name (a file, or a
symbolic link planted to make the save overwrite another file) is removed, and the new one is
created exclusively without following links. ``seal`` then gives it the ordinary mode
(0666 less the umask: 0644 for most users, whatever the writing library chose) and flushes
it to disk before it is renamed into place.
"""

from __future__ import annotations

import errno
import os
import shutil
from pathlib import Path

from ..errors import first_line
from ..safe_files import NOFOLLOW as _NOFOLLOW
from ..safe_files import create_new, file_mode

__all__ = ["create_new", "file_mode", "seal", "write_failure"]
_DISK_FULL = {errno.ENOSPC, getattr(errno, "EDQUOT", errno.ENOSPC)}
_NEARLY_FULL = 16 * 2**20  # bytes free after a failed write that mean the disk filled up


def seal(path: Path) -> None:
    """Give ``path`` the ordinary file mode and flush it to disk; ``path`` must be a file
    this process just wrote, not a link."""
    fd = os.open(path, os.O_RDONLY | _NOFOLLOW)
    try:
        if hasattr(os, "fchmod"):  # POSIX
            os.fchmod(fd, file_mode())
        os.fsync(fd)
    finally:
        os.close(fd)


def write_failure(e: BaseException, path: Path) -> str:
    """What went wrong writing ``path``, in words: the OS's reason, or for a library error
    that hides it (torch's ``unexpected pos``) a full disk where the disk is full."""
    if isinstance(e, OSError) and e.errno in _DISK_FULL:
        return f"No space left on device while writing {path}"
    if isinstance(e, OSError) and e.strerror:
        return f"{e.strerror} while writing {path}"
    try:
        full = shutil.disk_usage(path.parent).free < _NEARLY_FULL
    except OSError:
        full = False
    if full:
        return f"No space left on device while writing {path}"
    return f"writing {path} failed ({first_line(e)})"
