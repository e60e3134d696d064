"""What a node must remember across restarts: its generation (only ever grows) and its UUID."""

from __future__ import annotations

import os
import time
import uuid
from pathlib import Path


def _write_atomic(path: Path, data: bytes) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)
    dfd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dfd)
    finally:
        os.close(dfd)


def next_generation(state_dir: Path) -> int:
    """Read, increment and durably store the generation before the first message goes out.

    Peers drop a lower generation as a replay, so it must never go backwards. Like Heartbeat 3.0.6
    it is at least the Unix time, so a node whose state directory was lost (a fresh container)
    still comes back above its last generation; an unreadable file is an error, never a reset.
    """
    state_dir.mkdir(parents=True, exist_ok=True)
    path = state_dir / "generation"
    try:
        text = path.read_text().strip()
    except FileNotFoundError:
        text = "0"
    if not text.isdigit():
        raise ValueError(f"{path}: not a generation number: {text[:20]!r}; refusing to reset it")
    gen = max(int(text) + 1, int(time.time()))
    _write_atomic(path, f"{gen}\n".encode())
    return gen


def node_uuid(state_dir: Path) -> bytes:
    """A stable 16-byte node UUID (Heartbeat's srcuuid), created once."""
    state_dir.mkdir(parents=True, exist_ok=True)
    path = state_dir / "uuid"
    try:
        return uuid.UUID(path.read_text().strip()).bytes
    except (FileNotFoundError, ValueError):
        new = uuid.uuid4()
        _write_atomic(path, f"{new}\n".encode())
        return new.bytes
