"""The architecture options of issue 24 (RoPE, RMSNorm, QK-norm, ReLU², SwiGLU, untied
embeddings, logit soft-capping, zero-initialised projections): GPT-2 unchanged with all of
them off, each doing what it says, sampling with the KV cache, checkpoints and exports."""

from __future__ import annotations

import json
import math
import shutil
from collections.abc import Callable
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

import pytest
import torch
from conftest import TINY, make_text
from model_trace import TRACE_FILE, loss_trace, machine
from torch.nn import functional as F

from nanogpt_cli.checkpoint import HF, read_checkpoint
from nanogpt_cli.checkpoint.convert import convert_checkpoint, model_from_checkpoint
from nanogpt_cli.cli.app import main
from nanogpt_cli.config import ModelConfig, build_config
from nanogpt_cli.data.prepare import prepare_shakespeare_char
from nanogpt_cli.errors import CheckpointError, ConfigError
from nanogpt_cli.metrics import read_metrics
from nanogpt_cli.model import GPT, apply_rotary, mlp_hidden, rotary
from nanogpt_cli.sample import KVCache, decode_step, generate
from nanogpt_cli.train import train

OFF: dict[str, Any] = {
    "pos_embedding": "learned",
    "rope_base": 10000.0,
    "norm": "layernorm",
    "norm_gain": True,
    "qk_norm": False,
    "activation": "gelu_tanh",
    "tie_embeddings": True,
    "logit_softcap": 0.0,
    "zero_init_proj": False,
}
ALL_ON: dict[str, Any] = {
    "pos_embedding": "rope",
    "norm": "rmsnorm",
    "qk_norm": True,
    "activation": "relu2",
    "tie_embeddings": False,
    "logit_softcap": 15.0,
    "zero_init_proj": True,
}
LLAMA = {
    "pos_embedding": "rope",
    "norm": "rmsnorm",
    "activation": "swiglu",
    "tie_embeddings": False,
}
OPTIONS: dict[str, dict[str, Any]] = {
    "rope": {"pos_embedding": "rope", "rope_base": 500.0},
    "rmsnorm": {"norm": "rmsnorm"},
    "rmsnorm-no-gain": {"norm": "rmsnorm", "norm_gain": False},
    "layernorm-no-gain-bias": {"norm_gain": False, "bias": True},
    "qk-norm": {"qk_norm": True},
    "relu2": {"activation": "relu2"},
    "swiglu": {"activation": "swiglu"},
    "untied": {"tie_embeddings": False},
    "softcap": {"logit_softcap": 2.0},
    "zero-init-proj": {"zero_init_proj": True},
    "all": {**ALL_ON, "activation": "swiglu", "bias": True},
    # What a Hugging Face Llama computes (to-hf exports it as one), and two near misses.
    "llama": {**LLAMA, "rope_base": 500.0},
    "llama-no-gain-bias": {**LLAMA, "norm_gain": False, "bias": True},
    "rope-rmsnorm-relu2": {**LLAMA, "activation": "relu2"},
    "llama-qk-norm": {**LLAMA, "qk_norm": True},
}


def tiny(**options: Any) -> GPT:
    torch.manual_seed(0)
    cfg = ModelConfig(n_layer=2, n_head=2, n_embd=32, block_size=16, vocab_size=50, **options)
    return GPT(cfg).eval()


def randomised(model: GPT) -> GPT:
    """``model`` with every weight random, zero-initialised projections included."""
    torch.manual_seed(1)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn_like(p) * 0.2 + (1.0 if p.dim() == 1 else 0.0))
    return model


@pytest.fixture(scope="module")
def data_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("options-data")
    corpus = root / "corpus.txt"
    corpus.write_text(make_text(), encoding="utf-8")
    prepare_shakespeare_char(source=str(corpus), data_dir=root / "datasets")
    return root / "datasets"


def run(data_root: Path, out: Path, **overrides: Any) -> Path:
    options = {**TINY, "data_dir": str(data_root), "out_dir": str(out), **overrides}
    train(build_config("shakespeare-char", overrides=options))
    return out


