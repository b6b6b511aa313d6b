"""A run's output directory: what a fresh run may replace, and when.

A fresh run (not ``--resume``) into an ``--out-dir`` that holds a checkpoint stops before it
writes anything, naming the run it found. With ``--overwrite`` the old run's files are set
aside in ``previous-run/`` and deleted only once the new run has saved its first checkpoint;
a new run that ends without saving puts them back. A run set aside by a process that was
killed before its first save is still found there, so it is never lost by accident.
"""

from __future__ import annotations

import os
import shlex
import shutil
from pathlib import Path

from ..checkpoint import (
    CONFIG_FILE,
    META_FILE,
    MODEL_FILE,
    OPTIMIZER_FILE,
    UNIFIED_FILE,
    read_checkpoint,
)
from ..errors import CheckpointError, ConfigError
from ..log import get_logger
from ..metrics import METRICS_FILE
from ..safe_files import os_error_line
from ..trackers import TENSORBOARD_DIR, WANDB_ID_FILE

logger = get_logger(__name__)

RUN_CONFIG_FILE = "config.toml"
PREVIOUS_RUN_DIR = "previous-run"
# Where a save goes while the out-dir holds a better checkpoint (--always-save-checkpoint,
# the end of a run, a stop signal): the out-dir itself keeps the best val loss.
LAST_DIR = "last"
# What a training run writes into its out-dir (checkpoint files with their temporaries).
_CHECKPOINT_FILES = (CONFIG_FILE, MODEL_FILE, OPTIMIZER_FILE, UNIFIED_FILE)
RUN_FILES = (
    *_CHECKPOINT_FILES,
    *(name + ".tmp" for name in _CHECKPOINT_FILES),
    META_FILE,
    METRICS_FILE,
    RUN_CONFIG_FILE,
    RUN_CONFIG_FILE + ".tmp",
    LAST_DIR,
    TENSORBOARD_DIR,
    WANDB_ID_FILE,
)


def resume_command(out_dir: str | Path) -> str:
    """The command that continues the run in ``out_dir``."""
    return f"nanogpt train --out-dir {shlex.quote(str(out_dir))} --resume"


def check_out_dir(out_dir: str | Path) -> Path:
    """``out_dir`` as a path, if it is (or can be made) a writable directory. Nothing is
    created: a run that fails before it starts leaves no directory behind."""
    path = Path(out_dir).expanduser()
    try:
        if path.exists() and not path.is_dir():
            raise ConfigError(f"--out-dir {path} is a file; choose a directory")
        existing = path
        while not existing.exists() and existing != existing.parent:
            existing = existing.parent
    except OSError as e:  # a name too long for the file system, a loop of links
        raise ConfigError(os_error_line(e, path, "--out-dir", "creating")) from None
    if not existing.is_dir() or not os.access(existing, os.W_OK | os.X_OK):
        where = path if existing == path else f"{existing} (the parent of --out-dir {path})"
        raise ConfigError(f"{where} is not writable; choose another --out-dir")
    return path


def make_out_dir(path: Path) -> None:
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise ConfigError(os_error_line(e, path, "--out-dir", "creating")) from None


def holds_checkpoint(path: Path) -> bool:
    """Whether ``path`` holds checkpoint files (readable or not)."""
    return path.is_dir() and any(
        (path / name).exists() for name in (*_CHECKPOINT_FILES, CONFIG_FILE + ".tmp")
    )


def resume_dir(out_dir: str | Path) -> Path:
    """Where the run in ``out_dir`` continues from: ``out_dir`` (its best checkpoint) or
    ``out_dir/last`` (its latest), whichever holds the later iteration, so a resumed run
    goes on exactly where it stopped. A checkpoint that cannot be read is the one returned:
    its reader reports it (a damaged checkpoint is never passed over for an older one)."""
    path = Path(out_dir).expanduser()
    last = path / LAST_DIR
    if not holds_checkpoint(last):
        return path
    if not holds_checkpoint(path):
        return last
    try:
        latest = read_checkpoint(last).state.iter_num
    except CheckpointError:
        return last
    try:
        best = read_checkpoint(path).state.iter_num
    except CheckpointError:
        return path
    return last if latest > best else path


