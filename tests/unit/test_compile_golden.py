"""Parse and compile outputs pinned byte for byte on small synthetic clusters.

The engine's speed work must not move a single byte of what it produces: these
digests were taken from the engine before that work, over the canonical JSON of
every NodeRuleSet and PeerSet shard (and the repr of every parsed object), for a
realistic cluster with ClusterNetworkPolicies and for the shape of Antrea's
scale test, in both delivery orders.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

import pytest
from bench.engine import policies_first
from bench.synth import Params, generate

from stockade.cluster import parse_input
from stockade.cnp import ClusterInput
from stockade.compiler import CompiledCluster, compile_cluster
from stockade.ruleset import canonical_json, node_rule_set_to_dict, peer_set_to_dict

REALISTIC = Params(pods=1_000, namespaces=50, nodes=10, policies=200, cnps=20)
ANTREA = Params(pods=400, namespaces=100, nodes=20, policies=300, shape="antrea")


def _outputs_digest(compiled: CompiledCluster) -> str:
    digest = hashlib.sha256()
    for name, rule_set in compiled.node_rule_sets.items():
        digest.update(name.encode())
        digest.update(canonical_json(node_rule_set_to_dict(rule_set)).encode())
    for name, shard in compiled.peer_sets.items():
        digest.update(name.encode())
        digest.update(canonical_json(peer_set_to_dict(shard)).encode())
    return digest.hexdigest()


def _parsed(params: Params) -> list[ClusterInput]:
    return [parse_input(raw) for raw in generate(params).objects()]


def _parsed_digest(objects: Sequence[ClusterInput]) -> str:
    return hashlib.sha256("\n".join(map(repr, objects)).encode()).hexdigest()


# (cluster, digest of the parsed objects, digest of the compiled outputs). The
# realistic digest moved once, on purpose: tier rules gained `subjects` and `same`.
CASES = {
    "realistic": (
        REALISTIC,
        "9b396ede075813cab249142b3cc9713f54be079597750ed0958fd67b82d90ccd",
        "615b1b53a803c517d3e6da220982ce073be0f31bbe739ec4a73867e6fe31f06b",
    ),
    "antrea": (
        ANTREA,
        "055ca85312d8fdfb271a7ec9d4565e6a68754fa83ef51cde23d8ee20088e3a24",
        "4ffdf5698d73b40c0f483ae99437a0a52691c84d31d7694ec7bd012e8d3080e4",
    ),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_parse_output_is_unchanged(case: str) -> None:
    params, parsed, _ = CASES[case]
    assert _parsed_digest(_parsed(params)) == parsed


@pytest.mark.parametrize("case", sorted(CASES))
@pytest.mark.parametrize("order", ["as listed", "policies first"])
def test_compile_output_is_unchanged(case: str, order: str) -> None:
    params, _, compiled = CASES[case]
    objects = _parsed(params)
    if order == "policies first":
        objects = policies_first(objects)
    assert _outputs_digest(compile_cluster(objects)) == compiled
