"""Fuzzing the files that describe a checkpoint: whatever a ``checkpoint.json`` or a Hugging
Face ``config.json`` holds, reading it and building its model either works or fails with
nanogpt's own error, and never allocates more than a bound."""

from __future__ import annotations

import copy
import json
import resource
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from nanogpt_cli.checkpoint import Checkpoint, model_from_checkpoint, read_checkpoint
from nanogpt_cli.config import ModelConfig
from nanogpt_cli.errors import NanoGPTError
from nanogpt_cli.model import GPT

FUZZ = settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
BOUND = 100 * 2**20  # bytes of memory one read-and-build may add
DELETE = object()
ORIGINALS: dict[str, Any] = {}  # each file as it was written, filled by the fixture

scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.sampled_from([0, -1, 1, 2, 3, 16, 10**6, 10**9, 2**31, 2**63, 10**400, 1e9, 1e300, 0.5]),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=12),
)
json_values = st.recursive(
    scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=3), st.dictionaries(st.text(max_size=8), inner, max_size=3)
    ),
    max_leaves=8,
)


@pytest.fixture(scope="module")
def folders(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A tiny model saved once as a nanogpt model-only checkpoint and as a Hugging Face
    folder (no training needed: the weights only have to be real)."""
    from nanogpt_cli.checkpoint import save_checkpoint
    from nanogpt_cli.checkpoint.hf import write_hf

    torch.manual_seed(0)
    cfg = ModelConfig(n_layer=2, n_head=2, n_embd=16, block_size=8, vocab_size=11, bias=True)
    ckpt = Checkpoint(
        model_config=cfg,
        tokenizer={"kind": "char", "chars": "abcdefghijk"},
        _weights=GPT(cfg).state_dict(),
    )
    root = tmp_path_factory.mktemp("fuzz-ckpt")
    save_checkpoint(ckpt, root / "ours", "model-only")
    write_hf(root / "hf", ckpt)
    for path in (root / "ours" / "checkpoint.json", root / "hf" / "config.json"):
        ORIGINALS[path.name] = json.loads(path.read_text())
    return {"ours": root / "ours", "hf": root / "hf"}


def mutations(paths: list[str]) -> st.SearchStrategy[Any]:
    """A list of (dotted path, new value or DELETE) and extra keys, or a whole new document."""
    edits = st.lists(
        st.tuples(st.sampled_from(paths), st.one_of(st.just(DELETE), json_values)), max_size=4
    )
    extras = st.dictionaries(st.text(max_size=8), json_values, max_size=2)
    return st.one_of(st.tuples(edits, extras), st.tuples(st.none(), json_values))


def mutate(document: dict[str, Any], mutation: Any) -> Any:
    edits, extras = mutation
    if edits is None:
        return extras  # the whole file replaced by some JSON value
    doc = copy.deepcopy(document)
    for path, value in edits:
        *parents, key = path.split(".")
        node = doc
        for name in parents:
            node = node.get(name) if isinstance(node, dict) else None
        if not isinstance(node, dict):
            continue
        if value is DELETE:
            node.pop(key, None)
        else:
            node[key] = value
    doc.update(extras)
    return doc


def _rss(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024
    raise KeyError(field)


def peak_growth(call: Callable[[], None]) -> int:
    """How far the process's resident memory rose above where it stood while ``call`` ran:
    Linux's high-water mark, reset first; elsewhere the lifetime maximum's rise."""
    try:
        before = _rss("VmRSS")
        Path("/proc/self/clear_refs").write_text("5")  # resets VmHWM to the current RSS
        call()
        return _rss("VmHWM") - before
    except OSError:
        before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        call()
        return (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) * 1024


def read_and_build(folder: Path) -> None:
    """Read the checkpoint and build its model: it works, and is then exactly as large as the
    weights on disk, or it fails with nanogpt's own error (anything else fails the test)."""
    try:
        ckpt = read_checkpoint(folder)
        model = model_from_checkpoint(ckpt)
    except NanoGPTError as e:
        assert str(e) and "\n" not in str(e).strip()
        return
    assert model.num_params(non_embedding=False) <= 20_000


def check(folder: Path, name: str, document: Any) -> None:
    (folder / name).write_text(json.dumps(document), encoding="utf-8")  # NaN, Infinity too
    grown = peak_growth(lambda: read_and_build(folder))
    assert grown < BOUND, f"{grown / 2**20:.0f} MB for {json.dumps(document)[:300]}"


OURS_PATHS = [
    "format",
    "version",
    "model",
    "model.n_layer",
    "model.n_head",
    "model.n_embd",
    "model.block_size",
    "model.vocab_size",
    "model.dropout",
    "model.bias",
    "model.activation",
    "tokenizer",
    "tokenizer.kind",
    "tokenizer.chars",
    "dataset",
    "train",
    "train.iter_num",
    "train.best_val_loss",
    "train.tokens_seen",
    "rng",
    "config",
    "files",
    "files.optimizer",
]
HF_PATHS = [
    "model_type",
    "n_layer",
    "n_head",
    "n_embd",
    "n_positions",
    "vocab_size",
    "activation_function",
    "layer_norm_epsilon",
    "n_inner",
    "tie_word_embeddings",
    "scale_attn_weights",
    "scale_attn_by_inverse_layer_idx",
    "nanogpt",
    "nanogpt.model",
    "nanogpt.model.bias",
    "nanogpt.tokenizer",
    "nanogpt.dataset",
    "nanogpt.iter_num",
]


def test_the_untouched_files_read_and_build(folders: dict[str, Path]) -> None:
    for folder in folders.values():
        assert model_from_checkpoint(read_checkpoint(folder)).config.n_layer == 2


@FUZZ
@given(mutation=mutations(OURS_PATHS))
def test_any_checkpoint_json_is_read_or_refused_clearly(
    mutation: Any, folders: dict[str, Path]
) -> None:
    folder = folders["ours"]
    check(folder, "checkpoint.json", mutate(ORIGINALS["checkpoint.json"], mutation))


@FUZZ
@given(mutation=mutations(HF_PATHS))
def test_any_hf_config_json_is_read_or_refused_clearly(
    mutation: Any, folders: dict[str, Path]
) -> None:
    folder = folders["hf"]
    check(folder, "config.json", mutate(ORIGINALS["config.json"], mutation))
