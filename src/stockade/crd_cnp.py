"""The ClusterNetworkPolicy CRD, built from the API's Go types (network-policy-api v0.2.0).

stockade enforces ``ClusterNetworkPolicy`` (``policy.networking.k8s.io/v1alpha2``), the
cluster-scoped policy of kubernetes-sigs/network-policy-api. Its schema is defined by
``apis/v1alpha2/clusternetworkpolicy_types.go`` of the v0.2.0 release: every field
below, with its type, bounds, enums, required list and CEL rule, corresponds to one Go
field and its kubebuilder markers (named in the comments), for both release channels
(the standard fields plus the experimental ``nodes`` and ``domainNames`` egress peers).

The upstream bundle's annotations are kept (``policy.networking.k8s.io/bundle-version``
and ``.../channel``), so tools that look for them recognise the CRD, and so is the
``api-approved.kubernetes.io`` annotation: the API server refuses a CRD in a
``*.k8s.io`` group without it.

``python -m stockade.crd --cnp > manifests/cnp-crd.yaml`` writes it (see
:func:`render_cnp_crd`); ``tests/unit/test_crd_cnp.py`` fails when that file is stale.
"""

from __future__ import annotations

from typing import Any

Obj = dict[str, Any]

GROUP = "policy.networking.k8s.io"
VERSION = "v1alpha2"
KIND = "ClusterNetworkPolicy"
PLURAL = "clusternetworkpolicies"
SHORT_NAME = "cnp"
BUNDLE_VERSION = "v0.2.0"
CHANNEL = "experimental"
# The KEP-1111 approval the upstream bundle names (its API review).
API_APPROVED = "https://github.com/kubernetes-sigs/network-policy-api/pull/347"

TIERS = ("Admin", "Baseline")  # type Tier: +kubebuilder:validation:Enum
ACTIONS = ("Accept", "Deny", "Pass")  # ClusterNetworkPolicyRuleAction: Enum
MAX_RULES = 25  # Ingress, Egress: MaxItems=25
MAX_PEERS = 25  # From, To, Protocols, Networks, DomainNames: MaxItems=25
MAX_RULE_NAME = 100  # Name: MaxLength=100
MAX_CIDR = 43  # type CIDR: MaxLength=43 (the longest IPv6 CIDR text)
PRIORITY_RANGE = (0, 1000)  # Priority: Minimum=0, Maximum=1000
PORT_RANGE = (1, 65535)  # Port.Number, PortRange.Start/End: Minimum=1, Maximum=65535

# type DomainName: +kubebuilder:validation:Pattern (as released, `A-z` ranges included).
DOMAIN_NAME_PATTERN = (
    r"^(\*\.)?([a-zA-z0-9]([-a-zA-Z0-9_]*[a-zA-Z0-9])?\.)+"
    r"[a-zA-z0-9]([-a-zA-Z0-9_]*[a-zA-Z0-9])?\.?$"
)

# The XValidation rules, with their messages, as the types declare them.
RULE_PORT_RANGE = {
    "rule": "self.start < self.end",
    "message": "Start port must be less than End port",
}
RULE_CIDR = {"rule": "isCIDR(self)", "message": "Invalid CIDR format provided"}
RULE_NO_NAMED_PORTS = {
    "rule": (
        "!(self.to.exists(peer, has(peer.networks) || has(peer.nodes) || "
        "has(peer.domainNames)) && has(self.protocols) && "
        "self.protocols.exists(protocol, has(protocol.destinationNamedPort)))"
    ),
    "message": (
        "networks/nodes/domainNames peer cannot be set with namedPorts since there "
        "are no namedPorts for networks/nodes/domainNames"
    ),
}

# metav1.Condition's markers (k8s.io/apimachinery/pkg/apis/meta/v1/types.go).
CONDITION_TYPE_PATTERN = (
    r"^([a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*/)?"
    r"(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])$"
)
CONDITION_REASON_PATTERN = r"^[A-Za-z]([A-Za-z0-9_,:]*[A-Za-z0-9_])?$"


# --------------------------------------------------------------------------- building blocks


def _obj(properties: Obj, required: list[str] | None = None, **extra: Any) -> Obj:
    out: Obj = {"type": "object"}
    if required:
        out["required"] = required
    out.update(extra)
    out["properties"] = properties
    return out


