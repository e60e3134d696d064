"""The arbitration rules over one Lease, with the store injected (real API server or in memory).

The Lease's holder is the only node allowed to hold the resources; its `leaseTransitions` is the
fencing epoch. Every write is a compare-and-swap on resourceVersion. See docs/safety.md for why
the windows below keep two owners apart.
"""

from __future__ import annotations

import asyncio
import dataclasses
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Protocol


@dataclass(frozen=True)
class LeaseView:
    holder: str  # "" when released
    transitions: int
    version: str  # resourceVersion: changes on every write, so a renewal is visible
    recreated: bool = False
    """Written by the operator (the Lease was missing: deleted by hand, or not yet created), not by
    an agent's compare-and-swap: its holder is the operator's best knowledge, which can be stale,
    so it proves nobody's ownership. An agent's write clears it (docs/safety.md)."""


class Conflict(Exception):
    """The compare-and-swap lost: someone wrote the Lease since we read it."""


class Unavailable(Exception):
    """The API server could not be reached or did not answer in time."""


class LeaseStore(Protocol):
    async def get(self) -> LeaseView | None: ...

    async def create(self, holder: str) -> LeaseView: ...  # raises Conflict if it exists

    async def swap(self, seen: LeaseView, holder: str, transitions: int) -> LeaseView: ...  # CAS


@dataclass(frozen=True)
class Verdict:
    granted: bool
    reason: str
    epoch: int | None = None
    unavailable: bool = False
    sent_at: float | None = None
    """Granted: when (the arbiter's clock) the write that was granted was sent. The API server
    applied it after this instant, so a peer cannot take the Lease before `sent_at + W`: the
    engine's kernel fence keeps the VIP open until then (docs/safety.md)."""
    taken_over: bool = False
    """Granted a take of a Lease another node held (not free, not ours): that node may still be
    stopping its services, and the engine waits for its node fence before starting ours."""


