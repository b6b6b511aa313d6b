"""The server's batching engine, driven step by step: sequences of different lengths,
positions and settings decoded in one batch give what each gives alone."""

from __future__ import annotations

import time
from collections import defaultdict

import pytest
import torch

from nanogpt_cli.config import ModelConfig
from nanogpt_cli.data.tokenizer import CharTokenizer
from nanogpt_cli.model import GPT
from nanogpt_cli.sample import generate
from nanogpt_cli.sampling import SamplingSettings
from nanogpt_cli.serve.engine import Busy, Done, Engine, Event, Failed, Job, Text

GREEDY = SamplingSettings(temperature=0, top_k=None)
TOKENIZER = CharTokenizer(list("abcdefghijklmnopqrstuvwxyz .,"))


def varied_model(pos_embedding: str = "learned", block_size: int = 32) -> GPT:
    """A random model whose weights are large enough that its greedy text varies."""
    torch.manual_seed(0)
    cfg = ModelConfig(
        n_layer=2,
        n_head=2,
        n_embd=32,
        block_size=block_size,
        vocab_size=TOKENIZER.vocab_size,
        dropout=0.0,
        pos_embedding=pos_embedding,  # type: ignore[arg-type]
    )
    model = GPT(cfg).eval()
    torch.manual_seed(1)
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0, 0.6)
    return model


class Collector:
    """Each job's events, by the job's number."""

    def __init__(self) -> None:
        self.events: dict[int, list[Event]] = defaultdict(list)

    def job(self, number: int, prompt: str, max_tokens: int, **kwargs: object) -> Job:
        return Job(
            TOKENIZER.encode(prompt),
            max_tokens,
            kwargs.pop("settings", GREEDY),  # type: ignore[arg-type]
            lambda e: self.events[number].append(e),
            **kwargs,  # type: ignore[arg-type]
        )

    def text(self, number: int, index: int = 0) -> str:
        return "".join(
            e.text for e in self.events[number] if isinstance(e, Text) and e.index == index
        )

    def done(self, number: int) -> list[Done]:
        return [e for e in self.events[number] if isinstance(e, Done)]


def run_until_idle(engine: Engine) -> None:
    for _ in range(1000):
        if not (engine.rows or engine.waiting):
            return
        engine.step()
    raise AssertionError("the engine never finished")


def alone(model: GPT, prompt: str, max_tokens: int) -> str:
    idx = torch.tensor([TOKENIZER.encode(prompt)])
    return TOKENIZER.decode([int(t[0]) for t in generate(model, idx, max_tokens, temperature=0)])


@pytest.mark.parametrize("pos_embedding", ["learned", "rope"])
def test_batched_greedy_equals_each_sequence_alone(pos_embedding: str) -> None:
    """Prompts of different lengths, one joining while the others decode, end at different
    steps: each gets the tokens it gets alone (rows at their own positions)."""
    model = varied_model(pos_embedding)
    engine = Engine(model, TOKENIZER, max_batch=4)
    out = Collector()
    prompts = {0: ("the cat", 12), 1: ("a much longer prompt.", 8), 2: ("z", 20)}
    engine.submit([out.job(0, *prompts[0]), out.job(1, *prompts[1])])
    engine.step()
    engine.step()
    assert engine.running == 2
    engine.submit([out.job(2, *prompts[2])])  # joins the running batch
    engine.step()
    assert engine.running == 3
    run_until_idle(engine)
    texts = [out.text(i) for i in prompts]
    assert len(set(texts)) == 3 and max(len(set(t)) for t in texts) > 3  # varied text
    for i, (prompt, max_tokens) in prompts.items():
        assert out.text(i) == alone(model, prompt, max_tokens), i
        assert out.done(i) == [Done(0, "length", max_tokens)]


def test_n_completions_share_the_prompt_and_follow_their_seeds() -> None:
    model = varied_model()
    engine = Engine(model, TOKENIZER, max_batch=8)
    out = Collector()
    hot = SamplingSettings(temperature=1.5, top_k=None, top_p=0.95)
    engine.submit([out.job(0, "the ", 16, settings=hot, n=3, seed=7)])
    engine.submit([out.job(1, "the ", 16, settings=hot, n=1, seed=7)])
    engine.submit([out.job(2, "the ", 16)])
    run_until_idle(engine)
    first = [out.text(0, i) for i in range(3)]
    assert len(set(first)) == 3  # each completion draws from its own generator
    assert out.text(1) == first[0]  # the same seed, the same draws, batch mates or not
    assert out.text(2) == alone(model, "the ", 16)
    again = Collector()
    engine.submit([again.job(0, "the ", 16, settings=hot, n=3, seed=7)])
    run_until_idle(engine)
    assert [again.text(0, i) for i in range(3)] == first


