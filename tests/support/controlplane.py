"""A real kube-apiserver (with etcd embedded in the same process) for tests.

The binary is built from ``tests/controlplane`` by ``tests/controlplane/build.sh``
and cached outside git; :func:`find_or_build_apiserver` runs that script.

:class:`ControlPlane` starts one API server the way a test control plane needs
it:

* throwaway certificates made at start with ``cryptography``: a serving CA and
  serving certificate (IP SANs: the bind address and 127.0.0.1), a client CA
  and an admin client certificate (CN ``admin``, O ``system:masters``), an
  admin kubeconfig with everything embedded;
* a service-account signing key pair and issuer, so TokenRequest works
  (:meth:`ControlPlane.service_account_kubeconfig` makes a kubeconfig that acts
  as exactly one ServiceAccount, with only the RBAC granted to it);
* ``--authorization-mode=RBAC``, ``--disable-admission-plugins=ServiceAccount``
  (no kube-controller-manager, hence no default ServiceAccount),
  ``--service-cluster-ip-range=10.0.0.0/24`` (a required flag, nothing is
  routed there);
* a free port on ``bind_address`` (default ``127.0.0.1``). For agents in network
  namespaces pass an address that already exists on a host bridge, e.g.
  ``ControlPlane(binary, bind_address="192.0.2.1")`` after
  ``ip addr add 192.0.2.1/24 dev br0``; the serving certificate and the
  kubeconfigs then name that address. etcd always stays on 127.0.0.1.

:meth:`ControlPlane.start` returns once ``/readyz`` answers ``ok``;
:meth:`ControlPlane.stop` ends the process it started (by PID: SIGTERM, then
SIGKILL) and removes its temp dir, even when start failed.
"""

from __future__ import annotations

import ctypes
import datetime as dt
import ipaddress
import os
import shutil
import signal
import socket
import ssl
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from base64 import b64encode
from collections.abc import Callable, Sequence
from pathlib import Path
from types import TracebackType
from typing import IO, TYPE_CHECKING

import yaml
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from tests.support.kubetools import cache_dir

if TYPE_CHECKING:
    from kubernetes.client import ApiClient

REPO_ROOT = Path(__file__).resolve().parents[2]
BUILD_SCRIPT = REPO_ROOT / "tests" / "controlplane" / "build.sh"
SERVICE_CLUSTER_IP_RANGE = "10.0.0.0/24"
TOKEN_SECONDS = 24 * 3600
"""How long the ServiceAccount tokens of the tests' kubeconfigs last: longer than any run. They are
static (a kubeconfig, not a kubelet's projected file that is refreshed): with an hour, the fault
campaign's agents and operator were refused (401) 61 minutes in, trial 380 of 500 (seed 78)."""
ADMIN_USER = "admin"
ADMIN_GROUP = "system:masters"

# Strings in `go build` output that mean "could not fetch modules", not "bad code".
_NETWORK_FAILURE_MARKERS = (
    "dial tcp",
    "i/o timeout",
    "no such host",
    "connection refused",
    "network is unreachable",
    "TLS handshake timeout",
    "GOPROXY=off",
    "proxyconnect",
    "server misbehaving",
    "missing go.sum entry",
)


# --------------------------------------------------------------------------- build


class ApiServerUnavailable(RuntimeError):
    """The binary cannot be built here for lack of tools: no Go, no module proxy.

    Tests should skip (loudly) on this, unlike on :class:`ApiServerBuildError`.
    """


class ApiServerBuildError(RuntimeError):
    """build.sh failed for a reason other than a missing toolchain or network."""