@pytest.fixture(scope="module")
def trained(
    data_root: Path, tmp_path_factory: pytest.TempPathFactory
) -> Callable[[str, Path], Path]:
    """A copy in a test's folder of a 2-step run with ``OPTIONS[name]`` (or all off: "off"),
    each trained once in this module."""
    runs: dict[str, Path] = {}

    def get(name: str, into: Path) -> Path:
        if name not in runs:
            out = tmp_path_factory.mktemp(f"run-{name}") / "out"
            short = {"max_iters": 2, "eval_interval": 2, "eval_iters": 1}
            runs[name] = run(data_root, out, **short, **OPTIONS.get(name, {}))
        return Path(shutil.copytree(runs[name], into))

    return get


# -- every option off: today's GPT-2, bit for bit ----------------------------------------------


def test_options_off_reproduce_the_loss_trace_stored_before_them(
    data_root: Path, tmp_path: Path
) -> None:
    """A 20-step run with every option explicitly off gives the losses stored before the
    options existed (tests/model_trace.py wrote them). Bit for bit on the machine and torch
    that wrote the trace; elsewhere within rtol 1e-6, because float32 sums on a CPU depend on
    its vector width and its BLAS/oneDNN kernels (an AVX2 and an AVX-512 machine may differ
    in the last bits), which no change of ours could explain or avoid."""
    stored = json.loads(TRACE_FILE.read_text())
    expected = [float.fromhex(x) for x in stored["losses"]]
    got = loss_trace(data_root, tmp_path / "off", **OFF)
    assert len(got) == len(expected) == 21
    if stored["machine"] == machine():
        assert [x.hex() for x in got] == stored["losses"]
    else:
        assert got == pytest.approx(expected, rel=1e-6)
    # and the defaults are those options: the same run without naming them
    assert loss_trace(data_root, tmp_path / "default") == got


def test_default_model_config_is_gpt2() -> None:
    cfg = ModelConfig()
    assert {name: getattr(cfg, name) for name in OFF} == OFF
    assert cfg.non_gpt2_options() == []
    model = tiny()
    assert model.lm_head.weight is model.transformer.wte.weight
    assert isinstance(model.transformer.ln_f, torch.nn.LayerNorm)
    assert "transformer.wpe.weight" in model.state_dict()


# -- each option does what it says --------------------------------------------------------------


def test_rope_scores_depend_only_on_relative_position() -> None:
    torch.manual_seed(0)
    hs, T = 16, 6
    q, k = torch.randn(1, 2, T, hs), torch.randn(1, 2, T, hs)

    def scores(start: int) -> torch.Tensor:
        cos, sin = rotary(torch.arange(start, start + T), hs, 10000.0)
        return apply_rotary(q, cos, sin) @ apply_rotary(k, cos, sin).transpose(-2, -1)

    torch.testing.assert_close(scores(0), scores(37), rtol=1e-4, atol=1e-4)
    assert not torch.allclose(scores(0), q @ k.transpose(-2, -1), atol=1e-3)  # it does turn
    # a rotation keeps lengths
    cos, sin = rotary(torch.arange(T), hs, 10000.0)
    torch.testing.assert_close(apply_rotary(q, cos, sin).norm(dim=-1), q.norm(dim=-1))


def test_rope_model_has_no_position_table_and_shifts_freely() -> None:
    """With RoPE a sequence gives the same logits wherever it starts; with GPT-2's learned
    table it does not."""
    idx = torch.randint(0, 50, (2, 8))
    rope = randomised(tiny(pos_embedding="rope"))
    assert "wpe" not in rope.transformer
    with torch.no_grad():
        shifted, _ = rope(idx, pos=torch.arange(5, 13))
        torch.testing.assert_close(shifted, rope(idx)[0], rtol=1e-4, atol=1e-4)
        learned = randomised(tiny())
        assert not torch.allclose(learned(idx, pos=torch.arange(5, 13))[0], learned(idx)[0])
    assert rope.num_params(non_embedding=False) == tiny().num_params(non_embedding=False) - 16 * 32


