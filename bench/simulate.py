#!/usr/bin/env python3
"""Deterministic simulation of the two agents' ownership code under composed faults (issue 11).

    bench/simulate.py --seeds 1000 [--start 0] [--timing 100ms/300ms] [--mode kube|standalone]
    bench/simulate.py --replay SEED --trace        # the same run, event for event, with its trace
    bench/simulate.py --shrink SEED                # the smallest schedule that still fails
    bench/simulate.py --seeds 1000000 --jobs 2 --compiled   # the long run, compiled (tests/sim/build.py)
    bench/simulate.py --seeds 100000 --start 300000 --jobs 2 --compiled --ledger runs.jsonl
    bench/simulate.py --ledger runs.jsonl --tally  # the long run in chunks (over days): what they add up to

Every run: two real Engines and Arbiters, the daemon's dispatch, a simulated Lease/API server,
heartbeat link, fence guards and kernels, and a nemesis schedule drawn from the seed; the
invariants of tests/sim/invariants.py are checked at every step. Ends with
`RESULT seeds=… violations=… worst_heal_ms=…` (violations: seeds with at least one).
Run from the repository root with PYTHONPATH=.:api:node-agent:operator.
"""

from __future__ import annotations

import argparse
import collections
import datetime
import hashlib
import json
import os
import subprocess
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
for extra in (ROOT, ROOT / "api", ROOT / "node-agent", ROOT / "operator"):
    if str(extra) not in sys.path:
        sys.path.append(str(extra))  # after PYTHONPATH: a compiled engine (dev: sim-engine) comes first

from tests.sim import build  # noqa: E402
from tests.sim.faults import ADDED, KINDS, Fault, nemesis  # noqa: E402
from tests.sim.invariants import RESUMED_VM_BOUND  # noqa: E402
from tests.sim.shrink import shrink  # noqa: E402
from tests.sim.world import Config, RunResult, parse_timing, run_one  # noqa: E402

Summary = tuple[
    int, list[tuple[str, float, float, str, tuple[str, ...]]], float | None, list[float], list[float]
]
"""seed, violations, heal time, resumed VMs' VIP answers, resumed VMs' service overlaps (e)"""


def config_args(a: argparse.Namespace) -> dict[str, Any]:
    """The run's Config as plain values: what the worker processes are sent (they build the Config
    themselves; the compiled form's objects are never pickled)."""
    k, d = parse_timing(a.timing)
    return {
        "keepalive": k,
        "deadtime": d,
        "kube": a.mode == "kube",
        "window": a.window,
        "span": a.span,
        "auto_failback": True if a.agent_failback else None,
        "settled_exit": a.settled_exit,
        **({"node_fence_rules": False} if a.without_node_fence_rules else {}),
        **({"recreation_rules": False} if a.without_recreation_rules else {}),
        **({"node_fence": a.node_fence} if a.node_fence is not None else {}),
    }


def config_of(a: argparse.Namespace) -> Config:
    return Config(**config_args(a))


def involved(r: RunResult, at: float, cfg: Config) -> tuple[str, ...]:
    """The fault kinds under way (or just over) when a violation started."""
    warm = cfg.warmup
    kinds = {
        f.kind for f in r.schedule if warm + f.at <= at + 1e-6 and at <= warm + f.end + 2 * cfg.deadtime + 5.0
    }
    return tuple(sorted(kinds)) or ("(none)",)


def one(args: tuple[int, dict[str, Any], str | None]) -> Summary:
    seed, cfg_args, only = args
    cfg = Config(**cfg_args)
    kinds = {only: 1.0} if only else None
    sched = nemesis(seed, cfg.span, cfg.deadtime, kinds=kinds) if kinds else None
    try:
        r = run_one(seed, cfg, sched)
    except Exception as e:  # the simulator (or the code it runs) crashed: a failed seed, not a dead worker
        return seed, [("crashed", 0.0, 0.0, f"{type(e).__name__}: {e}", ("(replay it)",))], None, [], []
    violations = [(v.kind, v.at, v.duration, v.detail, involved(r, v.at, cfg)) for v in r.violations]
    return seed, violations, r.heal, r.resumed, r.resumed_services