class Arbiter:
    """One node's side of the Lease protocol."""

    def __init__(
        self,
        store: LeaseStore,
        me: str,
        *,
        window: float,
        poll: float = 0.05,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self.store, self.me, self.window, self.poll = store, me, window, poll
        self.clock, self.sleep = clock, sleep
        # The highest epoch this node has seen in the Lease. A Lease deleted and recreated lower
        # (by hand, or by an older operator at 0) must not take the epoch down: our writes never
        # go below it.
        self.highest = 0
        # The Lease's version as we last read it, and when (our clock, at the answer) we first saw
        # that version: nobody has written the Lease between then and our last read. A take after
        # the owner went silent counts its window from then (docs/safety.md, engine/window.py).
        self.since: tuple[str, float] | None = None

    async def _get(self) -> LeaseView | None:
        seen = await self.store.get()  # the one raw read
        if seen is not None:
            self.saw(seen.version, seen.transitions)
        return seen

    async def look(self) -> LeaseView | None:
        """Read the Lease (the agent's periodic read, for the operator's directives)."""
        return await self._get()

    def saw(self, version: str, transitions: int) -> None:
        """The Lease was read (by us or by the agent's own read of it) and had this version; call it
        when the answer arrived."""
        self.highest = max(self.highest, transitions)
        if self.since is None or self.since[0] != version:
            self.since = (version, self.clock())

    async def take(
        self,
        wanted: Callable[[], bool] = lambda: True,
        hold_off: float | None = None,
        window: float | None = None,
    ) -> Verdict:
        """Become the holder. A free Lease (or ours) is taken at once; one held by the peer, or one
        the operator recreated (whoever it names: the owner it knew may be stale), only after a
        full window without a renewal, so a live owner can prove itself (and an owner cut off from
        the API server has fenced itself by then). `wanted` is asked before the swap: the
        peer heard again meanwhile means it is alive, and we do not take over.

        `hold_off` (the engine's, when the owner has been proving itself since a keepalive before
        we declared it dead): the window counts from when we first saw the Lease's current version,
        however long ago, but the swap waits at least `hold_off` from now. None: from now.
        `window`: the engine's (the longer of ours and the peer's W); None: ours."""
        w = self.window if window is None else window
        try:
            start = self.clock()
            seen = await self._get()
            if seen is None:
                try:
                    sent = self.clock()
                    return self._granted(await self.store.create(self.me), "no Lease yet: created", sent)
                except Conflict:
                    seen = await self._get()
                    if seen is None:
                        raise Unavailable("Lease vanished") from None
            if seen.holder in ("", self.me) and not seen.recreated:
                return await self._swap(seen, "free" if seen.holder != self.me else "already ours")
            if hold_off is not None and self.since is not None and self.since[0] == seen.version:
                deadline = max(self.since[1] + w, start + hold_off)
            else:
                deadline = self.clock() + w
            while self.clock() < deadline:
                await self.sleep(min(self.poll, max(0.0, deadline - self.clock())))
                now = await self._get()
                if now is None or (now.holder in ("", self.me) and not now.recreated):
                    return await self.take(wanted, hold_off, window)
                if now.version != seen.version:
                    who = seen.holder or "the owner"
                    return Verdict(False, f"{who} renewed the Lease: it is alive; the heartbeat link is down")
            if not wanted():
                return Verdict(False, f"{seen.holder} is heard again holding the groups: not taking over")
            assert self.since is not None  # set by the read that returned `seen`
            unchanged = (self.clock() - self.since[1]) * 1000
            who = (
                f"the operator recreated the Lease ({seen.holder or 'no holder'}) and nobody claimed it"
                if seen.recreated
                else f"{seen.holder} did not renew"
            )
            granted = await self._swap(
                seen, f"{who}: the Lease unchanged for {unchanged:.0f}ms (W {w * 1000:.0f}ms)"
            )
            return dataclasses.replace(granted, taken_over=True)
        except Conflict:
            return Verdict(False, "lost the compare-and-swap: the holder renewed")
        except Unavailable as e:
            return Verdict(False, f"API server unavailable: {e}", unavailable=True)

    async def renew(self) -> Verdict:
        """Prove we are alive (the holder's answer to a silent peer, or to a Lease the operator
        recreated). Not holding it = lost; free (recreated without a holder) = claimed again."""
        try:
            for _attempt in range(3):
                seen = await self._get()
                if seen is not None and seen.holder == "":
                    # Free while we hold the groups: nobody else can hold them (a holder frees it
                    # only after stopping them), so it was recreated empty: claim it again.
                    return await self._swap(seen, "the Lease was free: claimed again")
                if seen is None or seen.holder != self.me:
                    holder = seen.holder if seen else "nobody"
                    return Verdict(False, f"the Lease is held by {holder or 'nobody'}: we lost it")
                try:
                    epoch = max(seen.transitions, self.highest)
                    sent = self.clock()
                    return self._granted(await self.store.swap(seen, self.me, epoch), "renewed", sent)
                except Conflict:
                    # Someone else wrote it (the operator's annotations, or a take): read it again;
                    # still ours means the write was not a take. The caller's deadline bounds this.
                    continue
            return Verdict(False, "the Lease kept changing under us: we lost it")
        except Conflict:
            # claiming a free Lease again lost its compare-and-swap: someone else wrote it first.
            # Escaping, it ended the agent's request task and the engine waited for the answer for
            # good (sim seed in 200000-239999, CI form).
            return Verdict(False, "the Lease was free and someone else wrote it first: we lost it")
        except Unavailable as e:
            return Verdict(False, f"API server unavailable: {e}", unavailable=True)

    async def hand_back(self, to: str) -> Verdict:
        """Give a Lease we just took back to `to` (a new epoch): it turned out alive and holding."""
        try:
            seen = await self._get()
            if seen is None or seen.holder != self.me:
                return Verdict(True, "not ours")
            return self._granted(
                await self.store.swap(seen, to, max(seen.transitions, self.highest) + 1),
                f"handed back to {to}",
            )
        except (Conflict, Unavailable) as e:
            return Verdict(
                False, f"could not hand the Lease back: {e}", unavailable=isinstance(e, Unavailable)
            )

    async def release(self) -> Verdict:
        """After our resources are stopped: free the Lease so the peer may take it at once."""
        try:
            seen = await self._get()
            if seen is None or seen.holder != self.me:
                return Verdict(True, "not ours")
            await self.store.swap(seen, "", seen.transitions)
            return Verdict(True, "released")
        except (Conflict, Unavailable) as e:
            return Verdict(False, f"could not release the Lease: {e}", unavailable=isinstance(e, Unavailable))

    async def _swap(self, seen: LeaseView, why: str) -> Verdict:
        base = max(seen.transitions, self.highest)
        ours = seen.holder == self.me and seen.transitions >= self.highest and not seen.recreated
        transitions = base if ours else base + 1
        sent = self.clock()
        return self._granted(await self.store.swap(seen, self.me, transitions), why, sent)

    def _granted(self, view: LeaseView, why: str, sent: float | None = None) -> Verdict:
        self.highest = max(self.highest, view.transitions)
        return Verdict(True, why, view.transitions, sent_at=sent)


class MemoryLeaseStore:
    """An in-memory Lease with the API server's compare-and-swap semantics (for unit tests)."""

    def __init__(self) -> None:
        self.view: LeaseView | None = None
        self.counter = 0
        self.down = False

    def _check(self) -> None:
        if self.down:
            raise Unavailable("connection refused")

    async def get(self) -> LeaseView | None:
        self._check()
        view = self.view
        await asyncio.sleep(0)  # a network round trip: let concurrent callers interleave
        return view

    async def create(self, holder: str) -> LeaseView:
        self._check()
        if self.view is not None:
            raise Conflict("exists")
        return self._write(holder, 1)

    async def swap(self, seen: LeaseView, holder: str, transitions: int) -> LeaseView:
        self._check()
        if self.view is None or self.view.version != seen.version:
            raise Conflict("resourceVersion changed")
        return self._write(holder, transitions)

    def _write(self, holder: str, transitions: int) -> LeaseView:
        self.counter += 1
        self.view = LeaseView(holder, transitions, str(self.counter))
        return self.view
