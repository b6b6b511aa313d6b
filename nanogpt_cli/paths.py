"""Where nanogpt keeps datasets and downloads."""

from __future__ import annotations

import os
from pathlib import Path

APP_NAME = "nanogpt"
DATA_DIR_ENV = "NANOGPT_DATA_DIR"
CACHE_DIR_ENV = "NANOGPT_CACHE_DIR"
CONFIG_DIR_ENV = "NANOGPT_CONFIG_DIR"


def data_root(data_dir: str | Path | None = None) -> Path:
    """The datasets directory: ``data_dir``, else ``$NANOGPT_DATA_DIR``, else the user data dir."""
    if data_dir:
        return Path(data_dir).expanduser()
    env = os.environ.get(DATA_DIR_ENV)
    if env:
        return Path(env).expanduser()
    import platformdirs

    return platformdirs.user_data_path(APP_NAME) / "datasets"


def data_root_origin(data_dir: str | Path | None = None) -> str:
    """How ``data_root(data_dir)`` was chosen, for messages that name the directory."""
    if data_dir:
        return "set by --data-dir"
    if os.environ.get(DATA_DIR_ENV):
        return f"set by ${DATA_DIR_ENV}"
    return f"the default; choose another with --data-dir or ${DATA_DIR_ENV}"


def cache_root() -> Path:
    """Where downloads are cached: ``$NANOGPT_CACHE_DIR``, else the user cache dir."""
    env = os.environ.get(CACHE_DIR_ENV)
    if env:
        return Path(env).expanduser()
    import platformdirs

    return platformdirs.user_cache_path(APP_NAME)


def config_root() -> Path:
    """Where the user's own settings live (``presets/*.toml``): ``$NANOGPT_CONFIG_DIR``, else
    the user config dir (``~/.config/nanogpt`` on Linux)."""
    env = os.environ.get(CONFIG_DIR_ENV)
    if env:
        return Path(env).expanduser()
    import platformdirs

    return platformdirs.user_config_path(APP_NAME)


def user_presets_dir() -> Path:
    return config_root() / "presets"


def is_dataset_path(dataset: str) -> bool:
    """Whether ``--dataset`` names a folder (``./d``, ``/data/d``) rather than a dataset of
    the data directory."""
    return os.sep in dataset or bool(os.altsep and os.altsep in dataset) or dataset.startswith(".")


def dataset_dir(dataset: str, data_dir: str | Path | None = None) -> Path:
    """A dataset's directory: ``dataset`` itself if it is a path, else ``data_root()/dataset``."""
    if is_dataset_path(dataset):
        return Path(dataset).expanduser()
    return data_root(data_dir) / dataset
