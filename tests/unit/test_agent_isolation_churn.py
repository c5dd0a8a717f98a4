"""The agent applies a relabel between value groups by set membership alone.

An IsolationPolicy is rendered as one variant per value group of the node's subjects,
each subject dispatched to its own (variants and groups named by what they are, not
by who is in them). A subject that moves into a value group the node already has,
and any remote pod that changes value, change set members only: the applier, on the
fake kernel, makes no iptables call at all (no restore, no read) and the kernel ends
up holding the new rendering.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from stockade.agent.applier import Applier
from stockade.agent.backend import Tools
from stockade.agent.cli import compile_bundle
from tests.unit.fake_kernel import FakeKernel
from tests.unit.test_kernel_fake import assert_holds
from tests.unit.test_render_isolation import DOCS, relabelled

Raw = dict[str, Any]


def _bundle(tmp_path: Path, docs: list[Raw], name: str) -> Any:
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump_all(docs))
    return compile_bundle([str(path)], "n1")


def _tools(kernel: FakeKernel) -> list[str]:
    return [c.tool for c in kernel.calls]


def test_relabels_into_groups_the_node_has_are_set_changes_only(tmp_path: Path) -> None:
    kernel = FakeKernel()
    applier = Applier(kernel, kernel=kernel, tools=Tools("nft"), families=(4, 6))
    first = _bundle(tmp_path, DOCS, "first")
    applier.apply(first.node, first.peer_sets)
    moved = relabelled(DOCS, "a/qa2", dept="eng")
    steps = [
        # a local subject from qa to eng (qa keeps qa1, eng already has eng1)
        moved,
        # then a remote pod joins qa
        relabelled(moved, "b/ops", dept="qa"),
        # and everything back
        DOCS,
    ]
    for i, docs in enumerate(steps):
        kernel.calls.clear()
        bundle = _bundle(tmp_path, docs, f"step{i}")
        report = applier.apply(bundle.node, bundle.peer_sets)
        assert report.changed
        assert report.iptables_restores == 0
        assert not [t for t in _tools(kernel) if "tables" in t], _tools(kernel)
        assert report.member_changes > 0
        assert applier.last is not None
        assert_holds(kernel, applier.last.rendered)


def test_a_new_group_on_the_node_needs_a_rule(tmp_path: Path) -> None:
    """The contrast: a value new to the node's subjects is a new variant."""
    kernel = FakeKernel()
    applier = Applier(kernel, kernel=kernel, tools=Tools("nft"), families=(4, 6))
    first = _bundle(tmp_path, DOCS, "first")
    applier.apply(first.node, first.peer_sets)
    kernel.calls.clear()
    moved = _bundle(tmp_path, relabelled(DOCS, "a/qa2", dept="ops"), "moved")
    report = applier.apply(moved.node, moved.peer_sets)
    assert report.iptables_restores == 1
    assert applier.last is not None
    assert_holds(kernel, applier.last.rendered)
