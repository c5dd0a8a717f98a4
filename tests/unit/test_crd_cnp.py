"""The ClusterNetworkPolicy CRD: structural, and exactly network-policy-api v0.2.0's types.

The expectations below are written by hand from ``apis/v1alpha2/
clusternetworkpolicy_types.go`` of the v0.2.0 release (both channels): the field tree
(with what is required), every bound, enum, pattern and list type (from the
kubebuilder markers), the CEL rules with their messages, the printer columns. The
generator (``stockade.crd_cnp``) is compared with them, not with itself.
"""

from __future__ import annotations

import copy
import importlib
import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from stockade import crd as crd_module
from stockade.crd_cnp import cluster_network_policy_crd, render_cnp_crd
from tests.unit.test_manifests import _json_schema

ROOT = Path(__file__).resolve().parents[2]
MANIFESTS = ROOT / "manifests"
CNP_FILE = MANIFESTS / "cnp-crd.yaml"
COMPONENT = MANIFESTS / "without-cnp-crd"
CRD_NAME = "clusternetworkpolicies.policy.networking.k8s.io"

Obj = dict[str, Any]


def _version(crd: Obj) -> Obj:
    (version,) = crd["spec"]["versions"]
    return version  # type: ignore[no-any-return]


def _root(crd: Obj) -> Obj:
    return _version(crd)["schema"]["openAPIV3Schema"]  # type: ignore[no-any-return]


CRD = cluster_network_policy_crd()
ROOT_SCHEMA = _root(CRD)

# --------------------------------------------------------------------------- the file


def test_manifest_is_up_to_date() -> None:
    assert CNP_FILE.read_text() == render_cnp_crd(), (
        "manifests/cnp-crd.yaml is stale: run "
        "`python -m stockade.crd --cnp > manifests/cnp-crd.yaml`"
    )
    assert yaml.safe_load(CNP_FILE.read_text()) == CRD


def test_crd_module_renders_it_separately(capsys: pytest.CaptureFixture[str]) -> None:
    assert crd_module.render_cnp_crd() == render_cnp_crd()
    assert crd_module.cluster_network_policy_crd() == CRD
    assert "ClusterNetworkPolicy" not in crd_module.render_crds()
    crd_module.main(["--cnp"])
    assert capsys.readouterr().out == render_cnp_crd()
    crd_module.main([])
    assert capsys.readouterr().out == crd_module.render_crds()


# --------------------------------------------------------------------------- structural

# The OpenAPI v3 keywords a CRD schema may carry (apiextensions/v1 JSONSchemaProps);
# a misspelt keyword would be refused by the API server or silently ignored.
_KEYWORDS = {
    "type",
    "format",
    "description",
    "properties",
    "required",
    "items",
    "additionalProperties",
    "enum",
    "minimum",
    "maximum",
    "minLength",
    "maxLength",
    "pattern",
    "minItems",
    "maxItems",
    "minProperties",
    "maxProperties",
    "nullable",
    "x-kubernetes-validations",
    "x-kubernetes-list-type",
    "x-kubernetes-list-map-keys",
    "x-kubernetes-map-type",
}
_SCALARS: dict[str, type | tuple[type, ...]] = {
    "string": str,
    "integer": int,
    "boolean": bool,
    "number": (int, float),
}
_FORMATS = {"integer": {"int32", "int64"}, "string": {"date-time"}}


def _nodes(schema: Obj, path: str = "") -> list[tuple[str, Obj]]:
    """Every schema node with its path (``spec.egress[].to[].networks[]``)."""
    out = [(path, schema)]
    for name, child in (schema.get("properties") or {}).items():
        out += _nodes(child, f"{path}.{name}" if path else name)
    if isinstance(schema.get("items"), dict):
        out += _nodes(schema["items"], f"{path}[]")
    if isinstance(schema.get("additionalProperties"), dict):
        out += _nodes(schema["additionalProperties"], f"{path}{{}}")
    return out


