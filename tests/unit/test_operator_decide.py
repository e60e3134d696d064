"""decide(): every rule of the operator's decisions on fake times, no I/O.

The agents are played by `rep()` (a report Lease as an agent writes it) and `own()` (the ownership
Lease). A property test at the end checks that a decision, once applied, is a fixed point: deciding
again on the same observation changes nothing and posts nothing.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hacluster_api.annotations import FREEZE, HANDOVER_TO, RELEASE
from hacluster_api.models import HAClusterSpec, HAClusterStatus
from hacluster_api.report import ReportLease, parse_report
from hacluster_operator.conditions import NON_OWNER_GRACE_S
from hacluster_operator.decide import (
    ACCOUNTING_WAIT_S,
    LAST_SEEN_REFRESH_S,
    RECHECK_MIN_S,
    Decision,
    Event,
    LeaseState,
    decide,
)

T0 = datetime(2026, 1, 1, 12, 0, 0, tzinfo=UTC)
A, B = "node-a", "node-b"
GEN = 3


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def make_spec(**failover: Any) -> HAClusterSpec:
    return HAClusterSpec.model_validate(
        {
            "nodes": [A, B],
            "heartbeat": {
                "media": {
                    "udp": [{"interface": "eth1", "mode": "broadcast"}],
                    "serial": [{"device": "/dev/ttyS0"}],
                }
            },
            "auth": {"secretRef": {"name": "hb-auth"}},
            "resources": [{"ip": {"address": "192.0.2.10/24"}}],
            "failover": failover,
        }
    )


SPEC = make_spec()


def peer_of(node: str) -> str:
    return B if node == A else A


def rep(
    node: str,
    *,
    state: str = "active",
    holds: str = "none",
    epoch: int | None = 1,
    peer_state: str = "active",
    links: dict[str, bool] | None = None,
    last: dict[str, Any] | None = None,
    renewed: datetime | None = T0,
    duration: float | None = 5,
) -> ReportLease:
    """A report Lease as an agent writes it."""
    body = {
        "state": state,
        "holds": holds,
        "epoch": epoch,
        "peer": {
            "node": peer_of(node),
            "state": peer_state,
            "links": {k: {"up": v} for k, v in (links or {"eth1": True, "/dev/ttyS0": True}).items()},
        },
        "lastTransition": last,
    }
    return parse_report(node, renewed, duration, json.dumps(body))


def own(
    holder: str = A,
    epoch: int = 1,
    acquired: datetime | None = T0 - timedelta(seconds=60),
    **annotations: str,
) -> LeaseState:
    """The ownership Lease; annotation names with underscores: handover_to=, freeze=, release=."""
    names = {"handover_to": HANDOVER_TO, "freeze": FREEZE, "release": RELEASE}
    return LeaseState(holder, epoch, {names[k]: v for k, v in annotations.items()}, acquired)


def healthy(holder: str = A, epoch: int = 1) -> dict[str, ReportLease | None]:
    """Both agents up and active; the holder runs the resources."""
    return {
        A: rep(A, holds="local" if holder == A else "none", epoch=epoch),
        B: rep(B, holds="foreign" if holder == B else "none", epoch=epoch),
    }


def run(
    lease: LeaseState | None,
    reports: dict[str, ReportLease | None],
    *,
    spec: HAClusterSpec = SPEC,
    now: datetime = T0,
    previous: HAClusterStatus | None = None,
    **kw: Any,
) -> Decision:
    return decide(spec, GEN, lease, reports, now, previous=previous, **kw)


def settled(
    lease: LeaseState, reports: dict[str, ReportLease | None], spec: HAClusterSpec = SPEC, now: datetime = T0
) -> HAClusterStatus:
    """The status a previous tick wrote for this very observation."""
    return run(lease, reports, spec=spec, now=now).status


def cond(d: Decision, kind: str) -> tuple[str, str, str]:
    c = next(c for c in d.status.conditions if c.type == kind)
    return c.status, c.reason, c.message


def reasons(d: Decision) -> list[str]:
    return [e.reason for e in d.events]


def only_event(d: Decision, reason: str) -> Event:
    found = [e for e in d.events if e.reason == reason]
    assert len(found) == 1, d.events
    return found[0]


# --------------------------------------------------------------------------------------------
# reports


def test_parse_report_reads_the_agents_json() -> None:
    r = rep(A, holds="local", epoch=4, links={"eth1": True, "/dev/ttyS0": False})
    assert r.report is not None and r.error is None
    assert (r.report.state, r.report.holds, r.report.epoch) == ("active", "local", 4)
    assert r.report.peer is not None and r.report.peer.node == B
    assert {k: v.up for k, v in r.report.peer.links.items()} == {"eth1": True, "/dev/ttyS0": False}


def test_parse_report_is_lenient_on_what_it_does_not_read() -> None:
    text = json.dumps({"state": "active", "epoch": None, "future": {"x": 1}, "lastTransition": None})
    r = parse_report(A, T0, 5, text)
    assert r.report is not None and r.report.known_epoch == 0 and r.report.holds == "none"


@pytest.mark.parametrize(
    "text, says",
    [
        (None, "no hacluster.dev/report annotation"),
        ("{not json", "not JSON"),
        (json.dumps({"holds": "local"}), "unexpected shape (state: Field required)"),
        (json.dumps({"state": "active", "epoch": -1}), "epoch"),
    ],
)
def test_parse_report_says_why_a_report_is_unreadable(text: str | None, says: str) -> None:
    r = parse_report(A, T0, 5, text)
    assert r.report is None and r.error is not None and says in r.error


# --------------------------------------------------------------------------------------------
# the steady state


def test_healthy_pair_is_ready_and_asks_nothing() -> None:
    d = run(own(A, 1), healthy(A))
    assert d.annotations == {} and d.target == A and d.holder == A and not d.released
    assert (d.status.owner, d.status.epoch, d.status.state) == (A, 1, "Ready")
    assert d.status.observed_generation == GEN
    assert cond(d, "Ready") == ("True", "Serving", "node-a holds the resources, epoch 1")
    assert cond(d, "Degraded")[:2] == ("False", "AllHealthy")
    assert cond(d, "HeartbeatLinkDown")[:2] == ("False", "AllLinksUp")
    assert cond(d, "Arbitrating")[:2] == ("False", "Settled")
    assert all(c.observed_generation == GEN for c in d.status.conditions)
    assert [(n.name, n.state, n.media) for n in d.status.nodes] == [
        (A, "active", {"/dev/ttyS0": "up", "eth1": "up"}),
        (B, "active", {"/dev/ttyS0": "up", "eth1": "up"}),
    ]
    assert d.status.nodes[0].last_seen == T0
    assert d.events == ()  # the first look at a healthy pair has nothing to tell


def test_the_first_status_is_a_baseline_without_condition_events() -> None:
    """A new HACluster has no agents reporting yet: no Warning for that, the status says it."""
    d = run(own("", 0), {A: None, B: None})
    assert cond(d, "Degraded")[:2] == ("True", "NodeDown") and d.events == ()
    up = run(own(A, 1, acquired=at(-0.1)), healthy(A, 1), now=at(1), previous=d.status)
    assert reasons(up) == ["Acquired", "Recovered"]


def test_status_is_a_valid_status_and_omits_what_is_unknown() -> None:
    d = run(own("", 0), {A: None, B: None})
    assert HAClusterStatus.model_validate(d.status.to_k8s()) == d.status
    assert "owner" not in d.status.to_k8s() and d.status.epoch == 0


def test_no_lease_yet_is_unknown_and_asks_nothing() -> None:
    d = run(None, healthy())
    assert d.annotations == {} and d.released and d.target is None
    assert d.status.state == "Unknown" and d.status.owner is None and d.status.epoch is None
    assert cond(d, "Ready")[:2] == ("Unknown", "NoLease")


def test_no_reports_at_all_is_unknown() -> None:
    d = run(own(A, 3), {A: None, B: None})
    assert d.status.state == "Unknown"
    assert cond(d, "Ready")[:2] == ("Unknown", "NoReports")
    assert cond(d, "HeartbeatLinkDown")[:2] == ("Unknown", "NoReports")
    assert [n.state for n in d.status.nodes] == ["unknown", "unknown"]


def test_resources_not_running_yet_is_not_ready() -> None:
    reports = healthy(A)
    reports[A] = rep(A, holds="none")
    d = run(own(A, 2), reports)
    assert cond(d, "Ready")[:2] == ("False", "ResourcesStarting")
    assert d.status.state == "Degraded"


def test_a_group_with_only_workloads_needs_no_held_resources() -> None:
    spec = SPEC.model_copy(
        update={
            "resources": HAClusterSpec.model_validate(
                {**SPEC.to_k8s(), "resources": [{"workload": {"nodeLabel": "x"}}]}
            ).resources
        }
    )
    d = run(own(A, 2), {A: rep(A, holds="none"), B: rep(B)}, spec=spec)
    assert cond(d, "Ready")[:2] == ("True", "Serving")


def test_holder_not_one_of_the_nodes() -> None:
    d = run(own("node-z", 4), healthy(A))
    assert cond(d, "Ready")[:2] == ("False", "UnknownOwner")
    assert d.annotations == {HANDOVER_TO: A}  # the preferred node, both healthy


# --------------------------------------------------------------------------------------------
# freshness of reports


def test_a_report_is_fresh_up_to_its_duration_and_stale_after() -> None:
    fresh = run(own(A), {A: rep(A, holds="local"), B: rep(B, renewed=at(-5), duration=5)})
    assert fresh.status.state == "Ready"
    stale = run(own(A), {A: rep(A, holds="local"), B: rep(B, renewed=at(-5.001), duration=5)})
    assert stale.status.state == "Degraded"
    status, reason, message = cond(stale, "Degraded")
    assert (status, reason) == ("True", "NodeDown")
    assert message == "node-b: silent since 2026-01-01T11:59:54Z (its report Lease lasts 5s)"


def test_a_report_lease_without_duration_uses_the_default() -> None:
    d = run(own(A), {A: rep(A, holds="local"), B: rep(B, renewed=at(-4), duration=None)})
    assert d.status.state == "Ready"
    d = run(own(A), {A: rep(A, holds="local"), B: rep(B, renewed=at(-6), duration=None)})
    assert cond(d, "Degraded")[1] == "NodeDown"


def test_missing_and_unreadable_reports_are_down() -> None:
    unreadable = parse_report(B, T0, 5, "{")
    for reports, says in [
        ({A: rep(A, holds="local"), B: None}, "node-b: no report Lease (agent not running?)"),
        ({A: rep(A, holds="local"), B: unreadable}, "node-b: report unreadable: not JSON"),
        ({A: rep(A, holds="local"), B: rep(B, renewed=None)}, "node-b: no report yet (agent not running?)"),
    ]:
        d = run(own(A), reports)
        status, reason, message = cond(d, "Degraded")
        assert (status, reason) == ("True", "NodeDown") and message.startswith(says), message


def test_stale_messages_do_not_change_every_second() -> None:
    """Conditions carry no running age: the status is not rewritten while nothing changes."""
    first = run(own(A), {A: rep(A, holds="local"), B: rep(B, renewed=at(-60))})
    later = run(
        own(A),
        {A: rep(A, holds="local", renewed=at(10)), B: rep(B, renewed=at(-60))},
        now=at(10),
        previous=first.status,
    )
    assert cond(first, "Degraded") == cond(later, "Degraded")
    assert not later.write_status and later.events == ()


def test_node_state_comes_from_the_peer_when_its_own_report_is_stale() -> None:
    d = run(own(B, 2), {A: rep(A, renewed=at(-30)), B: rep(B, holds="foreign", peer_state="dead")})
    assert [(n.name, n.state) for n in d.status.nodes] == [(A, "dead"), (B, "active")]
    assert d.status.nodes[0].media == {}  # no fresh report: no link view
    d = run(own(B, 2), {A: None, B: None})
    assert [n.state for n in d.status.nodes] == ["unknown", "unknown"]


def test_unknown_state_words_show_as_unknown_and_are_not_eligible() -> None:
    d = run(own(A), {A: rep(A, holds="local"), B: rep(B, state="standby")}, spec=make_spec(switchoverTo=B))
    assert d.status.nodes[1].state == "unknown"
    assert d.annotations == {} and cond(d, "Degraded")[1] == "SwitchoverBlocked"


def test_media_are_reported_sorted_and_bounded() -> None:
    links = {f"eth{i:02}": i % 2 == 0 for i in range(20)}
    d = run(own(A), {A: rep(A, holds="local", links=links), B: rep(B)})
    media = d.status.nodes[0].media
    assert list(media) == sorted(links)[:16] and media["eth00"] == "up" and media["eth01"] == "down"


# --------------------------------------------------------------------------------------------
# declared switchover


def test_switchover_asks_the_holder_to_hand_over() -> None:
    d = run(own(A, 4), healthy(A), spec=make_spec(switchoverTo=B))
    assert d.target == B and d.annotations == {HANDOVER_TO: B}
    e = only_event(d, "SwitchoverRequested")
    assert (
        e.type == "Normal"
        and e.message == "Switchover to node-b requested: asking node-a to hand over (epoch 4)"
    )


def test_switchover_already_asked_is_not_asked_again() -> None:
    d = run(
        own(A, 4, handover_to=B),
        healthy(A),
        spec=make_spec(switchoverTo=B),
        previous=settled(own(A, 4, handover_to=B), healthy(A), make_spec(switchoverTo=B)),
    )
    assert d.annotations == {} and d.events == ()


def test_switchover_to_the_current_owner_is_already_done() -> None:
    d = run(own(A, 4), healthy(A), spec=make_spec(switchoverTo=A))
    assert d.target == A and d.annotations == {} and d.events == ()
    assert d.status.state == "Ready"


def test_switchover_never_hands_over_to_a_stale_target() -> None:
    reports = {A: rep(A, holds="local"), B: rep(B, renewed=at(-30))}
    before = settled(own(A, 4), healthy(A))
    d = run(own(A, 4), reports, spec=make_spec(switchoverTo=B), previous=before)
    assert d.annotations == {}
    status, reason, message = cond(d, "Degraded")
    assert (status, reason) == ("True", "SwitchoverBlocked")
    assert message.startswith("switchover to node-b waits: node-b is not available (silent since")
    blocked = only_event(d, "SwitchoverBlocked")
    assert blocked.type == "Warning"
    # Once said, not repeated while nothing changes.
    again = run(own(A, 4), reports, spec=make_spec(switchoverTo=B), now=at(1), previous=d.status)
    assert again.events == () and again.annotations == {}


@pytest.mark.parametrize("state", ["up", "init", "dead"])
def test_switchover_never_hands_over_to_a_node_that_is_not_active(state: str) -> None:
    d = run(own(A, 4), {A: rep(A, holds="local"), B: rep(B, state=state)}, spec=make_spec(switchoverTo=B))
    assert d.annotations == {} and cond(d, "Degraded")[1] == "SwitchoverBlocked"
    assert f"node-b is not available (state {state})" in cond(d, "Degraded")[2]


def test_switchover_never_hands_over_to_a_node_without_report() -> None:
    d = run(own(A, 4), {A: rep(A, holds="local"), B: None}, spec=make_spec(switchoverTo=B))
    assert d.annotations == {} and cond(d, "Degraded")[1] == "SwitchoverBlocked"


def test_switchover_target_lost_mid_way_clears_the_request() -> None:
    reports = {A: rep(A, holds="local"), B: rep(B, renewed=at(-30))}
    before = settled(own(A, 4, handover_to=B), healthy(A), make_spec(switchoverTo=B))
    d = run(own(A, 4, handover_to=B), reports, spec=make_spec(switchoverTo=B), previous=before)
    assert d.annotations == {HANDOVER_TO: None}
    assert "SwitchoverBlocked" in reasons(d) and "HandoverCancelled" not in reasons(d)


def test_switchover_in_flight_keeps_the_request_while_the_lease_is_free() -> None:
    spec = make_spec(switchoverTo=B)
    d = run(own("", 4, handover_to=B), healthy(""), spec=spec)
    assert d.annotations == {} and d.released
    assert cond(d, "Ready")[:2] == ("False", "NoOwner")
    assert cond(d, "Arbitrating") == ("True", "HandoverInProgress", "the Lease is free; node-b is to take it")
    assert d.status.state == "Arbitrating"


def test_switchover_done_clears_the_request_and_says_so() -> None:
    spec = make_spec(switchoverTo=B)
    before = settled(own(A, 4, handover_to=B), healthy(A, 4), spec)
    last = {"from": A, "to": B, "reason": "handover", "gapMs": 150, "time": "2026-01-01T12:00:00Z"}
    reports = {A: rep(A, epoch=5), B: rep(B, holds="foreign", epoch=5, last=last)}
    d = run(own(B, 5, acquired=at(-0.5), handover_to=B), reports, spec=spec, previous=before)
    assert d.annotations == {HANDOVER_TO: None}
    assert reasons(d) == ["SwitchoverDone"]  # a planned move is no FailedOver
    assert (
        only_event(d, "SwitchoverDone").message
        == "Switchover to node-b done: epoch 5, 150ms without an owner"
    )
    assert (d.status.owner, d.status.epoch, d.status.state) == (B, 5, "Ready")
    assert d.status.last_transition is not None
    assert (d.status.last_transition.from_, d.status.last_transition.to, d.status.last_transition.gap_ms) == (
        A,
        B,
        150,
    )


def test_switchover_declared_during_maintenance_still_goes() -> None:
    d = run(own(A, 4, freeze="true"), healthy(A), spec=make_spec(switchoverTo=B, maintenance=True))
    assert d.annotations == {HANDOVER_TO: B}
    assert reasons(d) == ["SwitchoverRequested"]


def test_switchover_to_a_free_lease_lets_the_target_take_it() -> None:
    d = run(own("", 4), healthy(""), spec=make_spec(switchoverTo=B))
    assert d.annotations == {HANDOVER_TO: B}
    assert (
        only_event(d, "SwitchoverRequested").message
        == "Switchover to node-b requested: the Lease is free: node-b may take it"
    )


# --------------------------------------------------------------------------------------------
# autoFailback, maintenance, withdrawn requests


def test_failback_to_the_preferred_node_when_both_are_healthy() -> None:
    d = run(own(B, 6), healthy(B))
    assert d.target == A and d.annotations == {HANDOVER_TO: A}
    assert (
        only_event(d, "FailbackRequested").message
        == "Failback to node-a requested: asking node-b to hand over (epoch 6)"
    )


def test_failback_honours_preferred_node() -> None:
    d = run(own(A, 6), healthy(A), spec=make_spec().model_copy(update={"preferred_node": B}))
    assert d.annotations == {HANDOVER_TO: B}


@pytest.mark.parametrize(
    "reports",
    [
        {A: rep(A, renewed=at(-30)), B: rep(B, holds="foreign")},  # the preferred node is down
        {A: rep(A, state="init"), B: rep(B, holds="foreign")},  # ...or not active yet
        {A: rep(A), B: rep(B, holds="foreign", renewed=at(-30))},  # the holder is silent
        {A: rep(A, peer_state="dead"), B: rep(B, holds="foreign", peer_state="dead")},  # a split
    ],
    ids=["home-down", "home-init", "holder-silent", "split"],
)
def test_no_failback_unless_both_are_healthy(reports: dict[str, ReportLease | None]) -> None:
    d = run(own(B, 6), reports)
    assert HANDOVER_TO not in d.annotations and d.target is None


def test_no_failback_without_auto_failback() -> None:
    d = run(own(B, 6), healthy(B), spec=make_spec(autoFailback=False))
    assert d.annotations == {} and d.target is None and "autoFailback is off" in d.why


def test_failback_done() -> None:
    before = settled(own(B, 6, handover_to=A), healthy(B, 6))
    d = run(own(A, 7, handover_to=A), healthy(A, 7), previous=before)
    assert d.annotations == {HANDOVER_TO: None}
    assert reasons(d) == ["FailbackDone"]
    assert only_event(d, "FailbackDone").message == "Failback to node-a done: epoch 7"


def test_maintenance_freezes_the_agents_and_blocks_failback() -> None:
    d = run(own(B, 6), healthy(B), spec=make_spec(maintenance=True))
    assert d.annotations == {FREEZE: "true"} and d.target is None
    assert reasons(d) == ["MaintenanceOn"]
    again = run(own(B, 6, freeze="true"), healthy(B), spec=make_spec(maintenance=True), previous=d.status)
    assert again.annotations == {} and again.events == ()


def test_maintenance_over_thaws_the_agents() -> None:
    d = run(own(A, 6, freeze="true"), healthy(A))
    assert d.annotations == {FREEZE: None} and reasons(d) == ["MaintenanceOff"]


def test_maintenance_withdraws_a_failback_not_yet_started() -> None:
    d = run(own(B, 6, handover_to=A), healthy(B), spec=make_spec(maintenance=True))
    assert d.annotations == {HANDOVER_TO: None, FREEZE: "true"}
    assert (
        only_event(d, "HandoverCancelled").message
        == "Handover to node-a withdrawn: maintenance: no automatic moves"
    )


def test_withdrawn_switchover_is_cancelled() -> None:
    d = run(own(A, 4, handover_to=B), healthy(A), spec=make_spec(autoFailback=False))
    assert d.annotations == {HANDOVER_TO: None} and reasons(d) == ["HandoverCancelled"]


def test_a_handover_in_flight_lands_even_if_its_reason_went_away() -> None:
    d = run(own("", 4, handover_to=B), healthy(""), spec=make_spec(autoFailback=False))
    assert d.annotations == {} and d.target == B


def test_a_handover_in_flight_to_a_node_gone_is_withdrawn() -> None:
    reports = {A: rep(A), B: rep(B, renewed=at(-30))}
    d = run(own("", 4, handover_to=B), reports, spec=make_spec(autoFailback=False))
    assert d.annotations == {HANDOVER_TO: None}


# --------------------------------------------------------------------------------------------
# failovers, told from the epoch rise and the new owner's lastTransition


def failover_reports(epoch: int, last: dict[str, Any] | None, **b: Any) -> dict[str, ReportLease | None]:
    return {
        A: rep(A, renewed=at(-30)),
        B: rep(B, holds="foreign", peer_state="dead", epoch=epoch, last=last, **b),
    }


LAST = {"from": A, "to": B, "reason": "peer dead", "gapMs": 512, "time": "2026-01-01T11:59:59.500Z"}


def test_failed_over_event_from_the_epoch_rise_and_the_new_owners_report() -> None:
    before = settled(own(A, 6), healthy(A, 6))
    d = run(own(B, 7, acquired=at(-0.5)), failover_reports(7, LAST), previous=before)
    e = only_event(d, "FailedOver")
    assert e.type == "Warning"
    assert e.message == "FailedOver from node-a to node-b: node-a silent for 512ms, epoch 7 (peer dead)"
    assert (d.status.owner, d.status.epoch) == (B, 7)
    t = d.status.last_transition
    assert t is not None and (t.from_, t.to, t.reason, t.gap_ms) == (A, B, "peer dead", 512)
    assert t.time == datetime(2026, 1, 1, 11, 59, 59, 500000, tzinfo=UTC)
    # Told once.
    again = run(own(B, 7, acquired=at(-0.5)), failover_reports(7, LAST), now=at(1), previous=d.status)
    assert "FailedOver" not in reasons(again)


def test_failover_waits_briefly_for_the_new_owners_report() -> None:
    before = settled(own(A, 6), healthy(A, 6))
    lagging = failover_reports(6, None)  # node-b took the Lease; its report has not caught up
    d = run(own(B, 7, acquired=at(-1)), lagging, previous=before)
    assert "FailedOver" not in reasons(d)
    assert (d.status.owner, d.status.epoch) == (A, 6)  # not accounted yet
    assert cond(d, "Arbitrating")[:2] == ("True", "TransitionInProgress")
    assert d.status.state == "Arbitrating"
    d2 = run(own(B, 7, acquired=at(-1)), failover_reports(7, LAST), now=at(1), previous=d.status)
    assert "512ms" in only_event(d2, "FailedOver").message
    assert (d2.status.owner, d2.status.epoch) == (B, 7)


def test_failover_is_told_without_the_gap_when_the_report_never_comes() -> None:
    before = settled(own(A, 6), healthy(A, 6))
    d = run(own(B, 7, acquired=at(-ACCOUNTING_WAIT_S)), failover_reports(6, None), previous=before)
    assert only_event(d, "FailedOver").message == "FailedOver from node-a to node-b: epoch 7"
    t = d.status.last_transition
    assert t is not None and (t.from_, t.to, t.gap_ms, t.reason) == (A, B, None, "the Lease changed holder")


def test_failover_to_a_silent_holder_is_told_at_once() -> None:
    before = settled(own(A, 6), healthy(A, 6))
    d = run(own(B, 7, acquired=at(-0.2)), {A: None, B: None}, previous=before)
    assert only_event(d, "FailedOver").message == "FailedOver from node-a to node-b: epoch 7"


def test_an_old_last_transition_is_not_taken_for_the_new_one() -> None:
    before = settled(own(A, 6), healthy(A, 6))
    old = {"from": B, "to": A, "reason": "old", "gapMs": 9, "time": "2025-01-01T00:00:00Z"}
    d = run(own(B, 7), failover_reports(7, old), previous=before)
    assert only_event(d, "FailedOver").message == "FailedOver from node-a to node-b: epoch 7"


def test_first_acquisition_is_acquired_not_failed_over() -> None:
    before = settled(own("", 0), healthy(""))
    d = run(own(A, 1, acquired=at(-0.1)), healthy(A, 1), previous=before)
    e = only_event(d, "Acquired")
    assert e.type == "Normal" and e.message == "node-a took the resources, epoch 1"


def test_reacquired_by_the_same_node() -> None:
    before = settled(own(A, 3), healthy(A, 3))
    last = {"from": "", "to": A, "reason": "restart", "gapMs": 40}
    reports = {A: rep(A, holds="local", epoch=4, last=last), B: rep(B, epoch=4)}
    d = run(own(A, 4), reports, previous=before)
    assert only_event(d, "Acquired").message == "node-a took the resources again, epoch 4 (restart)"


def test_first_look_records_the_last_transition_without_events() -> None:
    reports = {A: rep(A, epoch=7), B: rep(B, holds="foreign", epoch=7, last=LAST)}
    d = run(own(B, 7), reports)
    assert d.status.last_transition is not None and d.status.last_transition.gap_ms == 512
    assert "FailedOver" not in reasons(d)


def test_a_recreated_lease_lowers_the_epoch_silently() -> None:
    before = settled(own(A, 9), healthy(A, 9))
    d = run(own("", 0), healthy(""), previous=before)
    assert d.status.epoch == 0 and not {"FailedOver", "Acquired"} & set(reasons(d))


# --------------------------------------------------------------------------------------------
# links, splits, silent holders


def test_both_up_but_deaf_to_each_other_is_a_heartbeat_split() -> None:
    reports = {
        A: rep(A, holds="local", peer_state="dead", links={"eth1": False, "/dev/ttyS0": False}),
        B: rep(B, peer_state="dead", links={"eth1": False, "/dev/ttyS0": False}),
    }
    before = settled(own(A, 2), healthy(A, 2))
    d = run(own(A, 2), reports, previous=before)
    status, reason, message = cond(d, "HeartbeatLinkDown")
    assert (status, reason) == ("True", "AllLinksDown")
    assert message.startswith("node-a and node-b both run but cannot hear each other")
    assert cond(d, "Arbitrating")[:2] == ("True", "HeartbeatLost")
    assert d.status.state == "Arbitrating"
    assert only_event(d, "HeartbeatLinkDown").type == "Warning"
    again = run(own(A, 2), reports, now=at(1), previous=d.status)
    assert again.events == ()
    restored = run(own(A, 2), healthy(A, 2), now=at(2), previous=again.status)
    assert reasons(restored) == ["HeartbeatLinkRestored"]


def test_every_link_down_counts_as_deaf_even_before_deadtime() -> None:
    down = {"eth1": False, "/dev/ttyS0": False}
    reports = {A: rep(A, holds="local", links=down), B: rep(B, links=down)}
    assert cond(run(own(A, 2), reports), "HeartbeatLinkDown")[1] == "AllLinksDown"


def test_one_link_down_of_two_is_degraded_not_split() -> None:
    reports = {A: rep(A, holds="local", links={"eth1": True, "/dev/ttyS0": False}), B: rep(B)}
    before = settled(own(A, 2), healthy(A, 2))
    d = run(own(A, 2), reports, previous=before)
    assert cond(d, "HeartbeatLinkDown") == ("True", "LinkDown", "/dev/ttyS0 down on node-a")
    assert d.status.state == "Degraded"
    assert only_event(d, "HeartbeatLinkDown").message == "/dev/ttyS0 down on node-a"
    assert d.status.nodes[0].media == {"/dev/ttyS0": "down", "eth1": "up"}
    # Getting worse, into a split, is told again.
    split = {
        A: rep(A, holds="local", peer_state="dead", links={"eth1": False, "/dev/ttyS0": False}),
        B: rep(B, peer_state="dead"),
    }
    worse = run(own(A, 2), split, now=at(1), previous=d.status)
    assert reasons(worse) == ["HeartbeatLinkDown"]


def test_a_dead_peer_is_not_a_split() -> None:
    d = run(own(B, 7), failover_reports(7, LAST))
    assert cond(d, "HeartbeatLinkDown")[:2] == ("False", "AllLinksUp")  # node-b's links: up, peer silent
    assert cond(d, "Arbitrating")[:2] == ("False", "Settled")
    assert d.status.state == "Degraded" and cond(d, "Degraded")[1] == "NodeDown"


def test_a_silent_holder_is_being_arbitrated() -> None:
    reports = {A: rep(A, renewed=at(-30)), B: rep(B, peer_state="dead")}
    d = run(own(A, 2), reports)
    assert cond(d, "Ready")[:2] == ("False", "OwnerSilent")
    status, reason, message = cond(d, "Arbitrating")
    assert (status, reason) == ("True", "HolderSilent")
    assert "node-b takes over once the Lease window passes" in message
    assert d.status.state == "Arbitrating"
    frozen = run(own(A, 2, freeze="true"), reports, spec=make_spec(maintenance=True))
    assert cond(frozen, "Arbitrating")[2].endswith("maintenance: the agents make no automatic moves")


def test_holder_not_active_is_not_ready() -> None:
    d = run(own(A, 2), {A: rep(A, state="up", holds="local"), B: rep(B)})
    assert cond(d, "Ready")[:2] == ("False", "OwnerNotActive")


def test_a_free_lease_with_agents_up_waits_for_a_taker() -> None:
    d = run(own("", 0), {A: rep(A, state="init"), B: rep(B, state="init")})
    assert cond(d, "Arbitrating")[:2] == ("True", "NoHolder")
    assert d.annotations == {}  # no failback hint until both are active


def test_a_free_lease_with_both_active_hints_the_preferred_node() -> None:
    d = run(own("", 0), healthy(""))
    assert d.annotations == {HANDOVER_TO: A}
    assert (
        only_event(d, "FailbackRequested").message
        == "Failback to node-a requested: the Lease is free: node-a may take it"
    )


def test_non_owner_holding_resources_is_flagged_after_the_grace() -> None:
    reports = {A: rep(A, holds="local", epoch=5), B: rep(B, holds="foreign", epoch=5, renewed=at(0))}
    d = run(own(A, 5, acquired=at(-1)), reports)  # just after the move: B's report may lag
    assert cond(d, "Degraded")[1] != "HeldByNonOwner"
    d = run(own(A, 5, acquired=at(-10)), reports)
    status, reason, message = cond(d, "Degraded")
    assert (status, reason) == ("True", "HeldByNonOwner")
    assert message == "node-b reports holding resources (foreign) but node-a holds the Lease (epoch 5)"


# --------------------------------------------------------------------------------------------
# deletion, config errors


def test_deleting_asks_for_a_release_and_waits_for_it() -> None:
    d = run(own(A, 4, handover_to=B), healthy(A), spec=make_spec(switchoverTo=B), deleting=True)
    assert d.annotations == {RELEASE: "true", HANDOVER_TO: None} and not d.released
    assert only_event(d, "Releasing").message == "HACluster deleted: asking node-a to release everything"
    assert cond(d, "Ready")[:2] == ("False", "Releasing")
    again = run(
        own(A, 4, release="true"),
        healthy(A),
        spec=make_spec(switchoverTo=B),
        deleting=True,
        previous=d.status,
    )
    assert again.annotations == {} and "Releasing" not in reasons(again)
    done = run(own("", 4, release="true"), healthy(""), deleting=True, previous=again.status)
    assert done.released and done.holder is None


def test_deleting_without_a_lease_is_released() -> None:
    assert run(None, {A: None, B: None}, deleting=True).released


def test_a_stray_release_annotation_is_removed() -> None:
    d = run(own(A, 4, release="true"), healthy(A))
    assert d.annotations == {RELEASE: None}


def test_config_error_degrades_and_is_told_once() -> None:
    before = settled(own(A, 2), healthy(A, 2))
    d = run(
        own(A, 2), healthy(A, 2), previous=before, config_error="the auth Secret 'hb-auth' does not exist"
    )
    status, reason, message = cond(d, "Degraded")
    assert (status, reason) == ("True", "ConfigError")
    assert message == "the config Secret cannot be rendered: the auth Secret 'hb-auth' does not exist"
    assert only_event(d, "ConfigError").type == "Warning"
    assert d.status.state == "Degraded"
    fixed = run(own(A, 2), healthy(A, 2), now=at(1), previous=d.status)
    assert reasons(fixed) == ["Recovered"]


# --------------------------------------------------------------------------------------------
# writing the status: conditions' times, lastSeen


def test_condition_times_stay_while_their_status_stays() -> None:
    first = run(own(A, 2), healthy(A, 2))
    assert all(c.last_transition_time == T0 for c in first.status.conditions)
    renewed = {A: rep(A, holds="local", epoch=2, renewed=at(50)), B: rep(B, epoch=2, renewed=at(50))}
    later = run(own(A, 2), renewed, now=at(50), previous=first.status)
    assert all(c.last_transition_time == T0 for c in later.status.conditions)


def test_condition_time_moves_when_the_status_flips() -> None:
    first = run(own(A, 2), healthy(A, 2))
    later = run(
        own(A, 2),
        {A: rep(A, holds="local", renewed=at(50)), B: rep(B, renewed=at(20))},
        now=at(50),
        previous=first.status,
    )
    times = {c.type: c.last_transition_time for c in later.status.conditions}
    assert times["Degraded"] == at(50) and times["Ready"] == T0


def test_status_is_not_rewritten_for_a_little_lastseen_movement() -> None:
    first = run(own(A, 2), healthy(A, 2))
    assert first.write_status
    moved = {A: rep(A, holds="local", epoch=2, renewed=at(5)), B: rep(B, epoch=2, renewed=at(5))}
    d = run(own(A, 2), moved, now=at(5), previous=first.status)
    assert not d.write_status
    far = {
        A: rep(A, holds="local", epoch=2, renewed=at(LAST_SEEN_REFRESH_S)),
        B: rep(B, epoch=2, renewed=at(LAST_SEEN_REFRESH_S)),
    }
    assert run(own(A, 2), far, now=at(LAST_SEEN_REFRESH_S), previous=first.status).write_status


def test_a_new_generation_is_written() -> None:
    first = run(own(A, 2), healthy(A, 2))
    d = decide(SPEC, GEN + 1, own(A, 2), healthy(A, 2), T0, previous=first.status)
    assert d.write_status and d.status.observed_generation == GEN + 1


# --------------------------------------------------------------------------------------------
# properties


def test_with_annotations_applies_a_change_set_like_a_merge_patch() -> None:
    lease = own(A, 3, acquired=T0, freeze="true", handover_to=B)
    after = lease.with_annotations({FREEZE: None, RELEASE: "true", "absent": None})
    assert dict(after.annotations) == {HANDOVER_TO: B, RELEASE: "true"}
    assert (after.holder, after.epoch, after.acquired) == (A, 3, T0)
    assert lease.frozen and not lease.releasing  # the original is left as it was


node_reports = st.one_of(
    st.none(),
    st.builds(
        lambda node, state, holds, epoch, peer, age: rep(
            node, state=state, holds=holds, epoch=epoch, peer_state=peer, renewed=at(-age)
        ),
        st.just("?"),
        st.sampled_from(["active", "up", "init", "dead"]),
        st.sampled_from(["none", "local", "foreign", "all"]),
        st.integers(0, 9),
        st.sampled_from(["active", "up", "dead"]),
        st.sampled_from([0.0, 1.0, 4.9, 6.0, 60.0]),
    ),
)


def _for(node: str, r: ReportLease | None) -> ReportLease | None:
    return None if r is None else ReportLease(node, r.renewed, r.duration_s, r.report, r.error)


@settings(max_examples=400, deadline=None)
@given(
    holder=st.sampled_from(["", A, B]),
    epoch=st.integers(0, 9),
    handover=st.sampled_from([None, A, B]),
    frozen=st.booleans(),
    switchover=st.sampled_from([None, A, B]),
    maintenance=st.booleans(),
    failback=st.booleans(),
    ra=node_reports,
    rb=node_reports,
    prev_epoch=st.one_of(st.none(), st.integers(0, 9)),
    deleting=st.booleans(),
)
def test_decisions_are_safe_and_a_fixed_point(
    holder: str,
    epoch: int,
    handover: str | None,
    frozen: bool,
    switchover: str | None,
    maintenance: bool,
    failback: bool,
    ra: ReportLease | None,
    rb: ReportLease | None,
    prev_epoch: int | None,
    deleting: bool,
) -> None:
    spec = make_spec(switchoverTo=switchover, maintenance=maintenance, autoFailback=failback)
    annotations: dict[str, str] = {}
    if handover:
        annotations["handover_to"] = handover
    if frozen:
        annotations["freeze"] = "true"
    lease = own(holder, epoch, acquired=at(-10), **annotations)
    reports = {A: _for(A, ra), B: _for(B, rb)}
    previous = HAClusterStatus(owner=A, epoch=prev_epoch) if prev_epoch is not None else None
    d = decide(spec, 1, lease, reports, T0, previous=previous, deleting=deleting)

    # Never ask a node to take the resources unless its report is fresh and active.
    wanted = d.annotations.get(HANDOVER_TO)
    if wanted is not None:
        r = reports[wanted]
        assert r is not None and r.report is not None and r.report.state == "active"
        assert r.renewed is not None and (T0 - r.renewed).total_seconds() <= 5
        assert wanted != holder and not deleting
        if not switchover:
            assert not maintenance or holder == ""  # only a handover already in flight lands
    # Maintenance is the freeze annotation, deletion the release annotation.
    after = lease.with_annotations(d.annotations)  # what the merge-patch leaves on the Lease
    assert after.frozen == maintenance
    assert after.releasing == deleting
    # The status is always valid for the CRD.
    assert HAClusterStatus.model_validate(d.status.to_k8s()) == d.status

    # Applied, the decision is a fixed point: nothing more to change, nothing more to say.
    d2 = decide(spec, 1, after, reports, T0, previous=d.status, deleting=deleting)
    assert d2.annotations == {}
    assert d2.events == ()
    assert not d2.write_status


# --------------------------------------------------------------------------------------------
# when to look again (the operator is event-driven: it looks when something changed, and when
# time alone may change the decision, which recheck_s says)


def test_time_alone_changes_nothing_without_reports() -> None:
    assert run(own(A), {A: None, B: None}).recheck_s is None
    assert run(own(A), {A: rep(A, renewed=at(-60)), B: rep(B, renewed=at(-60))}).recheck_s is None


def test_look_again_when_the_first_report_goes_stale() -> None:
    reports = {A: rep(A, holds="local", renewed=at(-1)), B: rep(B, renewed=at(-3.5))}
    d = run(own(A), reports)
    assert d.recheck_s == pytest.approx(1.5)  # node-b's report lasts 5 s from 3.5 s ago
    later = run(own(A), reports, now=at(1.5), previous=d.status)
    assert later.status.state == "Ready"
    stale = run(own(A), reports, now=at(1.501), previous=d.status)
    assert stale.status.state == "Degraded"  # what that look finds, without any event


def test_look_again_when_the_wait_for_the_new_owners_account_ends() -> None:
    before = settled(own(A, 6), healthy(A, 6))
    d = run(own(B, 7, acquired=at(-1)), failover_reports(6, None), previous=before)
    assert d.recheck_s == pytest.approx(ACCOUNTING_WAIT_S - 1)
    then = run(own(B, 7, acquired=at(-1)), failover_reports(6, None), now=at(d.recheck_s), previous=d.status)
    assert "FailedOver" in reasons(then)


def test_a_non_owners_claim_within_its_grace_is_watched_at_its_renewals() -> None:
    """HeldByNonOwner turns on the first renewal past the grace: a renewal, not a time."""
    claim = {A: rep(A, holds="local"), B: rep(B, holds="foreign")}
    within = run(own(A, acquired=at(-1)), claim)
    assert within.renewal_is_news == {B} and "HeldByNonOwner" not in str(within.status.conditions)
    renewed = {A: rep(A, holds="local"), B: rep(B, holds="foreign", renewed=at(NON_OWNER_GRACE_S))}
    past = run(own(A, acquired=at(-1)), renewed, now=at(NON_OWNER_GRACE_S), previous=within.status)
    assert "HeldByNonOwner" in str(past.status.conditions)
    assert past.renewal_is_news == frozenset()  # said: no more watching its renewals


def test_a_deadline_just_passed_is_not_a_spin() -> None:
    d = run(own(A), {A: rep(A, holds="local", renewed=at(-5)), B: rep(B, renewed=at(-5))})
    assert d.recheck_s == RECHECK_MIN_S


def test_a_stale_report_is_named_so_that_its_next_renewal_is_news() -> None:
    d = run(own(A), {A: rep(A, holds="local"), B: rep(B, renewed=at(-60))})
    assert d.renewal_is_news == {B}
    # missing or unreadable: what comes next says something new anyway (not every renewal)
    assert run(own(A), {A: None, B: parse_report(B, T0, 5, "{")}).renewal_is_news == frozenset()
    assert run(own(A), healthy(A)).renewal_is_news == frozenset()
