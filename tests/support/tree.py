"""The source tree the tests come from, for the programs they start (operator, agents, hactl).

A test or campaign run from a git worktree must run that worktree's code: without this, a child
started with its own environment imports whatever the venv's editable install points at (the
main checkout, perhaps mid-edit)."""

from __future__ import annotations

import os
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def pythonpath() -> str:
    return os.pathsep.join(str(REPO / d) for d in ("api", "node-agent", "operator"))


def environ() -> dict[str, str]:
    """This process's environment, with the tree's packages first on the path."""
    return {**os.environ, "PYTHONPATH": pythonpath()}
