"""The kopf handlers: fetch, call decide() and the builders, write. Nothing else decides here.

Layout (after kopf's own: clients, then the engines, then the handlers that wire them):

- `kube.py` (not here): the one client layer, `Kube`, its errors, paths and credentials.
- `ensure_*`: make the config Secret, the agents' ServiceAccount, Role and RoleBinding, the
  ownership and report Leases, and the agents' DaemonSet what the builders (resources.py) say.
- `tick`: one observation → decide() → annotations (CAS) → workload labels → status → Events.
- `build_registry`: the kopf handlers. create/update/resume ensure the objects; one daemon per
  HACluster looks when something changed, not on a timer: a watch event of its Leases (a report
  only when it says something new) or its objects wakes it, and the decision says when time
  alone may change it (`Decision.recheck_s`: a report going stale); `interval` is only the
  resync. Its agents' objects are rendered again when what they are made from changed
  (`config_inputs`, from the watch cache's versions), at the latest every `config_every`;
  delete takes over the ticking: it asks the agents to release, waits (bounded) for an empty
  holder, deletes the DaemonSet and the Secret, and lets kopf remove the finalizer.

Never logged, posted or stored in status: the auth Secret's value, the rendered files.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import dataclasses
import hashlib
import json
import logging
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, cast

import kopf

from hacluster_api.annotations import REPORT
from hacluster_api.models import GROUP, MAIN_GROUP, PLURAL, VERSION, HAClusterSpec, HAClusterStatus
from hacluster_api.names import lease_names, ownership_lease_name, report_lease_name
from hacluster_api.render import RenderError, script_sources
from hacluster_api.report import ReportLease, parse_report

from .clashes import Footprint, clashes, footprint
from .decide import DEFAULT_REPORT_DURATION_S, RECHECK_MIN_S, Decision, LeaseState, decide
from .groups import gather, previous_of
from .kube import (
    JSON_PATCH,
    MERGE_PATCH,
    Cache,
    Conflict,
    Kube,
    configmap_path,
    daemonset_path,
    lease_path,
    role_path,
    rolebinding_path,
    secret_path,
    serviceaccount_path,
    status_path,
    without_managed_fields,
)
from .leasewatch import LeaseWatch
from .metrics import METRICS
from .resources import (
    MANAGED_BY,
    Manifest,
    agent_account_name,
    agent_role,
    agent_role_binding,
    agent_service_account,
    config_data,
    config_secret,
    config_secret_name,
    daemonset,
    daemonset_name,
    has_owner_reference,
    label_patch,
    owner_reference,
    ownership_lease,
    report_lease,
    secret_text,
    workload_labels,
    workload_values,
)

log = logging.getLogger("hacluster.operator")

FINALIZER = "hacluster.dev/finalizer"
SPEC_HASH = "hacluster.dev/spec-hash"
RETRY_S = 1.0
"""After a failed look, the next one comes this much later per failure in a row (up to 10)."""
CONFIG_RETRY_S = 10.0
"""After the agents' objects could not be written: the next attempt, although nothing changed."""


@dataclass(frozen=True)
class Settings:
    agent_image: str
    agent_image_pull_policy: str | None = None
    interval: float = 30.0
    """The longest time between two looks at one HACluster (a resync, as informers have). It is
    looked at at once when its spec, one of its Leases or one of its objects changes (the watches),
    and when time alone may change the decision (Decision.recheck_s: a report going stale)."""
    config_every: float = 300.0
    """The longest time between two renderings of its agents' objects. They are rendered at once
    when what they are made from changes (`config_inputs`: the spec, the auth Secret, a script
    ConfigMap, an object written, another HACluster's footprint)."""
    release_timeout: float = 30.0
    """On deletion, how long to wait for the agents to release before deleting them anyway."""

    @classmethod
    def from_env(cls, env: Mapping[str, str], **overrides: Any) -> Settings:
        image = env.get("HACLUSTER_AGENT_IMAGE", "")
        if not image:
            raise ValueError("HACLUSTER_AGENT_IMAGE is not set: the agents' container image")
        return cls(
            agent_image=image,
            agent_image_pull_policy=env.get("HACLUSTER_AGENT_IMAGE_PULL_POLICY") or None,
            **overrides,
        )


@dataclass
class Memory:
    """What the operator keeps per HACluster between ticks (all of it can be lost: a restart
    starts from the HACluster's status)."""

    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    status: HAClusterStatus | None = None
    config_error: str | None = None
    config_at: float | None = None
    missing_nodes: set[str] = field(default_factory=set)
    conflicts: list[str] = field(default_factory=list)  # clashes.clashes, at the last ensure_all
    wake: asyncio.Event = field(default_factory=asyncio.Event)
    """Set when the spec, a Lease or an object of this HACluster changed: its daemon decides at
    once (otherwise it waits for the decision's recheck_s, or the resync `interval`)."""
    inputs: tuple[str, ...] | None = None
    """`config_inputs` when the agents' objects were last ensured (or tried)."""
    config_retry: float | None = None
    """After a failed ensure_all: when to try again although nothing changed."""
    reads: frozenset[str] = frozenset()
    """The users' objects its agents' objects are made from (the auth Secret, script ConfigMaps),
    by path: a change of one wakes it."""
    nodes: frozenset[str] = frozenset()
    """Its nodes at the last look: another HACluster's footprint on one of them may clash."""
    renewal_is_news: frozenset[str] = frozenset()
    """Decision.renewal_is_news, at the last look, as report Lease names: a renewal of one of
    these wakes it."""
    labelled_for: dict[str, str] = field(default_factory=dict)
    """Per group, the holder the Nodes' workload labels were last made to follow ("" for nobody)."""


