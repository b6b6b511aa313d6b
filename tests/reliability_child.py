"""What the SIGKILL test runs in its child processes (a module of its own, light to import:
the children are forked from a server that has imported it and torch already)."""

from __future__ import annotations

from typing import Any


def train_in_child(options: dict[str, Any]) -> None:
    from nanogpt_cli.train import resolve_config, train

    train(resolve_config(None, None, options))
