"""The run directory (issue 23): one training run writes to an out-dir at a time, the best
checkpoint is never replaced by a worse or broken one, and the run's own files are written
safely (no write through a symbolic link, OS errors as one line, no temporary files left)."""

from __future__ import annotations

import errno
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import torch
from conftest import as_flags
from safetensors.torch import load_file
from test_reliability import nan_from, patch_forward, run, train_losses

from nanogpt_cli.checkpoint import CONFIG_FILE, MODEL_FILE, OPTIMIZER_FILE, read_checkpoint
from nanogpt_cli.cli.app import main
from nanogpt_cli.metrics import read_metrics
from nanogpt_cli.train.lock import LOCK_FILE, RunLock, launcher_env
from nanogpt_cli.train.outdir import LAST_DIR, resume_dir

CHECKPOINT_FILES = (CONFIG_FILE, MODEL_FILE, OPTIMIZER_FILE)


def run_main(args: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    """Exit code and stderr of ``nanogpt ARGS``."""
    with pytest.raises(SystemExit) as exit_info:
        main(args)
    return int(exit_info.value.code or 0), capsys.readouterr().err


def error_line(err: str) -> str:
    """The one error line of a failed command (and nothing that looks like a traceback)."""
    assert "Traceback" not in err, err
    errors = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, err
    return errors[0]


def fingerprints(folder: Path) -> dict[str, bytes]:
    return {name: (folder / name).read_bytes() for name in CHECKPOINT_FILES}


def temp_files(folder: Path) -> list[Path]:
    return [p for p in folder.rglob("*") if p.name.endswith(".tmp")]


# -- one writer per out-dir ------------------------------------------------------------------


def test_a_second_run_on_a_busy_out_dir_is_refused_and_the_first_is_intact(
    tiny_options: dict[str, Any], capsys: pytest.CaptureFixture[str]
) -> None:
    out = Path(tiny_options["out_dir"])
    options = dict(tiny_options, max_iters=100_000, lr_decay_iters=100_000, log_interval=1)
    options["eval_interval"] = 10
    cmd = [sys.executable, "-m", "nanogpt_cli", "train", *as_flags(options)]
    first = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 120
        while not (out / CONFIG_FILE).exists() or not (out / "metrics.jsonl").exists():
            assert first.poll() is None and time.monotonic() < deadline, first.communicate()[1]
            time.sleep(0.05)
        holder = json.loads((out / LOCK_FILE).read_text())
        assert holder["pid"] == first.pid and holder["host"] == socket.gethostname()
        for extra in (["--resume"], ["--overwrite"], ["--resume", "--eval-only"]):
            code, err = run_main(["train", *as_flags(tiny_options), *extra], capsys)
            line = error_line(err)
            assert code != 0 and f"--out-dir {out} is in use by another training run" in line
            assert f"process {first.pid} on {socket.gethostname()} (since " in line
            assert not (out / "previous-run").exists()  # --overwrite set nothing aside
    finally:
        first.send_signal(signal.SIGTERM)
        _, err = first.communicate(timeout=120)
    assert first.returncode == 143, err  # stopped as usual: it saved, then exited
    state = read_checkpoint(resume_dir(out)).state
    records = read_metrics(out / "metrics.jsonl")
    assert max(r["iter"] for r in records if r["kind"] == "train") == state.iter_num
    assert run_main(["plot", str(out)], capsys)[0] == 0
    assert not (out / LOCK_FILE).exists()  # released at the end
    assert run(tiny_options, resume=True, max_iters=state.iter_num + 2).iter_num > state.iter_num


def test_a_held_lock_refuses_the_library_too_but_not_the_launchers_processes(
    tiny_options: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    from nanogpt_cli.errors import TrainingError

    out = Path(tiny_options["out_dir"])
    with RunLock(out):
        with pytest.raises(TrainingError, match=f"process {os.getpid()} on "):
            run(tiny_options, max_iters=4)
        assert sorted(p.name for p in out.iterdir()) == [LOCK_FILE]  # it wrote nothing
        # What nanogpt's launcher tells the processes it starts: it holds the lock for them.
        for name, value in launcher_env(out).items():
            monkeypatch.setenv(name, value)
        assert run(tiny_options, max_iters=4).iter_num == 4
        assert (out / LOCK_FILE).exists()  # still the launcher's
    assert not (out / LOCK_FILE).exists()


def test_the_launcher_holds_the_lock_for_its_processes(tiny_options: dict[str, Any]) -> None:
    from nanogpt_cli.errors import TrainingError

    out = Path(tiny_options["out_dir"])
    options = dict(tiny_options, nproc_per_node=2, gradient_accumulation_steps=2, max_iters=4)
    with RunLock(out), pytest.raises(TrainingError, match="in use by another training run"):
        run(options)  # refused before starting any process
    result = run(options, eval_interval=2, dist_timeout=60)
    assert result.iter_num == 4 and read_checkpoint(out).state.iter_num == 4
    assert not (out / LOCK_FILE).exists()


def test_a_stale_lock_of_a_dead_process_is_taken_over_with_a_warning(
    tiny_options: dict[str, Any], capsys: pytest.CaptureFixture[str]
) -> None:
    out = Path(tiny_options["out_dir"])
    out.mkdir()
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    record = {"pid": dead.pid, "host": socket.gethostname(), "since": "2026-01-01T00:00:00"}
    (out / LOCK_FILE).write_text(json.dumps(record))
    assert run(tiny_options, max_iters=4).iter_num == 4
    err = capsys.readouterr().err
    assert f"{out / LOCK_FILE} was left by process {dead.pid} on" in err
    assert "no longer running: this run takes it over" in err
    assert not (out / LOCK_FILE).exists()


def test_readers_need_no_lock(
    tiny_options: dict[str, Any], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = Path(tiny_options["out_dir"])
    run(tiny_options, max_iters=10, eval_interval=5)
    capsys.readouterr()
    with RunLock(out):  # as while a run trains and saves
        sample = ["sample", "--out-dir", str(out), "--max-new-tokens", "5", "--device", "cpu"]
        assert run_main(sample, capsys)[0] == 0
        evaluate = ["eval", "--checkpoint", str(out), "--eval-iters", "1", "--device", "cpu"]
        assert run_main([*evaluate, "--output", str(tmp_path / "e.json")], capsys)[0] == 0
        assert run_main(["convert-checkpoint", "info", str(out)], capsys)[0] == 0
        assert run_main(["plot", str(out)], capsys)[0] == 0


# -- the best is never replaced by a worse or broken one -------------------------------------


def test_a_diverging_always_save_run_leaves_the_best_byte_identical(
    tiny_options: dict[str, Any],
) -> None:
    out = Path(tiny_options["out_dir"])
    run(tiny_options, max_iters=20, eval_interval=10)
    best = fingerprints(out)
    result = run(
        tiny_options,
        resume=True,
        max_iters=40,
        eval_interval=5,
        learning_rate=1e6,
        always_save_checkpoint=True,
        max_bad_steps=1000,  # diverged, skipping steps, and going on
    )
    assert (
        result.iter_num == 40 and result.best_val_loss == read_checkpoint(out).state.best_val_loss
    )
    assert fingerprints(out) == best  # every file of the best, byte for byte
    latest = read_checkpoint(out / LAST_DIR)
    assert latest.state.iter_num == 40 and resume_dir(out) == out / LAST_DIR
    evals = [r for r in read_metrics(out / "metrics.jsonl") if r["kind"] == "eval"]
    diverged = [r["val_loss"] for r in evals if r["iter"] > 20]
    assert len(diverged) == 4 and all(v is None or v > result.best_val_loss for v in diverged)
    assert read_checkpoint(out).state.iter_num == 20  # what `nanogpt sample` reads


def test_an_evaluation_after_skipped_steps_never_replaces_the_best(
    tiny_options: dict[str, Any],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    out = Path(tiny_options["out_dir"])
    run(tiny_options, max_iters=10, eval_interval=10)
    best = fingerprints(out)
    # Without the skipped steps, the evaluation at 20 is a new best: it replaces the old one.
    control = tmp_path / "control"
    run(tiny_options, out_dir=str(control), max_iters=10, eval_interval=10)
    run(tiny_options, out_dir=str(control), resume=True, max_iters=20, eval_interval=10)
    assert read_checkpoint(control).state.iter_num == 20
    patch_forward(monkeypatch, nan_from(2, 3))  # iterations 12 and 13: skipped
    run(tiny_options, resume=True, max_iters=20, eval_interval=10, log_interval=1)
    assert fingerprints(out) == best
    assert read_checkpoint(out / LAST_DIR).state.iter_num == 20  # the run's state is kept
    assert "follows steps skipped as non-finite" in capsys.readouterr().err


def test_resume_after_always_save_continues_from_last_exactly(
    tiny_options: dict[str, Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from nanogpt_cli.train.health import Health
    from nanogpt_cli.train.signals import Interrupted

    options = dict(tiny_options, max_iters=40, eval_interval=10, log_interval=1)
    options["always_save_checkpoint"] = True
    full = tmp_path / "full"
    run(options, out_dir=str(full))
    part = tmp_path / "part"
    check_loss = Health.check_loss

    def stop_at_25(self: Health, loss: float, grad_norm: float | None, iter_num: int) -> None:
        check_loss(self, loss, grad_norm, iter_num)
        if iter_num == 25:
            os.kill(os.getpid(), signal.SIGTERM)  # as a scheduler stops a run

    with monkeypatch.context() as patch, pytest.raises(Interrupted):
        patch.setattr(Health, "check_loss", stop_at_25)
        run(options, out_dir=str(part))
    assert read_checkpoint(part / LAST_DIR).state.iter_num == 25
    assert read_checkpoint(part).state.iter_num <= 20  # the stop did not replace the best
    assert run(options, out_dir=str(part), resume="auto").iter_num == 40
    assert train_losses(part) == train_losses(full)
    a = load_file(str(resume_dir(full) / MODEL_FILE))
    b = load_file(str(resume_dir(part) / MODEL_FILE))
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_overwrite_sets_last_aside_with_the_rest(tiny_options: dict[str, Any]) -> None:
    out = Path(tiny_options["out_dir"])
    run(tiny_options, max_iters=20, eval_interval=10)
    run(tiny_options, resume=True, max_iters=40, learning_rate=1e6, max_bad_steps=1000)
    assert (out / LAST_DIR).is_dir()
    run(tiny_options, max_iters=5, overwrite=True)
    assert not (out / LAST_DIR).exists() and resume_dir(out) == out
    assert read_checkpoint(out).state.iter_num == 5


# -- files written safely --------------------------------------------------------------------


@pytest.mark.parametrize("resume", [False, True])
def test_a_symlinked_metrics_file_is_refused_and_its_target_untouched(
    tiny_options: dict[str, Any],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    resume: bool,
) -> None:
    out = Path(tiny_options["out_dir"])
    out.mkdir()
    if resume:
        run(tiny_options, max_iters=5)
        (out / "metrics.jsonl").unlink()
    before = fingerprints(out) if resume else {}
    target = tmp_path / "precious.txt"
    target.write_text("not yours\n")
    (out / "metrics.jsonl").symlink_to(target)
    args = ["train", *as_flags(tiny_options), *(["--resume"] if resume else [])]
    code, err = run_main(args, capsys)
    line = error_line(err)
    assert code != 0 and "metrics.jsonl is a symbolic link" in line
    assert target.read_text() == "not yours\n"
    assert (out / "metrics.jsonl").is_symlink()
    assert (fingerprints(out) if resume else {}) == before
    assert not temp_files(out) and not (out / LOCK_FILE).exists()


def enospc(*args: Any, **kwargs: Any) -> None:
    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


def test_disk_full_at_start_up_is_one_line_and_leaves_nothing_behind(
    tiny_options: dict[str, Any],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    out = tmp_path / "new" / "out"
    monkeypatch.setattr(os, "fsync", enospc)  # config.toml is the first file flushed
    code, err = run_main(["train", *as_flags({**tiny_options, "out_dir": str(out)})], capsys)
    assert code != 0
    assert error_line(err).endswith(
        f"no space left on device while writing {out / 'config.toml'}; free some space or "
        "choose another --out-dir"
    )
    assert not out.exists() and not out.parent.exists()  # not even the directory


def test_disk_full_while_writing_metrics_is_one_line(
    tiny_options: dict[str, Any],
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    import nanogpt_cli.metrics as metrics

    out = Path(tiny_options["out_dir"])
    run(tiny_options, max_iters=5)
    before = fingerprints(out)
    opened = metrics.open_for_writing

    def full_disk(path: Path, append: bool) -> Any:
        f = opened(path, append)
        monkeypatch.setattr(f, "write", enospc)
        return f

    monkeypatch.setattr(metrics, "open_for_writing", full_disk)
    code, err = run_main(["train", *as_flags(tiny_options), "--resume"], capsys)
    line = error_line(err)
    assert code != 0 and f"no space left on device while writing {out / 'metrics.jsonl'}" in line
    assert fingerprints(out) == before and not temp_files(out)


def test_a_leftover_config_tmp_is_replaced_silently_and_files_have_the_usual_mode(
    tiny_options: dict[str, Any],
) -> None:
    out = Path(tiny_options["out_dir"])
    out.mkdir()
    (out / "config.toml.tmp").write_text("half a config fr")
    run(tiny_options, max_iters=5)
    assert not temp_files(out)
    umask = os.umask(0)
    os.umask(umask)
    for name in ("config.toml", "metrics.jsonl"):
        assert (out / name).stat().st_mode & 0o777 == 0o666 & ~umask, name


def test_an_out_dir_name_over_255_bytes_is_one_line(
    tiny_options: dict[str, Any], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / ("x" * 300) / "out"
    code, err = run_main(["train", *as_flags({**tiny_options, "out_dir": str(out)})], capsys)
    line = error_line(err)
    assert code != 0 and "too long" in line and "300 bytes" in line


def test_eval_output_onto_a_directory_or_a_read_only_place_is_one_line(
    tiny_options: dict[str, Any],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    out = Path(tiny_options["out_dir"])
    run(tiny_options, max_iters=5)
    evaluate = ["eval", "--checkpoint", str(out), "--eval-iters", "1", "--device", "cpu"]
    code, err = run_main([*evaluate, "--output", str(tmp_path)], capsys)
    assert code == 2 and f"--output {tmp_path} is a directory" in error_line(err)
    locked = tmp_path / "read-only"
    locked.mkdir()
    with monkeypatch.context() as patch:
        if os.geteuid() != 0:  # root ignores modes: then the check itself is what is tested
            locked.chmod(0o500)
        else:
            real = os.access
            patch.setattr(os, "access", lambda p, m, **k: Path(p) != locked and real(p, m))
        code, err = run_main([*evaluate, "--output", str(locked / "e.json")], capsys)
    assert code == 2 and f"cannot write {locked / 'e.json'}" in error_line(err)
    locked.chmod(0o700)
    monkeypatch.setattr(os, "fsync", enospc)  # the disk fills while the results are written
    code, err = run_main([*evaluate, "--output", str(locked / "e.json")], capsys)
    assert "no space left on device while writing" in error_line(err)
    assert list(locked.iterdir()) == []
