"""The operator's Leases, listed and watched outside kopf: an informer of one kind.

Every agent renews its report Lease every second, so the Leases are most of the watch events an
operator receives (two a second per HACluster). kopf spends about a millisecond on each (its
per-object worker, cause detection, handler invocation, logging): a fifth of a core at 100
HAClusters, two cores at 1,000 (bench/operator_scale.py --renew-every 1). Here an event costs a
JSON parse and a dict update: the stream is read in a thread and handed to the loop in batches,
where `on_event` decides whether it wakes anyone (handlers.lease_news).

`store` has the shape of a kopf index (path -> [object]), as kube.Cache reads it; `synced` is set
once every namespace has been listed: before that the cache does not answer for Leases and a read
goes to the server. On "410 Gone" (a resourceVersion compacted away) the namespace is listed again;
a stream that ends or fails is watched again from the last version (bookmarks keep it recent)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import threading
from collections.abc import Callable, Sequence
from typing import Any
from urllib.parse import quote

from kubernetes import client as k8s

from .kube import lease_path, without_managed_fields

log = logging.getLogger("hacluster.operator.leases")

WATCH_TIMEOUT_S = 300
"""The server ends a watch after this; it is started again from the last version."""
READ_TIMEOUT_S = 90
"""A stream silent this long is taken for dead (a half-open connection) and watched again: the
agents renew every second, and the server sends a bookmark about once a minute."""
RETRY_S = 1.0

Event = tuple[str, dict[str, Any]]


def _path(obj: dict[str, Any]) -> str:
    meta = obj.get("metadata") or {}
    return lease_path(str(meta.get("namespace", "")), str(meta.get("name", "")))


class LeaseWatch:
    def __init__(
        self,
        api: k8s.ApiClient,
        namespaces: Sequence[str],
        selector: str,
        on_event: Callable[[str, dict[str, Any]], None],
    ) -> None:
        """`namespaces`: those served (empty: every namespace). `selector`: a label selector."""
        self.api, self.selector, self.on_event = api, selector, on_event
        self.scopes = list(namespaces) or [""]
        self.store: dict[str, list[dict[str, Any]]] = {}
        self.synced = asyncio.Event()
        self._listed: set[str] = set()
        self._versions: dict[str, str] = {}
        """Per namespace, the version of the last event handed to the loop: a stream that breaks
        goes on from there (not from where it began: the server would replay minutes of
        renewals, old ones over new in the cache meanwhile)."""
        self._stop = threading.Event()
        self._loop: asyncio.AbstractEventLoop | None = None

    # -- in the loop -----------------------------------------------------------------------------

    async def run(self, stopping: asyncio.Event) -> None:
        """Watch until `stopping` is set (one thread per namespace served)."""
        self._loop = asyncio.get_running_loop()
        threads = [
            threading.Thread(target=self._follow, args=(scope,), daemon=True, name=f"leases {scope or '*'}")
            for scope in self.scopes
        ]
        for t in threads:
            t.start()
        try:
            await stopping.wait()
        finally:
            self._stop.set()

    def _listed_scope(self, scope: str, items: list[dict[str, Any]]) -> None:
        prefix = lease_path(scope) + "/" if scope else ""
        gone = [p for p in self.store if p.startswith(prefix)] if scope else list(self.store)
        fresh = {_path(o): o for o in items}
        for path in gone:
            if path not in fresh:
                old = self.store.pop(path)[0]
                self._tell("DELETED", old)
        for path, obj in fresh.items():
            self.store[path] = [without_managed_fields(obj)]
            self._tell("ADDED", obj)
        self._listed.add(scope)
        if self._listed >= set(self.scopes):
            self.synced.set()

    def _apply(self, batch: list[Event]) -> None:
        for kind, obj in batch:
            path = _path(obj)
            if kind == "DELETED":
                self.store.pop(path, None)
            else:
                self.store[path] = [without_managed_fields(obj)]
            self._tell(kind, obj)

    def _tell(self, kind: str, obj: dict[str, Any]) -> None:
        try:
            self.on_event(kind, obj)
        except Exception:  # one bad event must not keep the others out of the store
            log.exception("a Lease event (%s %s) could not be handled", kind, _path(obj))

    # -- in a thread -----------------------------------------------------------------------------

    def _url(self, scope: str, **params: str) -> str:
        base = (
            f"/apis/coordination.k8s.io/v1/namespaces/{scope}/leases"
            if scope
            else ("/apis/coordination.k8s.io/v1/leases")
        )
        query = "&".join(
            f"{k}={quote(v, safe='')}" for k, v in {"labelSelector": self.selector, **params}.items()
        )
        return f"{base}?{query}"

    def _get(self, path: str, *, timeout: float | tuple[float, float]) -> Any:
        params = self.api.param_serialize(
            method="GET", resource_path=path, header_params={"Accept": "application/json"},
            auth_settings=["BearerToken"],
        )  # fmt: skip
        return self.api.call_api(*params, _request_timeout=timeout)

    def _post(self, fn: Callable[..., None], *args: Any) -> None:
        if self._loop is not None:
            with contextlib.suppress(RuntimeError):  # the loop closed: the operator has stopped
                self._loop.call_soon_threadsafe(fn, *args)

    def _follow(self, scope: str) -> None:
        while not self._stop.is_set():
            try:
                if not self._versions.get(scope):
                    resp = self._get(self._url(scope), timeout=60)
                    listed = json.loads(resp.read())
                    if int(resp.status) != 200:
                        raise RuntimeError(f"list: HTTP {resp.status}: {listed.get('message', '')}")
                    self._post(self._listed_scope, scope, list(listed.get("items") or []))
                    self._versions[scope] = str(listed["metadata"]["resourceVersion"])
                self._watch(scope)
            except Exception as e:  # the API server away, a connection cut: again shortly
                log.warning(
                    "watching Leases%s: %s; again in %.0f s", f" in {scope}" if scope else "", e, RETRY_S
                )
                self._stop.wait(RETRY_S)

    def _watch(self, scope: str) -> None:
        """Follow one watch from the scope's last version (cleared when it must be listed again)."""
        path = self._url(
            scope, watch="1", resourceVersion=self._versions[scope], allowWatchBookmarks="true",
            timeoutSeconds=str(WATCH_TIMEOUT_S),
        )  # fmt: skip
        resp = self._get(path, timeout=(10, READ_TIMEOUT_S))
        try:
            if int(resp.status) == 410:
                self._versions[scope] = ""
                return
            if int(resp.status) != 200:
                raise RuntimeError(f"watch: HTTP {resp.status}")
            buffer = b""
            # Each chunk the server sends, handed to the loop in one call (a burst of events
            # arrives in few chunks); the version moves on with what was handed over.
            for chunk in resp.response.stream(amt=None, decode_content=False):
                if self._stop.is_set():
                    break
                *lines, buffer = (buffer + chunk).split(b"\n")
                batch: list[Event] = []
                version = self._versions[scope]
                try:
                    for line in lines:
                        if not line.strip():
                            continue
                        event = json.loads(line)
                        kind, obj = str(event.get("type", "")), event.get("object") or {}
                        if kind == "ERROR":
                            if obj.get("code") == 410:
                                version = ""  # compacted away: list again
                                return
                            raise RuntimeError(f"watch error: {obj.get('message', obj)}")
                        version = str((obj.get("metadata") or {}).get("resourceVersion") or version)
                        if kind != "BOOKMARK":
                            batch.append((kind, obj))
                finally:
                    self._post_batch(batch)
                    self._versions[scope] = version
        finally:
            resp.response.close()

    def _post_batch(self, batch: list[Event]) -> None:
        if batch:
            self._post(self._apply, batch)
