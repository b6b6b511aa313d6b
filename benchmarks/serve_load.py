"""Load on `nanogpt serve`: N concurrent streaming clients against the same N requests served
one at a time, for N in 1, 4 and 16 (--clients).

Each client sends one streaming `POST /v1/completions` of --tokens tokens (temperature 1, no
stop, so every request generates all of them) and notes when it sent it, when each text chunk
arrived and when the stream ended. Per N, two rounds on the same server: all N requests at
once (continuous batching decodes them together), then the same N requests one after the
other. Prints, per N: total tokens/s of both rounds and their ratio, time to first token and
per-token latency (the gaps between a client's chunks), p50 and p95, of the concurrent round.

The server runs on loopback as a separate process, started here with --checkpoint (or a tiny
model trained here first when none is given), or is the one at --url. Clients share the
machine with the server: on a small CPU the numbers include their cost.

Usage:
  python benchmarks/serve_load.py [--checkpoint DIR | --url URL] [--clients 1,4,16]
      [--tokens 64] [--max-batch 16] [--json FILE] [--dry-run]
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import os
import platform
import re
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

PROMPT = "ROMEO:"
# The tiny model trained when no checkpoint is given (the test suite's, with a longer block).
TINY_MODEL = {"n_layer": 2, "n_head": 2, "n_embd": 32, "block_size": 128}


@dataclass
class ClientTiming:
    """One streamed request, in seconds on one clock: sent, each text chunk, the end."""

    sent: float
    chunks: list[float] = field(default_factory=list)
    ended: float = 0.0
    tokens: int = 0  # completion tokens, from the usage chunk


@dataclass(frozen=True)
class RoundSummary:
    clients: int
    tokens: int
    seconds: float
    tokens_per_s: float
    ttft_p50_ms: float
    ttft_p95_ms: float
    token_p50_ms: float
    token_p95_ms: float


def percentile(values: Sequence[float], q: float) -> float:
    """The ``q`` quantile (0..1) of ``values``, linear between the nearest ranks; 0 if none."""
    if not values:
        return 0.0
    ordered = sorted(values)
    rank = q * (len(ordered) - 1)
    low = int(rank)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


def summarize(timings: Sequence[ClientTiming]) -> RoundSummary:
    """A round's numbers: tokens over the wall time from the first request sent to the last
    stream ended; time to first token per client; per-token latency as the gaps between
    successive chunks of each client, pooled."""
    start = min(t.sent for t in timings)
    end = max(t.ended for t in timings)
    tokens = sum(t.tokens for t in timings)
    seconds = end - start
    ttft = [t.chunks[0] - t.sent for t in timings if t.chunks]
    gaps = [b - a for t in timings for a, b in itertools.pairwise(t.chunks)]
    return RoundSummary(
        clients=len(timings),
        tokens=tokens,
        seconds=seconds,
        tokens_per_s=tokens / seconds if seconds > 0 else 0.0,
        ttft_p50_ms=1000 * percentile(ttft, 0.5),
        ttft_p95_ms=1000 * percentile(ttft, 0.95),
        token_p50_ms=1000 * percentile(gaps, 0.5),
        token_p95_ms=1000 * percentile(gaps, 0.95),
    )


def table(rows: Sequence[tuple[RoundSummary, RoundSummary]]) -> str:
    """The printed table: per client count, the concurrent round against the sequential."""
    lines = [
        "| clients | concurrent tokens/s | one at a time tokens/s | ratio "
        "| TTFT p50 / p95 (ms) | per-token p50 / p95 (ms) |",
        "|---:|---:|---:|---:|---:|---:|",
    ]
    for both, one in rows:
        ratio = both.tokens_per_s / one.tokens_per_s if one.tokens_per_s else 0.0
        lines.append(
            f"| {both.clients} | {both.tokens_per_s:,.0f} | {one.tokens_per_s:,.0f} "
            f"| {ratio:.2f}x | {both.ttft_p50_ms:.1f} / {both.ttft_p95_ms:.1f} "
            f"| {both.token_p50_ms:.1f} / {both.token_p95_ms:.1f} |"
        )
    return "\n".join(lines)


# -- the clients ------------------------------------------------------------------------------


async def one_request(client: object, url: str, tokens: int, key: str | None) -> ClientTiming:
    """One streaming completion, timed."""
    body = {
        "model": "bench",
        "prompt": PROMPT,
        "max_tokens": tokens,
        "temperature": 1.0,
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    timing = ClientTiming(sent=time.perf_counter())
    async with client.stream(  # type: ignore[attr-defined]
        "POST", f"{url}/v1/completions", json=body, headers=headers
    ) as response:
        response.raise_for_status()
        async for line in response.aiter_lines():
            if not line.startswith("data: ") or line == "data: [DONE]":
                continue
            chunk = json.loads(line[len("data: ") :])
            if chunk.get("usage"):
                timing.tokens = chunk["usage"]["completion_tokens"]
            if any(c["text"] for c in chunk["choices"]):
                timing.chunks.append(time.perf_counter())
    timing.ended = time.perf_counter()
    if timing.tokens != tokens:
        raise RuntimeError(f"a request got {timing.tokens} tokens, not {tokens}")
    return timing


async def run_round(
    url: str, clients: int, tokens: int, concurrent: bool, key: str | None
) -> list[ClientTiming]:
    import httpx

    limits = httpx.Limits(max_connections=clients + 4)
    async with httpx.AsyncClient(timeout=600, limits=limits) as client:
        if concurrent:
            jobs = [one_request(client, url, tokens, key) for _ in range(clients)]
            return list(await asyncio.gather(*jobs))
        return [await one_request(client, url, tokens, key) for _ in range(clients)]


# -- the server -------------------------------------------------------------------------------


def tiny_checkpoint(folder: Path, iters: int) -> Path:
    """Train the tiny model on generated Shakespeare-shaped text into ``folder``/out."""
    sys.path.insert(0, str(HERE.parent / "tests"))
    from conftest import TINY, make_text  # the test suite's corpus and tiny options

    from nanogpt_cli.config import build_config
    from nanogpt_cli.data.prepare import prepare_shakespeare_char
    from nanogpt_cli.log import configure_logging
    from nanogpt_cli.train import train

    configure_logging(level="WARNING")
    corpus = folder / "corpus.txt"
    corpus.write_text(make_text())
    prepare_shakespeare_char(source=str(corpus), data_dir=folder / "data")
    options = {
        **TINY,
        **TINY_MODEL,
        "max_iters": iters,
        "lr_decay_iters": iters,
        "eval_interval": iters,
        "data_dir": str(folder / "data"),
        "out_dir": str(folder / "out"),
    }
    train(build_config("shakespeare-char", overrides=options))
    return folder / "out"


def start_server(checkpoint: Path, max_batch: int, log: Path) -> tuple[subprocess.Popen, str]:
    """``nanogpt serve`` on a free loopback port; returns the process and its URL."""
    cmd = [sys.executable, "-m", "nanogpt_cli", "serve", "--checkpoint", str(checkpoint)]
    cmd += ["--port", "0", "--device", "cpu", "--max-batch", str(max_batch)]
    with log.open("w") as err:
        process = subprocess.Popen(
            cmd, stdout=subprocess.DEVNULL, stderr=err, env={**os.environ, "NO_COLOR": "1"}
        )
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        found = re.search(r"http://[\d.]+:\d+", log.read_text())
        if found:
            return process, found.group(0)
        if process.poll() is not None:
            raise RuntimeError(f"nanogpt serve stopped: {log.read_text()}")
        time.sleep(0.1)
    process.kill()
    raise RuntimeError("nanogpt serve did not start within 120 s")


def wait_healthy(url: str) -> None:
    import httpx

    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{url}/health", timeout=5).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    raise RuntimeError(f"{url}/health did not answer within 60 s")


def processor() -> str:
    """The CPU's model name (/proc/cpuinfo on Linux), else what ``platform`` knows."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument(
        "--checkpoint", type=Path, help="checkpoint to serve (default: train a tiny one)"
    )
    ap.add_argument("--url", help="a running server instead (http://host:port)")
    ap.add_argument("--api-key", default=os.environ.get("NANOGPT_API_KEY"))
    ap.add_argument("--clients", default="1,4,16", help="client counts, comma-separated")
    ap.add_argument("--tokens", type=int, default=64, help="tokens per request")
    ap.add_argument("--max-batch", type=int, default=16, help="the server's --max-batch")
    ap.add_argument("--json", type=Path, help="write the results here too")
    ap.add_argument("--dry-run", action="store_true", help="tiny: 1 and 2 clients, 8 tokens")
    args = ap.parse_args()
    counts = [int(c) for c in args.clients.split(",")]
    if args.dry_run:
        counts, args.tokens = [1, 2], 8

    process = None
    with tempfile.TemporaryDirectory(prefix="serve-load-") as tmp:
        url = args.url
        if url is None:
            checkpoint = args.checkpoint or tiny_checkpoint(Path(tmp), 10 if args.dry_run else 40)
            process, url = start_server(checkpoint, args.max_batch, Path(tmp) / "serve.log")
        try:
            wait_healthy(url)
            asyncio.run(run_round(url, 2, args.tokens, True, args.api_key))  # warm-up
            rows = []
            for n in counts:
                both = summarize(asyncio.run(run_round(url, n, args.tokens, True, args.api_key)))
                one = summarize(asyncio.run(run_round(url, n, args.tokens, False, args.api_key)))
                rows.append((both, one))
        finally:
            if process is not None:
                process.terminate()
                process.wait(timeout=30)

    print(
        f"\nnanogpt serve under load{' (dry run)' if args.dry_run else ''}: {args.tokens} "
        f"tokens per request, streamed; {processor()}, {os.cpu_count()} CPUs\n"
    )
    print(table(rows))
    if args.json:
        results = [{"concurrent": asdict(a), "sequential": asdict(b)} for a, b in rows]
        args.json.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