def test_rmsnorm_is_torchs_and_gain_is_optional() -> None:
    model = randomised(tiny(norm="rmsnorm"))
    ln = model.transformer.ln_f
    assert isinstance(ln, torch.nn.RMSNorm)
    x = torch.randn(3, 5, 32) * 4 + 1
    expected = x / torch.sqrt(x.pow(2).mean(-1, keepdim=True) + 1e-5) * ln.weight
    torch.testing.assert_close(ln(x), expected)
    torch.testing.assert_close(ln(x), F.rms_norm(x, (32,), ln.weight, eps=1e-5))
    bare = tiny(norm="rmsnorm", norm_gain=False)
    assert not any(".ln_" in n for n, _ in bare.named_parameters())
    assert not any("ln_" in n for n, _ in tiny(norm_gain=False).named_parameters())


def test_qk_norm_makes_attention_blind_to_the_scale_of_queries_and_keys() -> None:
    """Normalised queries and keys: scaling their projection changes nothing."""
    idx = torch.randint(0, 50, (2, 10))
    for qk_norm in (True, False):
        model = randomised(tiny(qk_norm=qk_norm))
        with torch.no_grad():
            before, _ = model(idx)
            for block in model.transformer.h:
                block.attn.c_attn.weight[: 2 * 32] *= 7.0  # the q and k rows
            after, _ = model(idx)
        assert torch.allclose(before, after, rtol=1e-4, atol=1e-4) == qk_norm


@pytest.mark.parametrize("activation", ["relu2", "swiglu"])
def test_mlp_activation_computes_what_it_says(activation: str) -> None:
    mlp = randomised(tiny(activation=activation)).transformer.h[0].mlp
    x = torch.randn(2, 5, 32)
    with torch.no_grad():
        h = x @ mlp.c_fc.weight.T
        if activation == "relu2":
            expected = (torch.clamp(h, min=0) ** 2) @ mlp.c_proj.weight.T
        else:
            gate, value = h[..., :128], h[..., 128:]
            expected = (gate * torch.sigmoid(gate) * value) @ mlp.c_proj.weight.T
        torch.testing.assert_close(mlp(x), expected, rtol=1e-4, atol=1e-4)
    assert not hasattr(mlp, "gelu")


def test_swiglu_hidden_width_rule() -> None:
    """8/3 x n_embd rounded up to a multiple of 64: GPT-2 124M's 768 gives 2048, so the
    MLP keeps its parameters (3 x 768 x 2048 = 2 x 768 x 3072)."""
    for n_embd, hidden in [(32, 128), (96, 256), (768, 2048), (1600, 4288)]:
        assert mlp_hidden(ModelConfig(n_embd=n_embd, activation="swiglu")) == hidden
    assert mlp_hidden(ModelConfig(n_embd=768)) == 3072
    c_fc = tiny(activation="swiglu").transformer.h[0].mlp.c_fc
    assert tuple(c_fc.weight.shape) == (2 * 128, 32)


def test_logit_softcap_bounds_the_logits_and_the_loss_uses_them() -> None:
    model = randomised(tiny(logit_softcap=2.0))
    with torch.no_grad():
        model.lm_head.weight.mul_(50.0)
        idx, targets = torch.randint(0, 50, (2, 10)), torch.randint(0, 50, (2, 10))
        logits, loss = model(idx, targets)
        _, loss_alone = model(idx, targets, return_logits=False)
        uncapped, _ = randomised(tiny())(idx)
    assert logits.abs().max().item() <= 2.0
    assert logits.abs().max().item() > 1.9  # reached, so it did cap
    assert loss_alone == loss
    assert loss == F.cross_entropy(logits.view(-1, 50), targets.view(-1))
    assert uncapped.abs().max().item() > 2.0