def structural_problems(schema: Obj) -> list[str]:
    """What makes a schema non-structural (or an invalid CRD schema), per node."""
    problems: list[str] = []
    for path, node in _nodes(schema):
        where = path or "<root>"
        problems += [f"{where}: unknown keyword {k}" for k in set(node) - _KEYWORDS]
        kind = node.get("type")
        if kind not in ("object", "array", *_SCALARS):
            problems.append(f"{where}: no (valid) type: {kind!r}")
            continue
        if "properties" in node and "additionalProperties" in node:
            problems.append(f"{where}: properties and additionalProperties")
        if ("properties" in node or "additionalProperties" in node) and kind != "object":
            problems.append(f"{where}: properties on a {kind}")
        if kind == "array" and not isinstance(node.get("items"), dict):
            problems.append(f"{where}: an array needs one items schema")
        if kind != "array" and "items" in node:
            problems.append(f"{where}: items on a {kind}")
        for name in node.get("required", []):
            if name not in node.get("properties", {}):
                problems.append(f"{where}: required {name} is not a property")
        for value in node.get("enum", []):
            if not isinstance(value, _SCALARS.get(kind, ())) or isinstance(value, bool):
                problems.append(f"{where}: enum value {value!r} is not a {kind}")
        if "format" in node and node["format"] not in _FORMATS.get(kind, set()):
            problems.append(f"{where}: format {node['format']} on a {kind}")
        if "pattern" in node:
            re.compile(node["pattern"])
        list_type = node.get("x-kubernetes-list-type")
        items = node.get("items") or {}
        if list_type == "set" and items.get("type") not in _SCALARS:
            problems.append(f"{where}: a set of non-scalars")
        if list_type == "map":
            keys = node.get("x-kubernetes-list-map-keys") or []
            if not keys or not set(keys) <= set(items.get("required", [])):
                problems.append(f"{where}: map keys {keys} must be required item fields")
        if "x-kubernetes-map-type" in node and kind != "object":
            problems.append(f"{where}: map-type on a {kind}")
        for rule in node.get("x-kubernetes-validations", []):
            if set(rule) != {"rule", "message"}:
                problems.append(f"{where}: validation {rule}")
    return problems


def test_the_schema_is_structural() -> None:
    assert structural_problems(ROOT_SCHEMA) == []
    # The root of a CRD: metadata only as a bare object, apiVersion and kind strings.
    props = ROOT_SCHEMA["properties"]
    assert props["metadata"] == {"type": "object"}
    assert props["apiVersion"] == props["kind"] == {"type": "string"}


@pytest.mark.parametrize(
    ("path", "change"),
    [
        ("spec.tier", {"type": None}),
        ("spec.ingress", {"maxitems": 25}),
        ("spec", {"required": ["tier", "priority", "subject", "tiers"]}),
        ("spec.priority", {"enum": ["1"]}),
        ("status.conditions", {"x-kubernetes-list-map-keys": ["observedGeneration"]}),
        ("spec.egress[].to[].networks", {"items": {"type": "object"}}),
    ],
)
def test_the_structural_check_catches_mistakes(path: str, change: Obj) -> None:
    broken = copy.deepcopy(ROOT_SCHEMA)
    dict(_nodes(broken))[path].update(change)
    assert structural_problems(broken)


# --------------------------------------------------------------------------- the field tree

# Notation: a dict is an object (its properties; "name!" is required), [x] an array of
# x, {"*": x} a map of x (additionalProperties), a string a scalar type.
SELECTOR = {  # metav1.LabelSelector
    "matchLabels": {"*": "string"},
    "matchExpressions": [{"key!": "string", "operator!": "string", "values": ["string"]}],
}
NAMESPACED_POD = {"namespaceSelector": SELECTOR, "podSelector!": SELECTOR}
PORT = {"number": "integer", "range": {"start!": "integer", "end!": "integer"}}
PROTOCOL = {
    "tcp": {"destinationPort": PORT},
    "udp": {"destinationPort": PORT},
    "sctp": {"destinationPort": PORT},
    "destinationNamedPort": "string",
}
INGRESS_PEER = {"namespaces": SELECTOR, "pods": NAMESPACED_POD}
EGRESS_PEER = {
    "namespaces": SELECTOR,
    "pods": NAMESPACED_POD,
    "nodes": SELECTOR,  # experimental
    "networks": ["string"],
    "domainNames": ["string"],  # experimental
}
INGRESS_RULE = {
    "name": "string",
    "action!": "string",
    "from!": [INGRESS_PEER],
    "protocols": [PROTOCOL],
}
EGRESS_RULE = {"name": "string", "action!": "string", "to!": [EGRESS_PEER], "protocols": [PROTOCOL]}
SPEC = {
    "tier!": "string",
    "priority!": "integer",
    "subject!": {"namespaces": SELECTOR, "pods": NAMESPACED_POD},
    "ingress": [INGRESS_RULE],
    "egress": [EGRESS_RULE],
}
CONDITION = {  # metav1.Condition
    "type!": "string",
    "status!": "string",
    "observedGeneration": "integer",
    "lastTransitionTime!": "string",
    "reason!": "string",
    "message!": "string",
}
FIELDS = {
    "apiVersion": "string",
    "kind": "string",
    "metadata!": "object",
    "spec!": SPEC,
    "status": {"conditions!": [CONDITION]},
}


