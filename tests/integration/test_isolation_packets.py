"""IsolationPolicy rules by sameness enforced by the real agent, with real packets.

The lab of test_tier_packets (nodes n1 and n2 in network namespaces, pods in their
own, outside hosts): pods labelled with departments across namespaces and nodes, an
IsolationPolicy "same department only", compiled and applied by the real Applier.
Hand-written expectations, then the whole matrix against the engine, then a relabel
that moves a pod from one department to another.

Everything lives in ``stk-*`` namespaces that the fixtures remove; nothing touches
the host's network namespace.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from stockade_lab.netlab import Lab
from tests.integration.cluster_lab import (
    FABRIC4,
    FABRIC6,
    TIMEOUT,
    ClusterLab,
    Raw,
    ns_doc,
    pod_doc,
)

pytestmark = pytest.mark.root


@pytest.fixture(params=("nft", "legacy"))
def cl(request: pytest.FixtureRequest) -> Iterator[ClusterLab]:
    """A cluster lab on each backend."""
    with Lab(fabric4=FABRIC4, fabric6=FABRIC6) as lab:
        cl = ClusterLab(lab, request.param)
        try:
            yield cl
        finally:
            cl.cleanup()


def pods(engineering: str = "engineering") -> list[Raw]:
    """qa on both nodes and in both namespaces (two on n1: their rule is guarded by a
    set, a lone subject's by its address), engineering, and a pod without the key.

    ``engineering``: the department of one/eng (a relabel changes it).
    """
    return [
        pod_doc("one", "qa", "n1", "10.0.1.10", None, {"dept": "qa"}),
        pod_doc("one", "qa-b", "n1", "10.0.1.13", None, {"dept": "qa"}),
        pod_doc("one", "eng", "n1", "10.0.1.11", None, {"dept": engineering}),
        pod_doc("one", "bare", "n1", "10.0.1.12", None, {}),
        pod_doc("two", "qa", "n2", "10.0.2.10", None, {"dept": "qa"}),
        pod_doc("two", "eng", "n2", "10.0.2.11", None, {"dept": "engineering"}),
    ]


QA1, ENG1, BARE, QA2, ENG2 = "10.0.1.10", "10.0.1.11", "10.0.1.12", "10.0.2.10", "10.0.2.11"
QA1B = "10.0.1.13"

DEPARTMENTS: Raw = {
    "apiVersion": "stockade.dev/v1alpha1",
    "kind": "IsolationPolicy",
    "metadata": {"name": "departments"},
    "spec": {
        "tier": "Admin",
        "priority": 10,
        "subject": {"pods": {"namespaceSelector": {}, "podSelector": {}}},
        "ingress": [
            {
                "name": "same-department",
                "action": "Accept",
                "from": [{"pods": {"sameLabels": ["dept"], "namespaceSelector": {}}}],
            },
            {
                "name": "default-deny",
                "action": "Deny",
                "from": [{"pods": {"namespaceSelector": {}, "podSelector": {}}}],
            },
        ],
    },
}


def docs(engineering: str = "engineering") -> list[Raw]:
    """The namespaces, the pods and the policy."""
    return [ns_doc("one"), ns_doc("two"), *pods(engineering), DEPARTMENTS]


def reach(cl: ClusterLab, src: str, ip: str, port: int = 80) -> bool:
    """Whether the pod ``src`` gets an answer from ``ip:port`` over TCP."""
    return cl.lab.probe(cl.pod(src), ip, port, "TCP", TIMEOUT)


def test_same_department_only_then_a_relabel_moves_a_pod(cl: ClusterLab) -> None:
    cl.set_cluster(docs())
    assert cl.verify() == {}
    assert reach(cl, "one/qa", QA2)  # qa to qa, across namespaces and nodes
    assert reach(cl, "two/qa", QA1)
    assert reach(cl, "two/qa", QA1B)
    assert reach(cl, "one/qa", QA1B)
    assert reach(cl, "two/eng", ENG1)
    assert not reach(cl, "one/qa", ENG1)  # another department, same namespace
    assert not reach(cl, "one/eng", QA2)
    assert not reach(cl, "one/bare", QA1)  # no department: matches no one
    assert not reach(cl, "one/qa", BARE)
    failures = cl.differences(80, "TCP", 4)
    assert not failures, "kernel and engine differ:\n" + "\n".join(failures)

    # one/eng joins qa: it reaches qa and qa reaches it; engineering no longer does.
    cl.set_cluster(docs(engineering="qa"))
    assert cl.verify() == {}
    assert reach(cl, "one/eng", QA2)
    assert reach(cl, "two/qa", ENG1)
    assert not reach(cl, "two/eng", ENG1)
    assert not reach(cl, "one/eng", ENG2)
    failures = cl.differences(80, "TCP", 4)
    assert not failures, "kernel and engine differ:\n" + "\n".join(failures)
