"""`hacluster-operator` (or `python -m hacluster_operator`): win the leader election, then run kopf.

    hacluster-operator [--namespace NS ...] [--kubeconfig FILE] [--no-leader-election]

Environment: HACLUSTER_AGENT_IMAGE (required: the agents' image; they run as the ServiceAccount
`<cluster>-agent` the operator creates per HACluster), HACLUSTER_AGENT_IMAGE_PULL_POLICY,
HACLUSTER_OPERATOR_NAMESPACE (where the leader Lease lives; else POD_NAMESPACE, else the pod's
service account namespace, else default), POD_NAME (the leader identity: stable across container
restarts, so a restarted leader takes its Lease back at once; else host name plus a random suffix).

Exit codes: 0 stopped by a signal; 1 leadership lost or kopf failed (restart and campaign again);
2 bad settings; 3 the HACluster CRD is not served (install crds/ first).
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
import socket
import sys
import time
import uuid
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import kopf
import urllib3
from kopf._core.engines.peering import Identity as KopfIdentity  # a NewType of str, not exported

from hacluster_api.models import GROUP, PLURAL, VERSION

from .handlers import Context, Settings, build_registry, configure_kopf
from .kube import ApiError, FreshLeases, Kube, api_client_from_environment
from .leader import ElectionConfig, LeaderElector
from .metrics import METRICS

log = logging.getLogger("hacluster.operator")
SA_NAMESPACE_FILE = Path("/var/run/secrets/kubernetes.io/serviceaccount/namespace")


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="hacluster-operator", description=__doc__.split("\n\n")[0])
    p.add_argument(
        "-n",
        "--namespace",
        action="append",
        default=[],
        help="serve HACluster objects in this namespace (repeatable); default: every namespace",
    )
    p.add_argument("--kubeconfig", help="default: in-cluster credentials, else $KUBECONFIG or ~/.kube/config")
    p.add_argument(
        "--interval",
        type=float,
        default=Settings.interval,
        help="longest time (s) between two looks at one HACluster; it is looked at at once when its spec, "
        "Leases or objects change, and when a report may have gone stale",
    )
    p.add_argument(
        "--config-every",
        type=float,
        default=Settings.config_every,
        help="longest time (s) between two renderings of its agents' objects (at once when their inputs change)",
    )
    p.add_argument(
        "--release-timeout", type=float, default=30.0, help="on deletion, wait this long for a release"
    )
    p.add_argument("--leader-election", action=argparse.BooleanOptionalAction, default=True)
    p.add_argument("--leader-namespace", help="where the hacluster-operator Lease lives")
    p.add_argument("--identity", help="this replica's name in the leader Lease (default: $POD_NAME)")
    p.add_argument("--lease-duration", type=float, default=15.0)
    p.add_argument("--renew-deadline", type=float, default=10.0)
    p.add_argument("--retry-period", type=float, default=2.0)
    p.add_argument("--metrics-port", type=int, default=0, help="serve Prometheus metrics here (0: off)")
    p.add_argument("--log-level", default="INFO", choices=("DEBUG", "INFO", "WARNING", "ERROR"))
    return p.parse_args(argv)


def leader_namespace(args: argparse.Namespace) -> str:
    if args.leader_namespace:
        return str(args.leader_namespace)
    for var in ("HACLUSTER_OPERATOR_NAMESPACE", "POD_NAMESPACE"):
        if os.environ.get(var):
            return os.environ[var]
    try:
        return SA_NAMESPACE_FILE.read_text().strip() or "default"
    except OSError:
        return "default"


def identity(args: argparse.Namespace) -> str:
    return str(
        args.identity or os.environ.get("POD_NAME") or f"{socket.gethostname()}-{uuid.uuid4().hex[:6]}"
    )


STARTUP_RETRY_S = 1.0
"""How often an API server that cannot answer is asked again at start: every second, no backoff.
One request a second is nothing to a server coming back, and an operator asleep for 4-8 s of
backoff when it returns leaves a deleted Lease missing that long (the campaign, seed 76: two
compound trials recovered 4.7 and 5.8 s after an API server restart, the operator asleep)."""
CRD_GRACE_S = 30.0
"""How long a CRD the API server does not serve is waited for before the operator gives up (exit 3,
saying to apply it)."""


async def crd_served(kube: Kube, stop: asyncio.Event) -> bool | None:
    """Whether the API server serves the HACluster CRD. While the server cannot be reached or
    is not ready (connection refused, a timeout, 429/5xx: a restart, an upgrade), it waits and
    asks again, saying so, rather than crashing into a restart loop. A CRD not served, and a
    refusal (401/403), are asked again for CRD_GRACE_S: an API server that just started serves its
    built-in APIs a moment before the CRDs, and refuses everyone until its authorizer has read
    the RBAC objects (both seen in the fault campaign: the operator exited 3 after API server
    restarts, seeds 74 and 77). None: stopped meanwhile."""
    delay = STARTUP_RETRY_S
    not_yet_since: float | None = None
    while True:
        refusal: ApiError | None = None
        not_yet = False  # up, but not serving us yet: not the CRD, or not our authorization
        try:
            found = await kube.get(f"/apis/{GROUP}/{VERSION}")
            if found is not None and any(r.get("name") == PLURAL for r in found.get("resources", [])):
                return True
            not_yet, why = True, f"the {PLURAL}.{GROUP} CRD is not served (yet)"
        except ApiError as e:
            if e.status in (401, 403):
                not_yet, refusal, why = True, e, str(e)
            elif e.status != 429 and e.status < 500:
                log.error("cannot read the API discovery for %s/%s: %s", GROUP, VERSION, e)
                return False
            else:
                why = str(e)
        except (OSError, TimeoutError, urllib3.exceptions.HTTPError) as e:
            why = f"{type(e).__name__}: {e}"
        if not_yet:  # for CRD_GRACE_S at most
            now = time.monotonic()
            not_yet_since = now if not_yet_since is None else not_yet_since
            if now - not_yet_since >= CRD_GRACE_S:
                if refusal is not None:
                    log.error("cannot read the API discovery for %s/%s: %s", GROUP, VERSION, refusal)
                return False
        else:
            not_yet_since = None
        log.warning("the API server cannot answer yet (%s); asking again in %.0f s", why, delay)
        try:
            await asyncio.wait_for(stop.wait(), delay)
            return None
        except TimeoutError:
            pass


async def run(args: argparse.Namespace, settings: Settings) -> int:
    api = api_client_from_environment(args.kubeconfig)
    closers: list[Callable[[], None]] = [api.close]
    kube = Kube(api)
    me = identity(args)
    if args.metrics_port:
        METRICS.serve(args.metrics_port)
    try:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        served = await crd_served(kube, stop)
        if served is None:
            return 0
        if not served:
            log.error(
                "the %s.%s CRD is not served: apply crds/hacluster.dev_haclusters.yaml first", PLURAL, GROUP
            )
            return 3

        elector: LeaderElector | None = None
        if args.leader_election:
            # Its own connection and thread: a renewal never waits behind the handlers' requests
            # (1,000 HAClusters being created kept the shared threads busy past renew_deadline).
            leader_api = api_client_from_environment(args.kubeconfig)
            closers.append(leader_api.close)
            # A few threads: a call stuck on a dead connection (urllib3 retries it) does not hold
            # up the next renewal.
            threads = ThreadPoolExecutor(4, thread_name_prefix="leader")
            closers.append(lambda: threads.shutdown(wait=False, cancel_futures=True))
            leader_kube = Kube(leader_api, executor=threads, role="leader")
            elector = LeaderElector(
                FreshLeases(leader_kube),
                ElectionConfig(
                    namespace=leader_namespace(args),
                    identity=me,
                    lease_duration=args.lease_duration,
                    renew_deadline=args.renew_deadline,
                    retry_period=args.retry_period,
                ),
            )
            if not await elector.acquire(stop):
                return 0
        METRICS.leader.set(1)

        kopf_stop = asyncio.Event()
        kopf_ready = asyncio.Event()
        lost = False

        async def keep_leading() -> None:
            nonlocal lost

            async def take_signals_back() -> None:
                # kopf installs its own SIGINT/SIGTERM handlers when it starts; once it is ready,
                # ours come back, so that every stop goes through kopf_stop and an exit of kopf
                # without it is known to be a crash.
                await kopf_ready.wait()
                await asyncio.sleep(0)
                for sig in (signal.SIGINT, signal.SIGTERM):
                    loop.add_signal_handler(sig, stop.set)

            signals = asyncio.create_task(take_signals_back())
            try:
                if elector is None:
                    await stop.wait()
                else:
                    lost = not await elector.hold(stop)
            finally:
                signals.cancel()
                ctx.stopping.set()
                kopf_stop.set()

        ctx = Context(kube=kube, settings=settings, identity=me, namespaces=tuple(args.namespace or ()))
        # Created before kopf starts: kopf.operator() leaves tasks that predate it alone.
        keeper = asyncio.create_task(keep_leading(), name="leader election")
        kopf_settings = kopf.OperatorSettings()
        configure_kopf(kopf_settings, me)
        log.info("acting as %r on %s", me, ", ".join(args.namespace) if args.namespace else "every namespace")
        crashed = False
        try:
            await kopf.operator(
                registry=build_registry(ctx),
                settings=kopf_settings,
                # Ours, not kopf's guess: it asks getpass for the user name, which raises in a
                # container running as a UID without a passwd entry (the image's 65532): the
                # operator crashed at its first lead on a real node (issue 13's VM cluster).
                identity=KopfIdentity(me),
                standalone=True,
                clusterwide=not args.namespace,
                namespaces=args.namespace,
                stop_flag=kopf_stop,
                ready_flag=kopf_ready,
            )
            crashed = not kopf_stop.is_set()
        finally:
            stop.set()
            await keeper
            if elector is not None and not lost:
                await elector.release()  # a standby takes over at once
        if lost:
            log.error("exiting: leadership lost; another replica may lead now")
        elif crashed:
            log.error("exiting: kopf stopped on its own (see the errors above)")
        return 1 if lost or crashed else 0
    finally:
        for close in closers:
            close()


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if args.kubeconfig:
        os.environ["KUBECONFIG"] = args.kubeconfig  # kopf logs in on its own, through the same file
    logging.basicConfig(
        level=getattr(logging, args.log_level),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    try:
        settings = Settings.from_env(
            os.environ,
            interval=args.interval,
            config_every=args.config_every,
            release_timeout=args.release_timeout,
        )
        ElectionConfig(
            "x",
            "x",
            lease_duration=args.lease_duration,
            renew_deadline=args.renew_deadline,
            retry_period=args.retry_period,
        )
    except ValueError as e:
        log.error("%s", e)
        return 2
    return asyncio.run(run(args, settings))


if __name__ == "__main__":
    raise SystemExit(main())