def find_or_build_apiserver(
    *, cache: Path | None = None, timeout: float = 3 * 3600, log: Path | None = None
) -> Path:
    """Run tests/controlplane/build.sh (a no-op when cached); return the binary path."""
    env = dict(os.environ)
    env["HACLUSTER_CACHE"] = str(cache or cache_dir())
    try:
        proc = subprocess.run(
            ["bash", str(BUILD_SCRIPT)],
            env=env,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
    except subprocess.TimeoutExpired as exc:
        raise ApiServerBuildError(f"build.sh did not finish in {timeout:.0f} s") from exc
    if log is not None:
        log.write_text(proc.stderr)
    if proc.returncode == 3:
        raise ApiServerUnavailable(f"no Go toolchain: {proc.stderr.strip()}")
    if proc.returncode != 0:
        tail = "\n".join(proc.stderr.strip().splitlines()[-40:])
        if any(m in proc.stderr for m in _NETWORK_FAILURE_MARKERS):
            raise ApiServerUnavailable(
                f"build.sh could not fetch Go modules (module proxy unreachable?):\n{tail}"
            )
        raise ApiServerBuildError(f"build.sh failed ({proc.returncode}):\n{tail}")
    path = Path(proc.stdout.strip().splitlines()[-1])
    if not os.access(path, os.X_OK):
        raise ApiServerBuildError(f"build.sh printed {path}, which is not an executable")
    return path


# --------------------------------------------------------------------------- certificates


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def _new_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def _cert_pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


def _make_ca(common_name: str) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
    key = _new_key()
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    now = _now()
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=7))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    return key, cert


def _make_leaf(
    ca_key: ec.EllipticCurvePrivateKey,
    ca_cert: x509.Certificate,
    *,
    common_name: str,
    organizations: Sequence[str] = (),
    server_sans: Sequence[x509.GeneralName] = (),
) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
    key = _new_key()
    attrs = [x509.NameAttribute(NameOID.ORGANIZATION_NAME, o) for o in organizations]
    attrs.append(x509.NameAttribute(NameOID.COMMON_NAME, common_name))
    now = _now()
    usage = ExtendedKeyUsageOID.SERVER_AUTH if server_sans else ExtendedKeyUsageOID.CLIENT_AUTH
    builder = (
        x509.CertificateBuilder()
        .subject_name(x509.Name(attrs))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=7))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=False,
                crl_sign=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
            critical=False,
        )
    )
    if server_sans:
        builder = builder.add_extension(x509.SubjectAlternativeName(server_sans), critical=False)
    return key, builder.sign(ca_key, hashes.SHA256())


# --------------------------------------------------------------------------- control plane


def free_port(host: str) -> int:
    """A TCP port that was free on host a moment ago."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def _url_host(host: str) -> str:
    return f"[{host}]" if ":" in host else host


def _set_parent_death_signal() -> None:  # pragma: no cover - runs in the child
    """If the test runner dies without stop(), take the API server with it."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        pr_set_pdeathsig = 1
        libc.prctl(pr_set_pdeathsig, int(signal.SIGTERM), 0, 0, 0)
    except (OSError, AttributeError):
        pass


def _ignore_conflict(create: Callable[[], object]) -> None:
    """Run a create call; an AlreadyExists (409) answer is fine."""
    from kubernetes.client import ApiException

    try:
        create()
    except ApiException as exc:
        if exc.status != 409:
            raise


class ControlPlaneError(RuntimeError):
    """The API server did not start or answer."""


class _PortTaken(Exception):
    """The port picked as free was bound by someone else before the server."""


