"""A checkpoint is untrusted input: a damaged one is never taken for "no checkpoint", sizes it
asks for are checked before anything is allocated, every field is type-checked, and what is
wrong is said in one line. Writes never follow a link they did not create."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import torch
from conftest import TINY, as_flags, make_text

from nanogpt_cli.checkpoint import read_checkpoint, save_checkpoint
from nanogpt_cli.cli.app import main
from nanogpt_cli.errors import CheckpointDamaged, CheckpointMissing

TRAIN = {**TINY, "max_iters": 4, "eval_interval": 2, "eval_iters": 1}


@pytest.fixture(scope="module")
def ws(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A dataset and two trained runs: separated (the default) and unified."""
    from nanogpt_cli.config import build_config
    from nanogpt_cli.data.prepare import prepare_shakespeare_char
    from nanogpt_cli.train import train

    root = tmp_path_factory.mktemp("damage")
    corpus = root / "corpus.txt"
    corpus.write_text(make_text(), encoding="utf-8")
    data = root / "datasets"
    prepare_shakespeare_char(source=str(corpus), data_dir=data)
    for name, fmt in (("run", "separated"), ("unified", "unified")):
        options = {**TRAIN, "data_dir": str(data), "out_dir": str(root / name), "save_format": fmt}
        train(build_config("shakespeare-char", overrides=options))
    return {"root": root, "data": data, "run": root / "run", "unified": root / "unified"}


def snapshot(folder: Path) -> dict[str, bytes]:
    """Every file under ``folder`` (links as their target's path), by relative path."""
    out: dict[str, bytes] = {}
    for p in sorted(folder.rglob("*")):
        if p.is_symlink():
            out[str(p.relative_to(folder))] = os.readlink(p).encode()
        elif p.is_file():
            out[str(p.relative_to(folder))] = p.read_bytes()
    return out


def edit_json(path: Path, edit: Callable[[dict[str, Any]], None]) -> None:
    data = json.loads(path.read_text())
    edit(data)
    path.write_text(json.dumps(data))


def truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def random_bytes(path: Path) -> None:
    path.write_bytes(os.urandom(4096))


def other_iteration(path: Path) -> None:
    state = torch.load(path, weights_only=True)
    state["iter_num"] = 999
    torch.save(state, path)


def nan_weight(folder: Path) -> None:
    from safetensors import safe_open
    from safetensors.torch import save_file

    path = folder / "model.safetensors"
    with safe_open(str(path), framework="pt") as f:
        metadata = f.metadata()
        tensors = {name: f.get_tensor(name) for name in f.keys()}  # noqa: SIM118
    tensors["transformer.h.0.mlp.c_fc.weight"][3, 5] = float("nan")
    save_file(tensors, str(path), metadata=metadata)


CJ, MS, OPT = "checkpoint.json", "model.safetensors", "optimizer.pt"


def set_field(section: str | None, **values: Any) -> Callable[[Path], None]:
    """A damage: set ``values`` in ``checkpoint.json`` (in its ``section``, or at the top)."""

    def change(folder: Path) -> None:
        edit_json(folder / CJ, lambda d: (d[section] if section else d).update(values))

    return change


# kind of damage -> (run it applies to, what it does to the copy)
DAMAGES: dict[str, tuple[str, Callable[[Path], None]]] = {
    "checkpoint.json garbage": ("run", lambda p: (p / CJ).write_bytes(b"\x00\xffnot json{")),
    "checkpoint.json truncated": ("run", lambda p: truncate(p / CJ)),
    "checkpoint.json a list": ("run", lambda p: (p / CJ).write_text("[1, 2]")),
    "checkpoint.json missing, weights left": ("run", lambda p: (p / CJ).unlink()),
    "iter_num a string": (
        "run",
        set_field("train", iter_num="4"),
    ),
    "model a list": ("run", set_field(None, model=[2, 2])),
    "n_layer a million": (
        "run",
        set_field("model", n_layer=1_000_000),
    ),
    "block_size 1e9": (
        "run",
        set_field("model", block_size=1e9),
    ),
    "n_embd not divisible by n_head": (
        "run",
        set_field("model", n_head=5),
    ),
    "huge integer": (
        "run",
        set_field("model", n_embd=10**40),
    ),
    "config a list": ("run", set_field(None, config=[1])),
    "tokenizer a string": (
        "run",
        set_field(None, tokenizer="char"),
    ),
    "model.safetensors missing": ("run", lambda p: (p / MS).unlink()),
    "model.safetensors truncated": ("run", lambda p: truncate(p / MS)),
    "model.safetensors random bytes": ("run", lambda p: random_bytes(p / MS)),
    "optimizer.pt random bytes": ("run", lambda p: random_bytes(p / OPT)),
    "optimizer.pt truncated": ("run", lambda p: truncate(p / OPT)),
    "optimizer.pt of another iteration": ("run", lambda p: other_iteration(p / OPT)),
    "optimizer.pt missing": ("run", lambda p: (p / OPT).unlink()),
    "ckpt.pt random bytes": ("unified", lambda p: random_bytes(p / "ckpt.pt")),
    "ckpt.pt truncated": ("unified", lambda p: truncate(p / "ckpt.pt")),
    "ckpt.pt empty": ("unified", lambda p: (p / "ckpt.pt").write_bytes(b"")),
}


