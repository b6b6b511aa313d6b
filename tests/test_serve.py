"""`nanogpt serve` as a user runs it: a real server process on a free loopback port with a
tiny model, called with the official `openai` client and, for the refusals, raw HTTP."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
from conftest import TINY, make_text

from nanogpt_cli.cli.app import main

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

import serve_load  # noqa: E402

KEY = "test-key"
BLOCK = 96  # room for a prompt and 64 new tokens
MAX_TOKENS_CAP = 80
MAX_N = 4
AUTH = {"Authorization": f"Bearer {KEY}"}


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny model of the test suite, with a longer block, trained for a few steps."""
    from nanogpt_cli.config import build_config
    from nanogpt_cli.data.prepare import prepare_shakespeare_char
    from nanogpt_cli.train import train

    root = tmp_path_factory.mktemp("serve")
    (root / "corpus.txt").write_text(make_text())
    prepare_shakespeare_char(source=str(root / "corpus.txt"), data_dir=root / "data")
    out = root / "tiny-shakespeare"
    options = {
        **TINY,
        **{"block_size": BLOCK, "batch_size": 4, "max_iters": 20, "lr_decay_iters": 20},
        **{"eval_interval": 20, "eval_iters": 2},
    }
    train(
        build_config(
            "shakespeare-char",
            overrides={**options, "data_dir": str(root / "data"), "out_dir": str(out)},
        )
    )
    return out


@pytest.fixture(scope="module")
def server(checkpoint: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """`nanogpt serve` in a process of its own on a free port; yields its URL."""
    log = tmp_path_factory.mktemp("serve-log") / "stderr.txt"
    cmd = [sys.executable, "-m", "nanogpt_cli", "serve", "--checkpoint", str(checkpoint)]
    cmd += ["--port", "0", "--device", "cpu", "--max-batch", "16", "--max-n", str(MAX_N)]
    cmd += ["--max-tokens-cap", str(MAX_TOKENS_CAP)]
    env = {**os.environ, "NO_COLOR": "1", "NANOGPT_API_KEY": KEY}
    with log.open("w") as err:
        process = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=err, env=env)
    try:
        url = _wait_for_url(process, log)
        deadline = time.monotonic() + 120
        while httpx.get(f"{url}/health", timeout=30).status_code != 200:
            assert time.monotonic() < deadline, "no answer from /health"
            time.sleep(0.1)
        yield url
    finally:
        process.terminate()
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
    assert process.returncode == 0 or process.returncode < 0, log.read_text()


def _wait_for_url(process: subprocess.Popen[bytes], log: Path) -> str:
    deadline = time.monotonic() + 180  # a loaded machine imports torch slowly
    while time.monotonic() < deadline:
        found = re.search(r"serving \S+ at (http://127\.0\.0\.1:\d+)/v1", log.read_text())
        if found:
            return found.group(1)
        assert process.poll() is None, f"nanogpt serve stopped: {log.read_text()}"
        time.sleep(0.1)
    raise AssertionError(f"nanogpt serve printed no URL: {log.read_text()}")


