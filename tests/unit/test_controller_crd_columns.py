"""Printer columns show only what someone writes: spec (the controller), status (the agent)."""

from __future__ import annotations

from typing import Any

import yaml

from stockade.agent.status import SyncState, status_payload
from stockade.cluster import parse_documents
from stockade.compiler import compile_cluster
from stockade.crd import node_rule_set_crd, peer_set_crd
from stockade.ruleset import node_rule_set_to_dict, peer_set_to_dict
from tests.unit.test_crd import ROOT


def _resolve(obj: dict[str, Any], path: str) -> Any:
    value: Any = obj
    for part in path.lstrip(".").split("."):
        if not isinstance(value, dict) or part not in value:
            return None
        value = value[part]
    return value


def _columns(crd: dict[str, Any]) -> list[dict[str, Any]]:
    columns: list[dict[str, Any]] = crd["spec"]["versions"][0]["additionalPrinterColumns"]
    return columns


def _compiled() -> Any:
    docs = list(yaml.safe_load_all((ROOT / "examples" / "three-tier.yaml").read_text()))
    result = parse_documents([d for d in docs if d])
    assert not result.errors
    return compile_cluster(result.cluster)


def test_peer_set_columns_read_the_published_spec() -> None:
    """No PeerSet status is ever written, so every column reads spec or metadata."""
    compiled = _compiled()
    assert compiled.peer_sets
    names = [c["name"] for c in _columns(peer_set_crd())]
    assert "Members" not in names
    for shard in compiled.peer_sets.values():
        obj = {"metadata": {"creationTimestamp": "x"}, "spec": peer_set_to_dict(shard)}
        for column in _columns(peer_set_crd()):
            assert not column["jsonPath"].startswith(".status"), column
            assert _resolve(obj, column["jsonPath"]) is not None, column


def test_node_rule_set_status_columns_are_what_the_agent_writes() -> None:
    compiled = _compiled()
    node, rules = next(iter(compiled.node_rule_sets.items()))
    state = SyncState(
        observed_generation=1,
        applied=True,
        reason="Applied",
        message="",
        applied_generation=1,
        applied_hash="abc",
        applied_rules=rules,
        last_sync="2025-01-01T00:00:00Z",
    )
    obj = {
        "metadata": {"creationTimestamp": "x"},
        "spec": node_rule_set_to_dict(rules),
        "status": status_payload(state, "2025-01-01T00:00:00Z"),
    }
    assert obj["spec"]["node"] == node
    for column in _columns(node_rule_set_crd()):
        assert _resolve(obj, column["jsonPath"]) is not None, column
