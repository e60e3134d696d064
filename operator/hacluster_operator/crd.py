"""Generate the HACluster CustomResourceDefinition from the pydantic models, so the two cannot drift.

pydantic writes JSON Schema (draft 2020-12, `$ref`s into `$defs`, `anyOf` with null for optional
fields); Kubernetes wants a *structural* OpenAPI v3 schema: every node typed, no references, no
unions. `structural()` converts one into the other and refuses anything it does not understand.

    python -m hacluster_operator.crd > crds/hacluster.dev_haclusters.yaml
"""

from __future__ import annotations

import copy
import sys
from typing import Any

import yaml

from hacluster_api.models import (
    CRD_NAME,
    GROUP,
    KIND,
    LIST_KIND,
    PLURAL,
    SHORT_NAMES,
    SINGULAR,
    VERSION,
    HACluster,
    HAClusterSpec,
    HAClusterStatus,
)

HEADER = (
    "# The HACluster CustomResourceDefinition. GENERATED from api/hacluster_api/models.py:\n"
    "#   python -m hacluster_operator.crd > crds/hacluster.dev_haclusters.yaml\n"
    "# Do not edit by hand; tests/unit/test_operator_models.py fails when this file is stale.\n"
)

# The JSONSchemaProps keys Kubernetes understands (apiextensions.k8s.io/v1), less the ones a
# structural schema forbids at our level (allOf/anyOf/oneOf/not, $ref, uniqueItems...).
ALLOWED_KEYS = frozenset(
    {
        "type", "format", "description", "properties", "required", "items", "additionalProperties",
        "enum", "default", "minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum",
        "minLength", "maxLength", "pattern", "minItems", "maxItems", "minProperties",
        "maxProperties", "multipleOf", "nullable", "example",
        "x-kubernetes-validations", "x-kubernetes-list-type", "x-kubernetes-list-map-keys",
        "x-kubernetes-map-type", "x-kubernetes-preserve-unknown-fields",
    }
)  # fmt: skip
_DROPPED = frozenset({"title", "$defs", "examples", "$schema", "$id"})
# Keys in this order first (then the rest alphabetically), so the YAML reads top-down.
_KEY_ORDER = ("description", "type", "format", "enum", "default", "required", "properties", "items",
              "additionalProperties")  # fmt: skip


class SchemaError(ValueError):
    """The models use a JSON Schema construct that has no structural OpenAPI equivalent."""


def structural(schema: dict[str, Any]) -> dict[str, Any]:
    """Turn a pydantic JSON schema into a Kubernetes structural schema (refs inlined, no unions)."""
    defs: dict[str, Any] = schema.get("$defs", {})
    return _convert(schema, defs, "")


def _resolve(node: dict[str, Any], defs: dict[str, Any], path: str) -> dict[str, Any]:
    """Flatten $ref, single-item allOf and `X | None` into one schema node (outer keys win)."""
    node = dict(node)
    ref = node.pop("$ref", None)
    if ref is not None:
        name = ref.removeprefix("#/$defs/")
        if name not in defs:
            raise SchemaError(f"{path or '<root>'}: unresolvable $ref {ref!r}")
        node = _merge(_resolve(defs[name], defs, path), node)
    if "allOf" in node:
        parts = node.pop("allOf")
        if len(parts) != 1:
            raise SchemaError(f"{path}: allOf with {len(parts)} parts is not structural")
        node = _merge(_resolve(parts[0], defs, path), node)
    if "anyOf" in node or "oneOf" in node:
        options = node.pop("anyOf", None) or node.pop("oneOf")
        kept = [o for o in options if o != {"type": "null"}]
        if len(kept) != 1:
            raise SchemaError(f"{path}: a union of {len(kept)} types is not structural; use one type")
        # An optional field: unset and null both mean "absent" (the API server prunes nulls
        # from non-nullable fields), so no `nullable` is needed.
        node = _merge(_resolve(kept[0], defs, path), node)
        if node.get("default", "") is None:
            del node["default"]
    return node