def test_tie_embeddings_shares_storage_and_untied_does_not() -> None:
    tied, untied = tiny(), tiny(tie_embeddings=False)
    assert tied.lm_head.weight.data_ptr() == tied.transformer.wte.weight.data_ptr()
    assert untied.lm_head.weight.data_ptr() != untied.transformer.wte.weight.data_ptr()
    assert len(list(untied.parameters())) == len(list(tied.parameters())) + 1
    with torch.no_grad():
        untied.lm_head.weight.zero_()
    assert untied.transformer.wte.weight.abs().sum() > 0


def test_zero_init_proj_zeroes_the_output_projections_only() -> None:
    model = tiny(zero_init_proj=True)
    for name, p in model.named_parameters():
        if name.endswith("c_proj.weight"):
            assert p.abs().max() == 0, name
        elif p.dim() == 2:
            assert p.abs().max() > 0, name
    # every block starts as the identity: the logits are the embedding's through ln_f
    idx = torch.randint(0, 50, (1, 6))
    x = model.transformer.wte(idx) + model.transformer.wpe(torch.arange(6))
    with torch.no_grad():
        torch.testing.assert_close(model(idx)[0], model.lm_head(model.transformer.ln_f(x)))


def test_flop_count_follows_the_options() -> None:
    def flops(**options: Any) -> float:
        cfg = ModelConfig(n_layer=2, n_head=4, n_embd=96, block_size=64, vocab_size=100)
        return GPT(replace(cfg, **options)).flops_per_token()

    base = flops()
    # the same matmuls: untied (the head counts, the lookup does not), ReLU², RoPE (the
    # position table was never counted), norms, soft-capping
    for options in ({"tie_embeddings": False}, {"activation": "relu2"}, OPTIONS["rope"]):
        assert flops(**options) == base, options
    assert flops(norm="rmsnorm", qk_norm=True, logit_softcap=30.0) == base
    assert flops(activation="swiglu") == base  # 3 x 96 x 256 == 2 x 96 x 384
    wider = flops(activation="swiglu", n_embd=64, n_head=4)  # hidden 192 > 8/3 x 64
    assert wider > flops(n_embd=64, n_head=4)


# -- sampling with the KV cache -----------------------------------------------------------------


@pytest.mark.parametrize("name", list(OPTIONS))
def test_kv_cache_equals_full_recomputation(name: str) -> None:
    model = randomised(tiny(**OPTIONS[name]))
    idx = torch.randint(0, 50, (2, 12))
    with torch.inference_mode():
        full, _ = model(idx)
        cache = KVCache.for_model(model, batch_size=2)
        steps = [cache.append(model, idx[:, :5]), cache.append(model, idx[:, 5:8])]
        steps += [cache.append(model, idx[:, t : t + 1]) for t in range(8, 12)]
        torch.testing.assert_close(torch.cat(steps, dim=1), full, rtol=1e-4, atol=1e-4)
        # the fixed-shape step of compiled decoding, too
        fixed = KVCache.for_model(model, batch_size=2)
        fixed.append(model, idx[:, :8])
        for t in range(8, 12):
            logits = decode_step(model, idx[:, t : t + 1], torch.tensor([t]), fixed.k, fixed.v)
            fixed.length += 1
            torch.testing.assert_close(logits, full[:, t], rtol=1e-4, atol=1e-4)
    prompt = torch.randint(0, 50, (2, 4))
    greedy = [
        torch.stack(list(generate(model, prompt, 12, temperature=0, use_cache=use)), dim=1)
        for use in (True, False)
    ]
    assert torch.equal(greedy[0], greedy[1])


# -- training, checkpoints, exports -------------------------------------------------------------


def test_a_run_with_every_option_on_trains(data_root: Path, tmp_path: Path) -> None:
    out = run(data_root, tmp_path / "out", **ALL_ON)
    evals = {
        r["iter"]: r["val_loss"] for r in read_metrics(out / "metrics.jsonl") if r["kind"] == "eval"
    }
    assert evals[40] < evals[0] - 0.5
    assert read_checkpoint(out).model_config == replace(
        ModelConfig(**{k: TINY[k] for k in ("n_layer", "n_head", "n_embd", "block_size")}),
        vocab_size=read_checkpoint(out).model_config.vocab_size,
        **ALL_ON,
    )


