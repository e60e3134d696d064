"""The generation only grows, across restarts and even when the state directory is lost."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from hacluster_agent.state import next_generation, node_uuid


def test_generation_grows_and_is_at_least_unix_time(tmp_path: Path) -> None:
    first = next_generation(tmp_path)
    assert first >= int(time.time()) - 1
    assert next_generation(tmp_path) == first + 1
    assert (tmp_path / "generation").read_text().strip() == str(first + 1)


def test_lost_state_dir_still_comes_back_higher(tmp_path: Path) -> None:
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "generation").write_text("5\n")
    assert next_generation(tmp_path / "a") > 5
    assert next_generation(tmp_path / "b") >= int(time.time()) - 1


def test_corrupt_generation_is_refused_not_reset(tmp_path: Path) -> None:
    (tmp_path / "generation").write_text("garbage")
    with pytest.raises(ValueError, match="refusing to reset"):
        next_generation(tmp_path)


def test_uuid_is_stable(tmp_path: Path) -> None:
    assert node_uuid(tmp_path) == node_uuid(tmp_path)
    assert len(node_uuid(tmp_path)) == 16
