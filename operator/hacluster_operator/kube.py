"""The operator's one Kubernetes client layer (kopf's `_cogs/clients` is the model): credentials,
the async client, its errors and the objects' paths. Everything the operator, its leader election
and `kubectl ha` send to the API server goes through here.

`Kube` is a small async client over the official client's ApiClient: raw JSON, explicit paths, a
timeout on every call, compare-and-swap by resourceVersion. Errors never carry a body that could
hold key material."""

from __future__ import annotations

import asyncio
import concurrent.futures
import copy
import json
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from kubernetes import client as k8s

from hacluster_api.models import GROUP, PLURAL, VERSION

from . import leader
from .metrics import METRICS, resource_of

MERGE_PATCH = "application/merge-patch+json"
JSON_PATCH = "application/json-patch+json"


class ApiError(Exception):
    """An API call failed. The message is the server's, unless the object is a Secret (then only
    the status and reason, as a Secret's error could echo what was sent)."""

    def __init__(self, status: int, reason: str, message: str = "") -> None:
        super().__init__(f"HTTP {status} {reason}" + (f": {message}" if message else ""))
        self.status, self.reason = status, reason


class NotFound(ApiError):
    pass


class Conflict(ApiError, leader.Conflict):
    pass


class Kube:
    """Async calls to the API server: the official client's connection and credentials, raw JSON,
    run in threads with a timeout each."""

    def __init__(
        self,
        api: k8s.ApiClient,
        *,
        timeout: float = 10.0,
        cache: Cache | None = None,
        executor: concurrent.futures.ThreadPoolExecutor | None = None,
        role: str = "handlers",
    ) -> None:
        """`executor`: the threads its calls run in (default: the loop's, shared with everything
        else that blocks); the leader election has its own, so that its renewals never queue
        behind the handlers' requests. `role`: its requests' label in the metrics."""
        self.api, self.timeout, self.cache, self.executor = api, timeout, cache, executor
        self.role = role

    async def request(
        self,
        method: str,
        path: str,
        body: Any = None,
        *,
        content_type: str | None = None,
        sensitive: bool = False,
    ) -> dict[str, Any]:
        headers = {"Accept": "application/json"}
        if body is not None:
            headers["Content-Type"] = content_type or "application/json"
        params = self.api.param_serialize(
            method=method, resource_path=path, header_params=headers, body=body, auth_settings=["BearerToken"]
        )

        def call() -> tuple[int, bytes]:
            response = self.api.call_api(*params, _request_timeout=self.timeout)
            response.read()  # type: ignore[no-untyped-call]
            return int(response.status), bytes(response.data or b"")

        running = asyncio.get_running_loop().run_in_executor(self.executor, call)
        try:
            status, data = await asyncio.wait_for(running, self.timeout + 1.0)
        except BaseException:
            METRICS.requests.labels(self.role, method, resource_of(path), "none").inc()
            raise
        METRICS.requests.labels(self.role, method, resource_of(path), str(status)).inc()
        if 200 <= status < 300:
            return json.loads(data) if data else {}
        try:
            detail = json.loads(data)
        except ValueError:
            detail = {}
        reason = str(detail.get("reason") or "Error")
        message = "" if sensitive else str(detail.get("message") or "")
        kind = NotFound if status == 404 else Conflict if status == 409 else ApiError
        raise kind(status, reason, message)

    async def get(self, path: str, *, sensitive: bool = False, fresh: bool = False) -> dict[str, Any] | None:
        """The object at `path`, None if there is none. From the watch cache when it holds the
        kind (a watch, not a request); `fresh`: from the server (after a write the cache has not
        seen yet lost a compare-and-swap)."""
        if self.cache is not None and not fresh:
            held, obj = self.cache.lookup(path)
            if held:
                return obj
        try:
            got = await self.request("GET", path, sensitive=sensitive)
        except NotFound:
            return None
        if self.cache is not None:
            self.cache.keep(path, got)
        return got

    async def delete(self, path: str) -> bool:
        try:
            await self.request("DELETE", path, {"propagationPolicy": "Background"})
            return True
        except NotFound:
            return False

    # Leases (also what leader.LeaderElector calls)

    async def get_lease(self, namespace: str, name: str, *, fresh: bool = False) -> dict[str, Any] | None:
        return await self.get(lease_path(namespace, name), fresh=fresh)

    async def create_lease(self, namespace: str, body: Mapping[str, Any]) -> dict[str, Any]:
        return await self.request("POST", lease_path(namespace), dict(body))

    async def patch_lease(self, namespace: str, name: str, patch: Mapping[str, Any]) -> dict[str, Any]:
        """A merge-patch; with metadata.resourceVersion it is a compare-and-swap (Conflict)."""
        return await self.request("PATCH", lease_path(namespace, name), dict(patch), content_type=MERGE_PATCH)


class FreshLeases:
    """The leader election's view of `Kube`: its Lease read from the server every time, never from
    the watch cache (which holds the HAClusters' Leases only, by label: the election's own Lease
    would look missing, and leadership lost)."""

    def __init__(self, kube: Kube) -> None:
        self.kube = kube

    async def get_lease(self, namespace: str, name: str) -> dict[str, Any] | None:
        return await self.kube.get_lease(namespace, name, fresh=True)

    async def create_lease(self, namespace: str, body: Mapping[str, Any]) -> dict[str, Any]:
        return await self.kube.create_lease(namespace, body)

    async def patch_lease(self, namespace: str, name: str, patch: Mapping[str, Any]) -> dict[str, Any]:
        return await self.kube.patch_lease(namespace, name, patch)


