"""Benchmark tasks of lm-evaluation-harness by name: looked up (an unknown name is one line
with the closest ones), run on a nanogpt model through ``harness.NanoGPTLM``, and their
results written as the harness's JSON, shown as its table and flattened to scores.

``nanogpt eval --tasks`` calls ``run_tasks``; training's ``--eval-tasks`` goes through
``train.tasks``. Importing this module needs the optional extra ``eval`` (``lm_eval``).
"""

from __future__ import annotations

import difflib
import functools
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from .errors import ConfigError, DatasetError, first_line
from .harness import NanoGPTLM
from .log import get_logger

logger = get_logger(__name__)


def task_names(tasks: str | Sequence[str]) -> list[str]:
    """``"hellaswag,lambada_openai"`` (or a list of such) as a list of names."""
    items = [tasks] if isinstance(tasks, str) else list(tasks)
    names = [name.strip() for item in items for name in item.split(",") if name.strip()]
    if not names:
        raise ConfigError("--tasks names no task; e.g. --tasks hellaswag,lambada_openai")
    return names


@functools.lru_cache(maxsize=4)
def task_manager(include_path: str | None = None) -> Any:
    """The harness's index of tasks (its own and those under ``include_path``); building
    it reads every task file (a few seconds), so it is kept."""
    from lm_eval.tasks import TaskManager

    if include_path is not None and not Path(include_path).exists():
        raise ConfigError(f"--include-path {include_path} does not exist")
    return TaskManager(include_path=include_path)


def resolve_tasks(names: Sequence[str], manager: Any) -> list[str]:
    """Task, group and tag names (glob patterns too) as the harness knows them; an unknown
    name is a ``ConfigError`` with the closest names and where to list them all."""
    resolved: list[str] = []
    for name in names:
        if name.endswith((".yaml", ".yml")):  # a task file, as lm-eval --tasks takes one
            if not Path(name).is_file():
                raise ConfigError(f"task file {name} does not exist")
            resolved.append(str(Path(name).resolve()))
            continue
        matches = manager.match_tasks([name])
        if not matches:
            close = difflib.get_close_matches(name, manager.all_tasks, n=3, cutoff=0.6)
            hint = f"; did you mean {', '.join(close)}?" if close else ""
            raise ConfigError(
                f"unknown task '{name}'{hint} list the harness's tasks with `lm-eval ls "
                "tasks`; your own task files go in a folder given by --include-path"
            )
        resolved += [m for m in matches if m not in resolved]
    return resolved


def run_tasks(
    checkpoint: str | Path | None,
    tasks: str | Sequence[str],
    *,
    num_fewshot: int | None = None,
    limit: float | None = None,
    batch_size: int | str | None = None,
    output_path: str | Path | None = None,
    include_path: str | Path | None = None,
    device: str | None = None,
    dtype: str | None = None,
    meta: str | Path | None = None,
    cpu_kernels: str | None = None,
    bootstrap_iters: int = 100000,
    lm: NanoGPTLM | None = None,
) -> dict[str, Any]:
    """Evaluate a checkpoint (or ``lm``, an adapter already made) on harness tasks: the
    harness's results dict (``results``, ``groups``, ``configs``, ``n-shot``, ...), written
    as JSON to ``output_path`` when given. ``limit`` takes the first N documents of each
    task (a fraction below 1: that share of them)."""
    if limit is not None and limit <= 0:
        raise ConfigError(f"--limit must be positive (got {limit})")
    if num_fewshot is not None and num_fewshot < 0:
        raise ConfigError(f"--num-fewshot must not be negative (got {num_fewshot})")
    manager = task_manager(str(include_path) if include_path is not None else None)
    resolved = resolve_tasks(task_names(tasks), manager)
    if lm is None:
        lm = NanoGPTLM(
            checkpoint,
            device=device,
            dtype=dtype,
            batch_size=batch_size,
            meta=meta,
            cpu_kernels=cpu_kernels,
        )
    logger.info(f"evaluating {lm.source} on {', '.join(resolved)}")
    import lm_eval

    try:
        results = lm_eval.simple_evaluate(
            model=lm,
            tasks=resolved,
            num_fewshot=num_fewshot,
            limit=limit,
            task_manager=manager,
            log_samples=False,
            bootstrap_iters=bootstrap_iters,
        )
    except (KeyError, ValueError, FileNotFoundError, ConnectionError) as e:
        # what the harness raises for a task it cannot build or a dataset it cannot fetch
        line = first_line(e)
        if isinstance(e, ConnectionError) or "Hub" in line:
            line += (
                "; the harness fetches each task's data from the Hugging Face hub once (into "
                "the datasets cache); offline, use task files of your own (docs/evaluation.md)"
            )
        raise DatasetError(f"lm-evaluation-harness: {line}") from None
    if results is None:  # not rank 0 of a distributed harness run
        return {}
    results["config"]["model"] = lm.source
    if output_path is not None:
        write_results(results, Path(output_path))
    return results


def write_results(results: dict[str, Any], path: Path) -> None:
    """The harness's results as JSON (what its ``--output_path`` writes, samples aside)."""
    from lm_eval.utils import handle_non_serializable

    from .safe_files import os_error_line, write_text

    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise ConfigError(os_error_line(e, path.parent, "--output-path", "creating")) from None
    text = json.dumps(results, indent=2, default=handle_non_serializable, ensure_ascii=False)
    write_text(path, text + "\n", ConfigError, "--output-path")


def results_table(results: dict[str, Any]) -> str:
    """The harness's Markdown table of the results (and of the groups, when there are)."""
    from lm_eval.utils import make_table

    table = make_table(results)
    if results.get("groups"):
        table += "\n" + make_table(results, "groups")
    return str(table)


def scores(results: dict[str, Any]) -> dict[str, float]:
    """``{"hellaswag/acc_norm": 0.31, ...}``: each task's and group's metrics, without
    their standard errors (a metric's filter joins its name unless it is ``none``)."""
    flat: dict[str, float] = {}
    for section in ("results", "groups"):
        for task, metrics in (results.get(section) or {}).items():
            for key, value in metrics.items():
                metric, _, filter_name = key.partition(",")
                if "_stderr" in metric or not isinstance(value, (int, float)) or not filter_name:
                    continue
                name = metric if filter_name == "none" else f"{metric}/{filter_name}"
                flat[f"{task}/{name}"] = float(value)
    return flat
