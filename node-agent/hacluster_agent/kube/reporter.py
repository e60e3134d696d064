"""The agent's report to the operator: a Lease `<cluster>-<node>` renewed every second, with the
agent's view (state, holdings, epoch, peer and links, last transition) as a JSON annotation."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import logging
from collections.abc import Callable
from typing import Any

from kubernetes import client
from kubernetes.client.exceptions import ApiException

log = logging.getLogger("hacluster.agent.report")

REPORT_ANNOTATION = "hacluster.dev/report"


def transition_of(status: dict[str, Any], gap_s: float | None) -> dict[str, Any] | None:
    """The engine's last change of holdings, in the operator's terms: node names, gap, RFC3339."""
    t = status.get("last_transition")
    if not t:
        return None
    me, peer = status["node"], status["peer"]["node"]
    reason = str(t["reason"])
    acquired = t["to"] != "none"
    # Only a takeover from a dead peer or a handover involves the other node; a home node taking
    # its free group at start-up came from nobody.
    failover = reason.startswith(f"peer {peer} dead")
    handover = any(w in reason for w in ("standby", "auto_failback", "switchover", "partition"))
    other = peer if (failover or handover) else ""
    return {
        "from": other if acquired else me,
        "to": me if acquired else other,
        "reason": reason,
        "gapMs": round((gap_s or 0.0) * 1000) if acquired and failover else 0,
        "time": dt.datetime.fromtimestamp(t["at"], dt.UTC).isoformat().replace("+00:00", "Z"),
    }


def report_of(
    status: dict[str, Any], epoch: int | None, peer_name: str, gap_s: float | None = None
) -> dict[str, Any]:
    """The operator's view of one agent, from `Agent.status()` (pure; no keys, no secrets).
    `gap_s`: how long the peer had been silent when we last took over."""
    peer = status["peer"]
    t = transition_of(status, gap_s)
    return {
        "state": status["state"],
        "holds": status["holds"],
        "epoch": epoch,
        "peer": {
            "node": peer_name,
            "state": peer["state"],
            "links": {name: {"up": link["up"]} for name, link in peer["links"].items()},
        },
        "lastTransition": t,
    }


class Reporter:
    def __init__(
        self,
        api: client.ApiClient,
        namespace: str,
        name: str,
        node: str,
        snapshot: Callable[[], dict[str, Any]],
        *,
        every: float = 1.0,
        duration_s: int = 5,
    ) -> None:
        self.api = client.CoordinationV1Api(api)
        self.namespace, self.name, self.node = namespace, name, node
        self.snapshot, self.every, self.duration_s = snapshot, every, duration_s
        self.failures = 0

    def _body(self) -> client.V1Lease:
        return client.V1Lease(
            metadata=client.V1ObjectMeta(
                name=self.name,
                namespace=self.namespace,
                annotations={REPORT_ANNOTATION: json.dumps(self.snapshot(), default=str)},
            ),
            spec=client.V1LeaseSpec(
                holder_identity=self.node,
                lease_duration_seconds=self.duration_s,
                renew_time=dt.datetime.now(dt.UTC),
            ),
        )

    def _write(self) -> None:
        body = self._body()
        try:  # only this agent writes its report Lease: a merge patch, no compare-and-swap needed
            # the agent's own ApiClient: a new one each second would leak a connection pool
            patch = self.api.api_client.sanitize_for_serialization(body)
            self.api.patch_namespaced_lease(self.name, self.namespace, patch, _request_timeout=2)
        except ApiException as e:
            if e.status != 404:
                raise
            self.api.create_namespaced_lease(self.namespace, body, _request_timeout=2)

    async def run(self) -> None:
        while True:
            try:
                await asyncio.to_thread(self._write)
                if self.failures:
                    log.info("report Lease %s written again after %d failures", self.name, self.failures)
                self.failures = 0
            except Exception as e:  # the report is best effort; failover never waits for it
                self.failures += 1
                if self.failures in (1, 10) or self.failures % 100 == 0:
                    why = f"HTTP {e.status} {e.reason}" if isinstance(e, ApiException) else str(e)
                    log.warning("cannot write report Lease %s: %s", self.name, why)
            await asyncio.sleep(self.every)
