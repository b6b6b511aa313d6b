"""GPT-2 weights: --init-from in finetune, eval and sample; evaluation; tokenizer checks."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pytest
import torch
from conftest import make_text

from nanogpt_cli.checkpoint import GPT2_MODELS, model_from_checkpoint, read_pretrained
from nanogpt_cli.cli.app import main
from nanogpt_cli.data.prepare import prepare_shakespeare, prepare_shakespeare_char
from nanogpt_cli.errors import DatasetError
from nanogpt_cli.evaluate import evaluate
from nanogpt_cli.train import resolve_config, train

TINY_GPT2 = dict(n_layer=2, n_head=2, n_embd=32, n_positions=64, vocab_size=50257)


def save_tiny_gpt2(folder: Path) -> Path:
    """A random GPT-2 (GPT-2's vocabulary, a tiny body) saved as transformers saves it."""
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(0)
    model = GPT2LMHeadModel(GPT2Config(**TINY_GPT2))
    with torch.no_grad():  # transformers initialises biases to zero: make them count
        for name, p in model.named_parameters():
            if name.endswith(".bias"):
                p.normal_(0.0, 0.02)
    model.save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def gpt2_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return save_tiny_gpt2(tmp_path_factory.mktemp("gpt2") / "tiny-gpt2")


@pytest.fixture
def bpe_data(tmp_path: Path, gpt2_bpe: Path) -> Path:
    """A datasets directory with 'shakespeare' (GPT-2 BPE) and 'shakespeare-char'."""
    corpus = tmp_path / "corpus.txt"
    corpus.write_text(make_text(n_lines=1500))
    root = tmp_path / "datasets"
    prepare_shakespeare(source=str(corpus), data_dir=root)
    prepare_shakespeare_char(source=str(corpus), data_dir=root)
    return root


def cli(args: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    try:
        main(args)
        code = 0
    except SystemExit as e:
        code = int(e.code or 0)
    out, err = capsys.readouterr()
    return code, out, err


def test_logits_match_transformers_for_a_local_gpt2_folder(gpt2_folder: Path) -> None:
    from transformers import GPT2LMHeadModel

    ckpt = read_pretrained(gpt2_folder)
    assert ckpt.tokenizer == {"kind": "tiktoken", "name": "gpt2"}
    idx = torch.randint(0, 50257, (2, 48), generator=torch.Generator().manual_seed(0))
    hf = GPT2LMHeadModel.from_pretrained(gpt2_folder, dtype=torch.float32).eval()
    with torch.no_grad():
        diff = (model_from_checkpoint(ckpt)(idx)[0] - hf(idx).logits).abs().max().item()
    assert diff < 1e-4


FINETUNE_FLAGS = [
    "--dataset", "shakespeare",
    "--batch-size", "4",
    "--gradient-accumulation-steps", "1",
    "--block-size", "32",
    "--learning-rate", "3e-3",
    "--max-iters", "30",
    "--eval-interval", "10",
    "--eval-iters", "8",
    "--device", "cpu",
    "--no-compile",
]  # fmt: skip


def test_finetune_lowers_val_loss_and_eval_reports_the_same_loss(
    gpt2_folder: Path, bpe_data: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "ft"
    args = ["finetune", "--init-from", str(gpt2_folder), "--data-dir", str(bpe_data)]
    code, _, err = cli([*args, *FINETUNE_FLAGS, "--out-dir", str(out)], capsys)
    assert code == 0, err
    evals = [
        json.loads(line)
        for line in (out / "metrics.jsonl").read_text().splitlines()
        if json.loads(line).get("kind") == "eval"
    ]
    assert [e["iter"] for e in evals] == [0, 10, 20, 30]
    assert evals[-1]["val_loss"] < evals[0]["val_loss"] - 0.5  # it learns
    best = min(evals, key=lambda e: e["val_loss"])
    saved = read_pretrained(out)
    assert saved.state.iter_num == best["iter"]  # saved on improvement only
    assert saved.model_config.block_size == 32 and saved.model_config.bias
    assert saved.model_config.activation == "gelu_tanh"

    code, stdout, err = cli(["eval", "--checkpoint", str(out), "--data-dir", str(bpe_data)], capsys)
    assert code == 0, err
    report = json.loads((out / "eval.json").read_text())
    assert report["splits"]["val"]["loss"] == pytest.approx(best["val_loss"], abs=1e-6)
    assert report["splits"]["train"]["loss"] == pytest.approx(best["train_loss"], abs=1e-6)
    assert (report["eval_iters"], report["batch_size"], report["block_size"]) == (8, 4, 32)
    assert "perplexity" in stdout and "bits/byte" in stdout
    val = report["splits"]["val"]
    assert val["perplexity"] == pytest.approx(math.exp(val["loss"]))
    assert val["bits_per_byte"] == pytest.approx(
        val["loss"] * val["tokens"] / (math.log(2) * val["bytes"])
    )
    assert val["bytes"] > val["tokens"]  # BPE tokens average more than one byte


def test_finetune_help_shows_nanogpts_finetune_defaults(
    capsys: pytest.CaptureFixture[str],
) -> None:
    code, out, _ = cli(["finetune", "--help"], capsys)
    cfg = resolve_config(None, None, {}, default_preset="finetune-gpt2")
    assert code == 0 and "finetune-gpt2" in out
    assert (cfg.data.batch_size, cfg.data.gradient_accumulation_steps) == (1, 32)
    assert (cfg.optim.learning_rate, cfg.optim.decay_lr, cfg.optim.max_iters) == (3e-5, False, 20)
    assert (cfg.eval.eval_interval, cfg.run.always_save_checkpoint) == (5, False)
    assert cfg.run.init_from == "gpt2" and cfg.data.dataset == "shakespeare"
    assert resolve_config("finetune-gpt2-xl", None, {}).run.init_from == "gpt2-xl"


def test_a_dataset_of_another_tokenizer_is_refused(
    gpt2_folder: Path, bpe_data: Path, tmp_path: Path
) -> None:
    options: dict[str, Any] = {
        "init_from": str(gpt2_folder),
        "dataset": "shakespeare-char",
        "data_dir": str(bpe_data),
        "out_dir": str(tmp_path / "o"),
        "device": "cpu",
    }
    with pytest.raises(DatasetError, match=r"characters .* uses GPT-2's BPE; prepare the text"):
        train(resolve_config(None, None, options, default_preset="finetune-gpt2"))
    with pytest.raises(DatasetError, match="GPT-2's BPE"):
        evaluate(gpt2_folder, dataset="shakespeare-char", data_dir=bpe_data)


def test_eval_of_a_gpt2_folder_and_bits_per_byte_of_characters(
    gpt2_folder: Path, bpe_data: Path, data_dir: Path, tiny_options: dict[str, Any]
) -> None:
    report = evaluate(
        gpt2_folder, dataset="shakespeare", data_dir=bpe_data, eval_iters=2, batch_size=2,
        block_size=16,
    )  # fmt: skip
    assert report.block_size == 16 and report.splits["val"].tokens == 2 * 2 * 16
    assert report.splits["val"].loss == pytest.approx(math.log(50257), rel=0.05)  # random
    # a character model on ASCII text: one byte per token, so bits per byte = loss / ln 2
    train({**tiny_options} and resolve_config(None, None, {**tiny_options, "max_iters": 5}))
    char = evaluate(tiny_options["out_dir"], eval_iters=3)
    val = char.splits["val"]
    assert val.bytes == val.tokens and val.bits_per_byte == pytest.approx(val.loss / math.log(2))


def hub_cache_with(folder: Path, home: Path, repo: str) -> None:
    """Lay ``folder`` out as the Hugging Face hub cache holds a downloaded ``repo``."""
    import shutil

    commit = "0" * 40
    root = home / "hub" / f"models--{repo.replace('/', '--')}"
    (root / "refs").mkdir(parents=True)
    (root / "refs" / "main").write_text(commit)
    shutil.copytree(folder, root / "snapshots" / commit)


def test_sample_init_from_a_gpt2_size_uses_the_hub_cache_offline(
    gpt2_folder: Path, gpt2_bpe: Path, tmp_path: Path
) -> None:
    import os
    import subprocess
    import sys

    import tiktoken

    from nanogpt_cli.sample import generate

    hub_cache_with(gpt2_folder, tmp_path / "hf", GPT2_MODELS["gpt2"])
    env = {**os.environ, "HF_HOME": str(tmp_path / "hf"), "HF_HUB_OFFLINE": "1"}
    args = ["sample", "--init-from", "gpt2", "--start", "Hello world", "--temperature", "0"]
    args += ["--max-new-tokens", "8", "--device", "cpu"]
    # a fresh process, as a user runs it; no folder named gpt2 in its working directory
    done = subprocess.run(
        [sys.executable, "-m", "nanogpt_cli", *args],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    enc = tiktoken.get_encoding("gpt2")
    model = model_from_checkpoint(read_pretrained(gpt2_folder))
    prompt = torch.tensor([enc.encode("Hello world")])
    expected = enc.decode([int(t) for t in generate(model, prompt, 8, temperature=0)])
    assert done.stdout.startswith("Hello world" + expected)


def test_padded_vocabulary_ids_never_reach_the_output(
    gpt2_folder: Path, gpt2_bpe: Path, tmp_path: Path
) -> None:
    from nanogpt_cli.checkpoint import Checkpoint, TrainState, save_checkpoint
    from nanogpt_cli.sample import Sampler

    ckpt = read_pretrained(gpt2_folder)
    weights = dict(ckpt.weights())
    wte = weights["transformer.wte.weight"]
    model = model_from_checkpoint(ckpt)
    with torch.no_grad():
        best = int(model(torch.tensor([[15496]]))[0][0, -1].argmax())  # after "Hello"
    # 50304 rows, like nanoGPT; the 47 padded ones would win every argmax if allowed
    padded = torch.cat([wte, 100 * wte[best].repeat(47, 1)])
    weights["transformer.wte.weight"] = weights["lm_head.weight"] = padded
    config = ckpt.model_config
    config.vocab_size = 50304
    save_checkpoint(
        Checkpoint(model_config=config, tokenizer=ckpt.tokenizer, state=TrainState(),
                   _weights=weights),
        tmp_path / "padded", "model-only",
    )  # fmt: skip
    sampler = Sampler.from_checkpoint(tmp_path / "padded", device="cpu")
    model = sampler.model
    with torch.no_grad():
        logits = model(torch.tensor([sampler.tokenizer.encode("Hello")]))[0][0, -1]
    assert int(logits.argmax()) >= 50257
    greedy = [int(t) for t in sampler.stream("Hello", 20, temperature=0)]
    sampled = [int(t) for t in sampler.stream("Hello", 20, temperature=1.0, top_k=None, seed=3)]
    assert max(greedy + sampled) < 50257
    assert greedy[0] == best