@dataclass
class Context:
    kube: Kube
    settings: Settings
    identity: str = "hacluster-operator"
    memories: dict[str, Memory] = field(default_factory=dict)
    clock: Callable[[], float] = time.monotonic
    node_versions: dict[str, int] = field(default_factory=dict)
    """Per node, bumped when an HACluster's footprint on it changes (a clash may come or go)."""
    stopping: asyncio.Event = field(default_factory=asyncio.Event)
    """Set when the operator stops: every pair's daemon ends, also one kopf spawned after it
    told its daemons to stop (a watch event still in flight at the stop: kopf leaves it running
    until its own teardown times out)."""
    namespaces: tuple[str, ...] = ()
    """The namespaces served (empty: every namespace)."""
    leases: LeaseWatch | None = None
    """The operator's Leases, watched outside kopf (leasewatch.py); started with the operator."""

    def memory(self, hacluster: Mapping[str, Any]) -> Memory:
        return self.memories.setdefault(hacluster["metadata"]["uid"], Memory())


# --------------------------------------------------------------------------------------------
# ensure: the config Secret, the agents' RBAC, the Leases, the DaemonSet


def _where(hacluster: Mapping[str, Any]) -> tuple[str, str]:
    meta = hacluster["metadata"]
    return str(meta["namespace"]), str(meta["name"])


async def render_config(ctx: Context, hacluster: Mapping[str, Any], spec: HAClusterSpec) -> dict[str, str]:
    """The config Secret's data from the auth Secret and the script ConfigMaps. Raises RenderError
    with a message that is safe to show (no key)."""
    namespace, _ = _where(hacluster)
    ref = spec.auth.secret_ref
    auth = await ctx.kube.get(secret_path(namespace, ref.name), sensitive=True)
    if auth is None:
        raise RenderError(f"the auth Secret {ref.name!r} does not exist")
    text = secret_text(auth, ref.key)
    if text is None:
        raise RenderError(f"the auth Secret {ref.name!r} has no key {ref.key!r}")
    bodies: dict[str, str] = {}
    for script, source in script_sources(spec).items():
        cm = await ctx.kube.get(configmap_path(namespace, source.name))
        if cm is None:
            raise RenderError(f"the ConfigMap {source.name!r} for script {script!r} does not exist")
        body = (cm.get("data") or {}).get(source.key)
        if body is None:
            raise RenderError(f"the ConfigMap {source.name!r} has no key {source.key!r} (script {script!r})")
        bodies[script] = body
    try:
        return config_data(spec, text, bodies)
    except RenderError:
        raise
    except Exception as e:  # anything else may quote its input: say what, not the details
        raise RenderError(f"rendering failed ({type(e).__name__}; details withheld)") from None


async def ensure_secret(ctx: Context, hacluster: Mapping[str, Any], data: Mapping[str, str]) -> bool:
    """Create or replace the config Secret. True when it was written."""
    namespace, name = _where(hacluster)
    wanted = config_secret(hacluster, data)
    path = secret_path(namespace, config_secret_name(name))
    for fresh in (False, True):  # the cache first; fresh once a write found it behind
        current = await ctx.kube.get(path, sensitive=True, fresh=fresh)
        try:
            if current is None:
                await ctx.kube.request("POST", secret_path(namespace), wanted, sensitive=True)
                return True
            if (current.get("data") or {}) == wanted["data"] and has_owner_reference(current, hacluster):
                return False
            wanted["metadata"]["resourceVersion"] = current["metadata"]["resourceVersion"]
            await ctx.kube.request("PUT", path, wanted, sensitive=True)
            return True
        except Conflict:
            METRICS.cache_behind.labels("secrets").inc()
            if fresh:
                raise
    raise AssertionError("unreachable")


def _spec_hash(manifest: Mapping[str, Any]) -> str:
    return hashlib.sha256(json.dumps(manifest, sort_keys=True).encode()).hexdigest()[:16]


async def ensure_object(ctx: Context, collection: str, wanted: Manifest) -> bool:
    """Create `wanted` in `collection` (a namespaced list path), or replace it when what the
    builder says changed (by hash, as the server adds defaults to what it stores). True when it
    was written."""
    wanted = copy.deepcopy(wanted)
    digest = _spec_hash(wanted)
    wanted["metadata"].setdefault("annotations", {})[SPEC_HASH] = digest
    path = f"{collection}/{wanted['metadata']['name']}"
    for fresh in (False, True):  # the cache first; fresh once a write found it behind
        current = await ctx.kube.get(path, fresh=fresh)
        try:
            if current is None:
                await ctx.kube.request("POST", collection, wanted)
                return True
            if (current["metadata"].get("annotations") or {}).get(SPEC_HASH) == digest:
                return False
            wanted["metadata"]["resourceVersion"] = current["metadata"]["resourceVersion"]
            await ctx.kube.request("PUT", path, wanted)
            return True
        except Conflict:
            METRICS.cache_behind.labels(collection.rsplit("/", 1)[-1]).inc()
            if fresh:
                raise
    raise AssertionError("unreachable")


async def ensure_daemonset(ctx: Context, hacluster: Mapping[str, Any], spec: HAClusterSpec) -> bool:
    """Create or replace the agents' DaemonSet. True when it was written."""
    namespace, _ = _where(hacluster)
    s = ctx.settings
    wanted = daemonset(hacluster, spec, image=s.agent_image, image_pull_policy=s.agent_image_pull_policy)
    return await ensure_object(ctx, daemonset_path(namespace), wanted)