def field_tree(schema: Obj) -> Any:
    """A schema in the notation above."""
    kind = schema["type"]
    if kind == "array":
        return [field_tree(schema["items"])]
    if kind == "object" and "additionalProperties" in schema:
        return {"*": field_tree(schema["additionalProperties"])}
    if kind == "object" and "properties" in schema:
        required = set(schema.get("required", []))
        return {
            (f"{name}!" if name in required else name): field_tree(child)
            for name, child in schema["properties"].items()
        }
    return kind


def test_fields_are_exactly_the_go_types() -> None:
    assert field_tree(ROOT_SCHEMA) == FIELDS


# --------------------------------------------------------------------------- bounds and rules

ONE_FIELD = {"minProperties": 1, "maxProperties": 1}
ATOMIC = {"x-kubernetes-map-type": "atomic"}
PORT_NUMBER = {"format": "int32", "minimum": 1, "maximum": 65535}
PEERS = {"minItems": 1, "maxItems": 25}
DOMAIN = (  # as released: note the `A-z` ranges
    r"^(\*\.)?([a-zA-z0-9]([-a-zA-Z0-9_]*[a-zA-Z0-9])?\.)+"
    r"[a-zA-z0-9]([-a-zA-Z0-9_]*[a-zA-Z0-9])?\.?$"
)
NO_NAMED_PORTS = (
    "!(self.to.exists(peer, has(peer.networks) || has(peer.nodes) || has(peer.domainNames))"
    " && has(self.protocols) && self.protocols.exists(protocol,"
    " has(protocol.destinationNamedPort)))"
)


def _selector_bounds(at: str) -> dict[str, Obj]:
    return {
        at: ATOMIC,
        f"{at}.matchExpressions": {"x-kubernetes-list-type": "atomic"},
        f"{at}.matchExpressions[].values": {"x-kubernetes-list-type": "atomic"},
    }


def _pod_bounds(at: str) -> dict[str, Obj]:
    return {**_selector_bounds(f"{at}.namespaceSelector"), **_selector_bounds(f"{at}.podSelector")}


def _protocol_bounds(at: str) -> dict[str, Obj]:
    out: dict[str, Obj] = {at: PEERS, f"{at}[]": ONE_FIELD}
    for proto in ("tcp", "udp", "sctp"):
        port = f"{at}[].{proto}.destinationPort"
        out[f"{at}[].{proto}"] = {"minProperties": 1}
        out[port] = ONE_FIELD
        out[f"{port}.number"] = PORT_NUMBER
        out[f"{port}.range"] = {
            "x-kubernetes-validations": [
                {
                    "rule": "self.start < self.end",
                    "message": "Start port must be less than End port",
                }
            ]
        }
        out[f"{port}.range.start"] = PORT_NUMBER
        out[f"{port}.range.end"] = PORT_NUMBER
    return out


