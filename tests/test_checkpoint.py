"""Checkpoint formats, conversions, nanoGPT and Hugging Face interop, pickle safety."""

from __future__ import annotations

import json
import math
import pickle
from pathlib import Path
from typing import Any

import pytest
import torch
from conftest import TINY, make_text
from nanogpt_reference import NanoGPTReference, load_nanogpt_model_py

from nanogpt_cli.checkpoint import (
    CONFIG_FILE,
    MODEL_FILE,
    OPTIMIZER_FILE,
    UNIFIED_FILE,
    checkpoint_info,
    convert_checkpoint,
    model_from_checkpoint,
    read_checkpoint,
)
from nanogpt_cli.cli.app import main
from nanogpt_cli.config import ModelConfig, build_config
from nanogpt_cli.data.prepare import prepare_shakespeare_char
from nanogpt_cli.errors import CheckpointError, ConfigError
from nanogpt_cli.model import GPT
from nanogpt_cli.sample import Sampler, generate
from nanogpt_cli.train import resolve_config, train


@pytest.fixture(scope="module")
def data_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("ckpt-data")
    corpus = root / "corpus.txt"
    corpus.write_text(make_text())
    prepare_shakespeare_char(source=str(corpus), data_dir=root)
    return root


def run(data_root: Path, out: Path, **overrides: Any) -> Any:
    options = {**TINY, "data_dir": str(data_root), "out_dir": str(out), **overrides}
    return train(build_config("shakespeare-char", overrides=options))


