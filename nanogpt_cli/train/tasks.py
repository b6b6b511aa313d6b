"""``--eval-tasks``: lm-evaluation-harness tasks scored on the model being trained, at its
evaluations (``nanogpt_cli.tasks``)."""

from __future__ import annotations

from typing import Any

from ..config.schema import EvalConfig
from ..data.tokenizer import tokenizer_from_dict
from ..harness import NanoGPTLM
from ..log import get_logger
from ..tasks import resolve_tasks, run_tasks, scores, task_manager, task_names
from .rng import capture_rng, restore_rng

logger = get_logger(__name__)


class TrainingTasks:
    """``--eval-tasks`` of a training run: the tasks are looked up when the run starts (a
    wrong name fails before the first step), then run on the model being trained at its
    evaluations, in rank 0 alone. The random generators the harness seeds are put back
    afterwards, so the run trains exactly as it would without the tasks."""

    def __init__(
        self,
        tasks: str,
        include_path: str | None,
        limit: int | None,
        every: int,
        eval_interval: int,
    ) -> None:
        self.include_path = include_path
        self.tasks = resolve_tasks(task_names(tasks), task_manager(include_path))
        self.limit, self.every, self.eval_interval = limit, every, eval_interval

    def due(self, it: int, last: bool) -> bool:
        """At every ``every``-th evaluation (counted from iteration 0), and at the last."""
        return last or (it // self.eval_interval) % self.every == 0

    @classmethod
    def of(cls, cfg: EvalConfig) -> TrainingTasks:
        return cls(
            cfg.eval_tasks,
            cfg.eval_tasks_include_path,
            cfg.eval_tasks_limit,
            cfg.eval_tasks_every,
            cfg.eval_interval,
        )

    def run(self, model: Any, tokenizer_info: dict[str, Any], where: Any) -> dict[str, float]:
        """The tasks' scores for ``model`` as it is now (see ``tasks.scores``), logged with
        their iteration; ``where`` has the run's ``device``, ``dtype`` and ``state``."""
        rng = capture_rng()
        try:
            lm = NanoGPTLM(
                model=model,
                tokenizer=tokenizer_from_dict(tokenizer_info),
                device=where.device,
                dtype=where.dtype,
            )
            lm.source = "the model in training"
            results = run_tasks(
                None,
                self.tasks,
                limit=self.limit,
                include_path=self.include_path,
                bootstrap_iters=0,
                lm=lm,
            )
        finally:
            restore_rng(rng)
        found = scores(results)
        it = where.state.iter_num
        shown = ", ".join(f"{name} {value:.4f}" for name, value in found.items())
        logger.info(f"tasks at iter {it}: {shown}", iter=it, **found)
        return found