# Every constraint of the schema, by path, from the kubebuilder markers.
BOUNDS: dict[str, Obj] = {
    "spec.tier": {"enum": ["Admin", "Baseline"]},
    "spec.priority": {"format": "int32", "minimum": 0, "maximum": 1000},
    "spec.subject": ONE_FIELD,
    **_selector_bounds("spec.subject.namespaces"),
    **_pod_bounds("spec.subject.pods"),
    "spec.ingress": {"maxItems": 25},
    "spec.ingress[].name": {"maxLength": 100},
    "spec.ingress[].action": {"enum": ["Accept", "Deny", "Pass"]},
    "spec.ingress[].from": PEERS,
    "spec.ingress[].from[]": ONE_FIELD,
    **_selector_bounds("spec.ingress[].from[].namespaces"),
    **_pod_bounds("spec.ingress[].from[].pods"),
    **_protocol_bounds("spec.ingress[].protocols"),
    "spec.egress": {"maxItems": 25},
    "spec.egress[]": {
        "x-kubernetes-validations": [
            {
                "rule": NO_NAMED_PORTS,
                "message": "networks/nodes/domainNames peer cannot be set with namedPorts"
                " since there are no namedPorts for networks/nodes/domainNames",
            }
        ]
    },
    "spec.egress[].name": {"maxLength": 100},
    "spec.egress[].action": {"enum": ["Accept", "Deny", "Pass"]},
    "spec.egress[].to": PEERS,
    "spec.egress[].to[]": ONE_FIELD,
    **_selector_bounds("spec.egress[].to[].namespaces"),
    **_pod_bounds("spec.egress[].to[].pods"),
    **_selector_bounds("spec.egress[].to[].nodes"),
    "spec.egress[].to[].networks": {**PEERS, "x-kubernetes-list-type": "set"},
    "spec.egress[].to[].networks[]": {
        "maxLength": 43,
        "x-kubernetes-validations": [
            {"rule": "isCIDR(self)", "message": "Invalid CIDR format provided"}
        ],
    },
    "spec.egress[].to[].domainNames": {**PEERS, "x-kubernetes-list-type": "set"},
    "spec.egress[].to[].domainNames[]": {"pattern": DOMAIN},
    **_protocol_bounds("spec.egress[].protocols"),
    # metav1.Condition, +listType=map keyed by type.
    "status.conditions": {
        "x-kubernetes-list-type": "map",
        "x-kubernetes-list-map-keys": ["type"],
    },
    "status.conditions[].type": {
        "maxLength": 316,
        "pattern": r"^([a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*/)?"
        r"(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])$",
    },
    "status.conditions[].status": {"enum": ["True", "False", "Unknown"]},
    "status.conditions[].observedGeneration": {"format": "int64", "minimum": 0},
    "status.conditions[].lastTransitionTime": {"format": "date-time"},
    "status.conditions[].reason": {
        "minLength": 1,
        "maxLength": 1024,
        "pattern": r"^[A-Za-z]([A-Za-z0-9_,:]*[A-Za-z0-9_])?$",
    },
    "status.conditions[].message": {"maxLength": 32768},
}

_STRUCTURE = {"type", "properties", "items", "required", "additionalProperties", "description"}


def constraints(schema: Obj) -> dict[str, Obj]:
    """Every node's constraints (what is not structure), by path."""
    out: dict[str, Obj] = {}
    for path, node in _nodes(schema):
        found = {k: v for k, v in node.items() if k not in _STRUCTURE}
        if found:
            out[path] = found
    return out


def test_bounds_enums_and_rules_are_exactly_the_markers() -> None:
    got = constraints(ROOT_SCHEMA)
    assert set(got) == set(BOUNDS), (
        f"unexpected: {sorted(set(got) - set(BOUNDS))}; missing: {sorted(set(BOUNDS) - set(got))}"
    )
    for path, want in BOUNDS.items():
        assert got[path] == want, path


_CEL_FIELD = re.compile(r"\b(self|peer|protocol)\.(\w+)")


def test_the_cel_rules_name_fields_of_their_nodes() -> None:
    """Each rule's ``self.x`` (and ``peer.x``, ``protocol.x``) is a field where it runs."""
    scopes = {
        "spec.egress[]": {"peer": "to", "protocol": "protocols"},
    }
    seen = 0
    for path, node in _nodes(ROOT_SCHEMA):
        for validation in node.get("x-kubernetes-validations", []):
            seen += 1
            for var, field in _CEL_FIELD.findall(validation["rule"]):
                if var == "self":
                    assert field in node["properties"], (path, field)
                else:
                    item = node["properties"][scopes[path][var]]["items"]
                    assert field in item["properties"], (path, var, field)
    assert seen == 8  # PortRange (6 places: tcp, udp, sctp x ingress, egress), CIDR, egress


