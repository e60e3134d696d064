"""One ApiClient for the agent: in-cluster credentials, or a kubeconfig file (tests, outside)."""

from __future__ import annotations

from typing import cast

from kubernetes import client, config


def api_client(kubeconfig: str | None) -> client.ApiClient:
    if kubeconfig:
        return cast(client.ApiClient, config.new_client_from_config(config_file=kubeconfig))  # type: ignore[no-untyped-call]
    config.load_incluster_config()  # type: ignore[no-untyped-call]
    return client.ApiClient()