async def ensure_agent_rbac(ctx: Context, hacluster: Mapping[str, Any], spec: HAClusterSpec) -> list[str]:
    """The agents' ServiceAccount, Role (this HACluster's Leases by name) and RoleBinding, in that
    order (a RoleBinding is checked against the Role it names). The kinds written."""
    namespace, _ = _where(hacluster)
    written = []
    for collection, wanted in (
        (serviceaccount_path(namespace), agent_service_account(hacluster)),
        (role_path(namespace), agent_role(hacluster, spec)),
        (rolebinding_path(namespace), agent_role_binding(hacluster)),
    ):
        if await ensure_object(ctx, collection, wanted):
            written.append(str(wanted["kind"]))
    return written


async def ensure_lease(
    ctx: Context,
    hacluster: Mapping[str, Any],
    reports: Mapping[str, tuple[bool, int | None]] | None = None,
    group: str = MAIN_GROUP,
) -> dict[str, Any]:
    """The group's ownership Lease, created if missing: marked recreated, above every epoch the
    status (`hacluster["status"]`: the group's owner and epoch) and the agents' `reports` show
    (resources.ownership_lease)."""
    what = "the ownership Lease" if group == MAIN_GROUP else f"group {group}'s ownership Lease"
    return await _ensure_lease(ctx, hacluster, ownership_lease(hacluster, reports, group), what)


async def ensure_report_leases(
    ctx: Context, hacluster: Mapping[str, Any], spec: HAClusterSpec, group: str = MAIN_GROUP
) -> None:
    """Each node's report Lease on the group, created empty if missing: the agents may patch it,
    not create it."""
    for node in spec.nodes:
        await _ensure_lease(ctx, hacluster, report_lease(hacluster, node, group), f"{node}'s report Lease")


def group_record(hacluster: Mapping[str, Any], group: str, first: bool) -> dict[str, Any]:
    """The group's owner and epoch as the HACluster's status records them (what a recreated Lease
    starts from): previous_of's, as every look reads them."""
    mine = previous_of(_previous(hacluster), group, first)
    return {} if mine is None else {"owner": mine.owner, "epoch": mine.epoch}


async def _ensure_lease(
    ctx: Context, hacluster: Mapping[str, Any], wanted: Manifest, what: str
) -> dict[str, Any]:
    """Create the Lease `wanted` if missing; give it our ownerReference if someone else created it
    first (an agent of an older version: compare-and-swap, the rest of it untouched)."""
    namespace, name = _where(hacluster)
    lease_name = str(wanted["metadata"]["name"])
    lease = await ctx.kube.get_lease(namespace, lease_name)
    if lease is None:
        try:
            created = await ctx.kube.create_lease(namespace, wanted)
            log.info("[%s/%s] created %s %s", namespace, name, what, lease_name)
            return created
        except Conflict:
            lease = await ctx.kube.get_lease(namespace, lease_name, fresh=True)
            if lease is None:
                raise
    labels = wanted["metadata"].get("labels") or {}
    have = lease["metadata"].get("labels") or {}
    if not has_owner_reference(lease, hacluster) or any(have.get(k) != v for k, v in labels.items()):
        # Ours, and labelled as ours: the watch cache holds the Leases by this label.
        refs = list(lease["metadata"].get("ownerReferences") or [])
        refs = [r for r in refs if not r.get("controller")] + [owner_reference(hacluster)]
        patch = {
            "metadata": {
                "resourceVersion": lease["metadata"]["resourceVersion"],
                "ownerReferences": refs,
                "labels": labels,
            }
        }
        lease = await ctx.kube.patch_lease(namespace, lease_name, patch)
    return lease


async def ensure_all(
    ctx: Context, hacluster: Mapping[str, Any], others: Callable[[], Iterable[Footprint]] = tuple
) -> None:
    """The Secret (unless the config cannot be rendered: then the last good one stays), the
    agents' RBAC, the Leases, then the DaemonSet (its pods find their account and Leases in
    place). A config error is remembered for the status (Degraded) and posted
    once as an Event; it does not stop the rest. `others`: every HACluster's footprint (the
    operator's index; asked for only here, as it costs one pass over every cluster): while this one clashes with one that came first on a common node, neither
    its Secret nor its DaemonSet is written (its agents would fight the other's for a port)."""
    namespace, name = _where(hacluster)
    spec = HAClusterSpec.model_validate(hacluster["spec"])
    memory = ctx.memory(hacluster)
    mine = footprint(hacluster, spec)
    conflicts = clashes(mine, others()) if mine is not None else []
    if conflicts != memory.conflicts and conflicts:
        log.warning("[%s/%s] not rolled out: %s", namespace, name, "; ".join(conflicts))
    memory.conflicts = conflicts
    async with memory.lock:
        try:
            data = await render_config(ctx, hacluster, spec)
            error = None
        except RenderError as e:
            data, error = None, str(e)
        if conflicts:
            data = None  # (and no DaemonSet below)
        if error != memory.config_error:
            if error:
                log.warning("[%s/%s] config not rendered: %s", namespace, name, error)
            elif memory.config_error:
                log.info("[%s/%s] config renders again", namespace, name)
        memory.config_error = error
        if data is not None and await ensure_secret(ctx, hacluster, data):
            log.info(
                "[%s/%s] wrote the config Secret %s (%d files)",
                namespace,
                name,
                config_secret_name(name),
                len(data),
            )
        written = await ensure_agent_rbac(ctx, hacluster, spec)
        if written:
            log.info(
                "[%s/%s] wrote the agents' %s %s",
                namespace,
                name,
                "/".join(written),
                agent_account_name(name),
            )
        for i, group in enumerate(spec.group_list()):
            recorded = {**hacluster, "status": group_record(hacluster, group.name, i == 0)}
            await ensure_lease(ctx, recorded, group=group.name)
            await ensure_report_leases(ctx, hacluster, spec, group.name)
        if not conflicts and await ensure_daemonset(ctx, hacluster, spec):
            log.info("[%s/%s] wrote the DaemonSet %s", namespace, name, daemonset_name(name))
        memory.config_at = ctx.clock()