def test_every_port_range_and_cidr_carries_its_rule() -> None:
    ranges = [p for p, _ in _nodes(ROOT_SCHEMA) if p.endswith("destinationPort.range")]
    assert len(ranges) == 6  # tcp, udp, sctp x ingress, egress
    cidrs = [p for p, _ in _nodes(ROOT_SCHEMA) if p.endswith("networks[]")]
    assert cidrs == ["spec.egress[].to[].networks[]"]


# --------------------------------------------------------------------------- names, columns


def test_names_scope_versions_and_annotations() -> None:
    assert CRD["apiVersion"] == "apiextensions.k8s.io/v1"
    assert CRD["kind"] == "CustomResourceDefinition"
    assert CRD["metadata"]["name"] == CRD_NAME
    assert CRD["metadata"]["annotations"] == {
        # The API server refuses a *.k8s.io CRD without an approval annotation.
        "api-approved.kubernetes.io": "https://github.com/kubernetes-sigs/network-policy-api/pull/347",
        "policy.networking.k8s.io/bundle-version": "v0.2.0",
        "policy.networking.k8s.io/channel": "experimental",
    }
    spec = CRD["spec"]
    assert spec["group"] == "policy.networking.k8s.io"
    assert spec["scope"] == "Cluster"
    assert spec["names"] == {
        "kind": "ClusterNetworkPolicy",
        "listKind": "ClusterNetworkPolicyList",
        "plural": "clusternetworkpolicies",
        "singular": "clusternetworkpolicy",
        "shortNames": ["cnp"],
    }
    version = _version(CRD)
    assert (version["name"], version["served"], version["storage"]) == ("v1alpha2", True, True)
    assert version["subresources"] == {"status": {}}