@pytest.fixture(scope="module")
def unified(data_root: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A unified ckpt.pt written by training (20 steps, bias on to cover biases too)."""
    out = tmp_path_factory.mktemp("unified")
    run(data_root, out, max_iters=20, save_format="unified", bias=True)
    return out / UNIFIED_FILE


def tensors_of(value: Any, prefix: str = "") -> dict[str, torch.Tensor]:
    """Every tensor inside nested dicts and lists, by path."""
    if isinstance(value, torch.Tensor):
        return {prefix: value}
    if not isinstance(value, (dict, list, tuple)):
        return {}
    items = value.items() if isinstance(value, dict) else enumerate(value)
    out: dict[str, torch.Tensor] = {}
    for k, v in items:
        out.update(tensors_of(v, f"{prefix}/{k}"))
    return out


def assert_bit_identical(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
    assert a.keys() == b.keys()
    for name in a:
        assert a[name].dtype == b[name].dtype, name
        assert torch.equal(a[name], b[name]), name


# -- the three formats ---------------------------------------------------------------------


def test_unified_round_trip_through_separated_is_bit_identical(
    unified: Path, tmp_path: Path
) -> None:
    convert_checkpoint(unified, tmp_path / "sep", "separated", source_format="unified")
    assert {p.name for p in (tmp_path / "sep").iterdir()} == {
        MODEL_FILE,
        OPTIMIZER_FILE,
        CONFIG_FILE,
    }
    convert_checkpoint(tmp_path / "sep", tmp_path / "back", "unified", source_format="separated")
    before = torch.load(unified, weights_only=True)
    after = torch.load(tmp_path / "back" / UNIFIED_FILE, weights_only=True)
    assert_bit_identical(tensors_of(before["model"]), tensors_of(after["model"]))
    assert_bit_identical(tensors_of(before["optimizer"]), tensors_of(after["optimizer"]))
    assert before["optimizer"]["param_groups"] == after["optimizer"]["param_groups"]
    for key in ("model_args", "iter_num", "best_val_loss", "config"):
        assert before[key] == after[key], key
    assert before["nanogpt"]["rng"] == after["nanogpt"]["rng"]
    # the tied output layer is stored once, as nanoGPT's model.state_dict() does
    m = after["model"]
    assert m["lm_head.weight"].untyped_storage().data_ptr() == (
        m["transformer.wte.weight"].untyped_storage().data_ptr()
    )


def test_unified_has_nanogpt_layout_and_loads_into_nanogpt_shapes(unified: Path) -> None:
    payload = torch.load(unified, weights_only=True)
    assert {"model", "optimizer", "model_args", "iter_num", "best_val_loss", "config"} <= set(
        payload
    )
    args = payload["model_args"]
    assert set(args) == {
        "n_layer",
        "n_head",
        "n_embd",
        "block_size",
        "bias",
        "vocab_size",
        "dropout",
    }
    # nanoGPT's GPT has these parameter names: load strictly as its sample.py does.
    model = GPT(ModelConfig(**args, activation="gelu"))
    model.load_state_dict(payload["model"], strict=True)
    # its sample.py finds the vocabulary at data/<config["dataset"]>/meta.pkl
    assert payload["config"]["dataset"] == "shakespeare_char"
    meta = pickle.loads((unified.parent / "meta.pkl").read_bytes())
    assert meta["vocab_size"] == args["vocab_size"] and len(meta["stoi"]) == len(meta["itos"])


@pytest.mark.parametrize("fmt", ["unified", "separated"])
def test_resume_from_each_format_matches_an_uninterrupted_run(
    data_root: Path, tmp_path: Path, fmt: str
) -> None:
    whole = run(data_root, tmp_path / "whole", max_iters=30, save_format=fmt)
    run(data_root, tmp_path / "split", max_iters=15, save_format=fmt)
    resumed = run(data_root, tmp_path / "split", max_iters=30, save_format=fmt, resume=True)
    assert resumed.iter_num == 30
    assert resumed.val_loss == pytest.approx(whole.val_loss, abs=1e-6)
    a = read_checkpoint(tmp_path / "whole").weights()
    b = read_checkpoint(tmp_path / "split").weights()
    for name in a:
        torch.testing.assert_close(a[name], b[name], rtol=0, atol=1e-6)


def test_model_only_training_cannot_resume(data_root: Path, tmp_path: Path) -> None:
    run(data_root, tmp_path / "mo", max_iters=5, save_model_only=True)
    assert {p.name for p in (tmp_path / "mo").iterdir()} == {
        MODEL_FILE,
        CONFIG_FILE,
        "metrics.jsonl",
        "config.toml",
    }
    assert read_checkpoint(tmp_path / "mo").format == "model-only"
    with pytest.raises(CheckpointError, match="no optimizer state"):
        run(data_root, tmp_path / "mo", max_iters=10, resume=True)


def test_save_format_shortcuts_conflict(data_root: Path, tmp_path: Path) -> None:
    cfg = build_config(None, overrides={"save_separate_optimizer": True})
    assert cfg.run.save_format == "separated"
    with pytest.raises(ConfigError, match="--save-model-only conflicts with --save-format unified"):
        build_config(None, overrides={"save_format": "unified", "save_model_only": True})


def test_model_only_export_sizes_and_dtypes(unified: Path, tmp_path: Path) -> None:
    full = unified.stat().st_size
    sizes = {}
    for dtype in ("fp32", "bf16"):
        result = convert_checkpoint(unified, tmp_path / dtype, "model-only", dtype=dtype)
        sizes[dtype] = sum(p.stat().st_size for p in result.files)
        ckpt = read_checkpoint(tmp_path / dtype)
        assert ckpt.format == "model-only" and not ckpt.has_optimizer
        expected = torch.float32 if dtype == "fp32" else torch.bfloat16
        assert all(t.dtype == expected for t in ckpt.weights().values())
    assert sizes["fp32"] <= 0.34 * full and sizes["bf16"] <= 0.17 * full
    # the long spellings too, in any case
    convert_checkpoint(unified, tmp_path / "f16", "model-only", dtype="Float16")
    assert all(
        t.dtype == torch.float16 for t in read_checkpoint(tmp_path / "f16").weights().values()
    )
    with pytest.raises(ConfigError, match=r"unknown dtype 'auto'; use fp32\|float32"):
        convert_checkpoint(unified, tmp_path / "x", "model-only", dtype="auto")
    # bf16 weights still load into a float32 model, close to the original
    a, _ = model_from_checkpoint(read_checkpoint(unified))(torch.arange(16)[None])
    b, _ = model_from_checkpoint(read_checkpoint(tmp_path / "bf16"))(torch.arange(16)[None])
    assert (a - b).abs().max() < 0.1


def test_verify_reports_the_logit_difference(unified: Path, tmp_path: Path) -> None:
    exact = convert_checkpoint(unified, tmp_path / "a", "model-only", verify=True)
    assert exact.max_abs_diff == 0.0
    half = convert_checkpoint(unified, tmp_path / "b", "model-only", dtype="fp16", verify=True)
    assert half.max_abs_diff is not None and 0 < half.max_abs_diff < 0.1


def test_conversion_refuses_to_overwrite_and_to_mix_up_formats(
    unified: Path, tmp_path: Path
) -> None:
    convert_checkpoint(unified, tmp_path / "s", "separated")
    with pytest.raises(CheckpointError, match="pass --force"):
        convert_checkpoint(unified, tmp_path / "s", "separated")
    convert_checkpoint(unified, tmp_path / "s", "separated", force=True)
    with pytest.raises(CheckpointError, match="not unified; use separated-to-unified"):
        convert_checkpoint(tmp_path / "s", tmp_path / "x", "separated", source_format="unified")
    convert_checkpoint(unified, tmp_path / "mo", "model-only")
    with pytest.raises(CheckpointError, match="without optimizer state"):
        convert_checkpoint(tmp_path / "mo", tmp_path / "u", "unified")


def test_conversion_never_overwrites_or_deletes_its_source(
    unified: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    src = tmp_path / "src"
    convert_checkpoint(unified, src, "separated")
    before = read_checkpoint(src).weights()
    with pytest.raises(CheckpointError, match="is the source checkpoint"):
        convert_checkpoint(src, src, "model-only", force=True)
    with pytest.raises(CheckpointError, match="holds the source checkpoint"):
        convert_checkpoint(src / CONFIG_FILE, tmp_path, "huggingface", force=True)
    monkeypatch.chdir(src)
    with pytest.raises(CheckpointError, match="is the source checkpoint"):
        convert_checkpoint(".", ".", "huggingface", force=True)
    assert (src / OPTIMIZER_FILE).is_file()
    assert_bit_identical(before, read_checkpoint(src).weights())


def test_conversion_checks_the_destination_before_writing(
    unified: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import shutil

    # a folder whose newest checkpoint is a ckpt.pt still holds a separated one: not replaced
    both = tmp_path / "both"
    convert_checkpoint(unified, both, "separated")
    shutil.copy(unified, both / UNIFIED_FILE)
    with pytest.raises(CheckpointError, match="already holds a checkpoint"):
        convert_checkpoint(unified, both, "model-only")
    assert (both / OPTIMIZER_FILE).is_file()
    # a destination that is a file
    (tmp_path / "file").write_text("x")
    for fmt in ("separated", "model-only", "huggingface"):
        with pytest.raises(CheckpointError, match="is a file"):
            convert_checkpoint(unified, tmp_path / "file", fmt)
    # --force replaces an earlier Hugging Face export, never a folder of other files
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("keep me")
    with pytest.raises(CheckpointError, match="other than an earlier `to-hf` export"):
        convert_checkpoint(unified, tmp_path / "mine", "huggingface", force=True)
    assert (tmp_path / "mine" / "notes.txt").read_text() == "keep me"
    convert_checkpoint(unified, tmp_path / "hf", "huggingface")
    (tmp_path / "hf" / "README.md").write_text("a model card the user wrote")
    with pytest.raises(CheckpointError, match="other than an earlier `to-hf` export"):
        convert_checkpoint(unified, tmp_path / "hf", "huggingface", force=True)
    (tmp_path / "hf" / "README.md").unlink()
    convert_checkpoint(unified, tmp_path / "hf", "huggingface", force=True)
    assert (tmp_path / "hf" / "config.json").is_file()
    assert (tmp_path / "hf").stat().st_mode & 0o077 == 0o777 & ~_umask() & 0o077
    # a Hugging Face folder is a checkpoint too: not overwritten by a model-only export
    with pytest.raises(CheckpointError, match="already holds a checkpoint"):
        convert_checkpoint(unified, tmp_path / "hf", "model-only")
    # a unified export does not replace another model's vocabulary in meta.pkl
    (tmp_path / "models").mkdir()
    (tmp_path / "models" / "meta.pkl").write_bytes(pickle.dumps({"itos": {0: "x"}}))
    with pytest.raises(CheckpointError, match="holds another vocabulary"):
        convert_checkpoint(both, tmp_path / "models" / "a.pt", "unified")
    # a unified destination under a file, and a .ckpt name, which is a file like .pt
    with pytest.raises(CheckpointError, match="is a file"):
        convert_checkpoint(both, tmp_path / "file" / "x.pt", "unified")
    convert_checkpoint(both / CONFIG_FILE, tmp_path / "model.ckpt", "unified")
    assert (tmp_path / "model.ckpt").is_file()
    # ~ means the home directory for every format
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.chdir(tmp_path)
    convert_checkpoint(unified, "~/exported", "model-only")
    assert (tmp_path / "home" / "exported" / MODEL_FILE).is_file()
    assert not (tmp_path / "~").exists()


def _umask() -> int:
    import os

    mask = os.umask(0)
    os.umask(mask)
    return mask


def test_info_describes_a_checkpoint(unified: Path) -> None:
    info = checkpoint_info(unified)
    assert info["format"] == "unified" and info["written_by"] == "nanogpt"
    assert info["iteration"] == 20 and info["optimizer_state"] is True
    assert all(key.isidentifier() for key in info)  # as `info --json` shows them
    assert info["dtype"] == "float32" and info["tokenizer"].startswith("characters")
    model = model_from_checkpoint(read_checkpoint(unified))
    assert info["parameters"] == sum(p.numel() for p in model.parameters())
    assert info["files"][str(unified)] == unified.stat().st_size


def test_a_resumed_run_keeps_writing_the_format_it_resumed_from(
    data_root: Path, tmp_path: Path
) -> None:
    run(data_root, tmp_path / "sep", max_iters=5)
    convert_checkpoint(tmp_path / "sep", tmp_path / "conv", "unified")
    options = {**TINY, "data_dir": str(data_root), "out_dir": str(tmp_path / "conv")}
    train(resolve_config(None, None, {**options, "max_iters": 10, "resume": True}))
    assert read_checkpoint(tmp_path / "conv" / UNIFIED_FILE).state.iter_num == 10
    assert not (tmp_path / "conv" / CONFIG_FILE).exists()
    # an explicit --save-format still wins
    options.update(max_iters=15, resume=True, save_format="separated")
    train(resolve_config(None, None, options))
    assert read_checkpoint(tmp_path / "conv" / CONFIG_FILE).state.iter_num == 15


def test_newest_checkpoint_wins_when_a_directory_holds_two(data_root: Path, tmp_path: Path) -> None:
    out = tmp_path / "both"
    run(data_root, out, max_iters=5)
    run(data_root, out, max_iters=10, resume=True, save_format="unified")
    ckpt = read_checkpoint(out)
    assert ckpt.format == "unified" and ckpt.state.iter_num == 10


# -- the original nanoGPT's ckpt.pt ----------------------------------------------------------


def nanogpt_checkpoint(
    folder: Path, *, bias: bool = False, with_bias_key: bool = True, chars: str = "\n !:ABCab"
) -> tuple[Path, NanoGPTReference]:
    """A ckpt.pt laid out exactly as nanoGPT's train.py writes it, from a compiled model.

    The model is ``NanoGPTReference`` (nanoGPT's computation, written independently of ours),
    so loading the file into our model and comparing logits checks nanoGPT parity.
    """
    torch.manual_seed(0)
    args = dict(n_layer=2, n_head=2, n_embd=32, block_size=16, bias=bias, vocab_size=len(chars))
    model = NanoGPTReference(**args)
    args["dropout"] = 0.0
    # nanoGPT's configure_optimizers: decay for >= 2-D parameters, none for the rest
    params = list(model.parameters())
    groups = [
        {"params": [p for p in params if p.dim() >= 2], "weight_decay": 0.1},
        {"params": [p for p in params if p.dim() < 2], "weight_decay": 0.0},
    ]
    optimizer = torch.optim.AdamW(groups, lr=1e-3, betas=(0.9, 0.99))
    model(torch.arange(8)[None] % len(chars)).square().mean().backward()
    optimizer.step()
    state = model.state_dict()
    if not with_bias_key:  # older nanoGPT: model_args without bias/dropout, mask buffers
        del args["bias"], args["dropout"]
        for i in range(2):
            state[f"transformer.h.{i}.attn.bias"] = torch.ones(1, 1, 16, 16).tril()
    folder.mkdir(parents=True, exist_ok=True)
    checkpoint = {
        "model": {f"_orig_mod.{k}": v for k, v in state.items()},
        "optimizer": optimizer.state_dict(),
        "model_args": args,
        "iter_num": 250,
        "best_val_loss": torch.tensor(1.4697),
        "config": {"dataset": "shakespeare_char", "batch_size": 64, "init_from": "scratch"},
    }
    torch.save(checkpoint, folder / "ckpt.pt")
    meta = {
        "vocab_size": len(chars),
        "itos": dict(enumerate(chars)),
        "stoi": {c: i for i, c in enumerate(chars)},
    }
    (folder / "meta.pkl").write_bytes(pickle.dumps(meta))
    return folder / "ckpt.pt", model.eval()


@pytest.mark.parametrize(("bias", "with_bias_key"), [(False, True), (True, False)])
def test_original_nanogpt_checkpoint_loads_samples_and_converts(
    tmp_path: Path, bias: bool, with_bias_key: bool
) -> None:
    path, original = nanogpt_checkpoint(tmp_path / "out", bias=bias, with_bias_key=with_bias_key)
    ckpt = read_checkpoint(path)
    assert ckpt.origin == "nanoGPT" and ckpt.format == "unified"
    assert ckpt.model_config.activation == "gelu" and ckpt.model_config.bias == bias
    assert ckpt.state.iter_num == 250 and ckpt.state.best_val_loss == pytest.approx(1.4697)
    assert ckpt.tokenizer == {"kind": "char", "chars": "\n !:ABCab"}
    idx = torch.tensor([[1, 4, 5, 3, 2, 0, 6]])
    with torch.no_grad():
        reference = original(idx)
        assert reference.abs().max() > 0.1  # logits that tell models apart
        torch.testing.assert_close(model_from_checkpoint(ckpt)(idx)[0], reference)

    sampler = Sampler.from_checkpoint(path, device="cpu")
    ours = [int(t) for t in sampler.stream("AB", 12, temperature=0)]
    assert ours == original.greedy(torch.tensor([[4, 5]]), 12)

    convert_checkpoint(path, tmp_path / "sep", "separated", source_format="unified", verify=True)
    converted = read_checkpoint(tmp_path / "sep")
    assert converted.tokenizer == ckpt.tokenizer and converted.state.iter_num == 250
    result = convert_checkpoint(path, tmp_path / "hf", "huggingface", verify=True)
    assert result.max_abs_diff is not None and result.max_abs_diff < 1e-5


def test_original_checkpoint_resumes_training(data_root: Path, tmp_path: Path) -> None:
    chars = read_checkpoint_chars(data_root)
    nanogpt_checkpoint(tmp_path / "out", chars=chars)
    options = {**TINY, "data_dir": str(data_root), "out_dir": str(tmp_path / "out")}
    options.update(max_iters=255, resume=True, eval_interval=5)
    result = train(resolve_config(None, None, options))  # what `nanogpt train --resume` runs
    assert result.iter_num == 255
    # the run goes on writing nanoGPT's ckpt.pt, with no checkpoint of another format beside
    # it (its end goes to last/ when the out-dir holds a better one: issue 23)
    from nanogpt_cli.train.outdir import resume_dir

    latest = resume_dir(tmp_path / "out")
    assert read_checkpoint(latest / UNIFIED_FILE).state.iter_num == 255
    assert not (tmp_path / "out" / CONFIG_FILE).exists() and not (latest / CONFIG_FILE).exists()


def read_checkpoint_chars(data_root: Path) -> str:
    import json

    return json.loads((data_root / "shakespeare-char" / "meta.json").read_text())["tokenizer"][
        "chars"
    ]


def test_meta_pkl_is_found_where_nanogpt_looks_or_given(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path, _ = nanogpt_checkpoint(tmp_path / "out")
    meta = tmp_path / "out" / "meta.pkl"
    data_meta = tmp_path / "data" / "shakespeare_char" / "meta.pkl"
    data_meta.parent.mkdir(parents=True)
    meta.rename(data_meta)
    monkeypatch.chdir(tmp_path)  # nanoGPT's sample.py reads data/<dataset>/meta.pkl
    assert read_checkpoint(path).tokenizer == {"kind": "char", "chars": "\n !:ABCab"}
    monkeypatch.chdir(tmp_path / "out")
    assert read_checkpoint(path).tokenizer is None
    with pytest.raises(Exception, match="--meta"):
        Sampler.from_checkpoint(path, device="cpu")
    assert read_checkpoint(path, meta=data_meta).tokenizer is not None


# -- nanoGPT's exact GELU in unified exports --------------------------------------------------


def separated_model(folder: Path, activation: str) -> Path:
    """A separated checkpoint of a tiny model with ``activation``, its MLP inputs wide enough
    (a few units) for the exact and tanh GELU to give different logits."""
    from nanogpt_cli.checkpoint import Checkpoint, save_checkpoint

    torch.manual_seed(0)
    shape: dict[str, Any] = dict(n_layer=2, n_head=2, n_embd=32, block_size=16, vocab_size=9)
    cfg = ModelConfig(**shape, bias=True, activation=activation)
    model = GPT(cfg)
    for block in model.transformer.h:
        torch.nn.init.normal_(block.mlp.c_fc.weight, std=0.5)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    model(torch.arange(8)[None])[0].square().mean().backward()
    optimizer.step()
    ckpt = Checkpoint(
        model_config=cfg,
        tokenizer={"kind": "char", "chars": "\n !:ABCab"},
        _weights=model.state_dict(),
        _optimizer={"optimizer": optimizer.state_dict(), "scaler": {}},
    )
    save_checkpoint(ckpt, folder, "separated")
    return folder


def verify_input(vocab_size: int, block_size: int) -> torch.Tensor:
    """The fixed token ids ``--verify`` runs both sides on."""
    from nanogpt_cli.checkpoint.convert import VERIFY_BATCH, VERIFY_SEED, VERIFY_TOKENS

    generator = torch.Generator().manual_seed(VERIFY_SEED)
    shape = (VERIFY_BATCH, min(block_size, VERIFY_TOKENS))
    return torch.randint(0, vocab_size, shape, generator=generator)


def test_tanh_model_exported_to_unified_warns_once_and_verifies_as_nanogpt(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from nanogpt_cli.log import configure_logging

    src = separated_model(tmp_path / "tanh", "gelu_tanh")
    configure_logging()  # onto the captured stderr
    result = convert_checkpoint(src, tmp_path / "u" / "ckpt.pt", "unified", verify=True)
    err = capsys.readouterr().err
    warnings = [line for line in err.splitlines() if "nanoGPT's model.py" in line]
    assert len(warnings) == 1 and "warning:" in warnings[0]
    assert "'gelu_tanh'" in warnings[0] and "--activation gelu" in warnings[0]
    assert result.verified_as is not None and "nanoGPT would" in result.verified_as
    # the difference nanoGPT's scripts will see, and a file that is exact apart from it
    assert result.max_abs_diff is not None and 1e-5 < result.max_abs_diff < 1e-2
    assert result.file_diff is not None and result.file_diff < 1e-5
    # the same number from nanoGPT's computation written independently of ours
    payload = torch.load(tmp_path / "u" / "ckpt.pt", weights_only=True)
    args = {k: v for k, v in payload["model_args"].items() if k != "dropout"}
    reference = NanoGPTReference(**args)
    reference.load_state_dict(payload["model"], strict=True)
    idx = verify_input(args["vocab_size"], args["block_size"])
    with torch.no_grad():
        ours, _ = model_from_checkpoint(read_checkpoint(src))(idx)
        expected = (ours - reference.eval()(idx)).abs().max().item()
    assert result.max_abs_diff == pytest.approx(expected, abs=1e-6)
    # nanogpt's own loader keeps the activation
    assert read_checkpoint(tmp_path / "u" / "ckpt.pt").model_config.activation == "gelu_tanh"


def test_exact_gelu_model_exports_to_unified_without_warning(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from nanogpt_cli.log import configure_logging

    src = separated_model(tmp_path / "exact", "gelu")
    configure_logging()
    result = convert_checkpoint(src, tmp_path / "u", "unified", verify=True)
    assert "nanoGPT's model.py" not in capsys.readouterr().err
    assert result.max_abs_diff is not None and result.max_abs_diff < 1e-6
    assert result.file_diff is not None and result.file_diff < 1e-6


def test_unified_training_warns_once_for_a_tanh_model(
    data_root: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from nanogpt_cli.log import configure_logging

    configure_logging()
    run(data_root, tmp_path / "out", max_iters=10, eval_interval=5, save_format="unified")
    err = capsys.readouterr().err
    assert err.count("saved unified checkpoint") >= 2  # two saves, one warning
    assert err.count("nanoGPT's model.py always uses the exact GELU") == 1


def test_verify_cli_of_a_tanh_unified_export(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    import nanogpt_cli.checkpoint.convert as convert_module

    src = separated_model(tmp_path / "tanh", "gelu_tanh")

    def cli(dst: Path) -> tuple[int, str, str]:
        try:
            main(["convert", "separated-to-unified", str(src), str(dst), "--verify"])
            code = 0
        except SystemExit as e:
            code = int(e.code or 0)
        out, err = capsys.readouterr()
        return code, out, err

    code, out, err = cli(tmp_path / "ok")
    assert code == 0, err
    lines = [line for line in out.splitlines() if line.startswith("verify:")]
    assert len(lines) == 2 and "target run as nanoGPT would (exact GELU)" in lines[0]
    assert float(lines[0].split("difference ")[1].split()[0]) > 1e-5
    assert lines[1].startswith("verify: max abs logit difference 0 apart from the activation")
    # a file nanoGPT would read wrongly still fails verification, tanh model or not
    reading = convert_module.nanogpt_reading

    def misread(path: Path) -> tuple[ModelConfig, dict[str, torch.Tensor]]:
        cfg, state = reading(path)
        cfg.n_head = 1
        return cfg, state

    monkeypatch.setattr(convert_module, "nanogpt_reading", misread)
    code, _, err = cli(tmp_path / "bad")
    assert code == 1 and "verification failed" in err


def test_verify_matches_the_original_nanogpt_model_py(tmp_path: Path) -> None:
    """The number --verify reports for a unified export is what nanoGPT's own model.py
    computes from the file (as its sample.py loads it)."""
    original = load_nanogpt_model_py()
    if original is None:
        pytest.skip("no copy of nanoGPT's model.py in ../shared/reference/nanoGPT")
    src = separated_model(tmp_path / "tanh", "gelu_tanh")
    result = convert_checkpoint(src, tmp_path / "u", "unified", verify=True)
    checkpoint = torch.load(tmp_path / "u" / "ckpt.pt", weights_only=True)
    model = original.GPT(original.GPTConfig(**checkpoint["model_args"]))
    state = {k.removeprefix("_orig_mod."): v for k, v in checkpoint["model"].items()}
    model.load_state_dict(state)
    args = checkpoint["model_args"]
    idx = verify_input(args["vocab_size"], args["block_size"])
    with torch.no_grad():
        theirs, _ = model.eval()(idx, targets=idx)  # with targets: logits at every position
        ours, _ = model_from_checkpoint(read_checkpoint(src))(idx)
    expected = (ours - theirs).abs().max().item()
    assert expected > 1e-5
    assert result.max_abs_diff == pytest.approx(expected, abs=1e-6)


# -- pickle safety -----------------------------------------------------------------------------


class _Payload:
    """Unpickling this creates a file: a stand-in for any code an attacker could run."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[Any, ...]:
        return (Path.touch, (self.marker,))


def test_malicious_pt_is_refused_without_running_it(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    (tmp_path / "evil").mkdir()
    torch.save({"model": {}, "model_args": _Payload(marker)}, tmp_path / "evil" / "ckpt.pt")
    with pytest.raises(CheckpointError, match="refusing to load"):
        read_checkpoint(tmp_path / "evil")
    assert not marker.exists()


def test_malicious_meta_pkl_is_refused_without_running_it(tmp_path: Path) -> None:
    path, _ = nanogpt_checkpoint(tmp_path / "out")
    marker = tmp_path / "pwned"
    (tmp_path / "out" / "meta.pkl").write_bytes(pickle.dumps({"itos": _Payload(marker)}))
    with pytest.raises(CheckpointError, match="not a plain-data pickle"):
        read_checkpoint(path)
    assert not marker.exists()
    # plain data of the wrong kinds is refused as well
    (tmp_path / "out" / "meta.pkl").write_bytes(pickle.dumps({"itos": {0: b"x"}}))
    with pytest.raises(CheckpointError, match="holds a bytes"):
        read_checkpoint(path)
    looped: dict[str, Any] = {}
    looped["itos"] = looped  # a container that holds itself
    (tmp_path / "out" / "meta.pkl").write_bytes(pickle.dumps(looped))
    with pytest.raises(CheckpointError, match="not a plain-data pickle"):
        read_checkpoint(path)


def test_reading_a_unified_checkpoint_removes_what_a_killed_save_left(tmp_path: Path) -> None:
    path, _ = nanogpt_checkpoint(tmp_path / "out")
    for name in ("ckpt.pt.tmp", "meta.pkl.tmp"):
        (tmp_path / "out" / name).write_bytes(b"half a file")
    assert read_checkpoint(path).tokenizer is not None
    assert not list((tmp_path / "out").glob("*.tmp"))


# -- Hugging Face ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def hf_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(0)
    config = GPT2Config(n_layer=2, n_head=4, n_embd=64, vocab_size=97, n_positions=32)
    model = GPT2LMHeadModel(config)
    with torch.no_grad():  # transformers initialises biases to zero: make them count
        for name, p in model.named_parameters():
            if name.endswith(".bias"):
                p.normal_(0.0, 0.02)
    folder = tmp_path_factory.mktemp("hf") / "gpt2-tiny"
    model.save_pretrained(folder)
    return folder


def hf_logits(folder: Path, idx: torch.Tensor) -> torch.Tensor:
    from transformers import GPT2LMHeadModel

    model = GPT2LMHeadModel.from_pretrained(folder, dtype=torch.float32).eval()
    with torch.no_grad():
        return model(idx).logits


def test_from_hf_matches_transformers(hf_folder: Path, tmp_path: Path) -> None:
    convert_checkpoint(hf_folder, tmp_path / "ours", "model-only", source_format="huggingface")
    ckpt = read_checkpoint(tmp_path / "ours")
    assert ckpt.model_config.activation == "gelu_tanh" and ckpt.model_config.bias
    idx = torch.randint(0, 97, (2, 32), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        ours = model_from_checkpoint(ckpt)(idx)[0]
    assert (ours - hf_logits(hf_folder, idx)).abs().max() < 1e-4


def test_from_hf_verify_runs_transformers_on_the_source(
    hf_folder: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from transformers import GPT2LMHeadModel

    loaded: list[Path] = []
    original = GPT2LMHeadModel.from_pretrained

    def spy(folder: Any, *args: Any, **kwargs: Any) -> Any:
        loaded.append(Path(folder))
        return original(folder, *args, **kwargs)

    monkeypatch.setattr(GPT2LMHeadModel, "from_pretrained", spy)
    result = convert_checkpoint(
        hf_folder, tmp_path / "ours", "model-only", source_format="huggingface", verify=True
    )
    assert loaded == [hf_folder]  # the expected logits are transformers' own
    assert result.max_abs_diff is not None and result.max_abs_diff < 1e-4


def test_to_hf_matches_ours_and_round_trips(hf_folder: Path, tmp_path: Path) -> None:
    from transformers import GPT2LMHeadModel

    convert_checkpoint(hf_folder, tmp_path / "ours", "model-only", source_format="huggingface")
    result = convert_checkpoint(tmp_path / "ours", tmp_path / "hf", "huggingface", verify=True)
    assert result.max_abs_diff is not None and result.max_abs_diff < 1e-5
    ours = read_checkpoint(tmp_path / "ours")
    model = model_from_checkpoint(ours)
    idx = torch.randint(0, 97, (2, 32), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        assert (model(idx)[0] - hf_logits(tmp_path / "hf", idx)).abs().max() < 1e-5
    # greedy generation: the same tokens on both sides
    prompt = idx[:1, :4]
    hf_model = GPT2LMHeadModel.from_pretrained(tmp_path / "hf", dtype=torch.float32).eval()
    hf_tokens = hf_model.generate(
        prompt, max_new_tokens=20, do_sample=False, pad_token_id=0, attention_mask=None
    )[0, 4:].tolist()
    our_tokens = [t.item() for t in generate(model, prompt, 20, temperature=0)]
    assert our_tokens == hf_tokens
    # to-hf then from-hf: identical weights
    convert_checkpoint(
        tmp_path / "hf", tmp_path / "back", "model-only", source_format="huggingface"
    )
    assert_bit_identical(ours.weights(), read_checkpoint(tmp_path / "back").weights())


def test_new_model_uses_tanh_gelu_and_exports_it(unified: Path, tmp_path: Path) -> None:
    ckpt = read_checkpoint(unified)
    assert ckpt.model_config.activation == "gelu_tanh"  # new models: GPT-2's approximation
    result = convert_checkpoint(unified, tmp_path / "hf", "huggingface", verify=True)
    assert result.max_abs_diff is not None and result.max_abs_diff < 1e-5
    hf_config = json.loads((tmp_path / "hf" / "config.json").read_text())
    assert hf_config["activation_function"] == "gelu_new"


def test_bias_free_char_model_to_hf_and_back(data_root: Path, tmp_path: Path) -> None:
    from transformers import AutoTokenizer

    run(data_root, tmp_path / "nobias", max_iters=5, activation="gelu")  # bias=False
    source = read_checkpoint(tmp_path / "nobias")
    result = convert_checkpoint(tmp_path / "nobias", tmp_path / "hf", "huggingface", verify=True)
    assert result.max_abs_diff == pytest.approx(0, abs=1e-5)
    hf_config = json.loads((tmp_path / "hf" / "config.json").read_text())
    assert hf_config["activation_function"] == "gelu"  # the exact form, as in nanoGPT
    assert any("character-level" in note for note in result.notes)
    tokenizer = AutoTokenizer.from_pretrained(tmp_path / "hf")
    text = "ROMEO:\nthe night."
    ids = tokenizer(text)["input_ids"]
    from nanogpt_cli.data.tokenizer import tokenizer_from_dict

    assert ids == tokenizer_from_dict(source.tokenizer).encode(text)
    assert tokenizer.decode(ids) == text
    convert_checkpoint(
        tmp_path / "hf", tmp_path / "back", "model-only", source_format="huggingface"
    )
    back = read_checkpoint(tmp_path / "back")
    assert back.model_config.bias is False and back.model_config.activation == "gelu"
    assert back.tokenizer == source.tokenizer
    assert_bit_identical(source.weights(), back.weights())


def test_padded_vocabulary_is_cropped_on_export(data_root: Path, tmp_path: Path) -> None:
    run(data_root, tmp_path / "padded", max_iters=3, vocab_size=64)
    vocab = len(read_checkpoint_chars(data_root))
    result = convert_checkpoint(tmp_path / "padded", tmp_path / "hf", "huggingface", verify=True)
    assert any(f"to {vocab} tokens" in note for note in result.notes)
    from transformers import GPT2Config

    assert GPT2Config.from_pretrained(tmp_path / "hf").vocab_size == vocab
    assert result.max_abs_diff is not None and result.max_abs_diff < 1e-5


def test_hf_folder_that_is_not_gpt2_or_llama_is_refused(tmp_path: Path) -> None:
    (tmp_path / "bert").mkdir()
    (tmp_path / "bert" / "config.json").write_text('{"model_type": "bert"}')
    with pytest.raises(CheckpointError, match="not a Hugging Face GPT-2 or Llama folder"):
        convert_checkpoint(
            tmp_path / "bert", tmp_path / "o", "model-only", source_format="huggingface"
        )
    # A Llama config without its sizes: damaged, and the field is named.
    (tmp_path / "llama").mkdir()
    (tmp_path / "llama" / "config.json").write_text('{"model_type": "llama"}')
    with pytest.raises(CheckpointError, match="hidden_size"):
        convert_checkpoint(
            tmp_path / "llama", tmp_path / "o", "model-only", source_format="huggingface"
        )


def test_hub_id_without_network_is_a_clear_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf-home"))
    with pytest.raises(CheckpointError, match="could not be fetched from the Hugging Face hub"):
        convert_checkpoint("gpt2", tmp_path / "o", "model-only", source_format="huggingface")


# -- CLI -----------------------------------------------------------------------------------------


def test_convert_cli_and_alias(
    unified: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    def cli(*args: str) -> tuple[int, str, str]:
        try:
            main(list(args))
            code = 0
        except SystemExit as e:
            code = int(e.code or 0)
        out, err = capsys.readouterr()
        return code, out, err

    code, out, err = cli(
        "convert-checkpoint", "unified-to-separated", str(unified), str(tmp_path / "s"), "--verify"
    )
    assert code == 0, err
    assert "wrote separated checkpoint" in out and "max abs logit difference 0" in out
    code, out, _ = cli("convert", "info", str(tmp_path / "s"))
    assert code == 0 and "format: separated" in out and "iteration: 20" in out
    assert "written by: nanogpt" in out and "best val loss: " in out  # text: words
    code, out, _ = cli("convert", "info", str(tmp_path / "s"), "--json")
    info = json.loads(out)
    assert code == 0 and info["written_by"] == "nanogpt" and info["optimizer_state"] is True
    assert "best_val_loss" in info and all(key.isidentifier() for key in info)
    # every spelling of a dtype: bfloat16 as bf16
    code, out, err = cli(
        "convert", "to-model-only", str(unified), str(tmp_path / "b"), "--dtype", "bfloat16"
    )
    assert code == 0, err
    weights = read_checkpoint(tmp_path / "b").weights().values()
    assert all(t.dtype == torch.bfloat16 for t in weights)
    code, _, err = cli("convert", "unified-to-separated", str(unified), str(tmp_path / "s"))
    assert code == 1 and err.startswith("error: ") and "--force" in err and err.count("\n") == 1
    code, _, err = cli(
        "convert", "to-model-only", str(unified), str(tmp_path / "m"), "--dtype", "int8"
    )
    assert code == 2 and "--dtype" in err


def test_sample_cli_reads_a_nanogpt_checkpoint_with_meta(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    chars = "\n !:ABCab"
    path, original = nanogpt_checkpoint(tmp_path / "out", chars=chars)
    meta = tmp_path / "elsewhere.pkl"
    (tmp_path / "out" / "meta.pkl").rename(meta)
    args = ["sample", "--checkpoint", str(path), "--meta", str(meta), "--start", "AB"]
    try:
        main([*args, "--max-new-tokens", "10", "--temperature", "0", "--device", "cpu"])
    except SystemExit as e:
        assert not e.code
    out = capsys.readouterr().out
    expected = "".join(chars[i] for i in original.greedy(torch.tensor([[4, 5]]), 10))
    assert out.startswith("AB" + expected)
    assert math.isfinite(read_checkpoint(path, meta=meta).state.best_val_loss)


# -- crash safety --------------------------------------------------------------------------------

_SAVER = """
import sys
import torch
from nanogpt_cli.checkpoint import Checkpoint, TrainState, save_checkpoint
from nanogpt_cli.config import ModelConfig
from nanogpt_cli.model import GPT

out, fmt = sys.argv[1], sys.argv[2]
config = ModelConfig(n_layer=4, n_head=4, n_embd=128, block_size=64, vocab_size=65)
model = GPT(config)
optimizer = torch.optim.AdamW(model.parameters(), fused=True)
model(torch.zeros(1, 4, dtype=torch.long))[0].sum().backward()
optimizer.step()
for it in range(1, 1_000_000):
    with torch.no_grad():
        for p in model.parameters():
            p.fill_(it)
            optimizer.state[p]["exp_avg"].fill_(it)
    ckpt = Checkpoint(
        model_config=config,
        tokenizer={"kind": "char", "chars": "".join(chr(32 + i) for i in range(65))},
        state=TrainState(iter_num=it),
        _weights=model.state_dict(),
        _optimizer={"optimizer": optimizer.state_dict(), "scaler": {}},
    )
    save_checkpoint(ckpt, out, fmt)
    print(it, flush=True)
"""


@pytest.mark.parametrize("fmt", ["separated", "unified", "model-only"])
def test_killing_the_process_while_saving_always_leaves_a_loadable_checkpoint(
    tmp_path: Path, fmt: str
) -> None:
    import random
    import signal
    import subprocess
    import sys
    import time

    rng = random.Random(fmt)
    out = tmp_path / "out"
    seen = set()
    for target in rng.sample([1, 3, 5, 7, 9], 3):  # kills land in different saves
        child = subprocess.Popen(
            [sys.executable, "-c", _SAVER, str(out), fmt], stdout=subprocess.PIPE, text=True
        )
        assert child.stdout is not None
        while int(child.stdout.readline()) < target:
            pass
        time.sleep(rng.uniform(0.0, 0.05))  # a random point in one of the next saves
        child.send_signal(signal.SIGKILL)
        child.wait()
        ckpt = read_checkpoint(out)  # finishes or discards what the kill interrupted
        it = ckpt.state.iter_num
        seen.add(it)
        for name, tensor in ckpt.weights().items():
            assert bool((tensor == it).all()), f"{name} is not from iteration {it}"
        if fmt != "model-only":
            for state in ckpt.optimizer_state()["optimizer"]["state"].values():
                assert bool((state["exp_avg"] == it).all())
        assert not list(out.glob("*.tmp"))
    assert len(seen) > 1  # the kills landed at different points


def test_gpt2_bpe_model_exports_its_tokenizer_to_hf(gpt2_bpe: Path, tmp_path: Path) -> None:
    from transformers import AutoTokenizer

    from nanogpt_cli.data.tokenizer import TiktokenTokenizer

    assert TiktokenTokenizer("gpt2").encode("Hello world") == [15496, 995]
    # a nanoGPT GPT-2-vocabulary checkpoint (padded to 50304) with no meta.pkl
    torch.manual_seed(0)
    args = dict(n_layer=1, n_head=2, n_embd=16, block_size=16, bias=False, vocab_size=50304)
    model = GPT(ModelConfig(**args, activation="gelu"))
    (tmp_path / "out").mkdir()
    torch.save(
        {"model": model.state_dict(), "model_args": args, "iter_num": 0, "config": {}},
        tmp_path / "out" / "ckpt.pt",
    )
    ckpt = read_checkpoint(tmp_path / "out")
    assert ckpt.tokenizer == {"kind": "tiktoken", "name": "gpt2"}
    assert any("GPT-2's BPE" in note for note in ckpt.notes)
    result = convert_checkpoint(tmp_path / "out", tmp_path / "hf", "huggingface", verify=True)
    assert result.max_abs_diff is not None and result.max_abs_diff < 1e-5
    tokenizer = AutoTokenizer.from_pretrained(tmp_path / "hf")
    assert tokenizer("Hello world")["input_ids"] == [15496, 995]
    assert tokenizer.decode([15496, 995]) == "Hello world"
    back = convert_checkpoint(
        tmp_path / "hf", tmp_path / "back", "model-only", source_format="huggingface"
    )
    assert read_checkpoint(back.dst).tokenizer == {"kind": "tiktoken", "name": "gpt2"}
    assert read_checkpoint(back.dst).model_config.vocab_size == 50257
    sampler = Sampler.from_checkpoint(back.dst, device="cpu")
    assert len(list(sampler.stream("Hello", 3, temperature=0))) == 3


def test_a_model_read_from_a_checkpoint_is_its_weights_tied_and_complete(tmp_path: Path) -> None:
    """model_from_checkpoint skips the random initialisation: every weight is the
    checkpoint's, nothing is left unallocated, and the embedding stays tied to the head."""
    from nanogpt_cli.checkpoint import Checkpoint, save_checkpoint
    from nanogpt_cli.state import TrainState

    torch.manual_seed(0)
    source = GPT(ModelConfig(n_layer=2, n_head=2, n_embd=32, block_size=16, vocab_size=40))
    ckpt = Checkpoint(
        model_config=source.config,
        tokenizer=None,
        state=TrainState(),
        _weights={k: v.clone() for k, v in source.state_dict().items()},
    )
    save_checkpoint(ckpt, tmp_path / "run", "model-only")
    model = model_from_checkpoint(read_checkpoint(tmp_path / "run"))
    assert model.transformer.wte.weight is model.lm_head.weight
    assert not any(t.is_meta for t in [*model.parameters(), *model.buffers()])
    x = torch.randint(0, 40, (2, 16))
    torch.testing.assert_close(model(x)[0], source.eval()(x)[0], rtol=0, atol=0)
