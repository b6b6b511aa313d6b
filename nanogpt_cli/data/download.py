"""Downloads into the user cache, with a progress bar and an atomic rename."""

from __future__ import annotations

import hashlib
import os
import urllib.error
import urllib.request
from pathlib import Path

from ..errors import DatasetError
from ..log import get_logger, progress
from ..paths import cache_root

logger = get_logger(__name__)


CHUNK = 1 << 16


def is_url(source: str) -> bool:
    return source.startswith(("http://", "https://"))


def sha256_of(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def download(url: str, filename: str, sha256: str | None = None, timeout: float = 60.0) -> Path:
    """Fetch ``url`` into the cache as ``filename`` unless a valid copy is already there.

    ``sha256``, when given, is checked on the cached copy and on the download.
    """
    target = cache_root() / "downloads" / filename
    if target.exists() and (sha256 is None or sha256_of(target) == sha256):
        logger.debug(f"using cached {target}")
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_name(target.name + ".part")
    logger.info(f"downloading {url}")
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            total = response.headers.get("Content-Length")
            with (
                open(partial, "wb") as out,
                progress(f"download {filename}", float(total) if total else None, "bytes") as bar,
            ):
                while chunk := response.read(CHUNK):
                    out.write(chunk)
                    bar.advance(len(chunk))
    except (urllib.error.URLError, OSError, ValueError) as e:
        partial.unlink(missing_ok=True)
        reason = getattr(e, "reason", e)
        raise DatasetError(
            f"could not download {url}: {reason}. Download it yourself and pass the file "
            "with --source PATH"
        ) from None
    if sha256 is not None and (actual := sha256_of(partial)) != sha256:
        partial.unlink(missing_ok=True)
        raise DatasetError(
            f"download of {url} is corrupt (sha256 {actual}, expected {sha256}); try again"
        )
    os.replace(partial, target)
    return target
