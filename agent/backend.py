"""Which iptables backend the node uses: legacy or nft, chosen as kube-proxy does.

kube-proxy's iptables-wrapper looks for the canary chains kubelet and kube-proxy
create (``KUBE-IPTABLES-HINT``, ``KUBE-KUBELET-CANARY`` in the mangle table) in the
nft backend, then in legacy; failing that it counts the rules each backend holds
and takes the busier one, nft on a tie. stockade's rules must live in the same
backend as kube-proxy's, or one of the two would never see the packets the other
filters in a meaningful order.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from stockade.agent.executor import CommandError, Executor

Backend = Literal["legacy", "nft"]
CANARIES = ("KUBE-IPTABLES-HINT", "KUBE-KUBELET-CANARY")


@dataclass(frozen=True, slots=True)
class Tools:
    """The save and restore commands of one backend, per IP family."""

    backend: Backend

    def save(self, family: int) -> str:
        """``iptables-<backend>-save`` or ``ip6tables-<backend>-save``."""
        return f"{_base(family)}-{self.backend}-save"

    def restore(self, family: int) -> str:
        """``iptables-<backend>-restore`` or ``ip6tables-<backend>-restore``."""
        return f"{_base(family)}-{self.backend}-restore"


def _base(family: int) -> str:
    return "iptables" if family == 4 else "ip6tables"


def _rule_count(save_output: str) -> int:
    return sum(1 for line in save_output.splitlines() if line.startswith("-"))


def choose_backend(
    nft_mangle: str, legacy_mangle: str, nft_rules: int, legacy_rules: int
) -> Backend:
    """The wrapper's decision, pure: canaries in nft, then in legacy, then rule counts."""
    if any(c in nft_mangle for c in CANARIES):
        return "nft"
    if any(c in legacy_mangle for c in CANARIES):
        return "legacy"
    return "legacy" if legacy_rules > nft_rules else "nft"


def _save(ex: Executor, argv: list[str]) -> str:
    try:
        return ex.run(argv)
    except (CommandError, FileNotFoundError):
        # A backend whose tools are missing or whose kernel side is absent holds
        # no rules; the other one wins.
        return ""


def detect_backend(ex: Executor) -> Tools:
    """Probe the node (through ``ex``) and return the backend's tools."""
    nft_mangle = _save(ex, ["iptables-nft-save", "-t", "mangle"])
    legacy_mangle = _save(ex, ["iptables-legacy-save", "-t", "mangle"])
    if any(c in nft_mangle for c in CANARIES) or any(c in legacy_mangle for c in CANARIES):
        return Tools(choose_backend(nft_mangle, legacy_mangle, 0, 0))
    nft_rules = sum(_rule_count(_save(ex, [f"{b}-nft-save"])) for b in ("iptables", "ip6tables"))
    legacy_rules = sum(
        _rule_count(_save(ex, [f"{b}-legacy-save"])) for b in ("iptables", "ip6tables")
    )
    return Tools(choose_backend(nft_mangle, legacy_mangle, nft_rules, legacy_rules))