# --------------------------------------------------------------------------------------------
# one tick: observe, decide, write


def _time(value: Any) -> datetime | None:
    if not value:
        return None
    try:
        t = datetime.fromisoformat(str(value))
    except ValueError:
        return None
    return t if t.tzinfo else t.replace(tzinfo=UTC)


def lease_state(lease: Mapping[str, Any]) -> LeaseState:
    spec = lease.get("spec") or {}
    return LeaseState(
        holder=str(spec.get("holderIdentity") or ""),
        epoch=int(spec.get("leaseTransitions") or 0),
        annotations=dict(lease.get("metadata", {}).get("annotations") or {}),
        acquired=_time(spec.get("acquireTime")),
    )


def report_of(node: str, lease: Mapping[str, Any] | None) -> ReportLease | None:
    if lease is None:
        return None
    spec = lease.get("spec") or {}
    duration = spec.get("leaseDurationSeconds")
    text = (lease.get("metadata", {}).get("annotations") or {}).get(REPORT)
    return parse_report(node, _time(spec.get("renewTime")), float(duration) if duration else None, text)


def _previous(hacluster: Mapping[str, Any]) -> HAClusterStatus | None:
    raw = hacluster.get("status")
    if not raw:
        return None
    try:
        return HAClusterStatus.model_validate({k: v for k, v in raw.items() if k in _STATUS_FIELDS})
    except ValueError:
        return None


_STATUS_FIELDS = {
    "owner", "epoch", "state", "observedGeneration", "nodes", "lastTransition", "groups", "conditions"
}  # fmt: skip


def config_inputs(ctx: Context, hacluster: Mapping[str, Any], spec: HAClusterSpec) -> tuple[str, ...] | None:
    """What the agents' objects are made from and what they are, as the watch cache's
    resourceVersions: while this is unchanged, rendering them again would write nothing. None
    without a cache (then they are rendered on every look)."""
    cache = ctx.kube.cache
    if cache is None:
        return None
    namespace, name = _where(hacluster)
    try:
        maps = sorted({source.name for source in script_sources(spec).values()})
    except RenderError:
        maps = []  # ensure_all says why
    account = agent_account_name(name)
    memory = ctx.memory(hacluster)
    given = frozenset(
        {secret_path(namespace, spec.auth.secret_ref.name), *(configmap_path(namespace, m) for m in maps)}
    )
    memory.reads = given
    versions = [
        *(cache.version(p) for p in sorted(given)),
        *(
            cache.version(p)
            for p in (
                secret_path(namespace, config_secret_name(name)),
                serviceaccount_path(namespace, account),
                role_path(namespace, account),
                rolebinding_path(namespace, account),
            )
        ),
        # What the operator made of them, not their every change: the controller's status
        # updates of the DaemonSet, the agents' renewals of the Leases.
        cache.version(daemonset_path(namespace, daemonset_name(name)), _made_daemonset),
        *(
            cache.version(lease_path(namespace, lease), _uid)
            for lease in lease_names(name, spec.nodes, [g.name for g in spec.group_list()])
        ),
    ]
    generation = str(hacluster["metadata"].get("generation") or "")
    clashes_on = ",".join(str(ctx.node_versions.get(n, 0)) for n in sorted(spec.nodes))
    return (generation, clashes_on, *versions)


def _uid(obj: Mapping[str, Any]) -> str:
    """An object as itself (recreated: another uid); its labels are what the watch selects it by."""
    return str(obj.get("metadata", {}).get("uid", ""))


def _made_daemonset(obj: Mapping[str, Any]) -> str:
    meta = obj.get("metadata", {})
    return f"{meta.get('uid', '')}/{meta.get('generation', '')}/{(meta.get('annotations') or {}).get(SPEC_HASH, '')}"


