"""The generated HACluster CRD in a real kube-apiserver: defaults, CEL rules, status, printer columns.

The bad specs are the very list the pydantic models are tested with (tests/unit/test_operator_models.py),
so the server and the models are held to the same rules and the same field paths.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Iterator
from typing import Any, TypeVar

import pytest
import yaml
from kubernetes import client as k8s

from hacluster_api.models import (
    CRD_NAME,
    GROUP,
    PLURAL,
    VERSION,
    HACluster,
    HAClusterSpec,
    HAClusterStatus,
)
from tests.apiserver.conftest import ControlPlaneFixture
from tests.support.eventually import crd_established, eventually
from tests.unit.test_operator_models import ARTICLE, BAD, CRD_FILE, MINIMAL, VALID, Bad, manifest

pytestmark = pytest.mark.apiserver

NAMESPACE = "hac-test"
T = TypeVar("T")


def as_obj(value: object) -> dict[str, Any]:
    assert isinstance(value, dict)
    return value


def api_error(exc: pytest.ExceptionInfo[k8s.ApiException]) -> tuple[int, str]:
    body = json.loads(exc.value.body or "{}")
    return int(exc.value.status), str(body.get("message", exc.value.body))


@pytest.fixture(scope="module")
def admin(controlplane: ControlPlaneFixture) -> Iterator[k8s.ApiClient]:
    with controlplane.api_client() as api_client:
        yield api_client


@pytest.fixture(scope="module")
def haclusters(controlplane: ControlPlaneFixture, admin: k8s.ApiClient) -> k8s.CustomObjectsApi:
    """The committed CRD file applied with kubectl (as a user would), established, and a namespace."""
    applied = controlplane.run_kubectl("apply", "-f", str(CRD_FILE))
    assert f"customresourcedefinition.apiextensions.k8s.io/{CRD_NAME} created" in applied.stdout
    crd_established(admin, CRD_NAME)
    k8s.CoreV1Api(admin).create_namespace(k8s.V1Namespace(metadata=k8s.V1ObjectMeta(name=NAMESPACE)))
    api = k8s.CustomObjectsApi(admin)
    eventually(lambda: api.list_namespaced_custom_object(GROUP, VERSION, NAMESPACE, PLURAL))
    return api


def create(api: k8s.CustomObjectsApi, name: str, spec: dict[str, Any]) -> dict[str, Any]:
    return as_obj(
        api.create_namespaced_custom_object(
            GROUP, VERSION, NAMESPACE, PLURAL, manifest(name, spec, NAMESPACE), field_validation="Strict"
        )
    )


def test_crd_is_accepted_as_structural(haclusters: k8s.CustomObjectsApi, admin: k8s.ApiClient) -> None:
    status = k8s.ApiextensionsV1Api(admin).read_custom_resource_definition(CRD_NAME).status
    assert status is not None and status.accepted_names is not None
    conditions = {c.type: (c.status, c.message) for c in status.conditions or []}
    assert conditions.get("NonStructuralSchema") is None, conditions
    assert conditions["NamesAccepted"][0] == "True"
    assert status.accepted_names.short_names == ["hac"]


def test_minimal_spec_is_accepted_with_the_models_defaults(haclusters: k8s.CustomObjectsApi) -> None:
    created = create(haclusters, "minimal", copy.deepcopy(MINIMAL))
    # The server's defaulting (from the CRD) is the models' defaulting: one source of truth.
    assert created["spec"] == HAClusterSpec.model_validate(MINIMAL).to_k8s()
    assert created["spec"]["heartbeat"]["keepalive"] == "1s"
    assert created["spec"]["heartbeat"]["deadtime"] == "30s"
    assert created["spec"]["heartbeat"]["media"]["udp"][0] == {
        "interface": "eth1",
        "mode": "broadcast",
        "port": 694,
        "ttl": 1,
    }
    assert created["spec"]["auth"] == {"method": "sha1", "secretRef": {"name": "hb-auth", "key": "authkeys"}}
    assert created["spec"]["resources"][0]["ip"]["arp"] == {
        "count": 5,
        "intervalMs": 200,
        "refreshSeconds": 10,
    }
    assert created["spec"]["failover"] == {
        "autoFailback": True,
        "maintenance": False,
        "whenArbiterUnavailable": "StayPut",
    }  # no arbitrationWindow: the agents derive W from the timing (engine/window.py)
    assert HACluster.model_validate(created).spec == HAClusterSpec.model_validate(MINIMAL)


@pytest.mark.parametrize("name, spec", [("valid", VALID), ("article", ARTICLE)])
def test_full_specs_are_accepted_unchanged(
    haclusters: k8s.CustomObjectsApi, name: str, spec: dict[str, Any]
) -> None:
    created = create(haclusters, name, copy.deepcopy(spec))
    assert created["spec"] == HAClusterSpec.model_validate(spec).to_k8s()


@pytest.mark.parametrize("case", BAD, ids=lambda c: c.id)
def test_server_rejects_bad_spec_with_a_readable_message(haclusters: k8s.CustomObjectsApi, case: Bad) -> None:
    with pytest.raises(k8s.ApiException) as exc:
        create(haclusters, f"bad-{case.id}", case.spec())
    status, message = api_error(exc)
    assert status == case.server_status, message
    for text in case.server_expects():
        assert text in message, f"{text!r} not in the server's message:\n{message}"


def test_rules_hold_on_update_too(haclusters: k8s.CustomObjectsApi) -> None:
    create(haclusters, "updated", copy.deepcopy(VALID))
    with pytest.raises(k8s.ApiException) as exc:
        haclusters.patch_namespaced_custom_object(
            GROUP, VERSION, NAMESPACE, PLURAL, "updated", {"spec": {"failover": {"switchoverTo": "node-z"}}}
        )
    status, message = api_error(exc)
    assert status == 422
    assert "spec.failover.switchoverTo: Invalid value: " in message
    assert "switchoverTo must be one of nodes" in message
    # A valid switchover is a plain spec change.
    patched = as_obj(
        haclusters.patch_namespaced_custom_object(
            GROUP, VERSION, NAMESPACE, PLURAL, "updated", {"spec": {"failover": {"switchoverTo": "node-b"}}}
        )
    )
    assert patched["spec"]["failover"]["switchoverTo"] == "node-b"
    assert patched["metadata"]["generation"] == 2


STATUS = HAClusterStatus.model_validate(
    {
        "owner": "node-b",
        "epoch": 7,
        "state": "Degraded",
        "observedGeneration": 1,
        "nodes": [
            {"name": "node-a", "state": "dead", "media": {"eth1": "down", "/dev/ttyS0": "down"}},
            {
                "name": "node-b",
                "state": "active",
                "lastSeen": "2025-01-01T00:00:00Z",
                "media": {"eth1": "up"},
            },
        ],
        "lastTransition": {
            "from": "node-a",
            "to": "node-b",
            "reason": "PeerDead",
            "gapMs": 10250,
            "time": "2025-01-01T00:00:00Z",
        },
        "conditions": [
            {
                "type": "Degraded",
                "status": "True",
                "reason": "PeerDead",
                "message": "node-a is dead",
                "lastTransitionTime": "2025-01-01T00:00:00Z",
                "observedGeneration": 1,
            },
            {
                "type": "HeartbeatLinkDown",
                "status": "True",
                "reason": "MediumDown",
                "message": "/dev/ttyS0 down on node-a",
                "lastTransitionTime": "2025-01-01T00:00:00Z",
            },
        ],
    }
)


def test_status_subresource_and_printer_columns(
    controlplane: ControlPlaneFixture, haclusters: k8s.CustomObjectsApi
) -> None:
    create(haclusters, "with-status", copy.deepcopy(VALID))
    patched = as_obj(
        haclusters.patch_namespaced_custom_object_status(
            GROUP, VERSION, NAMESPACE, PLURAL, "with-status", {"status": STATUS.to_k8s()}
        )
    )
    assert patched["status"] == STATUS.to_k8s()
    assert patched["metadata"]["generation"] == 1
    assert HACluster.model_validate(patched).status == STATUS

    table = controlplane.run_kubectl("get", "hac", "with-status", "-n", NAMESPACE).stdout.splitlines()
    assert table[0].split() == ["NAME", "OWNER", "STATE", "EPOCH", "AGE"], table
    assert table[1].split()[:4] == ["with-status", "node-b", "Degraded", "7"], table

    # Without a status the columns are blank, not an error: only NAME and AGE show.
    create(haclusters, "no-status", copy.deepcopy(MINIMAL))
    rows = controlplane.run_kubectl("get", "haclusters.hacluster.dev", "-n", NAMESPACE).stdout
    assert [len(line.split()) for line in rows.splitlines() if line.startswith("no-status ")] == [2], rows


def test_status_is_validated_too(haclusters: k8s.CustomObjectsApi) -> None:
    create(haclusters, "bad-status", copy.deepcopy(VALID))
    with pytest.raises(k8s.ApiException) as exc:
        haclusters.patch_namespaced_custom_object_status(
            GROUP, VERSION, NAMESPACE, PLURAL, "bad-status", {"status": {"state": "Happy", "epoch": -1}}
        )
    status, message = api_error(exc)
    assert status == 422
    assert 'status.state: Unsupported value: "Happy"' in message
    assert "status.epoch: Invalid value: -1" in message


def test_the_crd_file_is_what_the_server_serves(
    controlplane: ControlPlaneFixture, haclusters: k8s.CustomObjectsApi
) -> None:
    """Nothing in the committed schema was dropped or rewritten by the server (no silent pruning)."""
    code, body = controlplane.plane.get(f"/apis/apiextensions.k8s.io/v1/customresourcedefinitions/{CRD_NAME}")
    assert code == 200, body
    served = json.loads(body)["spec"]["versions"][0]
    ours = yaml.safe_load(CRD_FILE.read_text())["spec"]["versions"][0]
    assert served["schema"] == ours["schema"]
    assert served["additionalPrinterColumns"] == ours["additionalPrinterColumns"]
