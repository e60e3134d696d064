"""The narrow interface every resource driver implements, so the group runner needs no driver details."""

from __future__ import annotations

from enum import StrEnum
from typing import Protocol, runtime_checkable


class ResourceState(StrEnum):
    RUNNING = "running"
    STOPPED = "stopped"
    FAILED = "failed"


class ResourceError(Exception):
    """An action on a resource failed; the message names the resource, the action and why."""

    def __init__(self, resource: str, action: str, reason: str) -> None:
        super().__init__(f"{resource}: {action} failed: {reason}")
        self.resource = resource
        self.action = action
        self.reason = reason


@runtime_checkable
class Resource(Protocol):
    """One haresources resource on this node.

    `start` and `stop` are idempotent (starting a running resource or stopping a stopped one
    succeeds) and raise ResourceError on failure. `status` raises ResourceError only when the
    state cannot be learned at all (script missing, timed out).
    """

    @property
    def name(self) -> str: ...

    async def start(self) -> None: ...

    async def stop(self) -> None: ...

    async def status(self) -> ResourceState: ...


@runtime_checkable
class Renewable(Protocol):
    """A resource whose hold expires by itself unless renewed (a VIP with a kernel lifetime)."""

    async def refresh(self) -> None: ...


@runtime_checkable
class Announcing(Protocol):
    """A resource that tells its neighbours it moved here (gratuitous ARP / unsolicited NA)."""

    async def announce(self) -> None: ...


@runtime_checkable
class Fenceable(Protocol):
    """A resource that clients reach this node through (a VIP): when the node fences itself it is
    removed first, at once, before any service is stopped, so clients stop arriving here."""

    async def fence(self) -> None: ...
