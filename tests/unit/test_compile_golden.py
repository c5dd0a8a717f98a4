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
# realistic digest moved on purpose twice: tier rules gained `subjects` and `same`;
# then format 2 (both digests) moved rules by sameness from guarded rules into
# `variants` and dropped `subjects`. Each time, the old digest was checked to come
# back with the new fields taken out (and formatVersion 1).
CASES = {
    "realistic": (
        REALISTIC,
        "9b396ede075813cab249142b3cc9713f54be079597750ed0958fd67b82d90ccd",
        "1165f21d612bf9165543cd0049a4146088af0677b8896423cb87aaef51fd797a",
    ),
    "antrea": (
        ANTREA,
        "055ca85312d8fdfb271a7ec9d4565e6a68754fa83ef51cde23d8ee20088e3a24",
        "b35a871ce28b8061d57852b121fdd04231dd0767690d23b61a7b5ae36636353e",
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