def digest(results: list[Summary]) -> str:
    """One hash of every run's outcome (its seed, violations, heal time, resumed VMs): two forms of
    the simulator that agree on it ran the same runs."""
    h = hashlib.sha256()
    for r in results:
        h.update(repr(r).encode())
    return h.hexdigest()[:16]


def same_as_interpreted(argv: list[str], a: argparse.Namespace, results: list[Summary]) -> bool:
    """Run the first N seeds again with the interpreted simulator and compare the digests."""
    n = min(a.same_as_interpreted, a.seeds)
    args: list[str] = []
    skip = False
    for arg in argv:  # the same arguments, less these two (and the value of the first)
        if skip:
            skip = False
        elif arg == "--same-as-interpreted":
            skip = True
        elif not arg.startswith("--same-as-interpreted=") and arg != "--compiled":
            args.append(arg)
    args += ["--seeds", str(n), "--digest-only"]
    env = dict(
        os.environ,
        PYTHONPATH=os.pathsep.join(
            str(p) for p in (ROOT, ROOT / "api", ROOT / "node-agent", ROOT / "operator")
        ),
    )
    proc = subprocess.run(
        [sys.executable, str(Path(__file__).resolve()), *args],
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    theirs = proc.stdout.strip().splitlines()[-1:] if proc.returncode == 0 else []
    ours = f"DIGEST {digest(results[:n])}"
    same = theirs == [ours]
    print(f"compiled and interpreted simulators on the first {n} seeds: "
          f"{'the same runs' if same else 'DIFFERENT'} ({ours} vs {theirs or proc.stderr[-500:]})")  # fmt: skip
    return same


def ledger_entry(a: argparse.Namespace, results: list[Summary], elapsed: float) -> dict[str, Any]:
    """One chunk of a long run, as the ledger keeps it: the code it ran (build.key: every source
    file), the form and the settings, the seed range, what it found."""
    failing = sorted(s for s, vs, *_ in results if vs)
    heals = [h for _, _, h, *_ in results if h is not None]
    resumed = [d for _, _, _, rs, _ in results for d in rs]
    return {
        "key": build.key(ROOT),
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "form": "compiled" if build.is_compiled() else "interpreted",
        "settings": settings_of(a),
        "start": a.start,
        "seeds": a.seeds,
        "violating_seeds": failing,
        "worst_heal_ms": round(max(heals) * 1000) if heals else None,
        "worst_resumed_ms": round(max(resumed) * 1000, 1) if resumed else None,
        "elapsed_s": round(elapsed, 1),
        "jobs": a.jobs,
    }


def settings_of(a: argparse.Namespace) -> str:
    s = f"{a.timing} {a.mode} W={config_of(a).w:g}s span={a.span:g}s"
    s += f" settled_exit={a.settled_exit:g}s" if a.settled_exit is not None else ""
    s += f" only={a.only}" if a.only else ""
    s += f" node_fence={a.node_fence:g}" if a.node_fence is not None else ""
    s += " without_node_fence_rules" if a.without_node_fence_rules else ""
    s += " without_recreation_rules" if a.without_recreation_rules else ""
    return s + (" agent_failback" if a.agent_failback else "")


def tally(path: Path) -> int:
    """What the ledger's chunks add up to, per code version and settings: seeds, distinct seeds
    (a seed run twice counts once), violating seeds, worst heal. The current code's first."""
    if not path.exists():
        print(f"simulate: no ledger at {path}", file=sys.stderr)
        return 2
    groups: dict[tuple[str, str], list[dict[str, Any]]] = collections.defaultdict(list)
    for n, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip():
            continue
        try:
            e = json.loads(line)
            groups[(e["key"], e["settings"])].append(e)
        except (ValueError, KeyError) as err:
            print(f"simulate: {path}:{n}: not a ledger entry ({err})", file=sys.stderr)
            return 2
    current = build.key(ROOT)
    for (key, settings), entries in sorted(groups.items(), key=lambda kv: (kv[0][0] != current, kv[0])):
        distinct: set[int] = set()
        for e in entries:
            distinct.update(range(e["start"], e["start"] + e["seeds"]))
        bad = sorted({s for e in entries for s in e["violating_seeds"]})
        heals = [e["worst_heal_ms"] for e in entries if e["worst_heal_ms"] is not None]
        hours = sum(e["elapsed_s"] for e in entries) / 3600
        mark = "current code" if key == current else "other code"
        print(f"{key} ({mark}) {settings}: {len(entries)} chunk(s), {sum(e['seeds'] for e in entries)} seeds "
              f"({len(distinct)} distinct), {hours:.1f} h, violating seeds {len(bad)}"
              f"{' ' + str(bad[:10]) if bad else ''}, worst heal {max(heals, default=0)} ms")  # fmt: skip
    return 0


def print_schedule(schedule: list[Fault]) -> None:
    for f in schedule:
        print(f"    {f.describe()}")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--seeds", type=int, default=100)
    p.add_argument("--start", type=int, default=0)
    p.add_argument("--timing", default="100ms/300ms", help="keepalive/deadtime, e.g. 500ms/3s, 1s/10s")
    p.add_argument("--mode", choices=("kube", "standalone"), default="kube")
    p.add_argument(
        "--window",
        type=float,
        help="W (--arbitration-window), seconds; default: the agents' own for the timing",
    )
    p.add_argument("--span", type=float, default=60.0, help="seconds of faults per run")
    p.add_argument("--only", choices=sorted({**KINDS, **ADDED}), help="draw faults of this kind only")
    p.add_argument(
        "--node-fence", type=float, metavar="P", help="the share of seeds with a node fence (default 0.5)"
    )
    p.add_argument(
        "--without-node-fence-rules",
        action="store_true",
        help="check (e) but give the agents no stop budget: what the node fence closes",
    )
    p.add_argument(
        "--without-recreation-rules",
        action="store_true",
        help="the operator recreates a deleted Lease as before arbiter/recreate.py: what the rules close",
    )
    p.add_argument("--jobs", type=int, default=1, help="worker processes")
    p.add_argument(
        "--settled-exit",
        type=float,
        metavar="S",
        help="end each run once the pair stayed settled S seconds after the faults (CI's short form)",
    )
    p.add_argument(
        "--agent-failback",
        action="store_true",
        help="the agents fail back by themselves in Kubernetes mode, as before the operator owned "
        "failback: replays the seeds found then",
    )
    p.add_argument("--replay", type=int, metavar="SEED")
    p.add_argument("--trace", action="store_true", help="with --replay: print the run's trace")
    p.add_argument("--shrink", type=int, metavar="SEED")
    p.add_argument("--show", type=int, default=10, help="violating seeds to list")
    p.add_argument(
        "--compiled",
        action="store_true",
        help="run the simulator compiled with mypyc (tests/sim/build.py: built once, cached): about "
        "twice as fast, the same runs",
    )
    p.add_argument(
        "--same-as-interpreted",
        type=int,
        metavar="N",
        default=0,
        help="after the run, run its first N seeds interpreted and fail unless every run is the same",
    )
    p.add_argument("--digest-only", action="store_true", help=argparse.SUPPRESS)
    p.add_argument(
        "--ledger",
        type=Path,
        metavar="FILE",
        help="append this run (its code's key, settings, seed range, findings) to FILE, one JSON line",
    )
    p.add_argument("--tally", action="store_true", help="with --ledger: print what its runs add up to")
    raw = sys.argv[1:] if argv is None else argv
    a = p.parse_args(raw)
    if a.tally:
        if a.ledger is None:
            p.error("--tally needs --ledger FILE")
        return tally(a.ledger)
    if a.compiled and not build.is_compiled():
        try:
            where = build.ensure()
        except build.BuildError as e:
            print(f"simulate: the compiled simulator cannot be built: {e}", file=sys.stderr)
            return 2
        env = dict(os.environ, PYTHONPATH=str(where))
        os.execve(sys.executable, [sys.executable, str(Path(__file__).resolve()), *raw], env)
    cfg = config_of(a)
    kinds = {a.only: 1.0} if a.only else None

    if a.replay is not None or a.shrink is not None:
        seed = a.replay if a.replay is not None else a.shrink
        assert seed is not None
        sched = nemesis(seed, cfg.span, cfg.deadtime, kinds=kinds)
        if a.shrink is not None:
            print(f"seed {seed} ({a.timing}, {a.mode}): shrinking {len(sched)} faults")
            sched, _ = shrink(seed, cfg, sched, log=print)
        r = run_one(seed, cfg, sched, tracing=a.trace)
        print(f"seed {seed} ({a.timing}, {a.mode}), schedule (times after the {cfg.warmup:g}s warm-up):")
        print_schedule(sched)
        if a.trace:
            print("trace:")
            for line in r.trace:
                if "Late heartbeat" not in line:
                    print("  " + line)
        for v in r.violations:
            print(f"  VIOLATION {v.describe()}")
        heal = "-" if r.heal is None else f"{r.heal * 1000:.0f}"
        print(f"RESULT seeds=1 violations={int(r.failed)} worst_heal_ms={heal}")
        return 1 if r.failed else 0

    seeds = range(a.start, a.start + a.seeds)
    work = [(s, config_args(a), a.only) for s in seeds]
    t0 = time.perf_counter()
    if a.jobs > 1:
        # concurrent.futures, not multiprocessing.Pool: a worker that dies (a crash in the compiled
        # form) fails the run here; Pool would replace it and wait for its chunk for good.
        try:
            with ProcessPoolExecutor(a.jobs) as pool:
                results = list(pool.map(one, work, chunksize=16))
        except BrokenProcessPool as e:
            print(f"simulate: a worker process died ({e}); its seeds are among {a.start}-{a.start + a.seeds - 1}: "
                  "run them with --jobs 1 to find the one", file=sys.stderr)  # fmt: skip
            return 3
    else:
        results = [one(w) for w in work]
    elapsed = time.perf_counter() - t0
    if a.digest_only:
        print(f"DIGEST {digest(results)}")
        return 0
    failing = [(s, vs) for s, vs, *_ in results if vs]
    heals = [h for _, _, h, *_ in results if h is not None]
    resumed = [d for _, _, _, rs, _ in results for d in rs]
    resumed_services = [d for *_, rs in results for d in rs]
    table: dict[tuple[str, tuple[str, ...]], list[int]] = collections.defaultdict(list)
    worst: dict[tuple[str, tuple[str, ...]], float] = collections.defaultdict(float)
    for s, vs in failing:
        for kind, _at, dur, _detail, faults in vs:
            key = (kind, faults)
            if s not in table[key]:
                table[key].append(s)
            worst[key] = max(worst[key], dur)
    form = "compiled" if build.is_compiled() else "interpreted"
    print(f"{a.seeds} seeds, {a.timing}, {a.mode}, W={config_of(a).w:g}s, {a.span:g}s of faults each: "
          f"{elapsed:.1f}s ({a.seeds / elapsed:.1f} seeds/s with {a.jobs} job(s), {form})")  # fmt: skip
    for s, vs in failing[: a.show]:
        print(f"  seed {s}: " + "; ".join(f"{k} at {at:.2f}s ({dur * 1000:.0f} ms) [{'+'.join(f)}]"
                                          for k, at, dur, _d, f in vs))  # fmt: skip
    if table:
        print(f"\n{'violation':<18} {'seeds':>6} {'worst ms':>9}  faults under way   (example seed)")
        for (kind, faults), ss in sorted(table.items(), key=lambda kv: (-len(kv[1]), kv[0])):
            print(
                f"{kind:<18} {len(ss):>6} {worst[(kind, faults)] * 1000:>9.0f}  {'+'.join(faults)}   ({ss[0]})"
            )
    if resumed:
        print(f"resumed VMs answering for their VIP before their agent ran (not violations, bound "
              f"{RESUMED_VM_BOUND * 1000:.0f} ms): {len(resumed)}, worst {max(resumed) * 1000:.1f} ms")  # fmt: skip
    if resumed_services:
        print(f"resumed VMs running their service beside the new owner's until fenced (e; not violations): "
              f"{len(resumed_services)}, worst {max(resumed_services) * 1000:.0f} ms")  # fmt: skip
    same = True
    if a.same_as_interpreted:
        same = same_as_interpreted(raw, a, results)
    if a.ledger is not None:
        with a.ledger.open("a") as f:
            f.write(json.dumps(ledger_entry(a, results, elapsed)) + "\n")
    worst_heal = max(heals) * 1000 if heals else 0.0
    print(f"RESULT seeds={a.seeds} violations={len(failing)} worst_heal_ms={worst_heal:.0f}")
    return 1 if failing or not same else 0


if __name__ == "__main__":
    sys.exit(main())