@pytest.mark.parametrize("name", list(OPTIONS))
def test_checkpoint_formats_record_and_reload_the_options(
    name: str, trained: Callable[[str, Path], Path], tmp_path: Path
) -> None:
    """Trained into the separated format, converted to unified and model-only: each reads
    back the same options and gives the same logits (the conversion's own --verify)."""
    out = trained(name, tmp_path / "separated")
    source = read_checkpoint(out)
    for key, value in OPTIONS[name].items():
        assert getattr(source.model_config, key) == value
    idx = torch.randint(0, source.model_config.vocab_size or 1, (1, 8))
    with torch.no_grad():
        expected, _ = model_from_checkpoint(source)(idx)
    for fmt in ("unified", "model-only"):
        result = convert_checkpoint(out, tmp_path / fmt, fmt, verify=True)
        # a GPT-2-shaped unified file is checked as nanoGPT reads it, under its exact GELU:
        # the file's own difference is then file_diff
        diff = result.file_diff if result.file_diff is not None else result.max_abs_diff
        assert diff == 0.0, fmt
        back = read_checkpoint(result.dst)
        assert back.model_config == source.model_config, fmt
        model = model_from_checkpoint(back)
        with torch.no_grad():
            assert torch.equal(model(idx)[0], expected), fmt
        tied = model.lm_head.weight is model.transformer.wte.weight
        assert tied == source.model_config.tie_embeddings


def test_a_checkpoint_from_before_the_options_loads_as_gpt2(
    trained: Callable[[str, Path], Path], tmp_path: Path
) -> None:
    out = trained("off", tmp_path / "old")
    meta_path = out / "checkpoint.json"
    meta = json.loads(meta_path.read_text())
    for key in OFF:
        if key != "activation":
            del meta["model"][key]
    meta_path.write_text(json.dumps(meta))
    cfg = read_checkpoint(out).model_config
    assert asdict(cfg) == {**asdict(cfg), **OFF}
    model = model_from_checkpoint(read_checkpoint(out))
    assert model.lm_head.weight is model.transformer.wte.weight


def test_a_tied_model_refuses_an_untied_head(
    trained: Callable[[str, Path], Path], tmp_path: Path
) -> None:
    out = trained("untied", tmp_path / "untied")
    meta_path = out / "checkpoint.json"
    meta = json.loads(meta_path.read_text())
    meta["model"]["tie_embeddings"] = True
    meta_path.write_text(json.dumps(meta))
    with pytest.raises(CheckpointError, match="not tied to the token embedding"):
        model_from_checkpoint(read_checkpoint(out))


@pytest.mark.parametrize(
    ("name", "named"),
    [
        ("rope", "--pos-embedding rope"),
        ("rmsnorm", "--norm rmsnorm"),
        ("layernorm-no-gain-bias", "--no-norm-gain"),
        ("qk-norm", "--qk-norm"),
        ("relu2", "--activation relu2"),
        ("swiglu", "--activation swiglu"),
        ("softcap", "--logit-softcap 2.0"),
        ("rope-rmsnorm-relu2", "--activation relu2 keeps it from being a Llama"),
        ("llama-qk-norm", "--qk-norm keeps it from being a Llama"),
    ],
)
def test_to_hf_refuses_an_option_gpt2_lacks_in_one_line(
    name: str,
    named: str,
    trained: Callable[[str, Path], Path],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    out = trained(name, tmp_path / "out")
    capsys.readouterr()
    with pytest.raises(SystemExit) as exit_info:
        main(["convert-checkpoint", "to-hf", str(out), str(tmp_path / "hf")])
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith("error:")]
    assert exit_info.value.code == 1
    assert len(errors) == 1 and lines[-1] == errors[0] and named in errors[0], err
    assert "Traceback" not in err
    assert not (tmp_path / "hf").exists()