class ControlPlane:
    """One kube-apiserver + embedded etcd process with throwaway PKI.

    Use as a context manager, or call :meth:`start` and (always) :meth:`stop`.

    ``bind_address`` must already exist on a host interface. With
    ``die_with_parent`` (default) the process gets SIGTERM when the thread that
    started it ends (Linux PR_SET_PDEATHSIG), so a killed test runner leaves
    no API server behind; start it from a long-lived thread, or pass False.
    """

    def __init__(
        self,
        binary: Path,
        *,
        bind_address: str = "127.0.0.1",
        port: int | None = None,
        extra_args: Sequence[str] = (),
        start_timeout: float = 120.0,
        stop_timeout: float = 20.0,
        log_path: Path | None = None,
        die_with_parent: bool = True,
        service_cidr: str = SERVICE_CLUSTER_IP_RANGE,
        authorization: str = "RBAC",
        endpoint_reconciler: str = "none",
        service_account_admission: bool = False,
        kubelet_client: bool = False,
    ) -> None:
        self.binary = Path(binary)
        self.bind_address = bind_address
        unspecified = ipaddress.ip_address(bind_address).is_unspecified
        # The address clients dial, that the serving certificate and kubeconfigs name.
        self.host = "127.0.0.1" if unspecified else bind_address
        self._requested_port = port
        self.extra_args = list(extra_args)
        self.start_timeout = start_timeout
        self.stop_timeout = stop_timeout
        self._log_path = log_path
        self.die_with_parent = die_with_parent
        # A cluster with kubelets (tests/support/vmcluster.py) needs "Node,RBAC", a Service range
        # its nodes route, and the "kubernetes" Service's endpoint (reconciler "lease"); the
        # bare API server of the other tests has no nodes to reach it ("none").
        self.service_cidr = service_cidr
        self.authorization = authorization
        self.endpoint_reconciler = endpoint_reconciler
        # Off by default (no pod here needs a token mounted); a real cluster's pods do.
        self.service_account_admission = service_account_admission
        # With kubelets: the API server authenticates to them (logs, exec) with the admin cert.
        self.kubelet_client = kubelet_client
        self._client_ca: tuple[ec.EllipticCurvePrivateKey, x509.Certificate] | None = None
        self.port = 0
        self.workdir: Path | None = None
        self.process: subprocess.Popen[bytes] | None = None
        self.startup_seconds: float | None = None
        self._log_file: IO[bytes] | None = None

    # ----------------------------------------------------------- paths and URLs

    def _dir(self) -> Path:
        if self.workdir is None:
            raise ControlPlaneError("control plane not started")
        return self.workdir

    @property
    def url(self) -> str:
        return f"https://{_url_host(self.host)}:{self.port}"

    @property
    def kubeconfig(self) -> Path:
        """The admin (system:masters) kubeconfig; certificates embedded."""
        return self._dir() / "admin.kubeconfig"

    @property
    def ca_cert(self) -> Path:
        """The CA that signed the serving certificate."""
        return self._dir() / "pki" / "server-ca.crt"

    @property
    def admin_cert(self) -> Path:
        return self._dir() / "pki" / "admin.crt"

    @property
    def admin_key(self) -> Path:
        return self._dir() / "pki" / "admin.key"

    @property
    def log_path(self) -> Path:
        return self._log_path or self._dir() / "kube-apiserver.log"

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process else None

    # ----------------------------------------------------------- lifecycle

    def __enter__(self) -> ControlPlane:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def start(self) -> None:
        """Write the PKI, start the process and wait for /readyz.

        If the free port was taken by someone else in the meantime, starts
        again on another one (up to three attempts).
        """
        if self.process is not None:
            raise ControlPlaneError("already started")
        t0 = time.monotonic()
        attempts = 1 if self._requested_port else 3
        for attempt in range(1, attempts + 1):
            try:
                self._start_once()
                break
            except _PortTaken:
                self.stop()
                if self._requested_port:
                    raise ControlPlaneError(
                        f"port {self._requested_port} on {self.bind_address} is in use"
                    ) from None
                if attempt == attempts:
                    raise ControlPlaneError(
                        f"no free port on {self.bind_address} after {attempts} attempts"
                    ) from None
            except BaseException:
                self.stop()
                raise
        self.startup_seconds = time.monotonic() - t0

    def _start_once(self) -> None:
        self.workdir = Path(tempfile.mkdtemp(prefix="hacluster-apiserver-"))
        self.port = self._requested_port or free_port(self.bind_address)
        self._write_pki()
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        self._log_file = self.log_path.open("ab")
        self._spawn()

    def _spawn(self) -> None:
        self.process = subprocess.Popen(
            self._args(),
            stdin=subprocess.DEVNULL,
            stdout=self._log_file,
            stderr=subprocess.STDOUT,
            cwd=self.workdir,
            preexec_fn=_set_parent_death_signal if self.die_with_parent else None,
        )
        self._wait_ready()

    def stop(self) -> None:
        """End the process this object started (by PID), remove its temp dir.

        Safe to call more than once and after a failed start.
        """
        try:
            proc = self.process
            if proc is not None and proc.poll() is None:
                proc.send_signal(signal.SIGTERM)  # by PID: Popen keeps it until reaped
                try:
                    proc.wait(self.stop_timeout)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait(self.stop_timeout)
        finally:
            if self._log_file is not None:
                self._log_file.close()
                self._log_file = None
            if self.workdir is not None:
                shutil.rmtree(self.workdir, ignore_errors=True)
                self.workdir = None
            self.process = None

    def halt(self) -> None:
        """Stop the process (SIGTERM) but keep its PKI, etcd data and port: :meth:`resume` starts
        the same control plane again (an API-server outage, for the fault campaign)."""
        proc = self.process
        if proc is None:
            raise ControlPlaneError("control plane not started")
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(self.stop_timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(self.stop_timeout)

    def resume(self, *, authorized: Sequence[tuple[str, str]] = ()) -> float:
        """Start the halted process again, same args and port; wait for /readyz, then until each
        (token, path) of `authorized` is answered without a refusal. Returns how long after /readyz
        that took: on a loaded machine a restarted server said ready and then refused every
        ServiceAccount (403) for 4-5 s more, its authorizer not yet synced (the fault campaign,
        seed 77 trial 48); until then the API server is still down for the pair."""
        if self.process is None or self.process.poll() is None or self._log_file is None:
            raise ControlPlaneError("resume() needs a halted control plane")
        self._spawn()
        t0 = time.monotonic()
        for token, path in authorized:
            self.wait_authorized(token, path)
        return time.monotonic() - t0

    def wait_authorized(self, token: str, path: str, timeout: float | None = None) -> None:
        """Wait until GET path with this bearer token is answered and not refused (401, 403, 429,
        5xx or no answer): the server authenticates and authorizes that client again."""
        deadline = time.monotonic() + (self.start_timeout if timeout is None else timeout)
        ctx = ssl.create_default_context(cafile=str(self.ca_cert))
        last = "no answer yet"
        while time.monotonic() < deadline:
            req = urllib.request.Request(self.url + path, headers={"Authorization": f"Bearer {token}"})
            try:
                with urllib.request.urlopen(req, timeout=2.0, context=ctx) as r:
                    r.read()
                    return
            except urllib.error.HTTPError as exc:
                if exc.code not in (401, 403, 429) and exc.code < 500:
                    return  # answered on its merits (404: authorized, nothing there)
                last = f"HTTP {exc.code}"
            except (OSError, ssl.SSLError) as exc:
                last = str(exc)
            time.sleep(0.1)
        raise ControlPlaneError(f"GET {path} still refused after {self.start_timeout:g} s ({last})")

    def log_tail(self, lines: int = 40) -> str:
        """The log's error lines and its last lines, without gRPC reconnect noise."""
        try:
            text = self.log_path.read_text(errors="replace")
        except (OSError, ControlPlaneError):
            return "(no log)"
        kept = [ln for ln in text.splitlines() if "addrConn.createTransport" not in ln]
        errors = [ln for ln in kept if ln.startswith(("E", "F")) or '"command failed"' in ln]
        tail = kept[-lines:]
        head = [ln for ln in errors[:20] if ln not in tail]
        return "\n".join([*head, *(["..."] if head else []), *tail])

    # ----------------------------------------------------------- internals

    def _write_pki(self) -> None:
        pki = self._dir() / "pki"
        pki.mkdir(mode=0o700)

        def write(name: str, data: bytes) -> Path:
            path = pki / name
            path.write_bytes(data)
            path.chmod(0o600)
            return path

        server_ca_key, server_ca = _make_ca("hacluster-test-server-ca")
        sans: list[x509.GeneralName] = [
            x509.IPAddress(ipaddress.ip_address(self.host)),
            x509.DNSName("localhost"),
            x509.DNSName("kubernetes"),
            x509.DNSName("kubernetes.default"),
            x509.DNSName("kubernetes.default.svc"),
            x509.DNSName("kubernetes.default.svc.cluster.local"),
            # First address of the service range: the "kubernetes" Service IP.
            x509.IPAddress(next(ipaddress.IPv4Network(self.service_cidr).hosts())),
        ]
        if self.host != "127.0.0.1":
            sans.append(x509.IPAddress(ipaddress.ip_address("127.0.0.1")))
        server_key, server_cert = _make_leaf(
            server_ca_key, server_ca, common_name="kube-apiserver", server_sans=sans
        )
        client_ca_key, client_ca = self._client_ca = _make_ca("hacluster-test-client-ca")
        admin_key, admin_cert = _make_leaf(
            client_ca_key, client_ca, common_name=ADMIN_USER, organizations=[ADMIN_GROUP]
        )
        sa_key = _new_key()

        write("server-ca.crt", _cert_pem(server_ca))
        write("server.crt", _cert_pem(server_cert) + _cert_pem(server_ca))
        write("server.key", _key_pem(server_key))
        write("client-ca.crt", _cert_pem(client_ca))
        write("admin.crt", _cert_pem(admin_cert))
        write("admin.key", _key_pem(admin_key))
        write("sa.key", _key_pem(sa_key))
        write(
            "sa.pub",
            sa_key.public_key().public_bytes(
                serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
            ),
        )
        self._write_kubeconfig(
            self.kubeconfig,
            user=ADMIN_USER,
            credentials={
                "client-certificate-data": b64encode(_cert_pem(admin_cert)).decode(),
                "client-key-data": b64encode(_key_pem(admin_key)).decode(),
            },
        )

    def client_kubeconfig(self, path: Path, user: str, groups: Sequence[str] = ()) -> Path:
        """Write a kubeconfig for `user` (in `groups`) with a client certificate of this control
        plane's client CA: a kubelet (system:node:NAME in system:nodes), kube-proxy, the
        controller-manager and the scheduler authenticate so, as in a real cluster."""
        if self._client_ca is None:
            raise ControlPlaneError("control plane not started")
        key, cert = _make_leaf(*self._client_ca, common_name=user, organizations=groups)
        self._write_kubeconfig(
            path,
            user=user,
            credentials={
                "client-certificate-data": b64encode(_cert_pem(cert)).decode(),
                "client-key-data": b64encode(_key_pem(key)).decode(),
            },
        )
        return path

    def _write_kubeconfig(self, path: Path, *, user: str, credentials: dict[str, str]) -> None:
        config = {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [
                {
                    "name": "hacluster-test",
                    "cluster": {
                        "server": self.url,
                        "certificate-authority-data": b64encode(self.ca_cert.read_bytes()).decode(),
                    },
                }
            ],
            "users": [{"name": user, "user": credentials}],
            "contexts": [{"name": user, "context": {"cluster": "hacluster-test", "user": user}}],
            "current-context": user,
        }
        path.write_text(yaml.safe_dump(config, sort_keys=False))
        path.chmod(0o600)

    def _args(self) -> list[str]:
        pki = self._dir() / "pki"
        return [
            str(self.binary),
            f"--embedded-etcd-dir={self._dir() / 'etcd'}",
            f"--bind-address={self.bind_address}",
            f"--advertise-address={self.host}",
            f"--secure-port={self.port}",
            f"--cert-dir={self._dir() / 'certs'}",
            f"--tls-cert-file={pki / 'server.crt'}",
            f"--tls-private-key-file={pki / 'server.key'}",
            f"--client-ca-file={pki / 'client-ca.crt'}",
            f"--service-account-issuer={self.url}",
            f"--service-account-key-file={pki / 'sa.pub'}",
            f"--service-account-signing-key-file={pki / 'sa.key'}",
            f"--service-cluster-ip-range={self.service_cidr}",
            # "none" by default: the lease reconciler would refuse a loopback advertise
            # address, and nothing routes to the "kubernetes" Service without nodes.
            f"--endpoint-reconciler-type={self.endpoint_reconciler}",
            f"--authorization-mode={self.authorization}",
            *([] if self.service_account_admission else ["--disable-admission-plugins=ServiceAccount"]),
            *(
                [
                    f"--kubelet-client-certificate={pki / 'admin.crt'}",
                    f"--kubelet-client-key={pki / 'admin.key'}",
                    # the node's address, never its name: no name lookup leaves the machine
                    "--kubelet-preferred-address-types=InternalIP",
                ]
                if self.kubelet_client
                else []
            ),
            "--allow-privileged=true",
            "--profiling=false",
            *self.extra_args,
        ]

    def _ssl_context(self) -> ssl.SSLContext:
        ctx = ssl.create_default_context(cafile=str(self.ca_cert))
        ctx.load_cert_chain(str(self.admin_cert), str(self.admin_key))
        return ctx

    def get(self, path: str, timeout: float = 5.0) -> tuple[int, str]:
        """GET path as admin; return (status, body)."""
        req = urllib.request.Request(self.url + path)
        try:
            with urllib.request.urlopen(req, timeout=timeout, context=self._ssl_context()) as r:
                return int(r.status), r.read().decode(errors="replace")
        except urllib.error.HTTPError as exc:
            return int(exc.code), exc.read().decode(errors="replace")

    def _wait_ready(self) -> None:
        assert self.process is not None
        deadline = time.monotonic() + self.start_timeout
        last = "no answer yet"
        while time.monotonic() < deadline:
            code = self.process.poll()
            if code is not None:
                if "address already in use" in self.log_tail(200):
                    raise _PortTaken
                raise ControlPlaneError(
                    f"kube-apiserver exited with {code} before it was ready; log:\n" + self.log_tail()
                )
            try:
                status, body = self.get("/readyz", timeout=2.0)
                if status == 200 and body.strip() == "ok":
                    return
                last = f"/readyz {status}: {body.strip()[-500:]}"
            except (OSError, ssl.SSLError) as exc:
                last = f"/readyz: {exc}"
            time.sleep(0.1)
        raise ControlPlaneError(
            f"kube-apiserver not ready after {self.start_timeout:g} s ({last}); log:\n" + self.log_tail()
        )

    # ----------------------------------------------------------- clients

    def api_client(self) -> ApiClient:
        """A new ``kubernetes.client.ApiClient`` acting as admin (close it when done)."""
        from kubernetes import client as k8s

        configuration = k8s.Configuration(
            host=self.url,
            ssl_ca_cert=str(self.ca_cert),
            cert_file=str(self.admin_cert),
            key_file=str(self.admin_key),
        )
        return k8s.ApiClient(configuration)

    def service_account_token(
        self,
        namespace: str,
        name: str,
        *,
        create: bool = True,
        expiration_seconds: int = TOKEN_SECONDS,
        audiences: Sequence[str] | None = None,
    ) -> str:
        """A TokenRequest token for ServiceAccount namespace/name.

        With ``create`` (default) the namespace and the ServiceAccount are made
        first if missing. The token carries no permissions beyond what RBAC
        bindings grant to ``system:serviceaccount:<namespace>:<name>`` (and the
        ``system:serviceaccounts``/``system:authenticated`` groups).
        """
        from kubernetes import client as k8s

        with self.api_client() as api_client:
            core = k8s.CoreV1Api(api_client)
            if create:
                meta = k8s.V1ObjectMeta(name=namespace)
                _ignore_conflict(lambda: core.create_namespace(k8s.V1Namespace(metadata=meta)))
                sa = k8s.V1ServiceAccount(metadata=k8s.V1ObjectMeta(name=name))
                _ignore_conflict(lambda: core.create_namespaced_service_account(namespace, sa))
            request = k8s.AuthenticationV1TokenRequest(
                spec=k8s.V1TokenRequestSpec(
                    audiences=list(audiences) if audiences is not None else [],
                    expiration_seconds=expiration_seconds,
                )
            )
            result = core.create_namespaced_service_account_token(name, namespace, request)
            if result.status is None or not result.status.token:
                raise ControlPlaneError(f"TokenRequest for {namespace}/{name} returned no token")
            return str(result.status.token)

    def service_account_kubeconfig(
        self,
        namespace: str,
        name: str,
        *,
        path: Path | None = None,
        create: bool = True,
        expiration_seconds: int = TOKEN_SECONDS,
    ) -> Path:
        """Write a kubeconfig that authenticates as ServiceAccount namespace/name.

        Use it to run the operator or an agent with exactly the RBAC a chart
        grants that ServiceAccount. Default path: inside the control plane's
        temp dir (removed by :meth:`stop`).
        """
        token = self.service_account_token(
            namespace, name, create=create, expiration_seconds=expiration_seconds
        )
        user = f"system:serviceaccount:{namespace}:{name}"
        out = path or self._dir() / f"sa-{namespace}-{name}.kubeconfig"
        self._write_kubeconfig(out, user=user, credentials={"token": token})
        return out
