"""Metric trackers: TensorBoard for real, Weights & Biases through a stand-in module."""

from __future__ import annotations

import sys
import types
from pathlib import Path
from typing import Any

import pytest

from nanogpt_cli.config import build_config
from nanogpt_cli.errors import ConfigError
from nanogpt_cli.metrics import read_metrics
from nanogpt_cli.train import train


def run(options: dict[str, Any], **overrides: Any) -> Any:
    return train(build_config("shakespeare-char", overrides={**options, **overrides}))


def records(out: Path, kind: str, key: str) -> dict[int, float]:
    return {r["iter"]: r[key] for r in read_metrics(out / "metrics.jsonl") if r["kind"] == kind}


def test_tensorboard_gets_the_metrics_of_metrics_jsonl(tiny_options: dict[str, Any]) -> None:
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    run(tiny_options, tracker="tensorboard")
    out = Path(tiny_options["out_dir"])
    events = EventAccumulator(str(out / "tensorboard"))
    events.Reload()
    for kind, key in (("train", "loss"), ("eval", "val_loss"), ("train", "grad_norm")):
        logged = {e.step: e.value for e in events.Scalars(f"{kind}/{key}")}
        expected = records(out, kind, key)
        assert sorted(logged) == sorted(expected)
        assert all(logged[s] == pytest.approx(expected[s], rel=1e-6) for s in expected)


class FakeWandb:
    """The part of the wandb API that nanogpt uses: init, and a run's id, define_metric,
    log and finish."""

    def __init__(self) -> None:
        self.inits: list[dict[str, Any]] = []
        self.metrics: dict[str, str | None] = {}
        self.logged: list[tuple[int, dict[str, float]]] = []
        self.exit_codes: list[int] = []

    def module(self) -> types.ModuleType:
        fake = self

        class Run:
            id = "run-abc123"

            def define_metric(self, name: str, step_metric: str | None = None) -> None:
                fake.metrics[name] = step_metric

            def log(self, values: dict[str, float]) -> None:
                fake.logged.append((int(values["iter"]), values))

            def finish(self, exit_code: int = 0) -> None:
                fake.exit_codes.append(exit_code)

        def init(**kwargs: Any) -> Run:
            fake.inits.append(kwargs)
            return Run()

        module = types.ModuleType("wandb")
        module.init = init  # type: ignore[attr-defined]
        return module


def test_wandb_run_gets_config_and_metrics_and_resumes(
    tiny_options: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    fake = FakeWandb()
    monkeypatch.setitem(sys.modules, "wandb", fake.module())
    run(tiny_options, tracker="wandb", max_iters=20, wandb_project="shakespeare")
    out = Path(tiny_options["out_dir"])
    first = fake.inits[0]
    assert first["project"] == "shakespeare" and first["name"] == out.name
    assert first["id"] is None and first["config"]["model"]["n_layer"] == 2
    assert (out / "wandb-run-id").read_text().strip() == "run-abc123"
    steps = {step for step, values in fake.logged if "eval/val_loss" in values}
    assert steps == set(records(out, "eval", "val_loss"))
    losses = {step: v["train/loss"] for step, v in fake.logged if "train/loss" in v}
    assert losses == pytest.approx(records(out, "train", "loss"))
    assert fake.exit_codes == [0]
    # the x-axis is the iteration, so a resumed run may log iterations W&B has seen
    assert fake.metrics == {"iter": None, "train/*": "iter", "eval/*": "iter"}

    run(tiny_options, tracker="wandb", resume=True, max_iters=40)
    assert fake.inits[1]["id"] == "run-abc123" and fake.inits[1]["resume"] == "allow"
    assert max(step for step, _ in fake.logged) == 40 and fake.exit_codes == [0, 0]


def test_a_run_that_fails_is_a_failed_wandb_run(
    tiny_options: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    from nanogpt_cli.errors import TrainingError

    fake = FakeWandb()
    monkeypatch.setitem(sys.modules, "wandb", fake.module())
    from nanogpt_cli.model import GPT

    forward = GPT.forward

    def diverged(self: GPT, *args: Any, **kwargs: Any) -> Any:
        logits, loss = forward(self, *args, **kwargs)
        return logits, loss * float("nan") if self.training and loss is not None else loss

    monkeypatch.setattr(GPT, "forward", diverged)
    with pytest.raises(TrainingError):
        run(tiny_options, tracker="wandb", max_iters=10, max_bad_steps=1)
    assert fake.exit_codes == [1]


@pytest.mark.parametrize("name", ["wandb", "tensorboard"])
def test_a_missing_tracker_package_says_what_to_install(
    name: str, tiny_options: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    module = "wandb" if name == "wandb" else "torch.utils.tensorboard"
    monkeypatch.setitem(sys.modules, module, None)  # import fails as if not installed
    with pytest.raises(ConfigError, match=rf"pip install 'nanogpt-cli\[{name}\]'"):
        run(tiny_options, tracker=name)