def test_a_stop_string_ends_the_completion_before_it() -> None:
    model = varied_model()
    engine = Engine(model, TOKENIZER, max_batch=2)
    full = alone(model, "the cat", 20)
    stop = full[6:8]
    out = Collector()
    engine.submit([out.job(0, "the cat", 20, stops=(stop, "never"))])
    run_until_idle(engine)
    cut = full.index(stop)
    assert out.text(0) == full[:cut]
    [done] = out.done(0)
    assert done.reason == "stop" and done.completion_tokens == cut + len(stop)


def test_the_context_ends_a_completion_with_length() -> None:
    """A sequence stops when its last token has no position left to be read at."""
    model = varied_model(block_size=16)
    engine = Engine(model, TOKENIZER, max_batch=2)
    out = Collector()
    engine.submit([out.job(0, "a" * 12, 50)])
    run_until_idle(engine)
    assert out.done(0) == [Done(0, "length", 16 + 1 - 12)]
    assert out.text(0) == alone(model, "a" * 12, 5)


def test_a_cancelled_job_leaves_the_batch_and_the_others_go_on() -> None:
    model = varied_model()
    engine = Engine(model, TOKENIZER, max_batch=4)
    out = Collector()
    jobs = [out.job(0, "the cat", 20), out.job(1, "a dog", 20), out.job(2, "z", 20)]
    engine.submit(jobs)
    engine.step()
    jobs[0].cancel()  # its slot (the first) is refilled by the last row's cache
    seen = len(out.events[0])
    engine.step()
    assert engine.running == 2 and engine.dropped == 1
    run_until_idle(engine)
    assert len(out.events[0]) == seen and not out.done(0)
    assert out.text(1) == alone(model, "a dog", 20)
    assert out.text(2) == alone(model, "z", 20)


def test_the_queue_limit_refuses_with_busy_and_admits_in_order() -> None:
    engine = Engine(varied_model(), TOKENIZER, max_batch=2, max_queue=1)
    out = Collector()
    engine.submit([out.job(0, "a", 4, n=2)])  # takes both slots at the next step
    second = out.job(1, "b", 4)
    engine.submit([second])  # waits: the one queued request allowed
    with pytest.raises(Busy):
        engine.submit([out.job(2, "c", 4)])
    with pytest.raises(Busy):  # all of a request's jobs, or none
        engine.submit([out.job(3, "c", 4), out.job(4, "d", 4)])
    second.cancel()  # its client left: its place in the queue is free again
    engine.submit([out.job(5, "e", 4)])
    assert len(engine.waiting) == 2
    engine.step()
    assert engine.running == 2 and len(engine.waiting) == 1
    run_until_idle(engine)
    assert [len(out.done(i)) for i in range(6)] == [2, 0, 0, 0, 0, 1]


def test_a_failing_step_fails_its_jobs_not_the_engine() -> None:
    """On the thread: an error in a step reaches the requests as Failed; the engine goes on."""
    model = varied_model()
    engine = Engine(model, TOKENIZER, max_batch=2)
    out = Collector()
    bad = out.job(0, "a", 4)
    bad.prompt = [TOKENIZER.vocab_size + 5]  # an id past the embedding table
    engine.start()
    try:
        engine.submit([bad])
        for _ in range(500):
            if out.events[0]:
                break
            time.sleep(0.01)
        assert isinstance(out.events[0][0], Failed)
        engine.submit([out.job(1, "the cat", 6)])
        for _ in range(500):
            if out.done(1):
                break
            time.sleep(0.01)
        assert out.text(1) == alone(model, "the cat", 6)
    finally:
        engine.close()


def test_characters_split_across_tokens_are_sent_whole(gpt2_bpe: object) -> None:
    """GPT-2's BPE splits an emoji's UTF-8 bytes over tokens: no half character is sent."""
    from nanogpt_cli.data.tokenizer import TiktokenTokenizer
    from nanogpt_cli.serve.engine import StopText, _Row

    tokenizer = TiktokenTokenizer("gpt2")
    cfg = ModelConfig(n_layer=1, n_head=1, n_embd=8, block_size=64, vocab_size=50257)
    engine = Engine(GPT(cfg), tokenizer, max_batch=1)
    text = "a 🙂 b ✓ c 🦙!"
    ids = tokenizer.encode(text)
    assert any("\ufffd" in tokenizer.decode([i]) for i in ids)  # some ids are half characters
    out = Collector()
    job = out.job(0, "", len(ids))
    row = _Row(job, 0, [0], None, StopText(["🦙"]), shown_upto=1)
    for token in ids:
        engine._advance(row, token)
    pieces = [e.text for e in out.events[0] if isinstance(e, Text)]
    assert "".join(pieces) == "a 🙂 b ✓ c "
    assert not any("\ufffd" in p for p in pieces)
    assert out.done(0)[0].reason == "stop"