def test_printer_columns() -> None:
    assert _version(CRD)["additionalPrinterColumns"] == [
        {"name": "Tier", "type": "string", "jsonPath": ".spec.tier"},
        {"name": "Priority", "type": "string", "jsonPath": ".spec.priority"},
        {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"},
    ]


# --------------------------------------------------------------------------- objects

SEL = {"matchLabels": {"team": "a"}}


def cnp(spec: Obj, name: str = "p") -> Obj:
    return {
        "apiVersion": "policy.networking.k8s.io/v1alpha2",
        "kind": "ClusterNetworkPolicy",
        "metadata": {"name": name},
        "spec": spec,
    }


VALID: list[Obj] = [
    {"tier": "Admin", "priority": 0, "subject": {"namespaces": {}}},
    {
        "tier": "Admin",
        "priority": 10,
        "subject": {"pods": {"podSelector": SEL}},
        "ingress": [
            {
                "name": "from-monitoring",
                "action": "Accept",
                "from": [
                    {"namespaces": {"matchExpressions": [{"key": "k", "operator": "Exists"}]}},
                    {"pods": {"namespaceSelector": SEL, "podSelector": {}}},
                ],
                "protocols": [
                    {"tcp": {"destinationPort": {"number": 8080}}},
                    {"udp": {"destinationPort": {"range": {"start": 1000, "end": 2000}}}},
                    {"destinationNamedPort": "metrics"},
                ],
            }
        ],
    },
    {
        "tier": "Baseline",
        "priority": 1000,
        "subject": {"namespaces": SEL},
        "egress": [
            {"action": "Accept", "to": [{"domainNames": ["*.kubernetes.io", "example.com"]}]},
            {
                "action": "Pass",
                "to": [{"nodes": {}}],
                "protocols": [{"sctp": {"destinationPort": {"number": 9}}}],
            },
            {"action": "Deny", "to": [{"networks": ["10.0.0.0/8", "fd00::/8"]}]},
        ],
    },
]


def _invalid() -> list[tuple[str, Obj]]:
    base = {"tier": "Admin", "priority": 1, "subject": {"namespaces": {}}}

    def with_(**changes: Any) -> Obj:
        return {**copy.deepcopy(base), **changes}

    def egress(**rule: Any) -> Obj:
        return with_(egress=[{"action": "Deny", "to": [{"namespaces": {}}], **rule}])

    return [
        ("tier", with_(tier="Developer")),
        ("priority", with_(priority=1001)),
        ("negative priority", with_(priority=-1)),
        ("no subject", {"tier": "Admin", "priority": 1}),
        ("empty subject", with_(subject={})),
        ("two subjects", with_(subject={"namespaces": {}, "pods": {"podSelector": {}}})),
        ("pods without podSelector", with_(subject={"pods": {"namespaceSelector": {}}})),
        ("unknown field", with_(tiers="Admin")),
        ("action", egress(action="Allow")),
        ("long name", egress(name="x" * 101)),
        ("no peers", with_(egress=[{"action": "Deny", "to": []}])),
        ("no action", with_(egress=[{"to": [{"namespaces": {}}]}])),
        ("two fields in a peer", egress(to=[{"namespaces": {}, "nodes": {}}])),
        ("26 networks", egress(to=[{"networks": [f"10.0.{i}.0/24" for i in range(26)]}])),
        ("long cidr", egress(to=[{"networks": ["1" * 44]}])),
        ("domain", egress(to=[{"domainNames": ["foo.*.com"]}])),
        ("nodes in ingress", with_(ingress=[{"action": "Deny", "from": [{"nodes": {}}]}])),
        ("26 rules", with_(ingress=[{"action": "Deny", "from": [{"namespaces": {}}]}] * 26)),
        ("port 0", egress(protocols=[{"tcp": {"destinationPort": {"number": 0}}}])),
        ("port 65536", egress(protocols=[{"udp": {"destinationPort": {"number": 65536}}}])),
        ("empty protocol", egress(protocols=[{}])),
        ("sctp without port", egress(protocols=[{"sctp": {}}])),
        (
            "tcp and udp",
            egress(
                protocols=[
                    {
                        "tcp": {"destinationPort": {"number": 1}},
                        "udp": {"destinationPort": {"number": 1}},
                    }
                ]
            ),
        ),
        (
            "number and range",
            egress(
                protocols=[
                    {"tcp": {"destinationPort": {"number": 1, "range": {"start": 1, "end": 2}}}}
                ]
            ),
        ),
        (
            "range without end",
            egress(protocols=[{"tcp": {"destinationPort": {"range": {"start": 1}}}}]),
        ),
        ("empty protocols", egress(protocols=[])),
    ]


def crd_problems(obj: Obj) -> list[str]:
    """What the CRD's OpenAPI schema (not its CEL rules) says about ``obj``."""
    jsonschema = importlib.import_module("jsonschema")  # comes with kubernetes-validate

    validator = jsonschema.Draft202012Validator(_json_schema(ROOT_SCHEMA))
    return [
        f"{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in validator.iter_errors(obj)
    ]


CONDITION_SAMPLE = {
    "type": "Accepted",
    "status": "True",
    "reason": "Enforced",
    "message": "",
    "lastTransitionTime": "2025-01-01T00:00:00Z",
    "observedGeneration": 1,
}


@pytest.mark.parametrize("spec", VALID, ids=["minimal", "admin-ingress", "baseline-egress"])
def test_valid_policies_conform(spec: Obj) -> None:
    assert crd_problems(cnp(spec)) == []
    assert crd_problems({**cnp(spec), "status": {"conditions": [CONDITION_SAMPLE]}}) == []


@pytest.mark.parametrize(("why", "spec"), _invalid(), ids=[w for w, _ in _invalid()])
def test_invalid_policies_are_refused(why: str, spec: Obj) -> None:
    problems = crd_problems(cnp(spec))
    assert len(problems) == 1, (why, problems)  # that mistake, the rest valid


@pytest.mark.parametrize(
    "status",
    [
        {},
        {"conditions": [{**CONDITION_SAMPLE, "status": "Maybe"}]},
        {"conditions": [{**CONDITION_SAMPLE, "reason": ""}]},
        {"conditions": [{k: v for k, v in CONDITION_SAMPLE.items() if k != "message"}]},
    ],
    ids=["no-conditions", "status-value", "empty-reason", "no-message"],
)
def test_invalid_status_is_refused(status: Obj) -> None:
    assert crd_problems({**cnp(VALID[0]), "status": status})


def test_examples_of_the_cel_rules_as_written() -> None:
    """No CEL evaluator here: check what each rule refuses with its meaning, in Python."""

    def egress_rule_ok(rule: Obj) -> bool:  # the egress rule, transcribed
        no_ports = ("networks", "nodes", "domainNames")
        special = any(any(k in peer for k in no_ports) for peer in rule["to"])
        named = any("destinationNamedPort" in p for p in rule.get("protocols", []))
        return not (special and named)

    named = [{"destinationNamedPort": "http"}]
    assert egress_rule_ok({"to": [{"pods": {"podSelector": {}}}], "protocols": named})
    assert not egress_rule_ok({"to": [{"networks": ["10.0.0.0/8"]}], "protocols": named})
    assert egress_rule_ok({"to": [{"networks": ["10.0.0.0/8"]}]})
    # The rule text is what was transcribed: the same peers and fields.
    rule = BOUNDS["spec.egress[]"]["x-kubernetes-validations"][0]["rule"]
    assert re.findall(r"has\(peer\.(\w+)\)", rule) == ["networks", "nodes", "domainNames"]
    assert re.findall(r"has\(protocol\.(\w+)\)", rule) == ["destinationNamedPort"]


# --------------------------------------------------------------------------- the install

OVERLAY_HEADER = "kustomization.yaml of an overlay keeping the upstream ClusterNetworkPolicy CRD"


def _render(folder: Path) -> list[Obj]:
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        pytest.skip("kubectl is not installed: the kustomization is not rendered")
    out = subprocess.run(
        [kubectl, "kustomize", str(folder)], capture_output=True, text=True, check=True
    ).stdout
    return [d for d in yaml.safe_load_all(out) if d]


def _idents(docs: list[Obj]) -> list[str]:
    return sorted(f"{d['kind']} {d['metadata']['name']}" for d in docs)


def test_the_install_ships_it_now_that_stockade_enforces_it() -> None:
    kust = yaml.safe_load((MANIFESTS / "kustomization.yaml").read_text())
    assert "cnp-crd.yaml" in kust["resources"]
    assert kust["resources"].index("cnp-crd.yaml") < kust["resources"].index("controller.yaml")
    shipped = [d for d in _render(MANIFESTS) if d["metadata"]["name"] == CRD_NAME]
    assert len(shipped) == 1
    shipped[0]["metadata"].pop("labels", None)
    assert shipped[0] == CRD


def test_the_documented_overlay_keeps_an_upstream_crd(tmp_path: Path) -> None:
    """docs/deploy.md's overlay with the without-cnp-crd component: everything but our
    ClusterNetworkPolicy CRD, unchanged."""
    component = yaml.safe_load((COMPONENT / "kustomization.yaml").read_text())
    assert component["kind"] == "Component"
    text = (ROOT / "docs" / "deploy.md").read_text()
    block = re.search(rf"```yaml\n(# {re.escape(OVERLAY_HEADER)}\n.*?)```", text, re.S)
    assert block is not None, "the overlay keeping the upstream CRD is gone from docs/deploy.md"
    overlay = yaml.safe_load(block.group(1))
    assert len(overlay["resources"]) == len(overlay["components"]) == 1
    # The documented layout names the checkout ../stockade; point it at this one.
    overlay["resources"] = [os.path.relpath(MANIFESTS, tmp_path)]
    overlay["components"] = [os.path.relpath(COMPONENT, tmp_path)]
    (tmp_path / "kustomization.yaml").write_text(yaml.safe_dump(overlay))
    full = _render(MANIFESTS)
    kept = _render(tmp_path)
    assert CRD_NAME not in {d["metadata"]["name"] for d in kept}
    assert _idents(kept) == sorted(
        i for i in _idents(full) if i != f"CustomResourceDefinition {CRD_NAME}"
    )
    assert sorted(kept, key=str) == sorted(
        (d for d in full if d["metadata"]["name"] != CRD_NAME), key=str
    )


def test_the_api_client_resource_is_the_crds() -> None:
    """stockade.kube's ClusterNetworkPolicy resource names what the CRD serves."""
    from stockade import crd_cnp  # noqa: PLC0415
    from stockade.kube import CLUSTER_NETWORK_POLICIES  # noqa: PLC0415

    r = CLUSTER_NETWORK_POLICIES
    assert (r.group, r.version, r.plural, r.kind, r.namespaced) == (
        crd_cnp.GROUP,
        crd_cnp.VERSION,
        crd_cnp.PLURAL,
        crd_cnp.KIND,
        False,
    )
