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


def dataset_dir(dataset: str, data_dir: str | Path | None = None) -> Path:
    """A dataset's directory: ``dataset`` itself if it is a path, else ``data_root()/dataset``."""
    as_path = Path(dataset).expanduser()
    if os.sep in dataset or (os.altsep and os.altsep in dataset) or dataset.startswith("."):
        return as_path
    return data_root(data_dir) / dataset
