"""``--optimizer muon``: torch.optim.Muon for the blocks' matrices, AdamW for the rest, one
optimizer to the rest of the code (schedule, non-finite steps, checkpoints, resume, DDP)."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors.torch import load_file

from nanogpt_cli.checkpoint import MODEL_FILE, OPTIMIZER_FILE, convert_checkpoint, read_checkpoint
from nanogpt_cli.checkpoint.unified import UNIFIED_FILE
from nanogpt_cli.config import ModelConfig, OptimConfig, build_config
from nanogpt_cli.errors import ConfigError
from nanogpt_cli.metrics import read_metrics
from nanogpt_cli.model import GPT
from nanogpt_cli.train import train
from nanogpt_cli.train.optim import (
    MuonAdamW,
    build_optimizer,
    learning_rate,
    optimizer_name,
    set_learning_rate,
)

MUON = {"optimizer": "muon", "muon_lr": 0.02}


def run(options: dict[str, Any], **overrides: Any) -> Any:
    return train(build_config("shakespeare-char", overrides={**options, **overrides}))


def metrics(out: Path, kind: str, key: str) -> dict[int, float]:
    return {r["iter"]: r[key] for r in read_metrics(out / "metrics.jsonl") if r["kind"] == kind}


def tiny_model(**overrides: Any) -> GPT:
    torch.manual_seed(0)
    shape = {"n_layer": 2, "n_head": 2, "n_embd": 32, "block_size": 16, "vocab_size": 65}
    return GPT(ModelConfig(**{**shape, "dropout": 0.0, **overrides}))


def tensors_of(state: dict[str, Any]) -> dict[str, torch.Tensor]:
    return {
        f"{i}.{k}": v
        for i, s in state["state"].items()
        for k, v in s.items()
        if isinstance(v, torch.Tensor)
    }


def test_muon_trains_and_saves_its_momentum(tiny_options: dict[str, Any]) -> None:
    out = Path(tiny_options["out_dir"])
    run(tiny_options, **MUON)
    evals = metrics(out, "eval", "val_loss")
    assert evals[40] < evals[0] - 0.5
    saved = torch.load(out / OPTIMIZER_FILE, weights_only=True)["optimizer"]
    assert optimizer_name(saved) == "muon"
    muon_group = saved["param_groups"][0]
    assert muon_group["momentum"] == 0.95 and muon_group["weight_decay"] == 0.0
    for i in muon_group["params"]:
        assert set(saved["state"][i]) == {"momentum_buffer"}
        assert saved["state"][i]["momentum_buffer"].abs().sum() > 0
    assert read_checkpoint(out).config["optim"]["optimizer"] == "muon"  # type: ignore[index]


@pytest.mark.parametrize("bias", [True, False])
def test_only_the_blocks_matrices_are_in_the_muon_group(bias: bool) -> None:
    model = tiny_model(bias=bias)
    optimizer = build_optimizer(model, OptimConfig(optimizer="muon"))
    assert isinstance(optimizer, MuonAdamW)
    names = {id(p): n for n, p in model.named_parameters()}
    muon = {names[id(p)] for g in optimizer.muon.param_groups for p in g["params"]}
    adamw = {names[id(p)] for g in optimizer.adamw.param_groups for p in g["params"]}
    assert muon == {
        n for n, p in model.named_parameters() if n.startswith("transformer.h.") and p.dim() == 2
    }
    assert {"transformer.h.0.attn.c_attn.weight", "transformer.h.1.mlp.c_proj.weight"} <= muon
    assert {"transformer.wte.weight", "transformer.wpe.weight", "transformer.ln_f.weight"} <= adamw
    assert "transformer.h.0.ln_1.weight" in adamw  # a gain
    assert not muon & adamw and muon | adamw == set(names.values())
    # the tied head is the embedding: in AdamW once, not in Muon
    assert model.lm_head.weight is model.transformer.wte.weight


def test_each_group_follows_the_schedule_at_its_own_rate() -> None:
    cfg = OptimConfig(optimizer="muon", learning_rate=1e-3, min_lr=1e-4, muon_lr=0.05)
    cfg.warmup_iters, cfg.lr_decay_iters = 10, 100
    optimizer = build_optimizer(tiny_model(), cfg)
    for it in (0, 5, 10, 50, 100, 200):
        lr = learning_rate(it, cfg)
        set_learning_rate(optimizer, lr, cfg)
        muon_group, *adamw_groups = optimizer.param_groups
        assert muon_group["lr"] == pytest.approx(lr * 50)
        assert all(g["lr"] == lr for g in adamw_groups)
    assert optimizer.param_groups[0]["lr"] == pytest.approx(cfg.min_lr * 50)


def test_a_non_finite_step_changes_nothing(monkeypatch: pytest.MonkeyPatch) -> None:
    from nanogpt_cli.train.step import TrainStep

    model = tiny_model()
    optimizer = build_optimizer(model, OptimConfig(optimizer="muon"))
    scaler = torch.amp.GradScaler("cpu", enabled=False)
    step = TrainStep(
        model,
        optimizer,
        scaler,
        grad_accum=1,
        grad_clip=1.0,
        device=torch.device("cpu"),
        dtype=torch.float32,
    )
    x = torch.randint(0, 65, (4, 16))
    step(x, x, lambda: (x, x))  # the momentum buffers exist from here on
    weights = copy.deepcopy(model.state_dict())
    state = copy.deepcopy(optimizer.state_dict())
    forward = GPT.forward

    def nan_loss(self: GPT, *args: Any, **kwargs: Any) -> Any:
        logits, loss = forward(self, *args, **kwargs)
        return logits, loss * float("nan")

    monkeypatch.setattr(GPT, "forward", nan_loss)
    step(x, x, lambda: (x, x))
    assert step.read().bad == [False, True]
    assert all(torch.equal(weights[k], v) for k, v in model.state_dict().items())
    after = optimizer.state_dict()
    assert after["param_groups"] == state["param_groups"]
    before_t, after_t = tensors_of(state), tensors_of(after)
    assert before_t.keys() == after_t.keys()
    assert all(torch.equal(before_t[k], after_t[k]) for k in before_t)


@pytest.mark.parametrize("save_format", ["separated", "unified"])
def test_resume_with_muon_continues_exactly_where_it_stopped(
    tiny_options: dict[str, Any], tmp_path: Path, save_format: str
) -> None:
    # 40 steps straight, against 20 steps then resumed to 40: the same losses, loss by loss,
    # and the same final weights, to the last bit (CPU, fixed seed).
    full = dict(tiny_options, **MUON, log_interval=1, save_format=save_format)
    full["out_dir"] = str(tmp_path / "full")
    run(full)
    part = dict(full, out_dir=str(tmp_path / "part"))
    run(part, max_iters=20, lr_decay_iters=40)
    resumed = run(part, resume=True)
    assert resumed.iter_num == 40
    full_losses = metrics(tmp_path / "full", "train", "loss")
    assert metrics(tmp_path / "part", "train", "loss") == full_losses
    if save_format == "separated":
        a = load_file(str(tmp_path / "full" / MODEL_FILE))
        b = load_file(str(tmp_path / "part" / MODEL_FILE))
    else:
        a = torch.load(tmp_path / "full" / UNIFIED_FILE, weights_only=True)["model"]
        b = torch.load(tmp_path / "part" / UNIFIED_FILE, weights_only=True)["model"]
    assert all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.parametrize(("saved", "wanted"), [("adamw", "muon"), ("muon", "adamw")])
def test_resuming_with_another_optimizer_is_one_clear_error(
    tiny_options: dict[str, Any], saved: str, wanted: str
) -> None:
    run(tiny_options, optimizer=saved, max_iters=5)
    with pytest.raises(ConfigError) as e:
        run(tiny_options, optimizer=wanted, max_iters=10, resume=True)
    message = str(e.value)
    assert "\n" not in message
    assert f"cannot resume with --optimizer {wanted}" in message
    assert f"trained with {saved}; resume with --optimizer {saved}" in message
    assert read_checkpoint(tiny_options["out_dir"]).state.iter_num == 5  # nothing written


def test_the_cli_reports_another_optimizer_in_one_line(tiny_options: dict[str, Any]) -> None:
    import subprocess
    import sys

    from conftest import as_flags

    run(tiny_options, max_iters=5)
    options = dict(tiny_options, optimizer="muon", max_iters=10)
    cmd = [sys.executable, "-m", "nanogpt_cli", "train", *as_flags(options), "--resume"]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert done.returncode == 2, done.stderr
    last = done.stderr.strip().splitlines()
    assert last[-1].startswith("error: cannot resume with --optimizer muon")
    assert "Traceback" not in done.stderr


def test_conversion_keeps_the_muon_state(tiny_options: dict[str, Any], tmp_path: Path) -> None:
    # separated -> unified -> separated keeps every tensor and hyperparameter, and the
    # converted ckpt.pt resumes to the uninterrupted run's losses.
    full = dict(tiny_options, **MUON, log_interval=1, out_dir=str(tmp_path / "full"))
    run(full)
    part = tmp_path / "part"
    run(full, out_dir=str(part), max_iters=20, lr_decay_iters=40)
    convert_checkpoint(part, tmp_path / "uni", "unified")
    convert_checkpoint(tmp_path / "uni", tmp_path / "back", "separated")
    before = torch.load(part / OPTIMIZER_FILE, weights_only=True)["optimizer"]
    unified = torch.load(tmp_path / "uni" / UNIFIED_FILE, weights_only=True)["optimizer"]
    after = torch.load(tmp_path / "back" / OPTIMIZER_FILE, weights_only=True)["optimizer"]
    for state in (unified, after):
        assert state["param_groups"] == before["param_groups"]
        a, b = tensors_of(before), tensors_of(state)
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    (tmp_path / "uni" / "metrics.jsonl").write_bytes((part / "metrics.jsonl").read_bytes())
    run(full, out_dir=str(tmp_path / "uni"), resume=True)
    resumed = metrics(tmp_path / "uni", "train", "loss")
    assert resumed == metrics(tmp_path / "full", "train", "loss")


def test_muon_options_are_checked(tiny_options: dict[str, Any]) -> None:
    with pytest.raises(ConfigError, match="--muon-lr must be a finite number above 0"):
        build_config("shakespeare-char", overrides={**tiny_options, "muon_lr": 0.0})
    with pytest.raises(ConfigError, match=r"--muon-momentum must be a finite number in \[0, 1\)"):
        build_config("shakespeare-char", overrides={**tiny_options, "muon_momentum": 1.0})
    with pytest.raises(ConfigError, match="--optimizer muon does not run with --strategy fsdp"):
        build_config("shakespeare-char", overrides={**tiny_options, **MUON, "strategy": "fsdp"})
    with pytest.raises(ConfigError, match="expected one of adamw, muon"):
        build_config("shakespeare-char", overrides={**tiny_options, "optimizer": "sgd"})


def test_a_torch_without_muon_is_one_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delattr(torch.optim, "Muon")
    with pytest.raises(ConfigError, match=r"--optimizer muon needs torch\.optim\.Muon"):
        build_optimizer(tiny_model(), OptimConfig(optimizer="muon"))


def test_two_ddp_processes_equal_one_with_muon(
    tiny_options: dict[str, Any], tmp_path: Path
) -> None:
    from test_distributed import RUN

    options = {**RUN, **MUON, "data_dir": tiny_options["data_dir"], "dist_timeout": 60}
    one, ddp = tmp_path / "one", tmp_path / "ddp"
    run(options, out_dir=str(one))
    run(options, out_dir=str(ddp), nproc_per_node=2)
    # torch.optim.Muon orthogonalises in bfloat16: the last bits by which DDP's averaged
    # gradient differs from one process's sum (another order of additions) can round to a
    # neighbouring bfloat16, so the runs agree to bfloat16's precision, not float32's
    # (AdamW's agree within 1e-5: test_distributed). Measured here: losses within 3e-4,
    # weights within 6e-3 after 20 steps.
    la, lb = metrics(one, "train", "loss"), metrics(ddp, "train", "loss")
    assert la.keys() == lb.keys() and len(la) >= 4
    assert max(abs(la[k] - lb[k]) for k in la) < 2e-3
    va, vb = metrics(one, "eval", "val_loss"), metrics(ddp, "eval", "val_loss")
    assert va.keys() == vb.keys() and max(abs(va[k] - vb[k]) for k in va) < 2e-3
    wa, wb = load_file(str(one / MODEL_FILE)), load_file(str(ddp / MODEL_FILE))
    assert max((wa[k] - wb[k]).abs().max().item() for k in wa) < 3e-2
    saved = torch.load(ddp / OPTIMIZER_FILE, weights_only=True)["optimizer"]
    assert optimizer_name(saved) == "muon"


def test_the_run_estimate_counts_muons_update_without_changing_the_run(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """``update_seconds`` times one scratch matrix per shape and counts each matrix of that
    shape: on a clock that advances one second per reading, every Muon matrix adds one
    second; the model and the optimizer's state are untouched; AdamW adds none."""
    import time

    from nanogpt_cli.train.optim import update_seconds

    model = tiny_model()
    optimizer = build_optimizer(model, OptimConfig(**MUON))
    for p in model.parameters():
        p.grad = torch.ones_like(p)
    optimizer.step()
    before = copy.deepcopy((model.state_dict(), optimizer.state_dict()))
    readings = iter(range(1000))
    monkeypatch.setattr(time, "perf_counter", lambda: float(next(readings)))
    matrices = len(optimizer.muon.param_groups[0]["params"])
    assert update_seconds(optimizer, lambda: None) == float(matrices)
    assert update_seconds(build_optimizer(model, OptimConfig()), lambda: None) == 0.0
    after = (model.state_dict(), optimizer.state_dict())
    for name, tensor in before[0].items():
        assert torch.equal(after[0][name], tensor), name
    for i, state in before[1]["state"].items():
        for key, value in state.items():
            assert torch.equal(torch.as_tensor(after[1]["state"][i][key]), torch.as_tensor(value))
