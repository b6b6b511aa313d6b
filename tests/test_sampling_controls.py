"""The sampling controls of `nanogpt sample` (issue 25): top-p, min-p, the repetition
penalty, stop strings, a time limit and the prompt from standard input. The filters and
the penalty are checked against `transformers`' own logits processors and `generate`."""

from __future__ import annotations

import itertools
from pathlib import Path

import pytest
import torch
from test_sample import train_tiny
from typer.testing import CliRunner

from nanogpt_cli.checkpoint.core import Checkpoint
from nanogpt_cli.checkpoint.hf import write_hf
from nanogpt_cli.cli.app import app, main
from nanogpt_cli.config import ModelConfig
from nanogpt_cli.model import GPT
from nanogpt_cli.sample import Sampler, generate
from nanogpt_cli.sampling import (
    SamplingSettings,
    TextStream,
    filter_min_p,
    filter_top_k,
    filter_top_p,
    process_logits,
)


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny character model trained for a few steps (block size 16)."""
    return train_tiny(tmp_path_factory.mktemp("controls"), max_iters=30)


@pytest.fixture(scope="module")
def sampler(checkpoint: Path) -> Sampler:
    return Sampler.from_checkpoint(checkpoint, device="cpu")


def texts(sampler: Sampler, prompt: str, **kwargs: object) -> list[str]:
    rows = list(zip(*[t.tolist() for t in sampler.stream(prompt, **kwargs)], strict=True))
    return [sampler.tokenizer.decode(list(r)) for r in rows]


def cli(args: list[str], **kwargs: object) -> tuple[int, str, str]:
    result = CliRunner().invoke(app, args, **kwargs)
    return result.exit_code, result.stdout, result.stderr


# -- the filters and the penalty against transformers' processors -------------------------


def logits_rows() -> torch.Tensor:
    g = torch.Generator().manual_seed(0)
    rows = torch.randn(6, 97, generator=g) * 3
    rows[1] = rows[1] * 0.01  # almost flat: the nucleus is most of the vocabulary
    rows[2, 5] = 40.0  # one token holds nearly all the probability
    return rows


@pytest.mark.parametrize("top_k", [1, 5, 50, 97, 200])
def test_top_k_equals_transformers(top_k: int) -> None:
    from transformers import TopKLogitsWarper

    rows = logits_rows()
    expected = TopKLogitsWarper(top_k)(None, rows.clone())
    assert torch.equal(filter_top_k(rows, top_k), expected)


@pytest.mark.parametrize("top_p", [1e-6, 0.1, 0.5, 0.9, 0.99, 1.0])
def test_top_p_equals_transformers(top_p: float) -> None:
    from transformers import TopPLogitsWarper

    rows = logits_rows()
    expected = TopPLogitsWarper(top_p)(None, rows.clone())
    assert torch.equal(filter_top_p(rows, top_p), expected)


@pytest.mark.parametrize("min_p", [0.0, 0.01, 0.1, 0.5, 1.0])
def test_min_p_equals_transformers(min_p: float) -> None:
    from transformers import MinPLogitsWarper

    rows = logits_rows()
    expected = MinPLogitsWarper(min_p)(None, rows.clone()) if min_p > 0 else rows
    assert torch.equal(filter_min_p(rows, min_p), expected)


def test_the_whole_chain_equals_transformers_processors_in_their_order() -> None:
    from transformers import (
        LogitsProcessorList,
        MinPLogitsWarper,
        RepetitionPenaltyLogitsProcessor,
        TemperatureLogitsWarper,
        TopKLogitsWarper,
        TopPLogitsWarper,
    )

    rows = logits_rows()
    seen = torch.randint(0, 97, (6, 30), generator=torch.Generator().manual_seed(1))
    settings = SamplingSettings(0.7, 40, 0.9, 0.02, 1.3)
    chain = LogitsProcessorList(
        [
            RepetitionPenaltyLogitsProcessor(1.3),
            TemperatureLogitsWarper(0.7),
            TopKLogitsWarper(40),
            TopPLogitsWarper(0.9),
            MinPLogitsWarper(0.02),
        ]
    )
    torch.testing.assert_close(process_logits(rows, settings, seen), chain(seen, rows.clone()))


def random_gpt2(tmp_path: Path) -> tuple[GPT, torch.nn.Module]:
    """A tiny random GPT-2-architecture model and the same weights as transformers'
    GPT2LMHeadModel. Weights wider than the usual initialisation, so its greedy text
    varies (a freshly initialised model repeats one token) and the penalty matters."""
    from transformers import GPT2LMHeadModel

    torch.manual_seed(0)
    cfg = ModelConfig(n_layer=2, n_head=2, n_embd=32, block_size=64, vocab_size=50)
    model = GPT(cfg).eval()
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for p in model.parameters():
            if p.dim() == 2:
                p.copy_(torch.randn(p.shape, generator=g) * 0.3)
    write_hf(
        tmp_path / "hf", Checkpoint(model_config=cfg, tokenizer=None, _weights=model.state_dict())
    )
    hf = GPT2LMHeadModel.from_pretrained(tmp_path / "hf", dtype=torch.float32).eval()
    return model, hf


def test_greedy_with_repetition_penalty_equals_transformers_generate(tmp_path: Path) -> None:
    model, hf = random_gpt2(tmp_path)
    prompt = torch.tensor([[1, 2, 3, 1, 4]])
    ours = {}
    for penalty in (1.0, 1.3):
        settings = SamplingSettings(temperature=0.0, top_k=None, repetition_penalty=penalty)
        ours[penalty] = [int(t) for t in generate(model, prompt, 40, settings=settings)]
        theirs = hf.generate(
            prompt,
            max_new_tokens=40,
            do_sample=False,
            repetition_penalty=penalty,
            pad_token_id=0,
            attention_mask=torch.ones_like(prompt),
        )[0, prompt.size(1) :].tolist()
        assert ours[penalty] == theirs, penalty
    assert ours[1.3] != ours[1.0]  # the penalty changed the text: the comparison means something


# -- the controls through the library and the command ------------------------------------


def test_filters_that_keep_one_token_are_greedy(sampler: Sampler) -> None:
    greedy = texts(sampler, "ROMEO:", max_new_tokens=30, temperature=0.0)
    for kwargs in ({"top_p": 1e-9}, {"min_p": 1.0}, {"top_k": 1}):
        drawn = texts(sampler, "ROMEO:", max_new_tokens=30, temperature=1.0, seed=3, **kwargs)
        assert drawn == greedy, kwargs
    # and a filter that keeps many tokens draws something else
    assert texts(sampler, "ROMEO:", max_new_tokens=30, temperature=1.0, seed=3) != greedy


def test_sample_command_takes_top_p_min_p_and_repetition_penalty(
    checkpoint: Path, sampler: Sampler
) -> None:
    base = ["sample", "--checkpoint", str(checkpoint), "--device", "cpu", "--start", "ROMEO:"]
    base += ["--max-new-tokens", "30", "-q"]
    greedy = texts(sampler, "ROMEO:", max_new_tokens=30, temperature=0.0)[0]
    for flags in (["--top-p", "1e-9"], ["--min-p", "1"]):
        code, out, err = cli([*base, "--temperature", "1", "--seed", "4", *flags])
        assert code == 0, err
        assert out == "ROMEO:" + greedy + "\n", flags
    code, out, err = cli([*base, "--temperature", "0", "--repetition-penalty", "1.5"])
    assert code == 0, err
    penalised = texts(
        sampler, "ROMEO:", max_new_tokens=30, temperature=0.0, repetition_penalty=1.5
    )[0]
    assert out == "ROMEO:" + penalised + "\n"
    # sampled, with every control at once: what the library draws for the same seed
    controls = ["--temperature", "0.9", "--top-k", "20", "--top-p", "0.8", "--min-p", "0.05"]
    controls += ["--repetition-penalty", "1.2", "--seed", "9"]
    code, out, err = cli([*base, *controls])
    assert code == 0, err
    drawn = texts(
        sampler,
        "ROMEO:",
        max_new_tokens=30,
        temperature=0.9,
        top_k=20,
        top_p=0.8,
        min_p=0.05,
        repetition_penalty=1.2,
        seed=9,
    )[0]
    assert out == "ROMEO:" + drawn + "\n"


def cut(text: str, stop: str) -> str:
    return text[: text.find(stop)] if stop in text else text


def test_stop_ends_each_sample_at_its_first_stop_string(sampler: Sampler) -> None:
    kwargs = dict(max_new_tokens=60, num_samples=3, temperature=1.0, seed=11)
    full = texts(sampler, "\n", **kwargs)
    stop = full[0][20:22]  # two characters: a stop string spans tokens
    assert stop in full[0]
    stream = sampler.stream_text("\n", stop=[stop], **kwargs)
    streamed = ["", "", ""]
    steps = 0
    for pieces in stream:
        steps += 1
        for i, piece in enumerate(pieces):
            assert stop not in piece
            streamed[i] += piece
    expected = [cut(t, stop) for t in full]
    assert streamed == expected == [s.text for s in stream.samples]
    for sample, text in zip(stream.samples, full, strict=True):
        if stop in text:  # a character model: one token per character
            assert (sample.finish, sample.tokens) == ("stop", text.find(stop) + len(stop))
        else:
            assert (sample.finish, sample.tokens) == ("length", 60)
    # the batch ended with its last sample, not at --max-new-tokens
    assert steps <= max(s.tokens for s in stream.samples) + 1


def test_sample_command_stop_cuts_every_sample(checkpoint: Path, sampler: Sampler) -> None:
    full = texts(sampler, "\n", max_new_tokens=60, num_samples=2, temperature=1.0, seed=11)
    stop = full[1][30:32]
    args = ["sample", "--checkpoint", str(checkpoint), "--device", "cpu", "--seed", "11"]
    args += ["--max-new-tokens", "60", "--num-samples", "2", "--temperature", "1", "-q"]
    code, out, err = cli([*args, "--stop", "zzz", "--stop", stop.replace("\n", "\\n")])
    assert code == 0, err
    first, second = (cut(t, stop) for t in full)
    assert out == "\n" + first + "\n" + "---------------\n" + "\n" + second + "\n"


def test_max_time_is_checked_after_each_token(sampler: Sampler) -> None:
    ticks = itertools.count()  # a clock that moves one second per reading
    stream = sampler.stream_text(
        "ROMEO:",
        50,
        num_samples=2,
        max_time=2.5,
        clock=lambda: float(next(ticks)),
        settings=SamplingSettings(temperature=0.0),
    )
    pieces = list(stream)
    # read at the start (0), then after each token: 1, 2, 3 >= 2.5 -> three tokens
    assert [s.tokens for s in stream.samples] == [3, 3]
    assert [s.finish for s in stream.samples] == ["time", "time"] and stream.timed_out
    greedy = texts(sampler, "ROMEO:", max_new_tokens=3, temperature=0.0)[0]
    assert "".join(p[0] for p in pieces) == greedy


def test_sample_command_max_time_zero_gives_one_token(checkpoint: Path) -> None:
    args = ["sample", "--checkpoint", str(checkpoint), "--device", "cpu", "--start", "ROMEO:"]
    code, out, err = cli([*args, "--max-new-tokens", "200", "--max-time", "0"])
    assert code == 0, err
    assert out.startswith("ROMEO:") and len(out) == len("ROMEO:") + 2  # one token, newline
    assert "stopped after --max-time 0 s, at 1 token per sample" in err


def test_text_stream_holds_back_a_character_split_over_tokens() -> None:
    text = "héllo ✓ wörld"
    tokens = [torch.tensor([b]) for b in text.encode("utf-8")]  # one byte per token

    def decode(ids: list[int]) -> str:
        return bytes(ids).decode("utf-8", errors="replace")

    stream = TextStream(tokens, decode, 1)
    pieces = [p[0] for p in stream]
    assert "".join(pieces) == text and not any("\ufffd" in p for p in pieces)
    assert stream.samples[0].tokens == len(text.encode("utf-8"))


def test_start_dash_reads_the_prompt_from_standard_input(checkpoint: Path) -> None:
    args = ["sample", "--checkpoint", str(checkpoint), "--device", "cpu", "-q"]
    args += ["--max-new-tokens", "20", "--temperature", "0"]
    code, piped, err = cli([*args, "--start", "-"], input="JULIET:\nthe ")
    assert code == 0, err
    code, given, err = cli([*args, "--start", "JULIET:\nthe "])
    assert code == 0, err
    assert piped == given and piped.startswith("JULIET:\nthe ") and len(piped) > 13


BAD = {
    "top-p 0": (["--top-p", "0"], "--top-p must be above 0 and at most 1"),
    "top-p above 1": (["--top-p", "1.5"], "--top-p must be above 0 and at most 1"),
    "min-p negative": (["--min-p", "-0.1"], "--min-p must be between 0 and 1"),
    "min-p above 1": (["--min-p", "2"], "--min-p must be between 0 and 1"),
    "penalty 0": (["--repetition-penalty", "0"], "--repetition-penalty must be above 0"),
    "penalty NaN": (["--repetition-penalty", "nan"], "--repetition-penalty"),
    "negative max-time": (["--max-time", "-1"], "--max-time must be a number of seconds"),
    "infinite max-time": (["--max-time", "inf"], "--max-time must be a number of seconds"),
    "empty stop": (["--stop", ""], "--stop must be some text"),
    "interactive with --start": (["--interactive", "--start", "A"], "--interactive"),
    "interactive with samples": (["--interactive", "--num-samples", "2"], "--interactive"),
}


@pytest.mark.parametrize("case", list(BAD))
def test_a_control_out_of_range_is_one_line(
    case: str, checkpoint: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    flags, expected = BAD[case]
    with pytest.raises(SystemExit) as exit_info:
        main(["sample", "--checkpoint", str(checkpoint), "--device", "cpu", *flags])
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.strip()]
    assert exit_info.value.code == 2 and len(lines) == 1, err
    assert lines[0].startswith("error: ") and expected in lines[0], err


def test_help_lists_every_new_option_with_its_default() -> None:
    result = CliRunner().invoke(
        app, ["sample", "--help"], env={"COLUMNS": "250", "NO_COLOR": "1", "TERM": "dumb"}
    )
    assert result.exit_code == 0
    lines = result.stdout.splitlines()

    def line_of(flag: str) -> str:
        found = [line for line in lines if line.lstrip("│ ").startswith(f"{flag} ")]
        assert len(found) == 1, flag
        return found[0]

    assert "<float>" in line_of("--top-p") and "[default: off]" in line_of("--top-p")
    assert "<float>" in line_of("--min-p") and "[default: off]" in line_of("--min-p")
    penalty = line_of("--repetition-penalty")
    assert "<float>" in penalty and "[default: 1.0]" in penalty
    assert "<str>" in line_of("--stop") and "[default: none]" in line_of("--stop")
    assert "<float>" in line_of("--max-time") and "[default: no limit]" in line_of("--max-time")
    assert "[default: off]" in line_of("--interactive")