async def tick(
    ctx: Context,
    hacluster: Mapping[str, Any],
    *,
    deleting: bool = False,
    others: Callable[[], Iterable[Footprint]] = tuple,
) -> Decision | None:
    """Look once, decide once, write what the decision says. None when the Lease changed under us
    (the compare-and-swap lost): the next tick decides again on fresh data."""
    namespace, name = _where(hacluster)
    spec = HAClusterSpec.model_validate(hacluster["spec"])
    memory = ctx.memory(hacluster)
    inputs = config_inputs(ctx, hacluster, spec)
    memory.nodes = frozenset(spec.nodes)
    now = ctx.clock()
    if memory.config_retry is not None and now >= memory.config_retry:
        memory.inputs = None  # a failed attempt is tried again
    config_due = not deleting and (
        memory.config_at is None
        or inputs is None
        or inputs != memory.inputs
        or now - memory.config_at >= ctx.settings.config_every
    )
    rendered_before = (memory.config_error, list(memory.conflicts))
    previous = memory.status if memory.status is not None else _previous(hacluster)
    multi = spec.multi_group
    decisions: list[tuple[str, Decision]] = []
    for i, group in enumerate(spec.group_list()):
        decision = await decide_group(
            ctx,
            hacluster,
            spec.of_group(group) if multi else spec,
            group.name,
            previous_of(previous, group.name, i == 0) if multi else previous,
            config_due=config_due,
            deleting=deleting,
        )
        if decision is None:
            return None
        decisions.append((group.name, decision))
    # The agents' objects after the Lease: a declared switchover reaches the Lease without
    # waiting for the pair's objects to be rendered and compared (the annotations do not depend on
    # them). What the render finds (a config error, a clash) is in the status of the next look,
    # at once.
    if config_due:
        METRICS.renders.labels(
            "new" if memory.config_at is None
            else "retry" if memory.inputs is None
            else "changed" if inputs is None or inputs != memory.inputs
            else "resync"
        ).inc()  # fmt: skip
        memory.inputs = inputs
        try:
            await ensure_all(ctx, hacluster, others)
            memory.config_retry = None
        except Exception as e:  # the agents' objects can wait; the status and the Lease cannot
            memory.config_at = now
            memory.config_retry = now + CONFIG_RETRY_S  # not on every look
            log.warning("[%s/%s] could not write the agents' objects: %s", namespace, name, _brief(e))

        if (memory.config_error, memory.conflicts) != rendered_before:
            memory.wake.set()

    if multi:
        status, write_status, events = gather(decisions, previous)
    else:
        only = decisions[0][1]
        status, write_status, events = only.status, only.write_status, only.events

    if write_status:
        await ctx.kube.request(
            "PATCH",
            status_path(namespace, name),
            [{"op": "add", "path": "/status", "value": status.to_k8s()}],
            content_type=JSON_PATCH,
        )
        if previous is None or previous.state != status.state:
            log.info(
                "[%s/%s] %s: owner %s, epoch %s",
                namespace,
                name,
                status.state,
                status.owner or "-",
                status.epoch,
            )
        memory.status = status  # what the server holds: the next decision's `previous`

    memory.renewal_is_news = frozenset(
        report_lease_name(name, n, g) for g, d in decisions for n in d.renewal_is_news
    )
    METRICS.observe(namespace, name, status, events)
    body = _event_body(hacluster)
    for event in events:
        kopf.event(body, type=event.type, reason=event.reason, message=event.message)
        log.info("[%s/%s] event %s %s: %s", namespace, name, event.type, event.reason, event.message)
    rechecks = [d.recheck_s for _, d in decisions if d.recheck_s is not None]
    return dataclasses.replace(
        decisions[0][1],
        status=status,
        write_status=write_status,
        events=events,
        released=all(d.released for _, d in decisions),
        holder=next((d.holder for _, d in decisions if not d.released), None),
        recheck_s=min(rechecks) if rechecks else None,
    )


async def decide_group(
    ctx: Context,
    hacluster: Mapping[str, Any],
    spec: HAClusterSpec,
    group: str,
    previous: HAClusterStatus | None,
    *,
    config_due: bool,
    deleting: bool,
) -> Decision | None:
    """One group's look (`spec`: as if it were the only one): its Lease and reports, recreated
    if missing; its decision; its annotations and workload labels written. None when its Lease
    changed under us."""
    namespace, name = _where(hacluster)
    memory = ctx.memory(hacluster)
    meta = hacluster["metadata"]
    lease_name = ownership_lease_name(name, group)
    raw_lease = await ctx.kube.get_lease(namespace, lease_name)
    raw_reports = await asyncio.gather(
        *(ctx.kube.get_lease(namespace, report_lease_name(name, n, group)) for n in spec.nodes)
    )
    reports = {n: report_of(n, r) for n, r in zip(spec.nodes, raw_reports, strict=True)}
    if raw_lease is None and not deleting:
        # recreated from the freshest record we have (our own last status, not the object's)
        # and the agents' reports: its epoch above all of them
        recorded = {"owner": previous.owner, "epoch": previous.epoch} if previous is not None else {}
        raw_lease = await ensure_lease(
            ctx,
            {**hacluster, "status": recorded},
            {
                n: (r.report.holds != "none", r.report.epoch)
                for n, r in reports.items()
                if r is not None and r.report is not None
            },
            group,
        )
    decision = decide(
        spec,
        int(meta.get("generation") or 0),
        lease_state(raw_lease) if raw_lease is not None else None,
        reports,
        datetime.now(UTC),
        previous=previous,
        config_error=memory.config_error,
        conflicts=memory.conflicts,
        deleting=deleting,
    )

    if decision.annotations and raw_lease is not None:
        patch = {
            "metadata": {
                "resourceVersion": raw_lease["metadata"]["resourceVersion"],
                "annotations": decision.annotations,
            }
        }
        try:
            await ctx.kube.patch_lease(namespace, lease_name, patch)
        except Conflict:
            log.debug(
                "[%s/%s] the Lease %s changed while deciding; deciding again", namespace, name, lease_name
            )
            return None
        shown = ", ".join(f"{k}={v!r}" if v is not None else f"-{k}" for k, v in decision.annotations.items())
        log.info("[%s/%s] Lease %s annotations: %s (%s)", namespace, name, lease_name, shown, decision.why)

    holder = decision.holder or ""
    # A pair held back (clashes.py) moves no label either: the label may be the other pair's.
    if not memory.conflicts and (
        config_due or memory.missing_nodes or memory.labelled_for.get(group) != holder
    ):
        await move_workload_labels(ctx, hacluster, spec, lease_name, decision.holder, memory)
        memory.labelled_for[group] = holder
    return decision


def _event_body(hacluster: Mapping[str, Any]) -> kopf.Body:
    """What kopf.event() needs to name the HACluster in an Event."""
    meta = hacluster["metadata"]
    raw = {
        "apiVersion": hacluster.get("apiVersion", f"{GROUP}/{VERSION}"),
        "kind": hacluster.get("kind", "HACluster"),
        "metadata": {"name": meta["name"], "namespace": meta["namespace"], "uid": meta["uid"]},
    }
    return kopf.Body(raw)  # type: ignore[arg-type]


