"""The CRDs: generated from the models, structural, and matching what we publish."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from stockade.cluster import parse_documents
from stockade.compiler import compile_cluster
from stockade.crd import node_rule_set_crd, peer_set_crd, render_crds
from stockade.ruleset import node_rule_set_to_dict, peer_set_to_dict

ROOT = Path(__file__).resolve().parents[2]
_TYPES = {"object": dict, "array": list, "string": str, "integer": int, "boolean": bool}


def _spec_schema(crd: dict[str, Any]) -> dict[str, Any]:
    schema: dict[str, Any] = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    return schema["properties"]["spec"]  # type: ignore[no-any-return]


def _walk(node: Any) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    if isinstance(node, dict):
        out.append(node)
        for value in node.values():
            out.extend(_walk(value))
    elif isinstance(node, list):
        for value in node:
            out.extend(_walk(value))
    return out


def _conforms(value: Any, schema: dict[str, Any], path: str = "spec") -> list[str]:
    """A small structural-schema validator: types, nullability, required, properties."""
    if value is None:
        return [] if schema.get("nullable") else [f"{path}: null not allowed"]
    kind: str = schema["type"]
    if not isinstance(value, _TYPES[kind]) or (kind == "integer" and isinstance(value, bool)):
        return [f"{path}: expected {kind}, got {type(value).__name__}"]
    errors: list[str] = []
    if isinstance(value, dict):
        props = schema.get("properties", {})
        errors += [f"{path}.{k}: required" for k in schema.get("required", []) if k not in value]
        for key, item in value.items():
            if key not in props:
                errors.append(f"{path}.{key}: not in schema (would be pruned)")
            else:
                errors += _conforms(item, props[key], f"{path}.{key}")
    if isinstance(value, list):
        for i, item in enumerate(value):
            errors += _conforms(item, schema["items"], f"{path}[{i}]")
    return errors


def test_manifest_is_up_to_date() -> None:
    assert (ROOT / "manifests" / "crds.yaml").read_text() == render_crds(), (
        "manifests/crds.yaml is stale: run `python -m stockade.crd > manifests/crds.yaml`"
    )


@pytest.mark.parametrize("crd", [node_rule_set_crd(), peer_set_crd()], ids=["node", "peer"])
def test_schemas_are_structural(crd: dict[str, Any]) -> None:
    for node in _walk(_spec_schema(crd)):
        if "properties" in node or "items" in node:
            assert "type" in node, node
        assert "$ref" not in node
        assert "anyOf" not in node
    version = crd["spec"]["versions"][0]
    assert version["subresources"] == {"status": {}}
    assert crd["spec"]["scope"] == "Cluster"
    assert {c["name"] for c in version["additionalPrinterColumns"]} >= {"Age"}


def test_published_objects_conform_to_their_crd_schemas() -> None:
    docs = list(yaml.safe_load_all((ROOT / "tests/unit/data/conformance.yaml").read_text()))
    result = parse_documents(docs)
    assert not result.errors
    compiled = compile_cluster(result.cluster)
    node_schema = _spec_schema(node_rule_set_crd())
    peer_schema = _spec_schema(peer_set_crd())
    assert compiled.node_rule_sets
    assert compiled.peer_sets
    for rs in compiled.node_rule_sets.values():
        assert _conforms(node_rule_set_to_dict(rs), node_schema) == []
    for ps in compiled.peer_sets.values():
        assert _conforms(peer_set_to_dict(ps), peer_schema) == []


def test_the_validator_catches_a_wrong_type() -> None:
    schema = _spec_schema(node_rule_set_crd())
    assert _conforms({"node": 3, "pods": [], "policies": [], "peerSets": []}, schema)
