"""Deterministic simulation of two hacluster agents (the real engine and arbiter code) under
seeded, composed faults, in the style of FoundationDB's simulation testing and TigerBeetle's VOPR.

Modules: `runtime` (virtual time, the coroutine trampoline), `lease` (the API server's Lease),
`network` (the heartbeat link), `dispatch` (the daemon's dispatch of engine actions), `node` (one
machine: agent process, fence guard, kernel), `faults` (the nemesis), `invariants`, `world` (two
nodes, one run), `shrink`.
"""
