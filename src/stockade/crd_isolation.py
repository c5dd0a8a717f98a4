"""The IsolationPolicy CRD (``stockade.dev/v1alpha1``): the ClusterNetworkPolicy schema
plus the sameness peers.

Built from :mod:`stockade.crd_cnp`'s pieces, so the limits, enums and CEL rules of the
ClusterNetworkPolicy spec are the same; the ``namespaces`` peer also takes
``sameAs``/``match`` (``Self``) or ``sameLabels``, exclusive with each other and with
the selector fields, and the ``pods`` peer takes ``sameLabels`` (then ``podSelector``
may be left out). The API server then refuses what
:func:`stockade.isolation.parse_isolation_policy` refuses. It is kept in
``manifests/crds.yaml`` with stockade's other CRDs (``python -m stockade.crd``).
"""

from __future__ import annotations

from typing import Any

from stockade import crd_cnp
from stockade.crd_cnp import (
    MAX_RULES,
    PRINTER_COLUMNS,
    RULE_NO_NAMED_PORTS,
    _egress_peer,
    _int32,
    _list,
    _obj,
    _one_of_fields,
    _rule,
    conditions_schema,
    label_selector,
)
from stockade.isolation import GROUP, KIND, MAX_SAME_LABELS, PLURAL, SELF, SHORT_NAME, VERSION

Obj = dict[str, Any]

RULE_NAMESPACES_EXCLUSIVE = {
    "rule": (
        "[has(self.sameAs), has(self.match), has(self.sameLabels), "
        "has(self.matchLabels) || has(self.matchExpressions)].filter(x, x).size() <= 1"
    ),
    "message": "sameAs, match, sameLabels and matchLabels/matchExpressions are exclusive",
}
RULE_PODS_SELECTOR = {
    "rule": "has(self.sameLabels) || has(self.podSelector)",
    "message": "podSelector is required without sameLabels",
}


def _same_labels() -> Obj:
    """``sameLabels``: a set of 1 to 25 label keys (validated as keys by stockade)."""
    return {
        "type": "array",
        "minItems": 1,
        "maxItems": MAX_SAME_LABELS,
        "x-kubernetes-list-type": "set",
        "items": {"type": "string", "maxLength": 317},
    }


def namespaces_peer() -> Obj:
    """A label selector, or exactly one of sameAs / match (``Self``) / sameLabels."""
    selector = label_selector()
    props = dict(selector["properties"])
    props["sameAs"] = {"type": "string", "enum": [SELF]}
    props["match"] = {"type": "string", "enum": [SELF]}
    props["sameLabels"] = _same_labels()
    return {
        "type": "object",
        "x-kubernetes-map-type": "atomic",
        "x-kubernetes-validations": [dict(RULE_NAMESPACES_EXCLUSIVE)],
        "properties": props,
    }


def pods_peer() -> Obj:
    """NamespacedPod plus ``sameLabels``; podSelector is required only without it."""
    out = _obj(
        {
            "namespaceSelector": label_selector(),
            "podSelector": label_selector(),
            "sameLabels": _same_labels(),
        }
    )
    out["x-kubernetes-validations"] = [dict(RULE_PODS_SELECTOR)]
    return out


def spec_schema() -> Obj:
    """IsolationPolicySpec: ClusterNetworkPolicySpec with the sameness peers."""
    ingress_peer = _one_of_fields({"namespaces": namespaces_peer(), "pods": pods_peer()})
    egress_peer = _egress_peer()
    egress_peer["properties"]["namespaces"] = namespaces_peer()
    egress_peer["properties"]["pods"] = pods_peer()
    return _obj(
        {
            "tier": {"type": "string", "enum": list(crd_cnp.TIERS)},
            "priority": _int32(*crd_cnp.PRIORITY_RANGE),
            "subject": crd_cnp.spec_schema()["properties"]["subject"],
            "ingress": _list(_rule("from", ingress_peer), max_items=MAX_RULES),
            "egress": _list(
                _rule("to", egress_peer, [dict(RULE_NO_NAMED_PORTS)]), max_items=MAX_RULES
            ),
        },
        required=["tier", "priority", "subject"],
    )


def isolation_policy_crd() -> Obj:
    """The IsolationPolicy CRD: cluster-scoped, short name isop, status subresource."""
    root = _obj(
        {
            "apiVersion": {"type": "string"},
            "kind": {"type": "string"},
            "metadata": {"type": "object"},
            "spec": spec_schema(),
            "status": _obj({"conditions": conditions_schema()}),
        },
        required=["metadata", "spec"],
    )
    root["description"] = (
        f"{KIND} ({GROUP}/{VERSION}): a tiered, cluster-wide network policy whose peers "
        "may also be chosen by sameness with the subject pod (same namespace, same label "
        "values), enforced by stockade."
    )
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": f"{PLURAL}.{GROUP}"},
        "spec": {
            "group": GROUP,
            "scope": "Cluster",
            "names": {
                "kind": KIND,
                "listKind": f"{KIND}List",
                "plural": PLURAL,
                "singular": KIND.lower(),
                "shortNames": [SHORT_NAME],
                "categories": ["stockade"],
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
