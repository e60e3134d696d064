"""Virtual time: one priority queue of (time, seq, event), a seeded RNG, and a trampoline that runs
the real `async def` code (the Arbiter) without asyncio.

Nothing here reads a real clock: the same seed gives the same run, event for event. Events that
belong to a node go through the node (`node.py`), which delays them while its VM is paused or its
agent's loop is stalled, and drops them when the process they belong to has died.
"""

from __future__ import annotations

import bisect
import heapq
import random
from collections.abc import Callable, Coroutine, Generator
from typing import Any


def last_at(history: list[Any], t: float) -> Any:
    """The last entry of `history` (tuples appended in time order, the time first) at or before
    `t`: what a record made then showed. None: nothing yet."""
    i = bisect.bisect_right(history, t, key=lambda e: e[0])
    return history[i - 1] if i else None


class Event:
    """A callback at a time. `cancel()` makes the queue skip it."""

    __slots__ = ("args", "cancelled", "fn")

    def __init__(self, fn: Callable[..., None], args: tuple[Any, ...]) -> None:
        self.fn, self.args, self.cancelled = fn, args, False

    def cancel(self) -> None:
        self.cancelled = True

    def fire(self) -> None:
        self.fn(*self.args)


class Sim:
    """The scheduler. `now` is the true (global) time in seconds; nodes keep their own clocks."""

    def __init__(self, seed: int) -> None:
        self.now = 0.0
        self.rng = random.Random(seed)
        self._q: list[tuple[float, int, Event]] = []
        self._seq = 0
        self.steps = 0
        self.after_step: Callable[[], None] | None = None
        self.stopped = False

    def at(self, t: float, fn: Callable[..., None], *args: Any) -> Event:
        ev = Event(fn, args)
        self.push(t, ev)
        return ev

    def later(self, delay: float, fn: Callable[..., None], *args: Any) -> Event:
        return self.at(self.now + max(0.0, delay), fn, *args)

    def push(self, t: float, ev: Event) -> None:
        self._seq += 1
        heapq.heappush(self._q, (t if t > self.now else self.now, self._seq, ev))

    def pending(self) -> list[tuple[float, int, Event]]:
        return list(self._q)

    def run_until(self, end: float) -> None:
        q, pop, check = self._q, heapq.heappop, self.after_step
        while q and not self.stopped:
            t = q[0][0]
            if t > end:
                break
            _, _, ev = pop(q)
            if ev.cancelled:
                continue
            self.now = t
            self.steps += 1
            ev.fire()
            if check is not None:
                check()
        if not self.stopped and self.now < end:
            self.now = end


# -- the trampoline ---------------------------------------------------------------------------


class Future:
    """What the simulated store and sleep hand to `await`: resolved later by a scheduled event."""

    __slots__ = ("callbacks", "done", "exc", "value")

    def __init__(self) -> None:
        self.done = False
        self.value: Any = None
        self.exc: BaseException | None = None
        self.callbacks: list[Callable[[Future], None]] = []

    def __await__(self) -> Generator[Future, None, Any]:
        if not self.done:
            yield self
        if self.exc is not None:
            raise self.exc
        return self.value

    def set_result(self, value: Any) -> None:
        if self.done:
            return
        self.done, self.value = True, value
        self._wake()

    def set_exception(self, exc: BaseException) -> None:
        if self.done:
            return
        self.done, self.exc = True, exc
        self._wake()

    def _wake(self) -> None:
        cbs, self.callbacks = self.callbacks, []
        for cb in cbs:
            cb(self)


class Task:
    """Drives one coroutine: each `await` of a Future suspends it until the Future resolves.
    `close()` abandons it (a timeout, a crashed process): the coroutine never resumes."""

    __slots__ = ("closed", "coro", "finished", "on_done")

    def __init__(self, coro: Coroutine[Any, Any, Any], on_done: Callable[[Any], None] | None = None) -> None:
        self.coro, self.on_done = coro, on_done
        self.closed = self.finished = False
        self._step(None, None)

    def _step(self, value: Any, exc: BaseException | None) -> None:
        try:
            fut = self.coro.send(value) if exc is None else self.coro.throw(exc)
        except StopIteration as stop:
            self.finished = True
            if self.on_done is not None:
                self.on_done(stop.value)
            return

        if not isinstance(fut, Future):
            raise TypeError(f"the simulation awaits only its own Futures, got {fut!r}")
        fut.callbacks.append(self._wake)

    def _wake(self, fut: Future) -> None:
        if self.closed:
            return
        self._step(fut.value, fut.exc)

    def close(self) -> None:
        if self.closed or self.finished:
            return
        self.closed = True
        self.coro.close()