UNREADABLE = "a checkpoint that cannot be read"


def describe_run(path: Path) -> str | None:
    """How the run whose checkpoint is in ``path`` stands ("iteration 300, best val loss
    2.4012"), or None if ``path`` holds no checkpoint."""
    if not holds_checkpoint(path):
        return None
    try:
        state = read_checkpoint(path).state
    except CheckpointError as e:
        return f"{UNREADABLE}: {e}"
    best = state.best_val_loss
    return f"iteration {state.iter_num}, best val loss " + (
        f"{best:.4f}" if best < float("inf") else "n/a"
    )


def check_fresh_run(out_dir: str | Path, overwrite: bool) -> None:
    """Refuse to start a fresh run over the checkpoint in ``out_dir`` (or one an interrupted
    ``--overwrite`` set aside) unless ``overwrite``."""
    if overwrite:
        return
    path = Path(out_dir).expanduser()
    found = describe_run(path)
    if found is not None:
        way = (
            f"inspect it with `nanogpt convert-checkpoint info {shlex.quote(str(path))}`"
            if found.startswith(UNREADABLE)
            else f"continue it with `{resume_command(path)}`"
        )
        raise ConfigError(
            f"--out-dir {path} already holds a run ({found}): {way}, start afresh with "
            "--overwrite (the old run is deleted once the new one saves), or choose another "
            "--out-dir"
        )
    aside = path / PREVIOUS_RUN_DIR
    found = describe_run(aside)
    if found is not None:
        raise ConfigError(
            f"{aside} holds a run ({found}) that an --overwrite run set aside and never "
            f"replaced: keep it by moving its files back (`mv {shlex.quote(str(aside))}/* "
            f"{shlex.quote(str(path))}/`), or start afresh with --overwrite (it is deleted "
            "once the new run saves)"
        )


class SetAside:
    """The previous run's files, moved into ``out_dir/previous-run`` while a fresh
    ``--overwrite`` run has not saved yet."""

    def __init__(self, out_dir: Path) -> None:
        self.out_dir = out_dir
        self.folder = out_dir / PREVIOUS_RUN_DIR
        self.names: list[str] = []

    @classmethod
    def previous_run(cls, out_dir: Path) -> SetAside | None:
        """Move the run files found in ``out_dir`` aside; None if there were none."""
        aside = cls(out_dir)
        names = [name for name in RUN_FILES if (out_dir / name).exists()]
        if describe_run(out_dir) is None and describe_run(aside.folder) is not None:
            # A run an earlier --overwrite set aside and never replaced (that run was
            # killed before it saved): it stays the previous run; the killed run's
            # leftovers (its metrics and config) go.
            for name in names:
                _remove(out_dir / name)
            aside.names = [p.name for p in aside.folder.iterdir()]
        else:
            if not names:
                _remove(aside.folder)  # at most an empty or broken leftover
                return None
            # The run in out_dir is the newest: it is the one set aside now.
            _remove(aside.folder)
            aside.folder.mkdir()
            for name in names:
                os.replace(out_dir / name, aside.folder / name)
            aside.names = names
        logger.info(
            f"--overwrite: the previous run's files are in {aside.folder} until this run "
            "saves its first checkpoint"
        )
        return aside

    def discard(self) -> None:
        """The new run has saved: the old one goes."""
        shutil.rmtree(self.folder, ignore_errors=True)
        logger.info(f"deleted the previous run ({self.folder})")

    def restore(self) -> None:
        """The new run ended without saving: put the old run's files back."""
        for name in self.names:
            target = self.out_dir / name
            _remove(target)
            os.replace(self.folder / name, target)
        for name in RUN_FILES:  # what the new run wrote and the old one did not have
            if name not in self.names:
                _remove(self.out_dir / name)
        shutil.rmtree(self.folder, ignore_errors=True)
        logger.info(f"this run saved nothing: the previous run is back in {self.out_dir}")


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    elif path.exists() or path.is_symlink():
        path.unlink()
