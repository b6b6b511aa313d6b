"""Downloads into the user cache, with a progress bar, retries on transient errors and an
atomic rename."""

from __future__ import annotations

import hashlib
import http.client
import os
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

from ..errors import DatasetError, first_line
from ..log import get_logger
from ..paths import cache_root
from ..progress import progress

logger = get_logger(__name__)


CHUNK = 1 << 16
# Seconds to wait before each retry of a download that failed on a transient error
# (a timeout, a dropped connection, HTTP 429 or 5xx): three attempts in all.
RETRY_DELAYS: tuple[float, ...] = (1.0, 4.0)
OFFLINE_HINT = "download it yourself and pass the file with --source PATH"


def is_url(source: str) -> bool:
    return source.startswith(("http://", "https://", "file://"))


def local_path(url: str) -> Path | None:
    """The file a ``file://`` URL names; None for any other URL."""
    if not url.startswith("file://"):
        return None
    parsed = urllib.parse.urlparse(url)
    if parsed.netloc not in ("", "localhost"):
        raise DatasetError(
            f"{url} names a host ({parsed.netloc}); a local file is file:///absolute/path "
            "(three slashes)"
        )
    return Path(urllib.request.url2pathname(parsed.path))


def sha256_of(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def is_transient(e: BaseException) -> bool:
    """Whether a failed download may work if tried again: a timeout, a reset or refused
    connection, a cut-short response, HTTP 429 or 5xx (never a 404 or a missing file)."""
    if isinstance(e, urllib.error.HTTPError):
        return e.code == 429 or e.code >= 500
    if isinstance(e, urllib.error.URLError) and isinstance(e.reason, BaseException):
        e = e.reason
    return isinstance(e, (TimeoutError, ConnectionError, http.client.IncompleteRead))


def _reason(e: BaseException) -> str:
    if isinstance(e, urllib.error.HTTPError):
        return f"HTTP {e.code} {e.reason}"
    reason = getattr(e, "reason", e)
    return first_line(reason) if isinstance(reason, BaseException) else str(reason)


def download(
    url: str,
    filename: str,
    sha256: str | None = None,
    timeout: float = 60.0,
    hint: str = OFFLINE_HINT,
) -> Path:
    """Fetch ``url`` into the cache as ``filename`` unless a valid copy is already there;
    a ``file://`` URL is read where it is (nothing is copied).

    ``sha256``, when given, is checked on the cached copy and on the download. A transient
    failure is retried (``RETRY_DELAYS``); the error after the last attempt ends with
    ``hint``, what to do offline.
    """
    if (path := local_path(url)) is not None:
        if not path.is_file():
            raise DatasetError(f"could not read {url}: no such file {path}; {hint}")
        if sha256 is not None and (actual := sha256_of(path)) != sha256:
            raise DatasetError(f"{path} is not the expected file (sha256 {actual}, not {sha256})")
        return path
    target = cache_root() / "downloads" / filename
    if target.exists() and (sha256 is None or sha256_of(target) == sha256):
        logger.debug(f"using cached {target}")
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_name(target.name + ".part")
    logger.info(f"downloading {url}")
    attempts = len(RETRY_DELAYS) + 1
    for attempt in range(1, attempts + 1):
        try:
            _fetch(url, partial, filename, timeout)
            break
        except (urllib.error.URLError, OSError, ValueError, http.client.HTTPException) as e:
            partial.unlink(missing_ok=True)
            if attempt < attempts and is_transient(e):
                delay = RETRY_DELAYS[attempt - 1]
                logger.warning(
                    f"download of {url} failed ({_reason(e)}); retrying in {delay:g} s "
                    f"(attempt {attempt + 1} of {attempts})"
                )
                time.sleep(delay)
                continue
            tries = f" after {attempt} attempts" if attempt > 1 else ""
            raise DatasetError(f"could not download {url}{tries}: {_reason(e)}; {hint}") from None
    if sha256 is not None and (actual := sha256_of(partial)) != sha256:
        partial.unlink(missing_ok=True)
        raise DatasetError(
            f"download of {url} is corrupt (sha256 {actual}, expected {sha256}); try again"
        )
    os.replace(partial, target)
    return target


def _fetch(url: str, partial: Path, filename: str, timeout: float) -> None:
    with urllib.request.urlopen(url, timeout=timeout) as response:
        total = response.headers.get("Content-Length")
        with (
            open(partial, "wb") as out,
            progress(f"download {filename}", float(total) if total else None, "bytes") as bar,
        ):
            while chunk := response.read(CHUNK):
                out.write(chunk)
                bar.advance(len(chunk))
