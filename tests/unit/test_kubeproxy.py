"""The kube-proxy stand-in's rendering: kube-proxy's iptables-mode layout, pure."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from stockade.services import EndpointSlice, parse_endpoint_slice, parse_service
from stockade_lab.sandbox.kubeproxy import (
    JUMPS,
    ProxyNode,
    live_kube_chains,
    render_proxy,
    restore_text,
)

NODE4 = ProxyNode("n1", 4, "10.244.0.0/16")
NODE6 = ProxyNode("n1", 6, "fd00:10:244::/48")


def svc(name: str = "web", **spec: Any) -> Any:
    body = {
        "type": "ClusterIP",
        "clusterIPs": ["10.96.0.10", "fd00:10:96::a"],
        "selector": {"app": name},
        "ports": [{"name": "http", "port": 80, "targetPort": 8080}],
        **spec,
    }
    return parse_service(
        {"kind": "Service", "metadata": {"name": name, "namespace": "x"}, "spec": body}
    )


def slice_of(
    name: str,
    endpoints: list[tuple[str, str]],
    family: int = 4,
    port: int = 8080,
    port_name: str = "http",
) -> EndpointSlice:
    return parse_endpoint_slice(
        {
            "kind": "EndpointSlice",
            "metadata": {
                "name": f"{name}-{family}",
                "namespace": "x",
                "labels": {"kubernetes.io/service-name": name},
            },
            "addressType": f"IPv{family}",
            "endpoints": [{"addresses": [ip], "nodeName": node} for ip, node in endpoints],
            "ports": [{"name": port_name, "port": port, "protocol": "TCP"}],
        }
    )


def nat(rules: Any) -> list[str]:
    return [line for lines in rules.tables["nat"].values() for line in lines]


def filt(rules: Any) -> list[str]:
    return [line for lines in rules.tables["filter"].values() for line in lines]


def test_cluster_ip_balances_at_random_over_ready_endpoints() -> None:
    eps = [("10.244.1.5", "n1"), ("10.244.2.5", "n2"), ("10.244.3.5", "n3")]
    rules = render_proxy(NODE4, [svc()], [slice_of("web", eps)])
    lines = nat(rules)
    probabilities = [
        line.split("--probability ")[1].split()[0] for line in lines if "--probability" in line
    ]
    assert probabilities == ["0.3333333333", "0.5000000000"]
    dnat = [line for line in lines if "DNAT" in line]
    assert [line.split()[-1] for line in dnat] == [f"{ip}:8080" for ip, _ in eps]
    # hairpin: an endpoint reaching itself is masqueraded
    assert sum("-s 10.244.1.5/32" in line and "KUBE-MARK-MASQ" in line for line in lines) == 1
    # sources outside the pod range (nodes, outside hosts) are masqueraded too
    assert any(line.startswith("-A KUBE-SVC-") and "! -s 10.244.0.0/16" in line for line in lines)
    assert rules.tables["nat"]["KUBE-SERVICES"][-1].endswith("-j KUBE-NODEPORTS")


def test_not_ready_endpoints_take_no_traffic() -> None:
    es = parse_endpoint_slice(
        {
            "kind": "EndpointSlice",
            "metadata": {
                "name": "w",
                "namespace": "x",
                "labels": {"kubernetes.io/service-name": "web"},
            },
            "addressType": "IPv4",
            "endpoints": [
                {"addresses": ["10.244.1.5"], "conditions": {"ready": False}},
                {"addresses": ["10.244.1.6"]},
            ],
            "ports": [{"name": "http", "port": 8080}],
        }
    )
    lines = nat(render_proxy(NODE4, [svc()], [es]))
    assert [line.split()[-1] for line in lines if "DNAT" in line] == ["10.244.1.6:8080"]


def test_no_endpoints_rejects_in_filter() -> None:
    rules = render_proxy(
        NODE4, [svc(type="NodePort", ports=[{"name": "http", "port": 80, "nodePort": 30080}])], []
    )
    assert not any("KUBE-SVC-" in line for line in nat(rules))
    rejects = [line for line in filt(rules) if "REJECT" in line]
    assert len(rejects) == 2
    assert "-d 10.96.0.10/32" in rejects[0]
    assert "has no endpoints" in rejects[0]
    assert "--dport 30080" in rejects[1]
    assert "--dst-type LOCAL" in rejects[1]


def test_node_port_cluster_masquerades() -> None:
    service = svc(
        type="NodePort", ports=[{"name": "http", "port": 80, "targetPort": 8080, "nodePort": 30080}]
    )
    rules = render_proxy(NODE4, [service], [slice_of("web", [("10.244.2.5", "n2")])])
    ext = [c for c in rules.tables["nat"] if c.startswith("KUBE-EXT-")]
    assert len(ext) == 1
    body = rules.tables["nat"][ext[0]]
    assert body[0].endswith("-j KUBE-MARK-MASQ")
    assert body[1].endswith("-j KUBE-SVC-" + ext[0][9:])
    assert any(
        "--dport 30080" in line and ext[0] in line for line in rules.tables["nat"]["KUBE-NODEPORTS"]
    )


def test_node_port_local_keeps_the_client_and_uses_local_endpoints() -> None:
    service = svc(
        type="NodePort",
        externalTrafficPolicy="Local",
        ports=[{"name": "http", "port": 80, "targetPort": 8080, "nodePort": 30080}],
    )
    eps = [("10.244.1.5", "n1"), ("10.244.2.5", "n2")]
    rules = render_proxy(NODE4, [service], [slice_of("web", eps)])
    svl = [c for c in rules.tables["nat"] if c.startswith("KUBE-SVL-")]
    assert len(svl) == 1
    assert [line.split('"')[1] for line in rules.tables["nat"][svl[0]]] == [
        "x/web:http -> 10.244.1.5:8080"
    ]
    ext = rules.tables["nat"]["KUBE-EXT-" + svl[0][9:]]
    # only traffic from the node itself is masqueraded; outside clients keep their address
    masq = [line for line in ext if "KUBE-MARK-MASQ" in line]
    assert masq
    assert all("--src-type LOCAL" in line for line in masq)
    # a node without a local endpoint drops the node port
    other = render_proxy(ProxyNode("n3", 4, "10.244.0.0/16"), [service], [slice_of("web", eps)])
    assert any("DROP" in line and "--dport 30080" in line for line in filt(other))
    assert not any(c.startswith("KUBE-EXT-") for c in other.tables["nat"])


def test_families_are_separate() -> None:
    eps6 = slice_of("web", [("fd00:10:244:1::5", "n1")], family=6)
    rules6 = render_proxy(NODE6, [svc()], [slice_of("web", [("10.244.1.5", "n1")]), eps6])
    lines = nat(rules6)
    assert [line.split()[-1] for line in lines if "DNAT" in line] == ["[fd00:10:244:1::5]:8080"]
    assert any("-d fd00:10:96::a/128" in line for line in lines)
    assert not any("10.96.0.10" in line for line in lines)


def test_external_name_and_single_stack_services_are_skipped_where_they_do_not_apply() -> None:
    ext = svc("ext", type="ExternalName", clusterIPs=[])
    v4only = svc("v4", clusterIPs=["10.96.0.11"])
    rules6 = render_proxy(NODE6, [ext, v4only], [])
    assert not any("KUBE-SVC-" in c for c in rules6.tables["nat"])
    assert not any("REJECT" in line for line in filt(rules6))


def test_named_target_ports_follow_the_slice() -> None:
    service = svc(ports=[{"name": "http", "port": 80, "targetPort": "web"}])
    rules = render_proxy(NODE4, [service], [slice_of("web", [("10.244.1.5", "n1")], port=9090)])
    assert [line.split()[-1] for line in nat(rules) if "DNAT" in line] == ["10.244.1.5:9090"]


def test_restore_text_deletes_only_stale_kube_chains() -> None:
    rules = render_proxy(NODE4, [svc()], [slice_of("web", [("10.244.1.5", "n1")])])
    live = {"nat": {"KUBE-SVC-OLD", "KUBE-SERVICES", "STK-NOT-OURS"}, "filter": {"STK-FORWARD"}}
    text = restore_text(rules, live)
    assert "-X KUBE-SVC-OLD" in text
    assert ":KUBE-SVC-OLD - [0:0]" in text
    assert "STK-" not in text
    assert text.count("COMMIT") == 2


@given(
    st.sets(
        st.sampled_from(["STK-FORWARD", "STK-INGRESS", "FOO", "cali-fw", "KUBE-X", "KUBE-SEP-Y"])
    )
)
def test_restore_text_names_no_foreign_chain(live: set[str]) -> None:
    text = restore_text(render_proxy(NODE4, [], []), {"nat": live, "filter": live})
    for name in live:
        if not name.startswith("KUBE-"):
            assert name not in text


def test_live_kube_chains() -> None:
    save = (
        "*nat\n:PREROUTING ACCEPT [0:0]\n:KUBE-SERVICES - [0:0]\n:STK-X - [0:0]\nCOMMIT\n"
        "*filter\n:KUBE-FORWARD - [0:0]\nCOMMIT\n"
    )
    assert live_kube_chains(save) == {"nat": {"KUBE-SERVICES"}, "filter": {"KUBE-FORWARD"}}


@pytest.mark.parametrize("jump", JUMPS)
def test_jumps_lead_to_declared_chains(jump: Any) -> None:
    rules = render_proxy(NODE4, [], [])
    assert jump.args[-1] in rules.tables[jump.table]