def test_zero_init_proj_still_exports_to_hf(
    trained: Callable[[str, Path], Path], tmp_path: Path
) -> None:
    """Only the initialisation differs: a GPT-2 all the same."""
    pytest.importorskip("transformers")
    out = trained("zero-init-proj", tmp_path / "out")
    result = convert_checkpoint(out, tmp_path / "hf", HF, verify=True)
    assert result.max_abs_diff is not None and result.max_abs_diff < 1e-4


def test_bad_option_values_are_config_errors(data_root: Path, tmp_path: Path) -> None:
    for bad, message in [
        ({"pos_embedding": "alibi"}, "--pos-embedding"),
        ({"norm": "batchnorm"}, "--norm"),
        ({"activation": "tanh"}, "--activation"),
        ({"logit_softcap": -1.0}, "--logit-softcap"),
        ({"rope_base": 0.0}, "--rope-base"),
        ({"pos_embedding": "rope", "n_embd": 30, "n_head": 2}, "even head size"),
    ]:
        with pytest.raises(ConfigError, match=message):
            run(data_root, tmp_path / "bad", **bad)
    assert math.isfinite(ModelConfig().rope_base)


@pytest.mark.parametrize("name", ["untied", "llama", "llama-no-gain-bias"])
def test_to_hf_exports_what_transformers_computes_and_reads_it_back(
    name: str,
    trained: Callable[[str, Path], Path],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """An untied GPT-2 exports as GPT2LMHeadModel without tied embeddings; a RoPE + RMSNorm
    + SwiGLU model as LlamaForCausalLM: transformers' logits equal ours (--verify), and
    from-hf gives back the same model, options and weights."""
    transformers = pytest.importorskip("transformers")
    out = trained(name, tmp_path / "out")
    capsys.readouterr()
    with pytest.raises(SystemExit) as done:
        main(["convert-checkpoint", "to-hf", str(out), str(tmp_path / "hf"), "--verify"])
    report = capsys.readouterr().out
    assert done.value.code == 0, report
    difference = float(report.split("max abs logit difference ")[1].split()[0])
    assert difference < 1e-4, report
    config = json.loads((tmp_path / "hf" / "config.json").read_text())
    llama = name.startswith("llama")
    assert config["model_type"] == ("llama" if llama else "gpt2")
    assert config["tie_word_embeddings"] is False
    model = transformers.AutoModelForCausalLM.from_pretrained(tmp_path / "hf")
    assert type(model).__name__ == ("LlamaForCausalLM" if llama else "GPT2LMHeadModel")
    assert model.lm_head.weight.data_ptr() != model.get_input_embeddings().weight.data_ptr()

    source = read_checkpoint(out)
    back = read_checkpoint(tmp_path / "hf")
    assert asdict(back.model_config) == {**asdict(source.model_config), "dropout": 0.0}
    theirs, ours = back.weights(), source.weights()
    assert set(theirs) == set(ours)
    for key, tensor in ours.items():
        assert torch.equal(theirs[key], tensor), key
    from nanogpt_cli.sample import Sampler

    sampler = Sampler.from_checkpoint(tmp_path / "hf", device="cpu")
    prompt = sampler.tokenizer.decode([1, 2])
    tokens = [int(t[0]) for t in sampler.stream(prompt, 5, temperature=0)]
    assert len(tokens) == 5


def test_from_hf_refuses_a_llama_nanogpt_does_not_compute(
    trained: Callable[[str, Path], Path], tmp_path: Path
) -> None:
    """Grouped-query attention, another SwiGLU width, another norm epsilon: one line naming
    each, nothing half-read."""
    pytest.importorskip("transformers")
    out = trained("llama", tmp_path / "out")
    convert_checkpoint(out, tmp_path / "hf", HF)
    config_path = tmp_path / "hf" / "config.json"
    config = json.loads(config_path.read_text())
    config.update(num_key_value_heads=1, intermediate_size=100, rms_norm_eps=1e-6)
    config_path.write_text(json.dumps(config))
    with pytest.raises(CheckpointError) as info:
        read_checkpoint(tmp_path / "hf")
    message = str(info.value)
    assert "\n" not in message
    for named in ("num_key_value_heads 1", "intermediate_size 100", "rms_norm_eps"):
        assert named in message
