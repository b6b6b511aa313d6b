from __future__ import annotations

import functools
import http.server
import io
import json
import re
import socket
import threading
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import GPT2_BPE_CACHE_NAMES, TINYSHAKESPEARE, make_text

from nanogpt_cli.data import download as download_mod
from nanogpt_cli.data.dataset import open_dataset
from nanogpt_cli.data.first_use import open_or_prepare
from nanogpt_cli.data.loader import BatchLoader, fixed_windows
from nanogpt_cli.data.prepare import TINYSHAKESPEARE_URL, prepare_shakespeare_char
from nanogpt_cli.data.tokenizer import CharTokenizer, TiktokenTokenizer, tokenizer_from_dict
from nanogpt_cli.errors import DatasetError


def test_prepare_writes_nanogpt_layout(tmp_path: Path, corpus: Path) -> None:
    text = corpus.read_text()
    result = prepare_shakespeare_char(source=str(corpus), data_dir=tmp_path)
    out = tmp_path / "shakespeare-char"
    assert result.path == out and not result.skipped
    n = len(text)
    assert result.train_tokens == int(n * 0.9) and result.val_tokens == n - int(n * 0.9)
    train = np.fromfile(out / "train.bin", dtype=np.uint16)
    val = np.fromfile(out / "val.bin", dtype=np.uint16)
    meta = json.loads((out / "meta.json").read_text())
    tok = tokenizer_from_dict(meta["tokenizer"])
    assert meta["vocab_size"] == tok.vocab_size == len(set(text))
    assert tok.decode(train.tolist()) + tok.decode(val.tolist()) == text
    assert meta["splits"]["train"]["tokens"] == len(train)
    assert meta["source"]["inputs"] == [str(corpus.resolve())]
    assert meta["splits"]["val"]["bytes"] == len(text[int(n * 0.9) :].encode())


def test_prepare_again_is_a_no_op_unless_forced(tmp_path: Path, corpus: Path) -> None:
    prepare_shakespeare_char(source=str(corpus), data_dir=tmp_path)
    train = tmp_path / "shakespeare-char" / "train.bin"
    before = train.stat().st_mtime_ns
    assert prepare_shakespeare_char(source=str(corpus), data_dir=tmp_path).skipped
    assert train.stat().st_mtime_ns == before
    assert not prepare_shakespeare_char(source=str(corpus), data_dir=tmp_path, force=True).skipped
    corpus.write_text(make_text(seed=1))  # another source rebuilds
    assert not prepare_shakespeare_char(source=str(corpus), data_dir=tmp_path).skipped


def test_data_dir_from_environment(
    tmp_path: Path, corpus: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("NANOGPT_DATA_DIR", str(tmp_path / "env"))
    result = prepare_shakespeare_char(source=str(corpus))
    assert result.path == tmp_path / "env" / "shakespeare-char"
    assert open_dataset("shakespeare-char").vocab_size == result.vocab_size


def test_invalid_utf8_names_file_and_offset(tmp_path: Path) -> None:
    bad = tmp_path / "bad.txt"
    bad.write_bytes(b"hello world\n\xff\xfe more")
    with pytest.raises(DatasetError, match=r"bad\.txt is not valid UTF-8 at byte offset 12"):
        prepare_shakespeare_char(source=str(bad), data_dir=tmp_path)


def test_empty_or_missing_source(tmp_path: Path) -> None:
    empty = tmp_path / "empty.txt"
    empty.write_text("")
    with pytest.raises(DatasetError, match="is empty"):
        prepare_shakespeare_char(source=str(empty), data_dir=tmp_path)
    with pytest.raises(DatasetError, match="does not exist"):
        prepare_shakespeare_char(source=str(tmp_path / "nope.txt"), data_dir=tmp_path)


@pytest.mark.skipif(not TINYSHAKESPEARE.exists(), reason=f"{TINYSHAKESPEARE} not present")
def test_tinyshakespeare_counts_match_nanogpt(tmp_path: Path) -> None:
    result = prepare_shakespeare_char(source=str(TINYSHAKESPEARE), data_dir=tmp_path)
    assert (result.train_tokens, result.val_tokens, result.vocab_size) == (1003854, 111540, 65)


@pytest.fixture
def http_root(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    """A local HTTP server, so the real download code runs without the internet."""
    root = tmp_path / "www"
    root.mkdir()
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(root))
    handler.log_message = lambda *a, **k: None  # type: ignore[attr-defined]
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}", root
    server.shutdown()