async def move_workload_labels(
    ctx: Context,
    hacluster: Mapping[str, Any],
    spec: HAClusterSpec,
    value: str,
    holder: str | None,
    memory: Memory,
) -> None:
    """Put the group's workload labels on its holder only (`value`: a label's default value, the
    group's Lease name). A missing Node is logged once, not an error."""
    namespace, name = _where(hacluster)
    for node, wanted in workload_labels(spec, value, holder).items():
        current = await ctx.kube.get(f"/api/v1/nodes/{node}")
        if current is None:
            if node not in memory.missing_nodes:
                log.warning("[%s/%s] Node %s does not exist: its workload labels wait", namespace, name, node)
                memory.missing_nodes.add(node)
            continue
        memory.missing_nodes.discard(node)
        patch = label_patch(current["metadata"].get("labels"), wanted, workload_values(spec, value))
        if patch:
            await ctx.kube.request(
                "PATCH", f"/api/v1/nodes/{node}", {"metadata": {"labels": patch}}, content_type=MERGE_PATCH
            )
            log.info("[%s/%s] Node %s labels: %s", namespace, name, node, patch)


async def delete_agents(ctx: Context, hacluster: Mapping[str, Any]) -> None:
    namespace, name = _where(hacluster)
    if await ctx.kube.delete(daemonset_path(namespace, daemonset_name(name))):
        log.info("[%s/%s] deleted the DaemonSet %s", namespace, name, daemonset_name(name))
    if await ctx.kube.delete(secret_path(namespace, config_secret_name(name))):
        log.info("[%s/%s] deleted the config Secret %s", namespace, name, config_secret_name(name))


# --------------------------------------------------------------------------------------------
# the kopf handlers


async def _until(wake: asyncio.Event, stopped: Any, interval: float, stopping: asyncio.Event) -> None:
    """The next look: after `interval`, or at once when woken (something changed) or stopped."""
    waiters = {
        asyncio.ensure_future(wake.wait()),
        asyncio.ensure_future(stopped.wait(interval)),
        asyncio.ensure_future(stopping.wait()),
    }
    try:
        await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for w in waiters:
            w.cancel()


def _plain(body: kopf.Body) -> dict[str, Any]:
    return copy.deepcopy(dict(body))


def lease_news(
    before: tuple[str, datetime | None] | None, lease: Mapping[str, Any], event: str, watched: bool
) -> tuple[bool, tuple[str, datetime | None]]:
    """Whether a watch event of one of the operator's Leases can change a decision, and the mark
    to compare the next event with. What `decide` reads of a Lease is news (its annotations, holder,
    epoch, take time, duration, whether it exists); a renewal is not (the holder renews many times
    a second while the peer is unheard; an agent renews its report every second), except for a
    report that had gone stale meanwhile (renewed later than its duration after the renewal seen
    before) or that the last decision watches (`watched`: silent, or a claim within its grace)."""
    spec = lease.get("spec") or {}
    said = json.dumps(
        [
            event == "DELETED",
            (lease.get("metadata") or {}).get("annotations") or {},
            spec.get("holderIdentity"),
            spec.get("leaseTransitions"),
            spec.get("acquireTime"),
            spec.get("leaseDurationSeconds"),
        ],
        sort_keys=True,
    )
    renewed = _time(spec.get("renewTime"))
    mark = (said, renewed)
    if before is None or before[0] != said or watched:
        return True, mark
    duration = float(spec.get("leaseDurationSeconds") or 0)
    lapsed = (
        renewed is not None
        and before[1] is not None
        and (renewed - before[1]).total_seconds() > (duration or DEFAULT_REPORT_DURATION_S)
    )
    return lapsed, mark


class HAClusterDiffBase(kopf.AnnotationsDiffBaseStorage):
    """kopf builds the "essence" of every object it watches on every event (a deep copy, diffed
    for create/update handlers). Only HAClusters have such handlers: the other kinds' events (every
    Secret and ConfigMap of the namespaces served, the DaemonSets' status) skip it. It was a
    quarter of the operator's CPU at 100 HAClusters with their agents renewing, when kopf still
    watched the Leases (py-spy)."""

    def build(self, *, body: kopf.Body, extra_fields: Iterable[Any] | None = None) -> kopf.BodyEssence:
        if not str(body.get("apiVersion", f"{GROUP}/")).startswith(f"{GROUP}/"):
            return cast(kopf.BodyEssence, {})
        return super().build(body=body, extra_fields=extra_fields)


