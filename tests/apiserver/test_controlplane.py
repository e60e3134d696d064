"""The test control plane is a real API server: CRDs, validation, subresources,
optimistic concurrency, RBAC and kubectl all behave as in a cluster.

The CRD here is a throwaway test CRD, not hacluster's own.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any, TypeVar

import pytest
from kubernetes import client as k8s
from kubernetes import config as k8s_config

from tests.apiserver.conftest import ControlPlaneFixture
from tests.support.eventually import crd_established, eventually

pytestmark = pytest.mark.apiserver

GROUP = "hacluster-test.example.com"
VERSION = "v1"
PLURAL = "widgets"
KIND = "Widget"
NAMESPACE = "crd-test"

T = TypeVar("T")

WIDGET_CRD: dict[str, Any] = {
    "apiVersion": "apiextensions.k8s.io/v1",
    "kind": "CustomResourceDefinition",
    "metadata": {"name": f"{PLURAL}.{GROUP}"},
    "spec": {
        "group": GROUP,
        "scope": "Namespaced",
        "names": {"plural": PLURAL, "singular": "widget", "kind": KIND, "listKind": "WidgetList"},
        "versions": [
            {
                "name": VERSION,
                "served": True,
                "storage": True,
                "subresources": {"status": {}},
                "schema": {
                    "openAPIV3Schema": {
                        "type": "object",
                        "properties": {
                            "spec": {
                                "type": "object",
                                "required": ["mode"],
                                "properties": {
                                    "mode": {"type": "string", "enum": ["active", "standby"]},
                                    "replicas": {"type": "integer", "minimum": 1, "maximum": 5},
                                },
                            },
                            "status": {
                                "type": "object",
                                "properties": {"phase": {"type": "string"}},
                            },
                        },
                    }
                },
            }
        ],
    },
}


def widget(name: str, spec: dict[str, Any]) -> dict[str, Any]:
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": KIND,
        "metadata": {"name": name, "namespace": NAMESPACE},
        "spec": spec,
    }


def api_error(exc: pytest.ExceptionInfo[k8s.ApiException]) -> tuple[int, str]:
    body = json.loads(exc.value.body or "{}")
    return int(exc.value.status), str(body["message"])


@pytest.fixture(scope="module")
def admin(controlplane: ControlPlaneFixture) -> Iterator[k8s.ApiClient]:
    with controlplane.api_client() as api_client:
        yield api_client


@pytest.fixture(scope="module")
def widgets(admin: k8s.ApiClient) -> k8s.CustomObjectsApi:
    """The Widget CRD, established, and its namespace."""
    ext = k8s.ApiextensionsV1Api(admin)
    # The client takes a manifest dict as readily as a model.
    ext.create_custom_resource_definition(WIDGET_CRD)  # type: ignore[arg-type]
    crd_established(admin, f"{PLURAL}.{GROUP}")
    k8s.CoreV1Api(admin).create_namespace(k8s.V1Namespace(metadata=k8s.V1ObjectMeta(name=NAMESPACE)))
    api = k8s.CustomObjectsApi(admin)
    # Established means served; wait until the list endpoint answers too.
    eventually(lambda: api.list_namespaced_custom_object(GROUP, VERSION, NAMESPACE, PLURAL))
    return api


def as_obj(value: object) -> dict[str, Any]:
    """CustomObjectsApi returns plain JSON objects, typed as ``object``."""
    assert isinstance(value, dict)
    return value


def get_widget(api: k8s.CustomObjectsApi, name: str) -> dict[str, Any]:
    return as_obj(api.get_namespaced_custom_object(GROUP, VERSION, NAMESPACE, PLURAL, name))


def test_version_is_the_pinned_release(controlplane: ControlPlaneFixture) -> None:
    status, body = controlplane.plane.get("/version")
    assert status == 200
    info = json.loads(body)
    assert info["gitVersion"] == "v1.37.2"
    assert (info["major"], info["minor"]) == ("1", "37")


def test_create_custom_object(widgets: k8s.CustomObjectsApi) -> None:
    created = as_obj(
        widgets.create_namespaced_custom_object(
            GROUP, VERSION, NAMESPACE, PLURAL, widget("good", {"mode": "active", "replicas": 2})
        )
    )
    assert created["metadata"]["uid"]
    assert created["metadata"]["resourceVersion"]
    assert created["metadata"]["generation"] == 1
    assert get_widget(widgets, "good")["spec"] == {"mode": "active", "replicas": 2}


def test_schema_validation_rejects_bad_object(widgets: k8s.CustomObjectsApi) -> None:
    with pytest.raises(k8s.ApiException) as exc:
        widgets.create_namespaced_custom_object(
            GROUP, VERSION, NAMESPACE, PLURAL, widget("bad", {"mode": "bogus", "replicas": 9})
        )
    status, message = api_error(exc)
    assert status == 422
    assert f'{KIND}.{GROUP} "bad" is invalid' in message
    assert 'spec.mode: Unsupported value: "bogus": supported values: "active", "standby"' in (message)
    assert "spec.replicas: Invalid value: 9: spec.replicas in body should be less than or equal to 5" in (
        message
    )

    with pytest.raises(k8s.ApiException) as exc:
        widgets.create_namespaced_custom_object(
            GROUP, VERSION, NAMESPACE, PLURAL, widget("bad", {"replicas": 1})
        )
    status, message = api_error(exc)
    assert status == 422
    assert "spec.mode: Required value" in message


def test_status_subresource(widgets: k8s.CustomObjectsApi) -> None:
    widgets.create_namespaced_custom_object(
        GROUP, VERSION, NAMESPACE, PLURAL, widget("st", {"mode": "standby", "replicas": 1})
    )
    # The status subresource writes status and ignores spec...
    patched = as_obj(
        widgets.patch_namespaced_custom_object_status(
            GROUP,
            VERSION,
            NAMESPACE,
            PLURAL,
            "st",
            {"spec": {"replicas": 4}, "status": {"phase": "Ready"}},
        )
    )
    assert patched["status"] == {"phase": "Ready"}
    assert patched["spec"]["replicas"] == 1
    assert patched["metadata"]["generation"] == 1  # status writes do not bump generation

    # ...and the main endpoint writes spec and ignores status.
    patched = as_obj(
        widgets.patch_namespaced_custom_object(
            GROUP,
            VERSION,
            NAMESPACE,
            PLURAL,
            "st",
            {"spec": {"replicas": 3}, "status": {"phase": "Hacked"}},
        )
    )
    assert patched["spec"]["replicas"] == 3
    assert patched["status"] == {"phase": "Ready"}
    assert patched["metadata"]["generation"] == 2

    stored = get_widget(widgets, "st")
    assert stored["status"] == {"phase": "Ready"}
    assert stored["spec"] == {"mode": "standby", "replicas": 3}


def test_stale_resource_version_conflicts(widgets: k8s.CustomObjectsApi) -> None:
    widgets.create_namespaced_custom_object(
        GROUP, VERSION, NAMESPACE, PLURAL, widget("cas", {"mode": "active", "replicas": 1})
    )
    first = get_widget(widgets, "cas")
    second = get_widget(widgets, "cas")
    assert first["metadata"]["resourceVersion"] == second["metadata"]["resourceVersion"]

    first["spec"]["replicas"] = 2
    won = as_obj(widgets.replace_namespaced_custom_object(GROUP, VERSION, NAMESPACE, PLURAL, "cas", first))
    assert won["metadata"]["resourceVersion"] != second["metadata"]["resourceVersion"]

    second["spec"]["replicas"] = 5
    with pytest.raises(k8s.ApiException) as exc:
        widgets.replace_namespaced_custom_object(GROUP, VERSION, NAMESPACE, PLURAL, "cas", second)
    status, message = api_error(exc)
    assert status == 409
    assert "the object has been modified; please apply your changes to the latest version" in (message)
    assert get_widget(widgets, "cas")["spec"]["replicas"] == 2

    # The same holds for the status subresource.
    second["status"] = {"phase": "Stale"}
    with pytest.raises(k8s.ApiException) as exc:
        widgets.replace_namespaced_custom_object_status(GROUP, VERSION, NAMESPACE, PLURAL, "cas", second)
    assert exc.value.status == 409


def test_kubectl_with_admin_kubeconfig(
    controlplane: ControlPlaneFixture, widgets: k8s.CustomObjectsApi
) -> None:
    version = json.loads(controlplane.run_kubectl("version", "-o", "json").stdout)
    assert version["serverVersion"]["gitVersion"] == "v1.37.2"

    manifest = json.dumps(widget("from-kubectl", {"mode": "standby", "replicas": 2}))
    applied = controlplane.run_kubectl("apply", "-f", "-", input=manifest)
    assert "widget.hacluster-test.example.com/from-kubectl created" in applied.stdout
    assert get_widget(widgets, "from-kubectl")["spec"]["mode"] == "standby"

    listed = json.loads(
        controlplane.run_kubectl("get", f"{PLURAL}.{GROUP}", "-n", NAMESPACE, "-o", "json").stdout
    )
    assert "from-kubectl" in {item["metadata"]["name"] for item in listed["items"]}

    rejected = controlplane.run_kubectl(
        "apply",
        "-f",
        "-",
        check=False,
        input=json.dumps(widget("kubectl-bad", {"mode": "active", "replicas": 0})),
    )
    assert rejected.returncode != 0
    assert "should be greater than or equal to 1" in rejected.stderr

    who = json.loads(controlplane.run_kubectl("auth", "whoami", "-o", "json").stdout)
    assert who["status"]["userInfo"]["username"] == "admin"
    assert "system:masters" in who["status"]["userInfo"]["groups"]


def test_rbac_is_enforced_for_service_account_tokens(
    controlplane: ControlPlaneFixture, admin: k8s.ApiClient, widgets: k8s.CustomObjectsApi
) -> None:
    kubeconfig = controlplane.plane.service_account_kubeconfig("rbac-test", "nobody")
    sa_client: k8s.ApiClient = k8s_config.new_client_from_config(  # type: ignore[no-untyped-call]
        config_file=str(kubeconfig)
    )
    with sa_client:
        # The token authenticates (this is authorization failing, not authentication)...
        review = k8s.AuthenticationV1Api(sa_client).create_self_subject_review(k8s.V1SelfSubjectReview())
        assert review.status and review.status.user_info
        assert review.status.user_info.username == "system:serviceaccount:rbac-test:nobody"

        # ...and with no bindings, everything is forbidden.
        core = k8s.CoreV1Api(sa_client)
        with pytest.raises(k8s.ApiException) as exc:
            core.list_namespaced_config_map("rbac-test")
        status, message = api_error(exc)
        assert status == 403
        assert message == (
            'configmaps is forbidden: User "system:serviceaccount:rbac-test:nobody" '
            'cannot list resource "configmaps" in API group "" in the namespace "rbac-test"'
        )
        with pytest.raises(k8s.ApiException) as exc:
            k8s.CustomObjectsApi(sa_client).list_namespaced_custom_object(GROUP, VERSION, NAMESPACE, PLURAL)
        assert exc.value.status == 403

        # A Role + RoleBinding grants exactly what it says, and nothing more.
        rbac = k8s.RbacAuthorizationV1Api(admin)
        rbac.create_namespaced_role(
            "rbac-test",
            k8s.V1Role(
                metadata=k8s.V1ObjectMeta(name="read-configmaps"),
                rules=[k8s.V1PolicyRule(api_groups=[""], resources=["configmaps"], verbs=["list"])],
            ),
        )
        rbac.create_namespaced_role_binding(
            "rbac-test",
            k8s.V1RoleBinding(
                metadata=k8s.V1ObjectMeta(name="nobody-reads-configmaps"),
                role_ref=k8s.V1RoleRef(
                    api_group="rbac.authorization.k8s.io", kind="Role", name="read-configmaps"
                ),
                subjects=[k8s.RbacV1Subject(kind="ServiceAccount", name="nobody", namespace="rbac-test")],
            ),
        )
        eventually(lambda: core.list_namespaced_config_map("rbac-test"))
        with pytest.raises(k8s.ApiException) as exc:
            core.list_namespaced_config_map("default")
        assert exc.value.status == 403
        with pytest.raises(k8s.ApiException) as exc:
            core.create_namespaced_config_map(
                "rbac-test", k8s.V1ConfigMap(metadata=k8s.V1ObjectMeta(name="nope"))
            )
        assert exc.value.status == 403
