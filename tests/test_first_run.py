"""A run never replaces another by accident, says what it will cost before it starts, and
says what it made when it ends."""

from __future__ import annotations

import hashlib
import re
from pathlib import Path
from typing import Any

import pytest
from conftest import as_flags

from nanogpt_cli.checkpoint import read_checkpoint
from nanogpt_cli.cli.app import main
from nanogpt_cli.config import build_config
from nanogpt_cli.errors import ConfigError
from nanogpt_cli.state import TrainResult
from nanogpt_cli.train import train
from nanogpt_cli.train.estimate import estimate_run, evaluations, summary
from nanogpt_cli.train.outdir import PREVIOUS_RUN_DIR
from nanogpt_cli.train.step import StepTimes, TrainStep


def run(options: dict[str, Any], **overrides: Any) -> TrainResult:
    return train(build_config("shakespeare-char", overrides={**options, **overrides}))


def fingerprints(folder: Path) -> dict[str, str]:
    """sha256 of every file under ``folder``, by relative path."""
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


def run_main(args: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as exit_info:
        main(args)
    out, err = capsys.readouterr()
    return int(exit_info.value.code or 0), out, err


# -- no accidental overwrite -------------------------------------------------------------


def test_a_fresh_run_into_a_trained_out_dir_stops_and_touches_nothing(
    tiny_options: dict[str, Any], capsys: pytest.CaptureFixture[str]
) -> None:
    run(tiny_options, max_iters=20)
    out = Path(tiny_options["out_dir"])
    before = fingerprints(out)
    assert {"model.safetensors", "metrics.jsonl", "config.toml"} <= set(before)
    capsys.readouterr()
    code, _, err = run_main(["train", *as_flags(tiny_options)], capsys)
    assert code != 0
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert "already holds a run (iteration 20, best val loss" in lines[0]
    assert f"nanogpt train --out-dir {out} --resume" in lines[0] and "--overwrite" in lines[0]
    assert fingerprints(out) == before  # sha256 before = after, metrics and config too


def test_overwrite_deletes_the_old_run_only_once_the_new_one_saves(
    tiny_options: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    out = Path(tiny_options["out_dir"])
    run(tiny_options, max_iters=20)
    old = fingerprints(out)
    seen: dict[str, Any] = {}
    original_step = TrainStep.__call__

    def step(self: TrainStep, *args: Any) -> Any:
        # While the new run has not saved, the old run waits in previous-run/.
        seen.setdefault("aside", fingerprints(out / PREVIOUS_RUN_DIR))
        return original_step(self, *args)

    monkeypatch.setattr(TrainStep, "__call__", step)
    result = run(tiny_options, max_iters=10, eval_interval=10, overwrite=True)
    assert seen["aside"] == old
    assert not (out / PREVIOUS_RUN_DIR).exists()
    assert result.saved and read_checkpoint(out).state.iter_num == 10
    records = (out / "metrics.jsonl").read_text()
    assert '"iter": 20' not in records and '"iter": 10' in records


def test_an_overwrite_run_that_saves_nothing_puts_the_old_run_back(
    tiny_options: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    out = Path(tiny_options["out_dir"])
    run(tiny_options, max_iters=20)
    old = fingerprints(out)

    def fail(self: TrainStep, *args: Any) -> Any:
        raise RuntimeError("out of memory")

    monkeypatch.setattr(TrainStep, "__call__", fail)
    with pytest.raises(RuntimeError):
        run(tiny_options, max_iters=10, overwrite=True)
    assert fingerprints(out) == old
    assert not (out / PREVIOUS_RUN_DIR).exists()


def kill_during_overwrite(out: Path) -> Path:
    """``out`` as an --overwrite run killed before its first save leaves it: the old run in
    previous-run/, the killed run's metrics and config in ``out``."""
    aside = out / PREVIOUS_RUN_DIR
    aside.mkdir()
    for path in list(out.iterdir()):
        if path != aside:
            path.rename(aside / path.name)
    (out / "metrics.jsonl").write_text('{"kind": "eval", "iter": 0}\n')
    (out / "config.toml").write_text("# the killed run's\n")
    return aside


def test_a_run_set_aside_by_a_killed_overwrite_is_still_found(
    tiny_options: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    out = Path(tiny_options["out_dir"])
    run(tiny_options, max_iters=20)
    aside = kill_during_overwrite(out)
    old = fingerprints(aside)
    with pytest.raises(ConfigError, match="set aside and never replaced") as error:
        run(tiny_options, max_iters=10)
    assert f"mv {aside}/* {out}/" in str(error.value)

    # Another --overwrite run that fails before saving keeps that run, and puts it back.
    def fail(self: TrainStep, *args: Any) -> Any:
        raise RuntimeError("out of memory")

    with monkeypatch.context() as m:
        m.setattr(TrainStep, "__call__", fail)
        with pytest.raises(RuntimeError):
            run(tiny_options, max_iters=10, overwrite=True)
    assert fingerprints(out) == old and not aside.exists()
    assert read_checkpoint(out).state.iter_num == 20

    # Set aside again: an --overwrite run that saves replaces it.
    kill_during_overwrite(out)
    assert run(tiny_options, max_iters=10, overwrite=True).saved
    assert read_checkpoint(out).state.iter_num == 10 and not aside.exists()


def test_an_overwrite_run_stopped_early_keeps_the_old_run(
    tiny_options: dict[str, Any], capsys: pytest.CaptureFixture[str]
) -> None:
    from nanogpt_cli.train import Trainer
    from nanogpt_cli.train.signals import Interrupted

    out = Path(tiny_options["out_dir"])
    run(tiny_options, max_iters=20)
    old = fingerprints(out)
    trainer = Trainer(
        build_config("shakespeare-char", overrides={**tiny_options, "overwrite": True})
    )
    trainer._check.after_step = lambda at_log: True  # type: ignore[method-assign]  # Ctrl-C
    with pytest.raises(Interrupted):
        trainer.run()
    trainer.close()
    assert fingerprints(out / PREVIOUS_RUN_DIR) == old  # the 20-step run is still there
    assert read_checkpoint(out).state.iter_num == 1  # beside the stopped run's checkpoint
    assert "was to replace is still in" in capsys.readouterr().err


def test_resume_auto_and_eval_only_are_not_fresh_runs(tiny_options: dict[str, Any]) -> None:
    run(tiny_options, max_iters=20)
    assert run(tiny_options, max_iters=30, resume="auto").iter_num == 30
    run(tiny_options, eval_only=True)  # evaluates the run; replaces nothing


def test_a_run_that_fails_before_it_starts_leaves_no_out_dir(
    tiny_options: dict[str, Any], tmp_path: Path
) -> None:
    out = tmp_path / "never" / "made"
    with pytest.raises(Exception, match="not prepared"):
        run(tiny_options, out_dir=str(out), dataset="no-such-dataset")
    assert not out.exists() and not out.parent.exists()


def test_an_out_dir_under_a_file_is_refused(tiny_options: dict[str, Any], tmp_path: Path) -> None:
    (tmp_path / "file").write_text("x")
    with pytest.raises(ConfigError, match="is a file"):
        run(tiny_options, out_dir=str(tmp_path / "file"))


# -- what a run will cost ------------------------------------------------------------------


def test_evaluations_counts_what_the_loop_evaluates() -> None:
    assert evaluations(0, 40, 20, resumed=False) == 3  # 0, 20, 40
    assert evaluations(0, 45, 20, resumed=False) == 4  # 0, 20, 40, 45
    assert evaluations(20, 40, 20, resumed=True) == 1  # 20 was evaluated before it stopped
    assert evaluations(25, 40, 20, resumed=True) == 1  # 40
    assert evaluations(0, 0, 20, resumed=False) == 1


def test_the_estimate_adds_steps_and_evaluations() -> None:
    e = estimate_run(0, 5000, 250, 200, step_s=0.5, eval_batch_s=0.1)
    assert (e.steps, e.evaluations) == (5000, 21)
    assert e.eval_s == pytest.approx(2 * 200 * 0.1)
    assert e.total_s == pytest.approx(5000 * 0.5 + 21 * 40)
    assert e.describe().startswith("about 55m40s: 5,000 steps of 500 ms and 21 evaluations")


def test_a_long_run_is_announced_before_its_first_step_and_evaluation(
    tiny_options: dict[str, Any],
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    # A stubbed step time of 60 s: 40 steps are 40 minutes, over the 30 that earn a warning.
    monkeypatch.setattr(TrainStep, "measure", lambda self, x, y: StepTimes(90.0, 60.0, 60.0, 0.01))
    code, _, err = run_main(["train", *as_flags(tiny_options)], capsys)
    assert code == 0, err
    estimate = err.index("this run: about 40m")
    warning = err.index("this run will take about 40m")
    assert "--preset shakespeare-char-cpu" in err[warning:]
    assert estimate < warning < err.index("eval at iter 0") < err.index("iter 5: loss")


def test_measuring_the_step_changes_nothing(tiny_options: dict[str, Any], tmp_path: Path) -> None:
    # The same run with and without the measurement gives the same weights, bit for bit.
    import torch
    from safetensors.torch import load_file

    options = {**tiny_options, "dropout": 0.1, "max_iters": 10}
    run(options, out_dir=str(tmp_path / "a"))
    original = TrainStep.measure
    try:
        TrainStep.measure = lambda self, x, y: StepTimes(0, 0, 0, 0)  # type: ignore[method-assign]
        run(options, out_dir=str(tmp_path / "b"))
    finally:
        TrainStep.measure = original  # type: ignore[method-assign]
    a = load_file(str(tmp_path / "a" / "model.safetensors"))
    b = load_file(str(tmp_path / "b" / "model.safetensors"))
    assert all(torch.equal(a[k], b[k]) for k in a)


# -- what a run made -----------------------------------------------------------------------


def test_the_end_summary_and_a_sample(
    tiny_options: dict[str, Any], capsys: pytest.CaptureFixture[str]
) -> None:
    flags = as_flags({**tiny_options, "sample_at_end": True})
    code, out, err = run_main(["train", *flags], capsys)
    assert code == 0, err
    done = re.search(
        r"done in \d+s: iteration 40, 5,120 tokens at [\d,]+ tokens/s, best val loss "
        r"(\d\.\d{4}); checkpoint in (\S+)",
        err,
    )
    assert done, err
    assert done.group(2) == tiny_options["out_dir"]
    assert float(done.group(1)) == pytest.approx(
        read_checkpoint(tiny_options["out_dir"]).state.best_val_loss, abs=1e-4
    )
    assert "a sample from the model" in err
    text = out.strip()
    chars = read_checkpoint(tiny_options["out_dir"]).tokenizer["chars"]
    assert len(text) > 50 and set(text) <= set(chars)  # 200 characters of its vocabulary


def test_no_sample_at_end(tiny_options: dict[str, Any], capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run_main(["train", *as_flags(tiny_options)], capsys)  # --no-sample-at-end
    assert code == 0 and out == "" and "a sample from the model" not in err
    assert "done in" in err


def test_summary_line() -> None:
    result = TrainResult(
        out_dir=Path("out"),
        iter_num=2000,
        best_val_loss=1.91754,
        val_loss=None,
        train_loss=None,
        saved=True,
        seconds=73.4,
        tokens=1_536_000,
    )
    assert summary(result) == (
        "done in 1m13s: iteration 2000, 1,536,000 tokens at 20,926 tokens/s, best val loss "
        "1.9175; checkpoint in out"
    )


def test_measure_makes_the_same_passes_in_every_process(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Alone, one long pass is its own estimate; in a distributed run every process makes
    three whatever its clock says (each backward joins collectives)."""
    import torch

    from nanogpt_cli.config import ModelConfig
    from nanogpt_cli.model import GPT
    from nanogpt_cli.train import step as step_module

    model = GPT(ModelConfig(n_layer=1, n_head=2, n_embd=32, block_size=8, vocab_size=16))
    passes: list[bool] = []
    forward = GPT.forward
    monkeypatch.setattr(
        GPT, "forward", lambda self, *a, **k: passes.append(self.training) or forward(self, *a, **k)
    )
    clock = iter(range(0, 10_000, 5))  # every pass takes 5 s
    monkeypatch.setattr(step_module.time, "perf_counter", lambda: float(next(clock)))
    x = torch.randint(0, 16, (2, 8))

    def make(dist: Any) -> TrainStep:
        optimizer = torch.optim.AdamW(model.parameters())
        return TrainStep(
            model,
            optimizer,
            torch.amp.GradScaler("cpu", enabled=False),
            grad_accum=4,
            grad_clip=1.0,
            device=torch.device("cpu"),
            dtype=torch.float32,
            dist=dist,
        )

    times = make(None).measure(x, x)
    assert passes == [True, False] and times.step_s == 4 * 5.0
    passes.clear()
    make(object()).measure(x, x)
    assert passes == [True, True, True, False]
