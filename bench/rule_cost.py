"""What one iptables rule costs a new connection, by kind of rule.

Run from the repository root, as root (two pods and a node in ``stk-*`` network
namespaces this run creates and removes; the host's namespace is never touched)::

    .venv/bin/python -m bench.rule_cost              # about 2 minutes
    .venv/bin/python -m bench.rule_cost --rules 300 --repeats 3 --backend legacy

The node's FORWARD chain first accepts replies and follow-ups by conntrack, then
jumps to a chain of ``--rules`` rules of one kind, none of which matches; only a
connection's first packet walks them. New TCP connections per second from one pod
to the other, against the same chain empty, interleaved, medians: the extra time per
connection divided by the rule count is the cost of one rule on the SYN. The figures
explain the shape of stockade's rules (docs/dataplane.md, "What a new connection
costs"); they are not a target.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make `bench` importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.agent import (
    CLIENT_IP,
    NODE_CIDR,
    PACKET_NODE,
    RESULTS,
    SERVER_IP,
    SERVER_PORT,
    connection_rate,
)
from bench.provenance import describe, finish, provenance
from stockade.agent.backend import Backend, Tools
from stockade_lab.netlab import Lab, Node

# Sets the rules look up: an empty hash:ip, one of 2,000 addresses, a hash:net of 40
# CIDRs over 8 prefix lengths, list:sets of 5 and 20 one-member hash:ip sets.
_SETS = "\n".join(
    [
        "create stk-bench-empty hash:ip",
        "create stk-bench-big hash:ip",
        *(f"add stk-bench-big 10.9.{i // 250}.{i % 250 + 1}" for i in range(2000)),
        "create stk-bench-net hash:net",
        *(f"add stk-bench-net 10.{50 + i}.0.0/{16 + i % 8}" for i in range(40)),
        *(f"create stk-bench-m{i} hash:ip\nadd stk-bench-m{i} 10.8.{i}.1" for i in range(20)),
        "create stk-bench-l5 list:set size 8",
        *(f"add stk-bench-l5 stk-bench-m{i}" for i in range(5)),
        "create stk-bench-l20 list:set size 32",
        *(f"add stk-bench-l20 stk-bench-m{i}" for i in range(20)),
        "",
    ]
)

KINDS: dict[str, str] = {
    "mark": "-m mark --mark 0x40000/0x40000 -j DROP",
    "protocol": "-p udp -j DROP",
    "port": "-p tcp --dport 1 -j DROP",
    "address": "-d 192.0.2.0/24 -j DROP",
    "jump": "-j STK-BENCH-EMPTY",
    "set hash:ip": "-m set --match-set stk-bench-empty src -j DROP",
    "set hash:ip, 2,000": "-m set --match-set stk-bench-big src -j DROP",
    "set hash:net, 8 lengths": "-m set --match-set stk-bench-net dst -j DROP",
    "set list:set of 5": "-m set --match-set stk-bench-l5 src -j DROP",
    "set list:set of 20": "-m set --match-set stk-bench-l20 src -j DROP",
}


def _table(rule: str | None, count: int) -> str:
    lines = [
        "*filter",
        ":STK-BENCH - [0:0]",
        ":STK-BENCH-EMPTY - [0:0]",
        "-F FORWARD",
        "-A FORWARD -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT",
        "-A FORWARD -j STK-BENCH",
    ]
    if rule is not None:
        lines += [f"-A STK-BENCH {rule}"] * count
    return "\n".join([*lines, "COMMIT", ""])


def _load(lab: Lab, node: Node, tools: Tools, text: str) -> None:
    lab.run(node, [tools.restore(4), "--noflush"], input=text)


def measure(backend: Backend, count: int, repeats: int, seconds: float) -> dict[str, object]:
    """Per kind: connections per second with ``count`` rules, and the cost of one."""
    tools = Tools(backend)
    rates: dict[str, list[float]] = {"none": [], **{k: [] for k in KINDS}}
    with Lab() as lab:
        node = lab.add_node(PACKET_NODE, pod_cidr4=NODE_CIDR)
        server = lab.add_pod(node, "srv", SERVER_IP)
        client = lab.add_pod(node, "cli", CLIENT_IP)
        lab.serve(server, [(SERVER_PORT, "TCP")], reply="ok")
        lab.run(node, ["ipset", "restore"], input=_SETS)
        for rep in range(repeats):
            kinds = ["none", *KINDS]
            for kind in kinds if rep % 2 == 0 else reversed(kinds):
                _load(lab, node, tools, _table(KINDS.get(kind), count))
                lab.ask(client, SERVER_IP, SERVER_PORT)
                rates[kind].append(connection_rate(lab, client, seconds))
            print(f"  #{rep + 1}: " + ", ".join(f"{k} {v[-1]:,.0f}/s" for k, v in rates.items()))
    base = statistics.median(rates["none"])
    per_rule = {kind: (1e9 / statistics.median(rates[kind]) - 1e9 / base) / count for kind in KINDS}
    return {"backend": backend, "rules": count, "conn_per_s": rates, "ns_per_rule": per_rule}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--backend", default="nft", choices=("nft", "legacy"))
    parser.add_argument("--rules", type=int, default=300, help="rules of each kind")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--conn-seconds", type=float, default=2.0)
    parser.add_argument("--output", default=str(RESULTS / "rule_cost.json"))
    args = parser.parse_args(argv)
    result = measure(args.backend, args.rules, args.repeats, args.conn_seconds)
    result = {**provenance(), **result}
    finish(result)
    print(describe(result))
    per_rule = result["ns_per_rule"]
    assert isinstance(per_rule, dict)
    for kind, ns in per_rule.items():
        print(f"{kind:26} {ns:7.1f} ns per rule on the SYN")
    Path(args.output).write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
