"""The CRD reference in docs/, generated from the same schema the API server enforces.

`python -m hacluster_operator.crd_docs > docs/crd-reference.md`; a test keeps it current.
"""

from __future__ import annotations

import sys
from typing import Any

from .crd import build_crd


def _type(node: dict[str, Any]) -> str:
    t = str(node.get("type", "object"))
    if t == "array":
        return f"list of {_type(node.get('items', {}))}"
    if "enum" in node:
        return " \\| ".join(f"`{e}`" for e in node["enum"])
    return t


def _rules(node: dict[str, Any]) -> str:
    out = []
    for key in ("pattern", "minimum", "maximum", "minLength", "maxLength", "minItems", "maxItems"):
        if key in node:
            out.append(f"{key} `{node[key]}`")
    for v in node.get("x-kubernetes-validations", []):
        out.append(f"{v['message']} (`{v['rule']}`)")
    return "; ".join(out).replace("|", "\\|")


def _walk(node: dict[str, Any], path: str, required: bool, rows: list[str]) -> None:
    if path:
        default = f"`{node['default']}`" if "default" in node else ""
        desc = " ".join(str(node.get("description", "")).split()).replace("|", "\\|")
        req = "yes" if required else ""
        rows.append(f"| `{path}` | {_type(node)} | {req} | {default} | {desc} | {_rules(node)} |")
    items = node.get("items")
    if isinstance(items, dict) and "properties" in items:
        node, path = items, f"{path}[]"
    props = node.get("properties", {})
    if not props and isinstance(node.get("additionalProperties"), dict):
        _walk(node["additionalProperties"], f"{path}.<key>", False, rows)
        return
    need = set(node.get("required", []))
    for name, child in props.items():
        _walk(child, f"{path}.{name}" if path else name, name in need, rows)


def reference() -> str:
    doc = build_crd()
    version = doc["spec"]["versions"][0]
    schema = version["schema"]["openAPIV3Schema"]
    lines = [
        f"# `{doc['spec']['names']['kind']}` reference ({doc['spec']['group']}/{version['name']})",
        "",
        "Generated from the operator's models by `python -m hacluster_operator.crd_docs`; the API",
        "server enforces exactly these rules (the CRD is generated from the same models).",
        f"Short name: `{', '.join(doc['spec']['names'].get('shortNames', []))}`. Printer columns: "
        + ", ".join(c["name"] for c in version.get("additionalPrinterColumns", []))
        + ".",
    ]
    for part in ("spec", "status"):
        node = schema["properties"][part]
        rows: list[str] = []
        _walk(node, "", False, rows)
        lines += [
            "",
            f"## {part}",
            "",
            " ".join(str(node.get("description", "")).split()),
            "",
        ]
        rules = _rules(node)
        if rules:
            lines += [f"Rules on `{part}`: {rules}", ""]
        lines += ["| field | type | required | default | meaning | rules |", "|---|---|---|---|---|---|"]
        sub: list[str] = []
        need = set(node.get("required", []))
        for name, child in node.get("properties", {}).items():
            _walk(child, f"{part}.{name}", name in need, sub)
        lines += sub
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.stdout.write(reference())