class Cache:
    """What the operator's watches hold, by API path: an informer-style cache (CloudNativePG's and
    kube-vip's controllers read theirs, never the server, for the objects they watch). kopf keeps
    each kind's index from its watch and starts the handlers only once every index has been
    listed, so an object of a watched kind that is not here does not exist (as of the last event).

    `objects`: kinds held whole (the operator's own: its Leases, DaemonSets, RBAC). `versions`:
    kinds held as resourceVersions only (every Secret and ConfigMap of the namespaces served, most
    of them not ours): such an object is fetched once per version it has, and only the ones the
    operator reads are kept (`Kube.get`). Writes still go to the server; a compare-and-swap lost
    to a write the watch has not brought yet is read again fresh (`Kube.get(fresh=True)`)."""

    def __init__(
        self,
        objects: Mapping[str, Mapping[str, Any]],
        versions: Mapping[str, Mapping[str, Any]],
        ready: Callable[[str], bool] = lambda kind: True,
    ) -> None:
        """`ready(kind)`: whether that kind's watch has listed everything yet (kopf's indices
        have before any handler runs; leasewatch.LeaseWatch says so itself): until then the
        cache does not answer for it."""
        self.objects, self.versions = objects, versions  # plural -> kopf.Index: path -> [value]
        self.ready = ready
        self.fetched: dict[str, tuple[str, dict[str, Any]]] = {}  # path -> (version, object)

    def _kind(self, path: str) -> str:
        parts = path.split("/")
        kind = parts[-2] if len(parts) >= 4 and parts[-4] == "namespaces" else ""
        return kind if self.ready(kind) else ""

    def lookup(self, path: str) -> tuple[bool, dict[str, Any] | None]:
        """(whether the cache answers for this path, a copy of the object or None). A versioned
        kind answers only when the version it holds is the one last fetched."""
        kind = self._kind(path)
        if kind in self.objects:
            store = self.objects[kind].get(path)
            return True, copy.deepcopy(next(iter(store))) if store else None
        if kind in self.versions:
            store = self.versions[kind].get(path)
            if not store:
                self.fetched.pop(path, None)
                return True, None
            version, fetched = next(iter(store)), self.fetched.get(path)
            if fetched is not None and fetched[0] == version:
                return True, copy.deepcopy(fetched[1])
        return False, None

    def version(self, path: str, mark: Callable[[Mapping[str, Any]], str] | None = None) -> str:
        """What the watch holds for `path`, in one word: its resourceVersion, or `mark(object)`
        for a kind held whole (the part of it that matters to the caller: a Lease's renewals or
        a DaemonSet's status change its version, not what the operator made of it). "" when
        there is no such object; "?" when its kind is not watched."""
        kind = self._kind(path)
        if kind in self.objects:
            store = self.objects[kind].get(path)
            if not store:
                return ""
            obj = next(iter(store))
            return mark(obj) if mark is not None else str(obj["metadata"].get("resourceVersion", ""))
        if kind in self.versions:
            store = self.versions[kind].get(path)
            return str(next(iter(store))) if store else ""
        return "?"

    def keep(self, path: str, obj: Mapping[str, Any]) -> None:
        """A versioned kind's object just read from the server."""
        if self._kind(path) in self.versions:
            version = str((obj.get("metadata") or {}).get("resourceVersion") or "")
            self.fetched[path] = (version, copy.deepcopy(dict(obj)))


def without_managed_fields(obj: Mapping[str, Any]) -> dict[str, Any]:
    """What the cache keeps of a watched object: all of it but the server's field-ownership
    record (never read here, and most of its bytes). Not a copy of the rest: nothing changes a
    watch event's object, and a read from the cache copies what it hands out."""
    meta = {k: v for k, v in (obj.get("metadata") or {}).items() if k != "managedFields"}
    return {**obj, "metadata": meta}


@dataclass(frozen=True)
class Namespaced:
    """The path of a namespaced kind: its collection, or one object by name."""

    api: str
    plural: str

    def __call__(self, namespace: str, name: str | None = None) -> str:
        base = f"{self.api}/namespaces/{namespace}/{self.plural}"
        return f"{base}/{name}" if name else base


lease_path = Namespaced("/apis/coordination.k8s.io/v1", "leases")
secret_path = Namespaced("/api/v1", "secrets")
configmap_path = Namespaced("/api/v1", "configmaps")
daemonset_path = Namespaced("/apis/apps/v1", "daemonsets")
serviceaccount_path = Namespaced("/api/v1", "serviceaccounts")
role_path = Namespaced("/apis/rbac.authorization.k8s.io/v1", "roles")
rolebinding_path = Namespaced("/apis/rbac.authorization.k8s.io/v1", "rolebindings")


def status_path(namespace: str, name: str) -> str:
    return f"/apis/{GROUP}/{VERSION}/namespaces/{namespace}/{PLURAL}/{name}/status"


def api_client_from_environment(kubeconfig: str | None = None, context: str | None = None) -> k8s.ApiClient:
    """The one way the operator and `kubectl ha` load credentials: a kubeconfig when one (or a
    context) is named; else in-cluster credentials inside a pod; else the default kubeconfig
    ($KUBECONFIG or ~/.kube/config)."""
    from kubernetes import config

    configuration = k8s.Configuration()
    if kubeconfig is None and context is None and os.environ.get("KUBERNETES_SERVICE_HOST"):
        config.load_incluster_config(client_configuration=configuration)  # type: ignore[no-untyped-call]
    else:
        config.load_kube_config(config_file=kubeconfig, context=context, client_configuration=configuration)  # type: ignore[no-untyped-call]
    configuration.connection_pool_maxsize = 32  # calls run in threads, several per HACluster tick
    return k8s.ApiClient(configuration)