def damaged(ws: dict[str, Path], kind: str) -> Path:
    source, damage = DAMAGES[kind]
    target = ws["root"] / "damaged" / kind.replace(" ", "-")
    if not target.exists():
        shutil.copytree(ws[source], target)
        damage(target)
    return target


def one_error_line(err: str) -> str:
    lines = [line for line in err.splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith("error:")]
    assert "Traceback" not in err and len(errors) == 1 and lines[-1] == errors[0], err
    return errors[0]


@pytest.mark.parametrize("mode", ["auto", "yes"])
@pytest.mark.parametrize("kind", list(DAMAGES))
def test_resume_never_takes_a_damaged_checkpoint_for_none(
    kind: str, mode: str, ws: dict[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    out = damaged(ws, kind)
    before = snapshot(out)
    args = ["train", *as_flags({**TRAIN, "data_dir": str(ws["data"]), "max_iters": 8})]
    with pytest.raises(SystemExit) as exit_info:
        main([*args, "--out-dir", str(out), "--resume", mode])
    line = one_error_line(capsys.readouterr().err)
    assert exit_info.value.code != 0
    assert "cannot resume" in line and "convert-checkpoint info" in line and "--overwrite" in line
    assert snapshot(out) == before  # not a byte changed, nothing added


def test_a_fresh_run_refuses_a_damaged_checkpoint_too(
    ws: dict[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    out = damaged(ws, "checkpoint.json truncated")
    before = snapshot(out)
    args = ["train", *as_flags({**TRAIN, "data_dir": str(ws["data"]), "out_dir": str(out)})]
    with pytest.raises(SystemExit) as exit_info:
        main(args)
    line = one_error_line(capsys.readouterr().err)
    assert exit_info.value.code != 0 and "--overwrite" in line and "cannot be read" in line
    assert snapshot(out) == before


def test_the_library_stops_on_a_damaged_checkpoint(ws: dict[str, Path]) -> None:
    from nanogpt_cli.config import build_config
    from nanogpt_cli.train import resolve_config, train

    out = damaged(ws, "optimizer.pt of another iteration")
    before = snapshot(out)
    options = {**TRAIN, "data_dir": str(ws["data"]), "out_dir": str(out), "resume": "auto"}
    with pytest.raises(CheckpointDamaged, match=r"optimizer\.pt is from iteration 999"):
        train(build_config("shakespeare-char", overrides=options))
    with pytest.raises(CheckpointDamaged, match="convert-checkpoint info"):
        resolve_config("shakespeare-char", None, options)
    assert snapshot(out) == before


def test_resume_auto_with_overwrite_starts_afresh_over_a_damaged_checkpoint(
    ws: dict[str, Path], tmp_path: Path
) -> None:
    from nanogpt_cli.train import resolve_config, train

    out = tmp_path / "out"
    shutil.copytree(damaged(ws, "model.safetensors truncated"), out)
    options = {**TRAIN, "data_dir": str(ws["data"]), "out_dir": str(out)}
    cfg = resolve_config("shakespeare-char", None, {**options, "resume": "auto", "overwrite": True})
    assert cfg.run.resume == "no"
    assert train(cfg).iter_num == 4
    assert read_checkpoint(out).state.iter_num == 4


def test_no_checkpoint_and_an_interrupted_first_save_are_none(tmp_path: Path) -> None:
    with pytest.raises(CheckpointMissing):
        read_checkpoint(tmp_path / "nothing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(CheckpointMissing):
        read_checkpoint(tmp_path / "empty")
    killed = tmp_path / "killed"  # a first save killed before its JSON was complete
    killed.mkdir()
    (killed / "model.safetensors.tmp").write_bytes(b"half")
    (killed / "checkpoint.json.tmp").write_text('{"format": ')
    with pytest.raises(CheckpointMissing):
        read_checkpoint(killed)
    assert not list(killed.iterdir())


@pytest.mark.parametrize(
    ("kind", "field"),
    [
        ("iter_num a string", "train.iter_num must be an integer"),
        ("model a list", "model must be an object"),
        ("n_layer a million", "n_layer = 1000000, the weights have 2"),
        ("block_size 1e9", "block_size = 1000000000, the weights have 16"),
        ("n_embd not divisible by n_head", "model.n_embd (32) is not divisible by model.n_head"),
        ("huge integer", "model.n_embd is 10000000000"),
        ("config a list", "config must be an object"),
        ("tokenizer a string", "tokenizer must be an object"),
        ("checkpoint.json a list", "the file must be an object"),
        ("checkpoint.json garbage", "is not valid JSON"),
        ("model.safetensors random bytes", "is not a readable safetensors file"),
        ("checkpoint.json missing, weights left", "but no checkpoint.json"),
        ("ckpt.pt random bytes", "ckpt.pt is not a checkpoint (not a file torch.save writes"),
        ("ckpt.pt empty", "ckpt.pt is not a checkpoint"),
    ],
)
def test_a_damaged_checkpoint_is_named_with_its_file_and_field(
    kind: str, field: str, ws: dict[str, Path]
) -> None:
    with pytest.raises(CheckpointDamaged) as info:
        read_checkpoint(damaged(ws, kind))
    assert field in str(info.value) and "\n" not in str(info.value)


def test_saved_options_of_the_wrong_type_are_one_line_naming_the_checkpoint(
    ws: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "out"
    shutil.copytree(ws["run"], out)
    edit_json(out / CJ, lambda d: d["config"]["optim"].update(learning_rate="fast"))
    with pytest.raises(SystemExit) as exit_info:
        main(["train", "--out-dir", str(out), "--resume"])
    line = one_error_line(capsys.readouterr().err)
    assert exit_info.value.code != 0 and str(out) in line and "options saved" in line


def test_damaged_random_states_stop_a_resume_in_one_line(
    ws: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "out"
    shutil.copytree(ws["run"], out)
    edit_json(out / CJ, lambda d: d["rng"].update(torch="###", numpy=[1]))
    with pytest.raises(SystemExit) as exit_info:
        main(["train", "--out-dir", str(out), "--resume", "--max-iters", "8"])
    line = one_error_line(capsys.readouterr().err)
    assert exit_info.value.code == 1 and "random-generator or loader state" in line


def test_non_finite_weights_are_one_line_when_sampling(
    ws: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "out"
    shutil.copytree(ws["run"], out)
    nan_weight(out)
    with pytest.raises(SystemExit) as exit_info:
        main(["sample", "--checkpoint", str(out), "--max-new-tokens", "4", "--device", "cpu"])
    line = one_error_line(capsys.readouterr().err)
    assert exit_info.value.code == 1
    assert "holds non-finite weights (NaN or inf) in transformer.h.0.mlp.c_fc.weight" in line


def test_random_bytes_are_not_a_checkpoint(tmp_path: Path, ws: dict[str, Path]) -> None:
    hf = tmp_path / "hf"
    hf.mkdir()
    (hf / "config.json").write_text(json.dumps({"model_type": "gpt2"}))
    random_bytes(hf / "pytorch_model.bin")
    with pytest.raises(CheckpointDamaged, match=r"pytorch_model.bin is not a checkpoint \("):
        read_checkpoint(hf)
    ckpt = read_checkpoint(damaged(ws, "optimizer.pt random bytes"))
    with pytest.raises(CheckpointDamaged, match=r"optimizer.pt is not a checkpoint"):
        ckpt.optimizer_state()


@pytest.mark.parametrize(
    ("edit", "expected"),
    [
        ({"n_head": 5}, "config.json is not a valid checkpoint: n_embd (32) is not divisible"),
        ({"n_layer": "2"}, "config.json is not a valid checkpoint: n_layer must be an integer"),
        ({"n_layer": 3}, "config.json says n_layer = 3, the weights have 2"),
        ({"layer_norm_epsilon": [1]}, "layer_norm_epsilon must be a number"),
        ({"nanogpt": {"tokenizer": 7}}, "nanogpt.tokenizer must be an object"),
        ({"model_type": 5}, "config.json is not a readable Hugging Face GPT-2 config"),
    ],
)
def test_a_hugging_face_config_is_checked_field_by_field(
    edit: dict[str, Any], expected: str, ws: dict[str, Path], tmp_path: Path
) -> None:
    hf = hf_folder(ws, tmp_path)
    edit_json(hf / "config.json", lambda d: d.update(edit))
    with pytest.raises(CheckpointDamaged) as info:
        read_checkpoint(hf)
    assert expected in str(info.value)


# -- sizes bounded before allocation -----------------------------------------------------------

_MEASURE = """
import json, resource, sys, time
from nanogpt_cli.cli.app import main
from nanogpt_cli.checkpoint import model_from_checkpoint, read_checkpoint

def call(args):
    try:
        main(args)
    except SystemExit as e:
        return e.code
    return 0

model_from_checkpoint(read_checkpoint(sys.argv[1]))  # imports and first-use costs, once
call(["sample", "--checkpoint", sys.argv[1], "--max-new-tokens", "2", "--device", "cpu"])
results = []
for path in sys.argv[2:]:
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    cpu = time.process_time()
    code = call(["sample", "--checkpoint", path, "--device", "cpu"])
    cpu = time.process_time() - cpu
    grown = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before
    results.append([path, code, cpu, grown * 1024])
print(json.dumps(results))
"""


def hf_folder(ws: dict[str, Path], tmp_path: Path) -> Path:
    from nanogpt_cli.checkpoint import convert_checkpoint

    folder = tmp_path / "hf"
    convert_checkpoint(ws["run"], folder, "huggingface")
    return folder


def test_a_checkpoint_asking_for_a_huge_model_fails_fast_and_small(
    ws: dict[str, Path], tmp_path: Path
) -> None:
    cases = [damaged(ws, "n_layer a million"), damaged(ws, "block_size 1e9")]
    wide = tmp_path / "wide"
    shutil.copytree(ws["run"], wide)
    edit_json(wide / CJ, lambda d: d["model"].update(n_embd=2**30, n_head=2**30))
    unified = tmp_path / "unified"
    shutil.copytree(ws["unified"], unified)
    payload = torch.load(unified / "ckpt.pt", weights_only=True)
    payload["nanogpt"]["model"]["n_layer"] = 10**6
    torch.save(payload, unified / "ckpt.pt")
    hf = hf_folder(ws, tmp_path)
    edit_json(hf / "config.json", lambda d: d.update(n_positions=10**9, n_ctx=10**9))
    cases += [wide, unified, hf]
    done = subprocess.run(
        [sys.executable, "-c", _MEASURE, str(ws["run"]), *map(str, cases)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    results = json.loads(done.stdout.strip().splitlines()[-1])
    for path, code, cpu, grown in results:
        assert code == 1, (path, done.stderr[-2000:])
        assert cpu < 1.0, (path, cpu)  # CPU seconds: the machine's load does not count
        assert grown < 100 * 2**20, (path, grown)
    assert "Traceback" not in done.stderr
    assert done.stderr.count("do not fit this model") >= len(cases)


# -- writes --------------------------------------------------------------------------------------


@pytest.fixture
def umask_022() -> Any:
    old = os.umask(0o022)
    yield
    os.umask(old)


@pytest.mark.parametrize("fmt", ["separated", "model-only", "unified"])
def test_a_save_never_writes_through_a_planted_link(
    fmt: str, ws: dict[str, Path], tmp_path: Path, umask_022: None
) -> None:
    source = read_checkpoint(ws["run"])
    out = tmp_path / "out"
    out.mkdir()
    victims = {}
    names = ["ckpt.pt", "meta.pkl"] if fmt == "unified" else [MS, OPT, CJ]
    for name in names:
        victim = tmp_path / f"victim-{name}"
        victim.write_text("precious")
        victims[victim] = "precious"
        (out / f"{name}.tmp").symlink_to(victim)
    # the unified writer creates its temporaries itself: nothing tidies them away first
    files = save_checkpoint(source, out, fmt)
    for victim, text in victims.items():
        assert victim.read_text() == text
    for path in files:
        assert not path.is_symlink() and path.stat().st_mode & 0o777 == 0o644, path
    assert not list(out.glob("*.tmp"))
    assert read_checkpoint(out).state.iter_num == source.state.iter_num


def test_every_checkpoint_file_has_the_ordinary_mode(
    ws: dict[str, Path], tmp_path: Path, umask_022: None
) -> None:
    hf = hf_folder(ws, tmp_path)
    for path in [*ws["run"].iterdir(), *ws["unified"].glob("*.p*"), *hf.iterdir()]:
        if path.is_file() and path.suffix in (".safetensors", ".pt", ".json", ".pkl"):
            assert path.stat().st_mode & 0o777 == 0o644, path


def test_a_disk_full_save_says_so_and_leaves_no_temporaries(
    ws: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from nanogpt_cli.checkpoint import files
    from nanogpt_cli.errors import CheckpointError

    out = tmp_path / "out"
    shutil.copytree(ws["run"], out)
    before = snapshot(out)
    source = read_checkpoint(ws["run"])

    def full_disk(*args: Any, **kwargs: Any) -> None:
        # what torch.save raises when the disk fills up under it
        raise RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 64 vs 0")

    monkeypatch.setattr(torch, "save", full_disk)
    monkeypatch.setattr(files.shutil, "disk_usage", lambda path: SimpleNamespace(free=0))
    for fmt in ("separated", "unified"):
        with pytest.raises(CheckpointError) as info:
            save_checkpoint(source, out, fmt)
        assert "No space left on device while writing" in str(info.value)
        assert "intact" in str(info.value) and "enforce fail" not in str(info.value)
        assert snapshot(out) == before  # the previous checkpoint, no temporaries
