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
from pathlib import Path
from typing import Literal

from stockade.agent.executor import CommandError, Executor

Backend = Literal["legacy", "nft"]
IF_INET6 = Path("/proc/net/if_inet6")
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


# kube-proxy's values (pkg/util/iptables): wait up to 5 s for the xtables lock,
# polling every 100 ms. Only the legacy backend has the lock (/run/xtables.lock);
# iptables-nft-restore accepts -w and ignores it, and 1.8.8+ accept -W and ignore it
# with a warning on stderr. The save commands take no lock (and reject -w).
DEFAULT_XTABLES_WAIT = 5
XTABLES_WAIT_INTERVAL_USEC = 100_000


def restore_wait_args(seconds: int) -> list[str]:
    """``iptables-restore`` options to wait ``seconds`` for the xtables lock (0: fail at once)."""
    if seconds <= 0:
        return []
    return ["-w", str(seconds), "-W", str(XTABLES_WAIT_INTERVAL_USEC)]


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


def detect_families(
    ex: Executor, tools: Tools, if_inet6: Path = IF_INET6
) -> tuple[tuple[int, ...], str | None]:
    """The IP families the node has: ``((4, 6), None)``, or ``((4,), why IPv6 is skipped)``.

    IPv6 is there when ``if_inet6`` exists (absent on a kernel booted with
    ``ipv6.disable=1``; the kernel-wide switch, so the host's file says it for every
    network namespace too) and the backend's ``ip6tables-save`` works. IPv4 is always
    taken: without it nothing could be enforced, and its failures show as kernel errors.
    """
    if not if_inet6.exists():
        return (4,), f"{if_inet6} does not exist (IPv6 disabled in the kernel)"
    try:
        ex.run([tools.save(6), "-t", "filter"])
    except (CommandError, FileNotFoundError, OSError) as exc:
        return (4,), f"{tools.save(6)} fails: {exc}"
    return (4, 6), None