class QuietWakes(logging.Filter):
    """Drops kopf's "Handler 'wake_…' succeeded." (one per watch event of a Lease, Secret or
    ConfigMap: noise); the wake handlers' failures and everything else still show."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = str(record.msg)
        return not (
            record.levelno <= logging.INFO
            and message.startswith("Handler 'wake_")
            and message.endswith(" succeeded.")
        )


def configure_kopf(settings: kopf.OperatorSettings, identity: str) -> None:
    """kopf keeps its state in annotations under hacluster.dev (the status schema is structural:
    it would prune kopf's own status fields), adds our finalizer, posts Events as
    hacluster-operator, and neither scans CRDs and Namespaces nor peers (RBAC stays small;
    leader.py elects the one acting replica)."""
    settings.persistence.finalizer = FINALIZER
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix=GROUP)
    settings.persistence.diffbase_storage = HAClusterDiffBase(prefix=GROUP, key="last-handled-configuration")
    settings.posting.reporting_component = "hacluster-operator"
    settings.posting.reporting_instance = identity[:128]
    settings.posting.event_name_prefix = "hacluster-"
    settings.scanning.disabled = True
    settings.peering.standalone = True
    settings.networking.request_timeout = 60.0
    settings.networking.connect_timeout = 10.0
    settings.watching.server_timeout = 300  # seconds, an integer for the API server
    objects = logging.getLogger("kopf.objects")
    if not any(isinstance(f, QuietWakes) for f in objects.filters):
        objects.addFilter(QuietWakes())


def build_registry(ctx: Context) -> kopf.OperatorRegistry:
    registry = kopf.OperatorRegistry()

    @kopf.on.login(registry=registry)
    def login(**kwargs: Any) -> Any:
        return kopf.login_via_client(**kwargs)

    # The watch cache (kube.Cache): every kind the operator reads, from kopf's watches, by path.
    # Its own objects (its managed-by label), whole; every Secret and ConfigMap of the namespaces
    # served (the auth Secrets and script ConfigMaps are the users'), as versions only.
    mine = {"app.kubernetes.io/managed-by": MANAGED_BY}
    watched: dict[str, tuple[str, Callable[[str, str], str], dict[str, str] | None, bool]] = {
        "daemonsets": ("apps", daemonset_path, mine, True),
        "serviceaccounts": ("", serviceaccount_path, mine, True),
        "roles": ("rbac.authorization.k8s.io", role_path, mine, True),
        "rolebindings": ("rbac.authorization.k8s.io", rolebinding_path, mine, True),
        "secrets": ("", secret_path, None, False),
        "configmaps": ("", configmap_path, None, False),
    }

    def indexer(path_of: Callable[[str, str], str], whole: bool) -> Callable[..., Awaitable[dict[str, Any]]]:
        async def index(body: kopf.Body, namespace: str, name: str, **_: Any) -> dict[str, Any]:
            if not whole:
                return {path_of(namespace, name): str(body.get("metadata", {}).get("resourceVersion", ""))}
            return {path_of(namespace, name): without_managed_fields(dict(body))}  # kopf's raw body

        return index

    for plural, (group, path_of, selector, whole) in watched.items():
        kopf.index(group, "v1", plural, registry=registry, id=f"cache_{plural}", labels=selector)(
            indexer(path_of, whole)
        )

    def use_cache(kwargs: Mapping[str, Any]) -> None:
        """The indices kopf passes to every handler and the Leases' own watch, as the client's
        cache (once)."""
        if ctx.kube.cache is None:
            objects = {p: kwargs[f"cache_{p}"] for p, spec in watched.items() if spec[3]}
            leases = ctx.leases
            if leases is not None:
                objects["leases"] = leases.store
            ctx.kube.cache = Cache(
                objects,
                {p: kwargs[f"cache_{p}"] for p, spec in watched.items() if not spec[3]},
                ready=lambda kind: kind != "leases" or (leases is not None and leases.synced.is_set()),
            )

    tasks: list[asyncio.Task[None]] = []  # held: the loop keeps only weak references

    @kopf.on.startup(registry=registry)
    async def watch_leases(**_: Any) -> None:
        """The Leases' watch, outside kopf (leasewatch.py: the agents' renewals are most events)."""
        selector = ",".join(f"{k}={v}" for k, v in mine.items())
        ctx.leases = LeaseWatch(ctx.kube.api, ctx.namespaces, selector, lease_changed)
        tasks.append(asyncio.create_task(ctx.leases.run(ctx.stopping), name="lease watch"))

    @kopf.index(GROUP, VERSION, PLURAL, registry=registry, id="footprints")
    async def footprints(body: kopf.Body, **_: Any) -> dict[str, Footprint]:
        """Every HACluster's footprint on its nodes (clashes.py), kept by kopf from its watch, a
        deleting one's included (its agents run until it is gone)."""
        made = footprint(_plain(body))
        return {} if made is None else {made.cluster: made}

    # The wake-ups. Coroutines, not functions: kopf runs a function in a thread, and an asyncio
    # Event is set from the loop only. kopf calls them after every index took the event in.
    last_footprint: dict[str, Footprint | None] = {}

    @kopf.on.event(GROUP, VERSION, PLURAL, registry=registry, id="wake_clashing")
    async def footprint_changed(
        body: kopf.Body, type: str, namespace: str | None, name: str, **_: Any
    ) -> None:
        """An HACluster's footprint changed or went: every HACluster on one of its nodes looks
        at its clashes again (one held back may go; one running may now clash with an earlier
        one). A deleted one's memory goes with it (also when its finalizer was removed by hand)."""
        key = f"{namespace}/{name}"
        before = last_footprint.get(key)
        now = None if type == "DELETED" else footprint(_plain(body))
        if type == "DELETED":
            last_footprint.pop(key, None)
            forget(str(body.get("metadata", {}).get("uid", "")))
        elif key in last_footprint and before == now:
            return
        else:
            last_footprint[key] = now
        nodes = (before.nodes if before else frozenset()) | (now.nodes if now else frozenset())
        for node in nodes:
            ctx.node_versions[node] = ctx.node_versions.get(node, 0) + 1
        for memory in ctx.memories.values():
            if memory.nodes & nodes:
                memory.wake.set()

    def forget(uid: str) -> None:
        ctx.memories.pop(uid, None)

    # A Lease, or an object made for an HACluster, changed: wake the HACluster its controller
    # ownerReference names, when the change is news (lease_news).
    lease_marks: dict[str, tuple[str, datetime | None]] = {}

    def owner_memory(body: Mapping[str, Any]) -> Memory | None:
        for ref in body.get("metadata", {}).get("ownerReferences") or []:
            if ref.get("controller") and ref.get("kind") == "HACluster":
                return ctx.memories.get(str(ref.get("uid")))
        return None

    def wake_owner(body: kopf.Body) -> None:
        memory = owner_memory(body)
        if memory is not None:
            memory.wake.set()

    def lease_changed(type: str, body: Mapping[str, Any]) -> None:
        """One watch event of the operator's Leases (leasewatch.py): wake the HACluster it is
        for when it is news."""
        meta = body.get("metadata") or {}
        name = str(meta.get("name", ""))
        key = f"{meta.get('namespace', '')}/{name}"
        memory = owner_memory(body)
        watched = memory is not None and name in memory.renewal_is_news
        news, mark = lease_news(lease_marks.get(key), body, type, watched)
        if type == "DELETED":
            lease_marks.pop(key, None)
        else:
            lease_marks[key] = mark
        if news and memory is not None:
            memory.wake.set()

    async def wake(body: kopf.Body, **_: Any) -> None:
        wake_owner(body)

    for group, plural in (
        ("apps", "daemonsets"),
        ("", "serviceaccounts"),
        ("rbac.authorization.k8s.io", "roles"),
        ("rbac.authorization.k8s.io", "rolebindings"),
    ):
        kopf.on.event(group, "v1", plural, registry=registry, labels=mine, id=f"wake_{plural}")(wake)

    def wake_readers(path: str) -> None:
        for memory in ctx.memories.values():
            if path in memory.reads:
                memory.wake.set()

    @kopf.on.event("", "v1", "secrets", registry=registry, id="wake_secrets")
    async def secret_changed(body: kopf.Body, namespace: str | None, name: str, **_: Any) -> None:
        """Ours (the config Secret): its HACluster; a user's (an auth key): the ones it keys."""
        wake_owner(body)
        wake_readers(secret_path(namespace or "", name))

    @kopf.on.event("", "v1", "configmaps", registry=registry, id="wake_configmaps")
    async def configmap_changed(namespace: str | None, name: str, **_: Any) -> None:
        wake_readers(configmap_path(namespace or "", name))

    def everyone(kwargs: Mapping[str, Any]) -> Callable[[], list[Footprint]]:
        """The index kopf passes to every handler (as the keyword `footprints`), read when asked:
        a tick that writes nothing (most of them) never walks it."""
        index: kopf.Index[str, Footprint] = kwargs["footprints"]
        return lambda: [f for key in index for f in index[key]]

    @kopf.on.resume(GROUP, VERSION, PLURAL, registry=registry)
    @kopf.on.create(GROUP, VERSION, PLURAL, registry=registry)
    @kopf.on.update(GROUP, VERSION, PLURAL, field="spec", registry=registry)
    async def ensure(body: kopf.Body, **kwargs: Any) -> None:
        """A new or changed spec: the pair's daemon looks now (a switchover reaches the Lease at
        once). Its look renders the agents' objects, as their inputs changed: one render per
        change, the Lease first."""
        if not body.get("metadata", {}).get("deletionTimestamp"):
            ctx.memory(body).wake.set()

    @kopf.daemon(GROUP, VERSION, PLURAL, registry=registry, cancellation_timeout=5.0)
    async def pair(body: kopf.Body, stopped: Any, **kwargs: Any) -> None:
        use_cache(kwargs)
        namespace, name = _where(body)
        memory = ctx.memory(body)
        failures = 0
        while not stopped and not ctx.stopping.is_set():
            hacluster = _plain(body)
            memory.wake.clear()
            if hacluster["metadata"].get("deletionTimestamp"):  # the delete handler ticks now
                await _until(memory.wake, stopped, ctx.settings.interval, ctx.stopping)
                continue
            wait = ctx.settings.interval
            try:
                decision = await tick(ctx, hacluster, others=everyone(kwargs))
                failures = 0
                if decision is None:  # a lost compare-and-swap: its watch event wakes us, or this
                    wait = min(wait, RETRY_S)
                elif decision.recheck_s is not None:
                    wait = min(wait, decision.recheck_s)
            except Exception as e:  # a tick must never end the daemon; the next one tries again
                failures += 1
                wait = min(wait, RETRY_S * min(failures, 10))
                if failures in (1, 10) or failures % 100 == 0:
                    log.warning("[%s/%s] tick failed (%d in a row): %s", namespace, name, failures, _brief(e))
            await _until(memory.wake, stopped, wait, ctx.stopping)

    @kopf.on.delete(GROUP, VERSION, PLURAL, registry=registry)
    async def release(body: kopf.Body, runtime: Any, **_: Any) -> None:
        """Ask the agents to release (the release annotation), wait until nobody holds the Lease
        (at most release_timeout, counted from the first attempt: kopf keeps that across
        restarts), then delete the DaemonSet and the Secret and let kopf drop the finalizer."""
        hacluster = _plain(body)
        namespace, name = _where(hacluster)
        deadline = ctx.clock() + max(0.0, ctx.settings.release_timeout - runtime.total_seconds())
        holder: str | None = "the holder"
        memory = ctx.memory(hacluster)
        while True:
            memory.wake.clear()
            try:
                decision = await tick(ctx, hacluster, deleting=True)
            except Exception as e:
                log.warning("[%s/%s] release tick failed: %s", namespace, name, _brief(e))
                decision = None
            if decision is not None:
                if decision.released:
                    break
                holder = decision.holder
            if ctx.clock() >= deadline:
                message = (
                    f"{holder} did not release within {ctx.settings.release_timeout:g}s; "
                    "deleting the agents anyway"
                )
                kopf.event(_event_body(hacluster), type="Warning", reason="ReleaseTimedOut", message=message)
                log.warning("[%s/%s] %s", namespace, name, message)
                break
            # the next look: when a Lease changes (the holder released), or the deadline
            wait = min(ctx.settings.interval, max(RECHECK_MIN_S, deadline - ctx.clock()))
            if decision is None:
                wait = min(wait, RETRY_S)
            elif decision.recheck_s is not None:
                wait = min(wait, decision.recheck_s)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(memory.wake.wait(), wait)
        await delete_agents(ctx, hacluster)
        ctx.memories.pop(hacluster["metadata"]["uid"], None)
        log.info("[%s/%s] released; letting the HACluster go", namespace, name)

    return registry


def _brief(e: BaseException) -> str:
    return f"{type(e).__name__}: {e}" if str(e) else type(e).__name__
