"""The loss trace of a 20-step tiny run, stored before the model options of issue 24 landed.

``python tests/model_trace.py`` writes ``tests/data/loss_trace_20_steps.json`` from the code
as it is; ``tests/test_model_options.py`` compares fresh runs with it.
"""

from __future__ import annotations

import json
import os
import platform
import sys
import tempfile
from pathlib import Path
from typing import Any

TRACE_FILE = Path(__file__).resolve().parent / "data" / "loss_trace_20_steps.json"

# conftest.TINY as it was when the trace was stored, every step logged, one evaluation at
# the end: a frozen copy on purpose, so that changing TINY never changes the stored trace.
TRACE_OPTIONS: dict[str, Any] = {
    "n_layer": 2,
    "n_head": 2,
    "n_embd": 32,
    "block_size": 16,
    "batch_size": 8,
    "gradient_accumulation_steps": 1,
    "dropout": 0.0,
    "learning_rate": 3e-3,
    "min_lr": 3e-4,
    "warmup_iters": 5,
    "max_iters": 20,
    "lr_decay_iters": 20,
    "eval_interval": 20,
    "eval_iters": 4,
    "log_interval": 1,
    "device": "cpu",
    "compile": False,
    "sample_at_end": False,
    "seed": 1337,
}


def machine() -> dict[str, str]:
    """What a float32 CPU trace depends on besides the code: torch and the processor."""
    import torch

    cpu = platform.processor()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "torch": torch.__version__,
        "cpu": cpu,
        "capability": torch.backends.cpu.get_cpu_capability(),
        "kernels": os.environ.get("NANOGPT_CPU_KERNELS", ""),
    }


def loss_trace(data_dir: Path, out_dir: Path, **overrides: Any) -> list[float]:
    """Per-step training losses of a 20-step run, then the final val loss."""
    from nanogpt_cli.config import build_config
    from nanogpt_cli.metrics import read_metrics
    from nanogpt_cli.train import train

    options = {**TRACE_OPTIONS, "data_dir": str(data_dir), "out_dir": str(out_dir), **overrides}
    train(build_config("shakespeare-char", overrides=options))
    records = read_metrics(out_dir / "metrics.jsonl")
    steps = [r["loss"] for r in records if r["kind"] == "train"]
    val = [r["val_loss"] for r in records if r["kind"] == "eval" and r["iter"] == 20]
    return steps + val


def main() -> None:
    os.environ.setdefault("NANOGPT_CPU_KERNELS", "on")  # as the test suite runs
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from conftest import make_text

    from nanogpt_cli.data.prepare import prepare_shakespeare_char

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        corpus = root / "corpus.txt"
        corpus.write_text(make_text(), encoding="utf-8")
        prepare_shakespeare_char(source=str(corpus), data_dir=root / "datasets")
        trace = loss_trace(root / "datasets", root / "out")
    TRACE_FILE.write_text(
        json.dumps({"machine": machine(), "losses": [x.hex() for x in trace]}, indent=1) + "\n"
    )
    print(f"wrote {TRACE_FILE}: {len(trace)} losses, last {trace[-1]:.4f}")


if __name__ == "__main__":
    main()