def _list(items: Obj, *, min_items: int | None = None, max_items: int | None = None) -> Obj:
    out: Obj = {"type": "array"}
    if min_items is not None:
        out["minItems"] = min_items
    if max_items is not None:
        out["maxItems"] = max_items
    out["items"] = items
    return out


def _one_of_fields(properties: Obj) -> Obj:
    """A struct with ``MinProperties=1`` and ``MaxProperties=1``: exactly one field set."""
    return _obj(properties, minProperties=1, maxProperties=1)


def _int32(minimum: int, maximum: int) -> Obj:
    return {"type": "integer", "format": "int32", "minimum": minimum, "maximum": maximum}


def label_selector() -> Obj:
    """metav1.LabelSelector (``+structType=atomic``): matchLabels and matchExpressions."""
    requirement = _obj(
        {
            "key": {"type": "string"},
            "operator": {"type": "string"},
            "values": {
                "type": "array",
                "items": {"type": "string"},
                "x-kubernetes-list-type": "atomic",
            },
        },
        required=["key", "operator"],
    )
    return {
        "type": "object",
        "x-kubernetes-map-type": "atomic",
        "properties": {
            "matchLabels": {"type": "object", "additionalProperties": {"type": "string"}},
            "matchExpressions": {
                "type": "array",
                "items": requirement,
                "x-kubernetes-list-type": "atomic",
            },
        },
    }


def _namespaced_pod() -> Obj:
    """NamespacedPod: namespaceSelector is optional, podSelector ``+required``."""
    return _obj(
        {"namespaceSelector": label_selector(), "podSelector": label_selector()},
        required=["podSelector"],
    )


def _port() -> Obj:
    """Port (exactly one of number, range) and PortRange (start < end)."""
    port_range = _obj(
        {"start": _int32(*PORT_RANGE), "end": _int32(*PORT_RANGE)},
        required=["start", "end"],
        **{"x-kubernetes-validations": [dict(RULE_PORT_RANGE)]},
    )
    return _one_of_fields({"number": _int32(*PORT_RANGE), "range": port_range})


def _protocols() -> Obj:
    """[]ClusterNetworkPolicyProtocol: one of tcp, udp, sctp, destinationNamedPort."""
    # ClusterNetworkPolicyProtocolTCP/UDP/SCTP: MinProperties=1, an optional port.
    transport = {
        k: _obj({"destinationPort": _port()}, minProperties=1) for k in ("tcp", "udp", "sctp")
    }
    protocol = _one_of_fields({**transport, "destinationNamedPort": {"type": "string"}})
    return _list(protocol, min_items=1, max_items=MAX_PEERS)


def _cidr() -> Obj:
    return {
        "type": "string",
        "maxLength": MAX_CIDR,
        "x-kubernetes-validations": [dict(RULE_CIDR)],
    }


def _set_of(items: Obj) -> Obj:
    """A ``+listType=set`` list of 1 to 25 items."""
    out = _list(items, min_items=1, max_items=MAX_PEERS)
    out["x-kubernetes-list-type"] = "set"
    return out


def _ingress_peer() -> Obj:
    """ClusterNetworkPolicyIngressPeer: exactly one of namespaces, pods."""
    return _one_of_fields({"namespaces": label_selector(), "pods": _namespaced_pod()})


def _egress_peer() -> Obj:
    """ClusterNetworkPolicyEgressPeer: exactly one of its five peers (two experimental)."""
    return _one_of_fields(
        {
            "namespaces": label_selector(),
            "pods": _namespaced_pod(),
            "nodes": label_selector(),  # <network-policy-api:experimental>
            "networks": _set_of(_cidr()),
            # <network-policy-api:experimental>
            "domainNames": _set_of({"type": "string", "pattern": DOMAIN_NAME_PATTERN}),
        }
    )


def _rule(peers_field: str, peer: Obj, validations: list[Obj] | None = None) -> Obj:
    """ClusterNetworkPolicyIngressRule / EgressRule: name, action, from|to, protocols."""
    extra: Obj = {}
    if validations:
        extra["x-kubernetes-validations"] = validations
    return _obj(
        {
            "name": {"type": "string", "maxLength": MAX_RULE_NAME},
            "action": {"type": "string", "enum": list(ACTIONS)},
            peers_field: _list(peer, min_items=1, max_items=MAX_PEERS),
            "protocols": _protocols(),
        },
        required=["action", peers_field],
        **extra,
    )


