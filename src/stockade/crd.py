"""CustomResourceDefinitions for NodeRuleSet and PeerSet, generated from the models.

Kubernetes wants *structural* OpenAPI v3 schemas: no ``$ref``, no ``anyOf`` of a
type and null (``nullable: true`` instead), a ``type`` on every node. Pydantic
emits JSON Schema from the rule-set dataclasses; this module rewrites it into that
shape, so the models in :mod:`stockade.ruleset` stay the one source of truth.
"""

from __future__ import annotations

import copy
from typing import Any

from stockade import crd_cnp, crd_isolation
from stockade.ruleset import GROUP, VERSION, node_rule_set_schema, peer_set_schema

_DROP = ("title", "description", "default")


def structural(schema: dict[str, Any]) -> dict[str, Any]:
    """Inline ``$defs`` and rewrite nullable unions into a structural schema."""
    defs = schema.get("$defs", {})

    def walk(node: Any) -> Any:
        if not isinstance(node, dict):
            return node
        if "$ref" in node:
            target = defs[node["$ref"].rsplit("/", 1)[-1]]
            return walk(copy.deepcopy(target))
        if "anyOf" in node:
            options = [o for o in node["anyOf"] if o.get("type") != "null"]
            nullable = len(options) < len(node["anyOf"])
            if len(options) != 1:
                raise ValueError(f"cannot express union {node['anyOf']!r} structurally")
            inner = walk(options[0])
            if nullable:
                inner["nullable"] = True
            return inner
        out: dict[str, Any] = {}
        for key, value in node.items():
            if key in _DROP or key in {"$defs", "additionalProperties"}:
                continue
            if key == "properties":
                out[key] = {k: walk(v) for k, v in value.items()}
            elif key == "items":
                out[key] = walk(value)
            elif key in ("prefixItems", "maxItems", "minItems") and node.get("type") == "array":
                # Tuples of fixed length do not occur in the contract; keep lists open.
                continue
            else:
                out[key] = value
        return out

    result = walk(schema)
    assert isinstance(result, dict)
    return result


def _crd(
    kind: str,
    plural: str,
    spec_schema: dict[str, Any],
    columns: list[dict[str, Any]],
    status: dict[str, Any],
) -> dict[str, Any]:
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": f"{plural}.{GROUP}"},
        "spec": {
            "group": GROUP,
            "scope": "Cluster",
            "names": {
                "kind": kind,
                "listKind": f"{kind}List",
                "plural": plural,
                "singular": kind.lower(),
                "categories": ["stockade"],
            },
            "versions": [
                {
                    "name": VERSION,
                    "served": True,
                    "storage": True,
                    "subresources": {"status": {}},
                    "additionalPrinterColumns": columns,
                    "schema": {
                        "openAPIV3Schema": {
                            "type": "object",
                            "properties": {
                                "apiVersion": {"type": "string"},
                                "kind": {"type": "string"},
                                "metadata": {"type": "object"},
                                "spec": structural(spec_schema),
                                "status": status,
                            },
                        }
                    },
                }
            ],
        },
    }


_CONDITIONS = {
    "type": "array",
    "items": {
        "type": "object",
        "required": ["type", "status"],
        "properties": {
            "type": {"type": "string"},
            "status": {"type": "string"},
            "reason": {"type": "string"},
            "message": {"type": "string"},
            "lastTransitionTime": {"type": "string", "format": "date-time"},
        },
    },
}

NODE_RULE_SET_STATUS: dict[str, Any] = {
    "type": "object",
    "properties": {
        "policies": {"type": "integer", "description": "policies selecting local pods"},
        "clusterPolicies": {
            "type": "integer",
            "description": "ClusterNetworkPolicies selecting local pods",
        },
        "pods": {"type": "integer", "description": "local pods that some policy selects"},
        "applied": {"type": "boolean", "description": "the agent enforces this generation"},
        "appliedGeneration": {"type": "integer"},
        "observedGeneration": {"type": "integer"},
        "appliedHash": {"type": "string", "description": "hash of the applied rules and sets"},
        "lastSync": {"type": "string", "format": "date-time"},
        "error": {"type": "string"},
        "conditions": _CONDITIONS,
    },
}