@pytest.fixture(scope="module")
def client(server: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{server}/v1", api_key=KEY, max_retries=0, timeout=120)


def healthy(url: str) -> dict[str, Any]:
    response = httpx.get(f"{url}/health", timeout=30)
    assert response.status_code == 200
    body = response.json()
    assert body["status"] == "ok"
    return body


# -- the API, with the official client ------------------------------------------------------------


def test_completion_and_models_with_the_openai_client(client: openai.OpenAI) -> None:
    [model] = client.models.list().data
    assert model.id == "tiny-shakespeare"
    done = client.completions.create(
        model=model.id, prompt="ROMEO:", max_tokens=20, temperature=0, user="someone"
    )
    assert done.object == "text_completion" and done.model == "tiny-shakespeare"
    [choice] = done.choices
    assert len(choice.text) == 20  # one character per token
    assert choice.finish_reason == "length" and choice.index == 0 and choice.logprobs is None
    assert done.usage is not None
    assert (done.usage.prompt_tokens, done.usage.completion_tokens) == (6, 20)
    assert done.usage.total_tokens == 26


def test_greedy_through_the_server_equals_nanogpt_sample(
    client: openai.OpenAI, checkpoint: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    done = client.completions.create(model="x", prompt="JULIET:", max_tokens=40, temperature=0)
    with pytest.raises(SystemExit) as exit_info:
        main(
            [
                *("sample", "--checkpoint", str(checkpoint), "--start", "JULIET:"),
                *("--temperature", "0", "--max-new-tokens", "40", "--device", "cpu"),
            ]
        )
    assert exit_info.value.code in (0, None)
    printed = capsys.readouterr().out
    assert printed == "JULIET:" + done.choices[0].text + "\n"


def test_streaming_gives_the_same_text_in_chunks_then_usage(client: openai.OpenAI) -> None:
    whole = client.completions.create(model="x", prompt="ROMEO:", max_tokens=30, temperature=0)
    chunks = list(
        client.completions.create(
            model="x",
            prompt="ROMEO:",
            max_tokens=30,
            temperature=0,
            stream=True,
            stream_options={"include_usage": True},
        )
    )
    texts = [c.choices[0].text for c in chunks if c.choices]
    assert len(texts) > 10  # streamed as generated, not at the end
    assert "".join(texts) == whole.choices[0].text
    reasons = [c.choices[0].finish_reason for c in chunks if c.choices]
    assert reasons[-1] == "length" and set(reasons[:-1]) == {None}
    assert not chunks[-1].choices and chunks[-1].usage is not None
    assert chunks[-1].usage.completion_tokens == 30


def test_prompts_n_seed_and_stop(client: openai.OpenAI) -> None:
    request: dict[str, Any] = dict(
        model="x", prompt=["ROMEO:", "JULIET:"], n=2, max_tokens=12, temperature=1.0, seed=5
    )
    first = client.completions.create(**request)
    assert [c.index for c in first.choices] == [0, 1, 2, 3]
    assert all(len(c.text) == 12 for c in first.choices)
    assert len({c.text for c in first.choices}) > 1
    assert first.usage is not None and first.usage.prompt_tokens == 6 + 7
    again = client.completions.create(**request)
    assert [c.text for c in again.choices] == [c.text for c in first.choices]

    full = client.completions.create(model="x", prompt="ROMEO:", max_tokens=40, temperature=0)
    text = full.choices[0].text
    stop = text[10:12]
    cut = client.completions.create(
        model="x", prompt="ROMEO:", max_tokens=40, temperature=0, stop=[stop, "@@"]
    )
    assert cut.choices[0].text == text[: text.index(stop)]
    assert cut.choices[0].finish_reason == "stop"
    # the extensions, as the client sends them: top_k 1 keeps the argmax only
    one = client.completions.create(
        model="x", prompt="ROMEO:", max_tokens=40, temperature=1.5, extra_body={"top_k": 1}
    )
    assert one.choices[0].text == text


def test_a_long_prompt_keeps_its_last_tokens(client: openai.OpenAI) -> None:
    """The documented rule: the last block_size - max_tokens prompt tokens are kept."""
    prompt = make_text(20)[:300]
    kept = prompt[-(BLOCK - 20) :]
    long = client.completions.create(model="x", prompt=prompt, max_tokens=20, temperature=0)
    short = client.completions.create(model="x", prompt=kept, max_tokens=20, temperature=0)
    assert long.usage is not None and long.usage.prompt_tokens == BLOCK - 20
    assert long.choices[0].text == short.choices[0].text
    assert len(long.choices[0].text) == 20


def test_sixteen_concurrent_streaming_clients_all_complete(server: str) -> None:
    """16 clients x 64 tokens each, streamed at the same time: every one gets its 64."""
    results: dict[int, tuple[str, int | None, str | None]] = {}
    errors: list[BaseException] = []

    def one(i: int) -> None:
        try:
            own = openai.OpenAI(base_url=f"{server}/v1", api_key=KEY, max_retries=0, timeout=300)
            text, usage, reason = "", None, None
            for chunk in own.completions.create(
                model="x",
                prompt="ROMEO:",
                max_tokens=64,
                temperature=1.0,
                seed=i,
                stream=True,
                stream_options={"include_usage": True},
            ):
                if chunk.choices:
                    text += chunk.choices[0].text
                    reason = chunk.choices[0].finish_reason or reason
                if chunk.usage is not None:
                    usage = chunk.usage.completion_tokens
            results[i] = (text, usage, reason)
        except BaseException as e:  # reported by the main thread
            errors.append(e)

    threads = [threading.Thread(target=one, args=(i,)) for i in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=600)
    assert not errors, errors
    assert sorted(results) == list(range(16))
    for text, usage, reason in results.values():
        assert (len(text), usage, reason) == (64, 64, "length")
    assert healthy(server)["running"] == 0


# -- refusals, over raw HTTP --------------------------------------------------------------------

GOOD = {"model": "x", "prompt": "ROMEO:", "max_tokens": 4}

BAD_REQUESTS: list[tuple[str, Any, str | None]] = [
    ("malformed JSON", b'{"prompt": "ROMEO:", ', None),
    ("not an object", b'["ROMEO:"]', None),
    ("JSON nested past any sense", b"[" * 100_000 + b"]" * 100_000, None),
    ("no prompt", {"model": "x"}, "prompt"),
    ("prompt of the wrong type", {**GOOD, "prompt": 12.5}, "prompt"),
    ("empty prompt", {**GOOD, "prompt": ""}, "prompt"),
    ("character outside the vocabulary", {**GOOD, "prompt": "ROMEO: €"}, "prompt"),
    ("token id outside the vocabulary", {**GOOD, "prompt": [1, 2, 10**6]}, "prompt"),
    ("max_tokens of the wrong type", {**GOOD, "max_tokens": "ten"}, "max_tokens"),
    ("max_tokens 0", {**GOOD, "max_tokens": 0}, "max_tokens"),
    ("max_tokens over the cap", {**GOOD, "max_tokens": MAX_TOKENS_CAP + 1}, "max_tokens"),
    ("n over the cap", {**GOOD, "n": MAX_N + 1}, "n"),
    ("prompts x n over the cap", {**GOOD, "prompt": ["a", "b", "c"], "n": 2}, "n"),
    ("negative temperature", {**GOOD, "temperature": -1}, "temperature"),
    ("temperature as text", {**GOOD, "temperature": "hot"}, "temperature"),
    ("top_p 0", {**GOOD, "top_p": 0}, "top_p"),
    ("top_k a fraction", {**GOOD, "top_k": 2.5}, "top_k"),
    ("stop of the wrong type", {**GOOD, "stop": 5}, "stop"),
    ("stream not a boolean", {**GOOD, "stream": "yes"}, "stream"),
    ("negative seed", {**GOOD, "seed": -1}, "seed"),
    ("logprobs", {**GOOD, "logprobs": 2}, "logprobs"),
    ("echo", {**GOOD, "echo": True}, "echo"),
    ("best_of above n", {**GOOD, "best_of": 3}, "best_of"),
    ("suffix", {**GOOD, "suffix": "THE END"}, "suffix"),
    ("presence_penalty", {**GOOD, "presence_penalty": 0.5}, "presence_penalty"),
]


@pytest.mark.parametrize(("what", "body", "param"), BAD_REQUESTS, ids=[b[0] for b in BAD_REQUESTS])
def test_a_bad_request_gets_a_400_and_the_server_goes_on(
    server: str, what: str, body: Any, param: str | None
) -> None:
    url = f"{server}/v1/completions"
    if isinstance(body, bytes):
        response = httpx.post(url, content=body, headers=AUTH, timeout=30)
    else:
        response = httpx.post(url, json=body, headers=AUTH, timeout=30)
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert error["type"] == "invalid_request_error" and error["param"] == param
    assert error["message"]
    healthy(server)
    assert httpx.post(url, json=GOOD, headers=AUTH, timeout=30).status_code == 200


def test_unknown_fields_are_ignored(server: str) -> None:
    body = {**GOOD, "user": "me", "metadata": {"a": 1}, "not_a_field": [1, 2]}
    response = httpx.post(f"{server}/v1/completions", json=body, headers=AUTH, timeout=30)
    assert response.status_code == 200 and len(response.json()["choices"][0]["text"]) == 4


def test_the_api_key_is_required_but_not_for_health(server: str) -> None:
    for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": KEY}):
        response = httpx.post(f"{server}/v1/completions", json=GOOD, headers=headers, timeout=30)
        assert response.status_code == 401
        assert response.json()["error"]["code"] == "invalid_api_key"
        assert httpx.get(f"{server}/v1/models", headers=headers, timeout=30).status_code == 401
    healthy(server)


def test_unknown_paths_and_methods_get_json_errors(server: str) -> None:
    missing = httpx.get(f"{server}/v1/chat/nothing", headers=AUTH, timeout=30)
    assert missing.status_code == 404 and "error" in missing.json()
    wrong = httpx.get(f"{server}/v1/completions", headers=AUTH, timeout=30)
    assert wrong.status_code == 405 and "error" in wrong.json()


def test_raw_stream_is_server_sent_events_ending_in_done(server: str) -> None:
    body = {**GOOD, "stream": True}
    with httpx.stream(
        "POST", f"{server}/v1/completions", json=body, headers=AUTH, timeout=30
    ) as response:
        assert response.headers["content-type"].startswith("text/event-stream")
        lines = [line for line in response.iter_lines() if line]
    assert all(line.startswith("data: ") for line in lines)
    assert lines[-1] == "data: [DONE]"


def test_a_client_leaving_mid_stream_leaves_the_server_healthy(server: str) -> None:
    body = {**GOOD, "max_tokens": MAX_TOKENS_CAP, "n": MAX_N, "stream": True}
    with httpx.stream(
        "POST", f"{server}/v1/completions", json=body, headers=AUTH, timeout=30
    ) as response:
        for line in response.iter_lines():
            if line.startswith("data: {"):
                break  # one chunk, then the connection closes
    deadline = time.monotonic() + 60
    while healthy(server)["running"]:
        assert time.monotonic() < deadline, "the dropped sequences stayed in the batch"
        time.sleep(0.05)
    response = httpx.post(f"{server}/v1/completions", json=GOOD, headers=AUTH, timeout=30)
    assert response.status_code == 200


# -- in-process: the full queue, the command's own errors -------------------------------------


def test_a_full_queue_answers_503_with_retry_after(checkpoint: Path) -> None:
    from starlette.testclient import TestClient

    from nanogpt_cli.sample import Sampler
    from nanogpt_cli.sampling import SamplingSettings
    from nanogpt_cli.serve.app import ServerSettings, build_app
    from nanogpt_cli.serve.engine import Engine, Job
    from nanogpt_cli.serve.protocol import Limits

    sampler = Sampler.from_checkpoint(checkpoint, device="cpu")
    # Not started: what is submitted stays where it is.
    engine = Engine(sampler.model, sampler.tokenizer, max_batch=1, max_queue=1)
    engine.submit([Job([1], 4, SamplingSettings(), lambda e: None) for _ in range(2)])
    app = build_app(engine, ServerSettings("tiny", Limits(16, 1, sampler.tokenizer.vocab_size)))
    with TestClient(app) as http:
        response = http.post("/v1/completions", json=GOOD)
        assert response.status_code == 503 and response.headers["retry-after"] == "1"
        assert response.json()["error"]["code"] == "server_busy"
        assert http.get("/health").json()["waiting"] == 2


def test_serve_options_and_port_in_use(
    checkpoint: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import socket

    with pytest.raises(SystemExit) as exit_info:
        main(["serve", "--checkpoint", str(checkpoint), "--max-n", "20", "--max-batch", "4"])
    assert exit_info.value.code == 2
    assert "--max-n must be between 1 and --max-batch (4)" in capsys.readouterr().err
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(SystemExit) as exit_info:
            main(["serve", "--checkpoint", str(checkpoint), "--port", str(port)])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert f"error: cannot listen on 127.0.0.1:{port}" in err and "--port" in err


def test_serve_help_imports_no_server_stack() -> None:
    code = (
        "import sys\nfrom nanogpt_cli.cli.app import main\n"
        "try:\n    main(['serve', '--help'])\nexcept SystemExit:\n    pass\n"
        "print('LOADED', [m for m in ('torch', 'starlette', 'uvicorn', 'fastapi')"
        " if m in sys.modules])\n"
    )
    env = {**os.environ, "COLUMNS": "200", "NO_COLOR": "1"}
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, env=env
    ).stdout
    assert out.rstrip().endswith("LOADED []")
    for option in ("--host", "--port", "--max-batch", "--max-queue", "--max-tokens-cap"):
        assert option in out
    assert "127.0.0.1" in out and "Env: NANOGPT_API_KEY" in out


# -- the benchmark's arithmetic ---------------------------------------------------------------


def test_benchmark_summary_of_injected_timings() -> None:
    timings = [
        serve_load.ClientTiming(sent=0.0, chunks=[0.1, 0.2, 0.3], ended=0.3, tokens=3),
        serve_load.ClientTiming(sent=0.5, chunks=[0.8, 0.9, 1.3], ended=1.5, tokens=3),
    ]
    summary = serve_load.summarize(timings)
    assert summary.tokens == 6 and summary.seconds == pytest.approx(1.5)
    assert summary.tokens_per_s == pytest.approx(4.0)
    assert summary.ttft_p50_ms == pytest.approx(200.0)  # 100 ms and 300 ms
    assert summary.ttft_p95_ms == pytest.approx(290.0)
    # gaps 100, 100, 100, 400 ms
    assert summary.token_p50_ms == pytest.approx(100.0)
    assert summary.token_p95_ms == pytest.approx(355.0)
    table = serve_load.table([(summary, serve_load.summarize(timings[:1]))])
    assert "| 2 | 4 | 10 | 0.40x | 200.0 / 290.0 | 100.0 / 355.0 |" in table


def test_all_interfaces_without_a_key_warns_and_a_huge_batch_is_refused(
    checkpoint: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import uvicorn

    from nanogpt_cli.errors import ConfigError
    from nanogpt_cli.serve.server import ServeOptions, serve

    bound: list[str] = []
    monkeypatch.setattr(  # everything up to serving, then back at once
        uvicorn.Server, "run", lambda self, sockets: bound.append(sockets[0].getsockname()[0])
    )
    serve(checkpoint, ServeOptions(host="0.0.0.0", port=0), device="cpu")
    assert bound == ["0.0.0.0"]
    assert "reachable from other machines, without an API key" in capsys.readouterr().err
    serve(checkpoint, ServeOptions(host="0.0.0.0", port=0, api_key="k"), device="cpu")
    serve(checkpoint, ServeOptions(host="127.0.0.1", port=0), device="cpu")
    assert "without an API key" not in capsys.readouterr().err
    with pytest.raises(ConfigError, match=r"--max-batch 10000000 needs .* GiB for its KV cache"):
        serve(checkpoint, ServeOptions(port=0, max_batch=10**7, max_n=1), device="cpu")