def spec_schema() -> Obj:
    """ClusterNetworkPolicySpec."""
    return _obj(
        {
            "tier": {"type": "string", "enum": list(TIERS)},
            "priority": _int32(*PRIORITY_RANGE),
            "subject": _one_of_fields({"namespaces": label_selector(), "pods": _namespaced_pod()}),
            "ingress": _list(_rule("from", _ingress_peer()), max_items=MAX_RULES),
            "egress": _list(
                # <network-policy-api:experimental:validation>
                _rule("to", _egress_peer(), [dict(RULE_NO_NAMED_PORTS)]),
                max_items=MAX_RULES,
            ),
        },
        required=["tier", "priority", "subject"],
    )


def conditions_schema() -> Obj:
    """[]metav1.Condition, ``+listType=map`` keyed by ``type``."""
    condition = _obj(
        {
            "type": {"type": "string", "maxLength": 316, "pattern": CONDITION_TYPE_PATTERN},
            "status": {"type": "string", "enum": ["True", "False", "Unknown"]},
            "observedGeneration": {"type": "integer", "format": "int64", "minimum": 0},
            "lastTransitionTime": {"type": "string", "format": "date-time"},
            "reason": {
                "type": "string",
                "minLength": 1,
                "maxLength": 1024,
                "pattern": CONDITION_REASON_PATTERN,
            },
            "message": {"type": "string", "maxLength": 32768},
        },
        required=["type", "status", "lastTransitionTime", "reason", "message"],
    )
    return {
        "type": "array",
        "x-kubernetes-list-type": "map",
        "x-kubernetes-list-map-keys": ["type"],
        "items": condition,
    }


def status_schema() -> Obj:
    """ClusterNetworkPolicyStatus: ``conditions`` has no omitempty, so it is required."""
    return _obj({"conditions": conditions_schema()}, required=["conditions"])


PRINTER_COLUMNS: list[Obj] = [
    # +kubebuilder:printcolumn markers; Priority is declared type=string upstream.
    {"name": "Tier", "type": "string", "jsonPath": ".spec.tier"},
    {"name": "Priority", "type": "string", "jsonPath": ".spec.priority"},
    {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"},
]


def cluster_network_policy_crd() -> Obj:
    """The ClusterNetworkPolicy CRD: cluster-scoped, short name cnp, status subresource."""
    root = _obj(
        {
            "apiVersion": {"type": "string"},
            "kind": {"type": "string"},
            "metadata": {"type": "object"},
            "spec": spec_schema(),
            "status": status_schema(),
        },
        # metadata and spec have no omitempty; status is +optional.
        required=["metadata", "spec"],
    )
    root["description"] = (
        f"{KIND} ({GROUP}/{VERSION}, network-policy-api {BUNDLE_VERSION}, "
        f"{CHANNEL} channel): a cluster-wide network policy, enforced by stockade."
    )
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {
            "name": f"{PLURAL}.{GROUP}",
            "annotations": {
                "api-approved.kubernetes.io": API_APPROVED,
                f"{GROUP}/bundle-version": BUNDLE_VERSION,
                f"{GROUP}/channel": CHANNEL,
            },
        },
        "spec": {
            "group": GROUP,
            "scope": "Cluster",
            "names": {
                "kind": KIND,
                "listKind": f"{KIND}List",
                "plural": PLURAL,
                "singular": KIND.lower(),
                "shortNames": [SHORT_NAME],
            },
            "versions": [
                {
                    "name": VERSION,
                    "served": True,
                    "storage": True,
                    "subresources": {"status": {}},
                    "additionalPrinterColumns": [dict(c) for c in PRINTER_COLUMNS],
                    "schema": {"openAPIV3Schema": root},
                }
            ],
        },
    }


def render_cnp_crd() -> str:
    """The CRD as YAML text, as kept in manifests/cnp-crd.yaml."""
    import yaml  # noqa: PLC0415 - only this entry point needs it

    header = (
        "# Generated from stockade.crd_cnp by `python -m stockade.crd --cnp`; do not edit.\n"
        "# The ClusterNetworkPolicy CRD of network-policy-api v0.2.0 (experimental\n"
        "# channel), built from its Go types. tests/unit/test_crd_cnp.py fails when\n"
        "# this file is out of date. A cluster that already has the upstream CRD can\n"
        "# leave this one out: see manifests/without-cnp-crd/ and docs/deploy.md.\n"
    )
    return header + yaml.safe_dump(cluster_network_policy_crd(), sort_keys=False)