# Nothing writes a PeerSet's status: the controller writes specs only (a status
# write per shard would double its writes) and agents only read PeerSets. The
# status subresource stays (removing it would be a breaking CRD change) but
# declares no field, so no column can promise one.
PEER_SET_STATUS: dict[str, Any] = {"type": "object"}


def node_rule_set_crd() -> dict[str, Any]:
    """The NodeRuleSet CRD: cluster-scoped, one per node, named after the node."""
    columns = [
        {"name": "Node", "type": "string", "jsonPath": ".spec.node"},
        {"name": "Policies", "type": "integer", "jsonPath": ".status.policies"},
        {"name": "Cluster-Policies", "type": "integer", "jsonPath": ".status.clusterPolicies"},
        {"name": "Pods", "type": "integer", "jsonPath": ".status.pods"},
        {"name": "Applied", "type": "boolean", "jsonPath": ".status.applied"},
        {"name": "Last-Sync", "type": "date", "jsonPath": ".status.lastSync"},
        {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"},
    ]
    return _crd(
        "NodeRuleSet", "noderulesets", node_rule_set_schema(), columns, NODE_RULE_SET_STATUS
    )


def peer_set_crd() -> dict[str, Any]:
    """The PeerSet CRD: cluster-scoped, shared, content-addressed, sharded.

    Its columns read the spec only (set, shard, shards): no status is written, and a
    member count is not expressible in JSONPath (``.spec.members`` is a list).
    """
    columns = [
        {"name": "Set", "type": "string", "jsonPath": ".spec.setName"},
        {"name": "Shard", "type": "integer", "jsonPath": ".spec.shard"},
        {"name": "Shards", "type": "integer", "jsonPath": ".spec.shards"},
        {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"},
    ]
    return _crd("PeerSet", "peersets", peer_set_schema(), columns, PEER_SET_STATUS)


def render_crds() -> str:
    """stockade.dev's CRDs (NodeRuleSet, PeerSet, IsolationPolicy) as one YAML text,
    as kept in manifests/crds.yaml."""
    import yaml  # noqa: PLC0415 - only this entry point needs it

    header = (
        "# Generated from stockade.ruleset and stockade.crd_isolation by\n"
        "# `python -m stockade.crd`; do not edit.\n"
        "# tests/unit/test_crd.py fails when this file is out of date.\n"
    )
    docs = [node_rule_set_crd(), peer_set_crd(), crd_isolation.isolation_policy_crd()]
    return header + "---\n".join(yaml.safe_dump(d, sort_keys=False) for d in docs)


# The ClusterNetworkPolicy CRD is built in stockade.crd_cnp (from network-policy-api's
# Go types) and kept in its own file, manifests/cnp-crd.yaml (`--cnp` below).


def cluster_network_policy_crd() -> dict[str, Any]:
    """The ClusterNetworkPolicy CRD (policy.networking.k8s.io/v1alpha2): see crd_cnp."""
    return crd_cnp.cluster_network_policy_crd()


def render_cnp_crd() -> str:
    """The ClusterNetworkPolicy CRD as kept in manifests/cnp-crd.yaml (a file of its own)."""
    return crd_cnp.render_cnp_crd()


def main(argv: list[str] | None = None) -> None:
    """``python -m stockade.crd [--cnp]``: print crds.yaml, or with --cnp cnp-crd.yaml."""
    import argparse  # noqa: PLC0415

    parser = argparse.ArgumentParser(prog="python -m stockade.crd")
    parser.add_argument(
        "--cnp",
        action="store_true",
        help="print the ClusterNetworkPolicy CRD (manifests/cnp-crd.yaml) instead",
    )
    args = parser.parse_args(argv)
    print(render_cnp_crd() if args.cnp else render_crds(), end="")


if __name__ == "__main__":
    main()
