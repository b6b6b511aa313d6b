"""The package's shape: no import cycles, the library never reaches into the CLI, modules of
one job each, and importing or calling the library leaves the host process as it was."""

from __future__ import annotations

import ast
import subprocess
import sys
import textwrap
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "nanogpt_cli"
MAX_LINES = 500
# Modules allowed past MAX_LINES, with the reason (none today).
LONG_MODULES: dict[str, str] = {}


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def is_package(name: str) -> bool:
    return MODULES[name].name == "__init__.py"


def imported_modules(name: str) -> set[str]:
    """The package's modules that module ``name`` imports anywhere in its body (at the top,
    in functions, under TYPE_CHECKING): with a submodule, its packages too, unless
    ``name`` lies inside them (a package's modules import their siblings freely)."""
    tree = ast.parse(MODULES[name].read_text(encoding="utf-8"))
    here = name if is_package(name) else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(tree):
        targets: list[str] = []
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = here.split(".")
                base = base[: len(base) - node.level + 1]
                source = ".".join(base + ([node.module] if node.module else []))
            else:
                source = node.module or ""
            targets = [source] + [f"{source}.{alias.name}" for alias in node.names]
        for target in targets:
            if target not in MODULES:
                continue
            parts = target.split(".")
            for i in range(1, len(parts) + 1):
                prefix = ".".join(parts[:i])
                inside = name == prefix or name.startswith(prefix + ".")
                if prefix in MODULES and prefix != "nanogpt_cli" and not inside:
                    found.add(prefix)
    found.discard(name)
    return found


def test_no_module_imports_itself_through_others() -> None:
    graph = {name: imported_modules(name) for name in MODULES}
    cycles = []
    # depth-first search for a back edge from every module
    for start in graph:
        stack = [(start, [start])]
        seen: set[str] = set()
        while stack:
            node, path = stack.pop()
            for nxt in graph[node]:
                if nxt == start:
                    cycles.append(" -> ".join([*path, start]))
                elif nxt not in seen:
                    seen.add(nxt)
                    stack.append((nxt, [*path, nxt]))
    assert not cycles, "import cycles:\n" + "\n".join(sorted(set(cycles))[:10])


def test_the_walk_finds_a_cycle_where_there_is_one(tmp_path: Path, monkeypatch: object) -> None:
    """The walker itself: it resolves relative imports and sees the engine-launcher cycle
    of old (a lazy import in one, a TYPE_CHECKING import in the other)."""
    engine = "from .launch import launch\n"
    launch = "if TYPE_CHECKING:\n    from .engine import Trainer\n"
    fake = {"nanogpt_cli.train.engine": engine, "nanogpt_cli.train.launch": launch}
    for name, text in fake.items():
        path = tmp_path / f"{name.rpartition('.')[2]}.py"
        path.write_text(text)
        MODULES[name], fake[name] = path, str(MODULES[name])
    try:
        assert "nanogpt_cli.train.launch" in imported_modules("nanogpt_cli.train.engine")
        assert "nanogpt_cli.train.engine" in imported_modules("nanogpt_cli.train.launch")
    finally:
        for name, original in fake.items():
            MODULES[name] = Path(original)


def test_the_library_never_imports_the_cli() -> None:
    cli = ("nanogpt_cli.cli", "nanogpt_cli.__main__")
    wrong = {
        name: sorted(m for m in imported_modules(name) if m.startswith(cli))
        for name in MODULES
        if not name.startswith(cli)
    }
    assert not {name: found for name, found in wrong.items() if found}


def test_modules_have_one_job_each() -> None:
    sizes = {n: len(path.read_text(encoding="utf-8").splitlines()) for n, path in MODULES.items()}
    too_long = {n: s for n, s in sizes.items() if s > MAX_LINES and n not in LONG_MODULES}
    assert not too_long, f"modules over {MAX_LINES} lines: {too_long}"


HOST = """
import ctypes, importlib, pkgutil, sys
calls = []
real_cdll = ctypes.CDLL
class Spy:
    def __init__(self, lib):
        self._lib = lib
    def __getattr__(self, name):
        if name == "mallopt":
            calls.append(name)
        return getattr(self._lib, name)
ctypes.CDLL = lambda *a, **k: Spy(real_cdll(*a, **k))

from loguru import logger
logger.remove()
seen = []
host_sink = logger.add(lambda m: seen.append(m.record["message"]), level="INFO")

import nanogpt_cli
for module in pkgutil.walk_packages(nanogpt_cli.__path__, "nanogpt_cli."):
    if not module.name.startswith(("nanogpt_cli.cli", "nanogpt_cli.__main__")):
        importlib.import_module(module.name)
assert host_sink in logger._core.handlers, "a library import removed the host's sink"

import torch
from nanogpt_cli.config import build_config
from nanogpt_cli.bench import bench_train
from nanogpt_cli.log import configure_logging, get_logger
from nanogpt_cli.runtime import setup_backends
setup_backends(torch.device("cpu"))
cfg = build_config("shakespeare-char", overrides=dict(
    n_layer=1, n_head=1, n_embd=16, block_size=8, batch_size=2, gradient_accumulation_steps=1,
    vocab_size=32, device="cpu", compile=False))
bench_train(cfg, steps=1, warmup=1, measure_floor=False)
assert not calls, "the library called mallopt"
assert not seen, "the library logged without being asked to"
logger.enable("nanogpt_cli")  # the host routes nanogpt's records to its own sinks
get_logger("host").info("from the library")
assert seen == ["from the library"]
configure_logging()  # an explicit call adds nanogpt's own sink, keeping the host's
assert host_sink in logger._core.handlers
print("ok")
"""


def test_importing_and_calling_the_library_leaves_the_host_alone() -> None:
    """A host program's own loguru sink survives importing every library module (and an
    explicit configure_logging), and hears from nanogpt only once it asks; setting up and
    running a training step never calls malloc's mallopt: only the CLI changes process-wide
    settings."""
    done = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(HOST)], capture_output=True, text=True
    )
    assert done.returncode == 0 and done.stdout.strip() == "ok", done.stderr[-2000:]


def test_the_cli_keeps_freed_memory_for_a_cpu_run(monkeypatch: object) -> None:
    """The CLI, which owns its process, does apply the malloc setting before a CPU run."""
    import pytest

    from nanogpt_cli.cli import process

    assert isinstance(monkeypatch, pytest.MonkeyPatch)
    applied: list[bool] = []
    monkeypatch.setattr("nanogpt_cli.runtime.keep_freed_memory", lambda: applied.append(True))
    process.tune_process("cpu")
    assert applied == [True]