def _merge(inner: dict[str, Any], outer: dict[str, Any]) -> dict[str, Any]:
    out = {**inner, **outer}
    rules = inner.get("x-kubernetes-validations", []) + outer.get("x-kubernetes-validations", [])
    if rules:
        out["x-kubernetes-validations"] = rules
    return out


def _convert(raw: dict[str, Any], defs: dict[str, Any], path: str) -> dict[str, Any]:
    node = _resolve(raw, defs, path)
    out: dict[str, Any] = {}
    for key, value in node.items():
        if key in _DROPPED:
            continue
        if key == "properties":
            out[key] = {name: _convert(sub, defs, f"{path}.{name}") for name, sub in value.items()}
        elif key == "items":
            out[key] = _convert(value, defs, f"{path}[]")
        elif key == "additionalProperties":
            if value is False:
                continue  # extra="forbid": the server prunes unknown fields (or rejects, when strict)
            out[key] = _convert(value, defs, f"{path}.*")
        elif key == "const":
            out["enum"] = [value]
        elif key in ("exclusiveMinimum", "exclusiveMaximum") and not isinstance(value, bool):
            # JSON Schema: a number. OpenAPI v3.0: a flag on minimum/maximum.
            out["minimum" if key == "exclusiveMinimum" else "maximum"] = value
            out[key] = True
        elif key == "default":
            out[key] = _without_nulls(value)
        elif key == "description":
            out[key] = " ".join(value.split())  # docstrings: one line, so the YAML stays readable
        elif key in ALLOWED_KEYS:
            out[key] = copy.deepcopy(value)
        else:
            raise SchemaError(f"{path or '<root>'}: {key!r} has no structural OpenAPI equivalent")
    if "type" not in out:
        raise SchemaError(f"{path or '<root>'}: no type (structural schemas type every node)")
    rank = {k: i for i, k in enumerate(_KEY_ORDER)}
    return dict(sorted(out.items(), key=lambda kv: (rank.get(kv[0], len(rank)), kv[0])))


def _without_nulls(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _without_nulls(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [_without_nulls(v) for v in value]
    return value


def openapi_schema() -> dict[str, Any]:
    """The version's openAPIV3Schema: the root object with spec and status from the models."""
    spec = structural(HAClusterSpec.model_json_schema(by_alias=True, mode="validation"))
    status = structural(HAClusterStatus.model_json_schema(by_alias=True, mode="validation"))
    return {
        "type": "object",
        "description": (HACluster.__doc__ or "").strip(),
        "required": ["spec"],
        "properties": {
            "apiVersion": {"type": "string"},
            "kind": {"type": "string"},
            "metadata": {"type": "object"},
            "spec": spec,
            "status": status,
        },
    }


PRINTER_COLUMNS = [
    {
        "name": "Owner",
        "type": "string",
        "jsonPath": ".status.owner",
        "description": "The node holding the resources.",
    },
    {"name": "State", "type": "string", "jsonPath": ".status.state"},
    {"name": "Epoch", "type": "integer", "jsonPath": ".status.epoch", "description": "Changes of owner."},
    {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"},
]


def build_crd() -> dict[str, Any]:
    """The CustomResourceDefinition manifest, as a plain dict."""
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": CRD_NAME},
        "spec": {
            "group": GROUP,
            "scope": "Namespaced",
            "names": {
                "plural": PLURAL,
                "singular": SINGULAR,
                "kind": KIND,
                "listKind": LIST_KIND,
                "shortNames": list(SHORT_NAMES),
            },
            "versions": [
                {
                    "name": VERSION,
                    "served": True,
                    "storage": True,
                    "subresources": {"status": {}},
                    "additionalPrinterColumns": PRINTER_COLUMNS,
                    "schema": {"openAPIV3Schema": openapi_schema()},
                }
            ],
        },
    }


def crd_yaml() -> str:
    """The committed file's exact text."""
    return HEADER + yaml.safe_dump(build_crd(), sort_keys=False, width=100, allow_unicode=True)


def main() -> int:
    sys.stdout.write(crd_yaml())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