def test_prepare_downloads_a_url_into_the_cache(
    tmp_path: Path, http_root: tuple[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    url, root = http_root
    (root / "input.txt").write_text(make_text())
    monkeypatch.setenv("NANOGPT_CACHE_DIR", str(tmp_path / "cache"))
    result = prepare_shakespeare_char(source=f"{url}/input.txt", data_dir=tmp_path)
    assert result.train_tokens > 0
    cached = list((tmp_path / "cache" / "downloads").glob("tinyshakespeare-*.txt"))
    assert len(cached) == 1 and cached[0].read_text() == make_text()


def test_default_download_checks_sha256(
    tmp_path: Path, http_root: tuple[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    url, root = http_root
    (root / "input.txt").write_text("not shakespeare")
    monkeypatch.setenv("NANOGPT_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setattr("nanogpt_cli.data.prepare.TINYSHAKESPEARE_URL", f"{url}/input.txt")
    with pytest.raises(DatasetError, match="corrupt"):
        prepare_shakespeare_char(data_dir=tmp_path)
    assert not list((tmp_path / "cache" / "downloads").iterdir())


def test_download_failure_says_how_to_work_offline(
    tmp_path: Path, http_root: tuple[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    url, _ = http_root
    monkeypatch.setenv("NANOGPT_CACHE_DIR", str(tmp_path / "cache"))
    with pytest.raises(DatasetError, match="--source PATH"):
        download_mod.download(f"{url}/missing.txt", "x.txt")


def test_missing_dataset_names_the_prepare_command(tmp_path: Path) -> None:
    with pytest.raises(DatasetError) as err:
        open_dataset("shakespeare-char", tmp_path)
    assert f"run `nanogpt prepare shakespeare-char --data-dir {tmp_path}`" in str(err.value)


def test_odd_sized_bin_is_rejected(data_dir: Path) -> None:
    with open(data_dir / "shakespeare-char" / "val.bin", "ab") as f:
        f.write(b"\x00")
    with pytest.raises(DatasetError, match="not a whole number of uint16 tokens"):
        open_dataset("shakespeare-char", data_dir)


def test_loader_windows_are_shifted_by_one(data_dir: Path) -> None:
    path = data_dir / "shakespeare-char" / "train.bin"
    tokens = np.fromfile(path, dtype=np.uint16).astype(np.int64)
    loader = BatchLoader(path, block_size=16, batch_size=4, device=torch.device("cpu"), seed=0)
    x, y = loader.next()
    assert x.shape == y.shape == (4, 16) and x.dtype == torch.int64
    assert torch.equal(x[:, 1:], y[:, :-1])
    windows = np.lib.stride_tricks.sliding_window_view(tokens, 17)
    for xr, yr in zip(x, y, strict=True):  # each (x, y) is a real window of the file
        row = np.concatenate([xr.numpy(), yr.numpy()[-1:]])
        assert np.all(windows == row, axis=1).any()


def test_loader_state_replays_batches(data_dir: Path) -> None:
    path = data_dir / "shakespeare-char" / "train.bin"
    loader = BatchLoader(path, 16, 4, torch.device("cpu"), seed=3)
    loader.next()
    state = loader.state()
    expected = [loader.next() for _ in range(3)]
    other = BatchLoader(path, 16, 4, torch.device("cpu"), seed=99)
    other.load_state(json.loads(json.dumps(state)))  # survives a JSON round trip
    for (x, y), (ex, ey) in zip([other.next() for _ in range(3)], expected, strict=True):
        assert torch.equal(x, ex) and torch.equal(y, ey)


def test_loader_rejects_block_larger_than_data(data_dir: Path) -> None:
    path = data_dir / "shakespeare-char" / "val.bin"
    n = path.stat().st_size // 2
    with pytest.raises(DatasetError, match="use a smaller --block-size"):
        BatchLoader(path, block_size=n, batch_size=2, device=torch.device("cpu"), seed=0)
    with pytest.raises(DatasetError, match="use a smaller --block-size"):
        fixed_windows(path, n, 4, 0, torch.device("cpu"))


def test_char_tokenizer_round_trip_and_unknown_char() -> None:
    tok = CharTokenizer.from_text("hello world")
    assert tok.decode(tok.encode("hello")) == "hello"
    assert tokenizer_from_dict(tok.to_dict()).itos == tok.itos
    with pytest.raises(DatasetError, match="not in this model's vocabulary"):
        tok.encode("xyz")


# -- first use: built-in datasets prepared when opened, downloads retried ----------------


class FakeResponse(io.BytesIO):
    """What urlopen returns: a readable body with headers, usable as a context manager."""

    def __init__(self, body: bytes) -> None:
        super().__init__(body)
        self.headers = {"Content-Length": str(len(body))}


def fake_urlopen(monkeypatch: pytest.MonkeyPatch, *outcomes: BaseException | bytes) -> list[str]:
    """Make urlopen raise or return each of ``outcomes`` in turn; the URLs asked for."""
    asked: list[str] = []
    pending = list(outcomes)

    def urlopen(url: str, timeout: float | None = None) -> FakeResponse:
        asked.append(url)
        outcome = pending.pop(0)
        if isinstance(outcome, BaseException):
            raise outcome
        return FakeResponse(outcome)

    monkeypatch.setattr(urllib.request, "urlopen", urlopen)
    monkeypatch.setattr(download_mod, "RETRY_DELAYS", (0.0, 0.0))
    return asked


def http_error(code: int) -> urllib.error.HTTPError:
    return urllib.error.HTTPError("http://x", code, "oops", {}, None)  # type: ignore[arg-type]


def test_first_use_prepares_a_builtin_dataset_from_the_url_variable(
    tmp_path: Path, corpus: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    monkeypatch.setenv("NANOGPT_SHAKESPEARE_URL", corpus.as_uri())
    monkeypatch.setenv("NANOGPT_CACHE_DIR", str(tmp_path / "cache"))
    data = tmp_path / "data"
    dataset = open_or_prepare("shakespeare-char", data)
    err = capsys.readouterr().err
    assert dataset.path == data / "shakespeare-char" and dataset.vocab_size == len(
        set(corpus.read_text())
    )
    assert err.count("preparing it first") == 1 and "set by --data-dir" in err
    assert f"sha256 {download_mod.sha256_of(corpus)}" in err  # logged, not checked
    assert not (tmp_path / "cache").exists()  # a file:// URL is read where it is
    open_or_prepare("shakespeare-char", data)  # prepared now: nothing to do
    assert "preparing" not in capsys.readouterr().err
    with pytest.raises(DatasetError, match="is not prepared"):  # only built-in datasets
        open_or_prepare("novels", data)


def test_the_main_process_prepares_while_the_others_wait(
    tmp_path: Path, corpus: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("NANOGPT_SHAKESPEARE_URL", corpus.as_uri())
    events: list[str] = []

    class Group:
        def __init__(self, main: bool) -> None:
            self.main = main

        def barrier(self) -> None:
            events.append(f"barrier main={self.main}")

    data = tmp_path / "data"
    with pytest.raises(DatasetError, match="is not prepared"):  # a non-main process: no prepare
        open_or_prepare("shakespeare-char", data, Group(main=False))
    assert events == ["barrier main=False"]
    assert open_or_prepare("shakespeare-char", data, Group(main=True)).vocab_size > 0
    assert events[1:] == ["barrier main=True"]
    monkeypatch.setenv("NANOGPT_SHAKESPEARE_URL", (tmp_path / "gone.txt").as_uri())
    with pytest.raises(DatasetError, match="NANOGPT_SHAKESPEARE_URL"):  # after the barrier
        open_or_prepare("shakespeare", tmp_path / "other", Group(main=True))
    assert events[2:] == ["barrier main=True"]
    with pytest.raises(DatasetError, match="is not prepared"):  # not built in: no barrier
        open_or_prepare("novels", data, Group(main=True))
    assert len(events) == 3


@pytest.mark.parametrize("how", ["no network", "missing file:// copy"])
def test_offline_first_use_is_one_line_naming_source_and_url_variable(
    how: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("NANOGPT_CACHE_DIR", str(tmp_path / "cache"))
    if how == "no network":
        monkeypatch.delenv("NANOGPT_SHAKESPEARE_URL", raising=False)
        offline = urllib.error.URLError(socket.gaierror(-3, "Temporary failure in name resolution"))
        asked = fake_urlopen(monkeypatch, offline)
    else:
        monkeypatch.setenv("NANOGPT_SHAKESPEARE_URL", (tmp_path / "nope.txt").as_uri())
    with pytest.raises(DatasetError) as err:
        open_or_prepare("shakespeare-char", tmp_path / "data")
    message = str(err.value)
    assert "\n" not in message
    assert "--source PATH" in message and "NANOGPT_SHAKESPEARE_URL" in message
    assert f"--data-dir {tmp_path / 'data'}" in message
    if how == "no network":
        assert asked == [TINYSHAKESPEARE_URL]  # no retry: not a transient error


def test_shakespeare_url_variable_must_be_a_url(
    tmp_path: Path, corpus: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("NANOGPT_SHAKESPEARE_URL", str(corpus))
    with pytest.raises(DatasetError, match=r"is not a URL.*file:///"):
        prepare_shakespeare_char(data_dir=tmp_path)


def test_download_retries_transient_errors_then_succeeds(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    monkeypatch.setenv("NANOGPT_CACHE_DIR", str(tmp_path / "cache"))
    reset = urllib.error.URLError(ConnectionResetError(104, "Connection reset by peer"))
    asked = fake_urlopen(monkeypatch, reset, http_error(503), b"hello")
    path = download_mod.download("https://example.com/a.txt", "a.txt")
    assert path.read_bytes() == b"hello" and len(asked) == 3
    err = capsys.readouterr().err
    assert "attempt 2 of 3" in err and "HTTP 503" in err
    asked = fake_urlopen(monkeypatch, TimeoutError("timed out"), http_error(429), http_error(502))
    with pytest.raises(DatasetError, match=r"after 3 attempts: HTTP 502 oops; download it"):
        download_mod.download("https://example.com/b.txt", "b.txt")
    assert len(asked) == 3 and not list((tmp_path / "cache" / "downloads").glob("b.txt*"))


def test_download_does_not_retry_a_missing_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("NANOGPT_CACHE_DIR", str(tmp_path / "cache"))
    asked = fake_urlopen(monkeypatch, http_error(404), b"never")
    with pytest.raises(DatasetError, match=r"could not download \S+: HTTP 404 oops;"):
        download_mod.download("https://example.com/a.txt", "a.txt")
    assert len(asked) == 1


def test_not_prepared_names_the_data_directory_and_how_it_was_chosen(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with pytest.raises(DatasetError, match=re.escape(f"data directory {tmp_path}, set by --")):
        open_dataset("novels", tmp_path)
    monkeypatch.setenv("NANOGPT_DATA_DIR", str(tmp_path / "env"))
    with pytest.raises(DatasetError, match=r"data directory \S+env, set by \$NANOGPT_DATA_DIR"):
        open_dataset("novels")
    monkeypatch.delenv("NANOGPT_DATA_DIR")
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "xdg"))
    with pytest.raises(DatasetError) as err:
        open_dataset("novels")
    assert "the default; choose another with --data-dir or $NANOGPT_DATA_DIR" in str(err.value)
    with pytest.raises(DatasetError) as err:  # a folder as --dataset: no data directory
        open_dataset(str(tmp_path / "folder"))
    assert "data directory" not in str(err.value)


def test_offline_tiktoken_error_names_the_cache_files(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import tiktoken

    def offline(name: str) -> None:
        raise ConnectionError("Max retries exceeded with url: /gpt-2/encodings/main/vocab.bpe")

    monkeypatch.setattr(tiktoken, "get_encoding", offline)
    monkeypatch.setenv("TIKTOKEN_CACHE_DIR", str(tmp_path / "tk"))
    with pytest.raises(DatasetError) as err:
        TiktokenTokenizer("gpt2")
    message = str(err.value)
    assert "\n" not in message and f"into {tmp_path / 'tk'}" in message
    for name, cached in GPT2_BPE_CACHE_NAMES.items():
        assert f"{name} as {cached}" in message


def test_a_file_url_with_a_host_is_refused() -> None:
    from nanogpt_cli.data.download import download
    from nanogpt_cli.errors import DatasetError

    with pytest.raises(DatasetError, match="three slashes"):
        download("file://data/input.txt", "x.txt")
