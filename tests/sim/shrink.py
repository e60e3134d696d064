"""Shrink a failing schedule: drop faults, then shorten them, while the run still fails the same way."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace

from .faults import Fault, nemesis
from .world import Config, RunResult, run_one


def shrink(
    seed: int,
    cfg: Config,
    schedule: list[Fault] | None = None,
    *,
    kinds: set[str] | None = None,
    log: Callable[[str], None] = lambda _: None,
    max_runs: int = 200,
) -> tuple[list[Fault], RunResult]:
    """The smallest schedule found (same seed, same parameters) that still shows one of `kinds`
    (default: the violation kinds of the original run)."""
    sched = list(schedule if schedule is not None else nemesis(seed, cfg.span, cfg.deadtime))
    first = run_one(seed, cfg, sched)
    if not first.failed:
        return sched, first
    want = kinds or {v.kind for v in first.violations}
    runs = 0

    def fails(candidate: list[Fault]) -> RunResult | None:
        nonlocal runs
        runs += 1
        r = run_one(seed, cfg, candidate)
        return r if any(v.kind in want for v in r.violations) else None

    best = first
    changed = True
    while changed and runs < max_runs:
        changed = False
        for i in range(len(sched)):  # drop one fault
            if i >= len(sched):
                break
            cand = sched[:i] + sched[i + 1 :]
            got = fails(cand)
            if got is not None:
                log(f"  dropped {sched[i].describe()}")
                sched, best, changed = cand, got, True
                break
        if changed:
            continue
        for i, f in enumerate(sched):  # shorten one fault
            if f.duration < 0.1:
                continue
            cand = [*sched[:i], replace(f, duration=round(f.duration / 2, 3)), *sched[i + 1 :]]
            got = fails(cand)
            if got is not None:
                log(f"  shortened {f.kind} to {f.duration / 2:.3f}s")
                sched, best, changed = cand, got, True
                break
    return sched, best
