"""Writing the files of a run safely: never through a link this process did not make, never
half-written, and an operating-system error as one line that names the file.

A text file is written under ``NAME.tmp`` (a leftover from a crash is replaced) and renamed
into place, so a reader sees the old file or the new one, never a part; the rename replaces
a symbolic link at ``NAME`` instead of writing where it points. Files are created with mode
0666 less the umask (0644 as a rule), like the rest of a run's files.
"""

from __future__ import annotations

import contextlib
import errno
import os
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO, TextIO

from .errors import NanoGPTError

# Refuse to open the last component of a path when it is a symbolic link (POSIX).
NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)
_CLOEXEC = getattr(os, "O_CLOEXEC", 0)


def os_error_text(e: OSError, path: str | Path, doing: str = "writing") -> str:
    """What ``e`` means for ``path``, in words: "no space left on device while writing X"."""
    path = Path(path)
    code = e.errno
    if code == errno.ENOSPC:
        return f"no space left on device while {doing} {path}"
    if code == getattr(errno, "EDQUOT", None):
        return f"disk quota exceeded while {doing} {path}"
    if code == errno.EROFS:
        return f"cannot write {path}: its file system is read-only"
    if code == errno.EISDIR:
        return f"cannot write {path}: it is a directory"
    if code == errno.ENAMETOOLONG:
        longest = max((len(os.fsencode(part)) for part in path.parts), default=0)
        return (
            f"cannot write {path}: the name is too long for its file system (its longest "
            f"component has {longest} bytes; most file systems allow 255)"
        )
    if code in (errno.EACCES, errno.EPERM):
        return f"cannot write {path}: permission denied"
    if code == errno.ELOOP:
        return f"{path} is a symbolic link, which nanogpt does not write through; remove it"
    if code == errno.ENOTDIR:
        return f"cannot write {path}: a component of its path is a file, not a directory"
    if code == errno.ENOENT:
        return f"cannot write {path}: {path.parent} does not exist"
    return f"cannot write {path}: {e.strerror or e}"


def os_error_line(e: OSError, path: str | Path, option: str, doing: str = "writing") -> str:
    """``os_error_text`` and what to do: choose another ``option`` (e.g. ``--out-dir``)."""
    full = e.errno in (errno.ENOSPC, getattr(errno, "EDQUOT", None))
    advice = "free some space or choose" if full else "choose"
    return f"{os_error_text(e, path, doing)}; {advice} another {option}"


def file_mode() -> int:
    """0666 less the process's umask: the mode ``open()`` gives a new file."""
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask


def create_new(path: Path) -> BinaryIO:
    """``path``, created afresh for writing: a leftover file or link of that name is removed
    first (a link itself, never what it points to), and the new file is opened exclusively,
    not through a link, with mode 0666 less the umask."""
    path.unlink(missing_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | _CLOEXEC | NOFOLLOW, 0o666)
    return os.fdopen(fd, "wb")


def replace_atomically(path: Path, write: Callable[[BinaryIO], object]) -> None:
    """Replace ``path`` with what ``write(file)`` writes: into ``NAME.tmp`` (``create_new``),
    flushed to disk, then renamed into place, which replaces a link at ``path`` rather than
    writing where it points. If anything fails the temporary file is removed and ``path``
    is as it was; the exception goes on."""
    tmp = path.with_name(path.name + ".tmp")
    made = False
    try:
        with create_new(tmp) as f:
            made = True
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if made:
            with contextlib.suppress(OSError):
                tmp.unlink()
        raise


def write_text(
    path: Path, text: str, error: type[NanoGPTError] = NanoGPTError, option: str = "path"
) -> None:
    """Write ``text`` to ``path`` atomically (``replace_atomically``). An OS error raises
    ``error`` with one line (advice: choose another ``option``) and leaves neither the
    temporary file nor a changed ``path`` behind."""
    try:
        replace_atomically(path, lambda f: f.write(text.encode("utf-8")))
    except OSError as e:
        raise error(os_error_line(e, path, option)) from None


def open_for_writing(path: Path, append: bool) -> TextIO:
    """``path`` opened for writing text (appending or from empty), refusing to follow a
    symbolic link at ``path``: an ``OSError`` (ELOOP) instead."""
    if not NOFOLLOW and path.is_symlink():  # no O_NOFOLLOW here (Windows): look first
        raise OSError(errno.ELOOP, "is a symbolic link", str(path))
    flags = os.O_WRONLY | os.O_CREAT | _CLOEXEC | NOFOLLOW | (os.O_APPEND if append else 0)
    fd = os.open(path, flags, 0o666)
    try:
        if not append:
            os.ftruncate(fd, 0)  # after the open: a link is refused before anything changes
        return os.fdopen(fd, "a" if append else "w", encoding="utf-8")
    except BaseException:
        os.close(fd)
        raise
