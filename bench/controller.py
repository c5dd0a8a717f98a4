"""Control-plane benchmark: the real controller against the emulated API server.

Run: ``.venv/bin/python -m bench.controller [--pods 5000 --nodes 50 --policies 500]``.

The emulator runs in this process (a thread); the controller runs as
``stockade-controller`` in a process of its own (as in a pod), standalone, with its
metrics on a local port. Namespaces and Node objects exist first; then a burst of
pods and policies (``bench.synth``'s realistic generator) is written straight into
the emulator's store, and the bench measures:

- **writes**: every write request the emulator served during the burst (POST,
  PUT, PATCH, DELETE), by kind, against the number of distinct published objects
  whose content (hash annotation) really changed, before versus after;
- **time to current**: from the first object of the burst until every NodeRuleSet
  (then every PeerSet) carries the hash of ``compile_cluster`` on the same objects,
  against the time of that compile alone (same run, same machine; best of 3);
- **idle**: writes over ``--idle`` seconds of a settled controller, per minute.

Prints a table with ratios and PASS/MISS and writes ``bench/results/controller.json``.
"""

from __future__ import annotations

import argparse
import collections
import datetime
import json
import os
import platform
import re
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a script: make `bench` importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import yaml
from rich.console import Console
from rich.table import Table

from bench.synth import Params, generate
from stockade.compiler import Compiler, compile_cluster
from stockade.controller.plan import desired_node, desired_peer_set, published_hash
from stockade.emulator import Emulator, EmulatorThread
from stockade.model import ClusterObject, parse_object

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"
GROUP, VERSION = "stockade.dev", "v1alpha1"
WRITE_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})

Hashes = dict[str, str]  # "NodeRuleSet/name" -> hash


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def _node(name: str) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Node", "metadata": {"name": name}}


def _with_api_fields(obj: Mapping[str, Any]) -> dict[str, Any]:
    """A synth object as a client would write it (apiVersion and kind set)."""
    out = dict(obj)
    kind = out.get("kind")
    out["apiVersion"] = "networking.k8s.io/v1" if kind == "NetworkPolicy" else "v1"
    return out


def published(emulator: Emulator, kinds: tuple[str, ...] = ("noderulesets", "peersets")) -> Hashes:
    """What is published: kind/name to hash annotation."""
    out: Hashes = {}
    for plural in kinds:
        kind = "NodeRuleSet" if plural == "noderulesets" else "PeerSet"
        for obj in emulator.objects(GROUP, VERSION, plural):
            out[f"{kind}/{obj['metadata']['name']}"] = published_hash(obj)
    return out


def expected(objects: list[ClusterObject], nodes: list[str]) -> tuple[Hashes, Hashes]:
    """The hashes the controller should publish for ``objects`` on ``nodes``."""
    compiler = Compiler()
    for obj in objects:
        compiler.upsert(obj)
    for name in nodes:
        compiler.upsert_node(name)
    result = compiler.result()
    rules = {f"NodeRuleSet/{n}": desired_node(rs).hash for n, rs in result.node_rule_sets.items()}
    sets = {f"PeerSet/{n}": desired_peer_set(ps).hash for n, ps in result.peer_sets.items()}
    return rules, sets


def best_of(fn: Callable[[], object], repeats: int = 3) -> float:
    """The best wall time of ``repeats`` calls."""
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best


def write_counts(requests: list[tuple[str, str]]) -> dict[str, int]:
    """Write requests by what they wrote."""
    counts: collections.Counter[str] = collections.Counter()
    for method, path in requests:
        if method not in WRITE_METHODS:
            continue
        if "/noderulesets" in path:
            counts["NodeRuleSet"] += 1
        elif "/peersets" in path:
            counts["PeerSet"] += 1
        elif "/events" in path:
            counts["Event"] += 1
        else:
            counts["other"] += 1
    return dict(counts)


def changed_objects(before: Hashes, after: Hashes) -> dict[str, int]:
    """Distinct objects created, deleted or whose hash changed, by kind."""
    counts: collections.Counter[str] = collections.Counter()
    for key in set(before) | set(after):
        if before.get(key) != after.get(key):
            counts[key.split("/", 1)[0]] += 1
    return dict(counts)


def metric(port: int, name: str) -> float | None:
    """One sample of the controller's /metrics (None when absent)."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as resp:
            text = resp.read().decode()
    except OSError:
        return None
    match = re.search(rf"^{re.escape(name)} ([0-9.e+-]+)$", text, re.MULTILINE)
    return float(match.group(1)) if match else None


def wait(what: Callable[[], bool], timeout: float, interval: float = 0.05) -> float:
    """Poll until true; the monotonic time it became true. Raises on timeout."""
    deadline = time.monotonic() + timeout
    while True:
        if what():
            return time.monotonic()
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout}s")
        time.sleep(interval)


def quiet(emulator: Emulator, seconds: float, timeout: float) -> None:
    """Wait until no write request came for ``seconds``."""
    deadline = time.monotonic() + timeout
    last = len(emulator.requests)
    last_change = time.monotonic()
    while time.monotonic() < deadline:
        time.sleep(0.1)
        now = len(emulator.requests)
        writes = [r for r in list(emulator.requests)[last:now] if r[0] in WRITE_METHODS]
        if writes:
            last_change = time.monotonic()
        last = now
        if time.monotonic() - last_change >= seconds:
            return
    raise TimeoutError("the controller did not go quiet")


def run(params: Params, flush_ms: float, idle: float) -> dict[str, Any]:  # noqa: PLR0915
    """The whole benchmark; returns the result document."""
    cluster = generate(params)
    raw_burst = [*cluster.pods, *cluster.policies]
    parsed = [parse_object(o) for o in cluster.objects()]
    compile_s = best_of(lambda: compile_cluster(parsed))
    parse_compile_s = best_of(lambda: compile_cluster([parse_object(o) for o in cluster.objects()]))
    want_rules, want_sets = expected(parsed, cluster.node_names)

    emulator = Emulator(log_limit=100_000)
    # Keep every request (the default keeps the last 2,000).
    emulator.requests = collections.deque(maxlen=2_000_000)
    console = Console(stderr=True)
    with tempfile.TemporaryDirectory(prefix="stk-bench-") as tmp, EmulatorThread(emulator) as emu:
        for crd in yaml.safe_load_all((ROOT / "manifests/crds.yaml").read_text()):
            emulator.put_object(crd)
        for ns in cluster.namespaces:
            emulator.put_object(_with_api_fields(ns))
        for name in cluster.node_names:
            emulator.put_object(_node(name))
        kubeconfig = emu.write_kubeconfig(Path(tmp) / "kubeconfig")
        port = _free_port()
        cmd = [
            sys.executable,
            "-m",
            "stockade.controller.main",
            "--kubeconfig",
            str(kubeconfig),
            "--standalone",
            "--metrics-port",
            str(port),
            "--metrics-host",
            "127.0.0.1",
            "--flush-interval",
            str(flush_ms),
            "--log-level",
            "WARNING",
        ]
        log = open(Path(tmp) / "controller.log", "w+", encoding="utf-8")  # noqa: SIM115
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, cwd=ROOT)
        try:
            console.print(f"controller pid {proc.pid}; waiting for the empty rule sets")
            wait(lambda: len(published(emulator, ("noderulesets",))) == params.nodes, 60, 0.1)
            quiet(emulator, 1.0, 60)
            before = published(emulator)
            mark = len(emulator.requests)

            console.print(f"burst: {len(raw_burst)} objects")
            t0 = time.monotonic()
            for obj in raw_burst:
                emulator.put_object(_with_api_fields(obj))
            t_injected = time.monotonic()

            # Copying the published objects out of the store costs the emulator (this
            # process) CPU: look only after a write came in, 4 times a second at most.
            seen = [-1]

            def current(want: Hashes, kinds: tuple[str, ...]) -> Callable[[], bool]:
                def check() -> bool:
                    count = len(emulator.requests)
                    if count == seen[0]:
                        return False
                    seen[0] = count
                    return published(emulator, kinds) == want

                return check

            t_rules = wait(current(want_rules, ("noderulesets",)), 300, 0.25)
            seen[0] = -1
            t_all = wait(current({**want_rules, **want_sets}, ("noderulesets", "peersets")), 300)
            burst_metrics = {
                name: metric(port, name)
                for name in (
                    "stockade_controller_flushes_total",
                    "stockade_controller_flush_duration_seconds_sum",
                    "stockade_controller_flush_duration_seconds_count",
                )
            }
            quiet(emulator, 2.0, 120)
            after = published(emulator)
            burst_requests = list(emulator.requests)[mark:]
            writes = write_counts(burst_requests)
            changed = changed_objects(before, after)

            console.print(f"idle: {idle:.0f} s")
            mark = len(emulator.requests)
            flushes_before = metric(port, "stockade_controller_flushes_total")
            time.sleep(idle)
            idle_writes = write_counts(list(emulator.requests)[mark:])
            flushes_after = metric(port, "stockade_controller_flushes_total")
            backlog = metric(port, "stockade_controller_dirty_backlog")
        finally:
            proc.terminate()
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
            log.seek(0)
            tail = log.read()[-2000:]
            log.close()

    published_writes = writes.get("NodeRuleSet", 0) + writes.get("PeerSet", 0)
    distinct = changed.get("NodeRuleSet", 0) + changed.get("PeerSet", 0)
    idle_total = sum(idle_writes.values())
    return {
        "params": {
            "pods": params.pods,
            "namespaces": params.namespaces,
            "nodes": params.nodes,
            "policies": params.policies,
            "seed": params.seed,
        },
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "machine": {
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "platform": platform.platform(),
        },
        "flush_interval_ms": flush_ms,
        "burst_objects": len(raw_burst),
        "outputs": {"node_rule_sets": len(want_rules), "peer_set_shards": len(want_sets)},
        "writes": writes,
        "published_writes": published_writes,
        "changed_objects": changed,
        "distinct_changed": distinct,
        "write_ratio": published_writes / distinct if distinct else None,
        "compile_s": compile_s,
        "parse_and_compile_s": parse_compile_s,
        "inject_s": t_injected - t0,
        "rule_sets_current_s": t_rules - t0,
        "all_current_s": t_all - t0,
        "rule_sets_current_after_inject_s": t_rules - t_injected,
        "time_ratio": (t_rules - t0) / compile_s,
        "time_ratio_parse_and_compile": (t_rules - t0) / parse_compile_s,
        "idle_s": idle,
        "idle_writes": idle_writes,
        "idle_writes_per_minute": idle_total * 60.0 / idle,
        "idle_flushes": (
            None
            if flushes_before is None or flushes_after is None
            else flushes_after - flushes_before
        ),
        "dirty_backlog_after": backlog,
        "controller_metrics_at_current": burst_metrics,
        "controller_log_tail": tail if tail.strip() else "",
    }


def table(result: Mapping[str, Any]) -> Table:
    """The figures with ratios and PASS/MISS."""
    t = Table(title="control plane: the controller against the emulator")
    for col in ("measure", "value", "reference", "ratio", "target", ""):
        t.add_column(col)

    def verdict(ok: bool) -> str:
        return "PASS" if ok else "MISS"

    wr = result["write_ratio"]
    t.add_row(
        "API writes of NodeRuleSets + PeerSets",
        f"{result['published_writes']:,}",
        f"{result['distinct_changed']:,} changed objects",
        f"{wr:.2f}x" if wr is not None else "-",
        "<= 2x",
        verdict(wr is not None and wr <= 2.0),
    )
    w = result["writes"]
    t.add_row(
        "  of which",
        f"{w.get('NodeRuleSet', 0):,} NodeRuleSet, {w.get('PeerSet', 0):,} PeerSet",
        f"{result['changed_objects']}",
        "",
        "",
        "",
    )
    t.add_row("Events posted", f"{w.get('Event', 0):,}", "", "", "", "")
    ratio = result["time_ratio"]
    t.add_row(
        "burst start -> every NodeRuleSet current",
        f"{result['rule_sets_current_s']:.2f} s",
        f"compile {result['compile_s']:.3f} s",
        f"{ratio:.1f}x",
        "<= 3x",
        verdict(ratio <= 3.0),
    )
    t.add_row(
        "  vs parse + compile",
        "",
        f"{result['parse_and_compile_s']:.3f} s",
        f"{result['time_ratio_parse_and_compile']:.1f}x",
        "",
        "",
    )
    t.add_row(
        "  of which: writing the burst into the API",
        f"{result['inject_s']:.2f} s",
        "",
        "",
        "",
        "",
    )
    t.add_row(
        "  after the last object was written",
        f"{result['rule_sets_current_after_inject_s']:.2f} s",
        "",
        "",
        "",
        "",
    )
    t.add_row(
        "burst start -> every PeerSet current too",
        f"{result['all_current_s']:.2f} s",
        "",
        "",
        "",
        "",
    )
    idle = result["idle_writes_per_minute"]
    t.add_row(
        f"idle writes (over {result['idle_s']:.0f} s)",
        f"{idle:.1f}/min",
        f"{result['idle_flushes']} flushes",
        "",
        "0",
        verdict(idle == 0),
    )
    return t


def main(argv: list[str] | None = None) -> int:
    """Run, print the table, write the JSON."""
    p = argparse.ArgumentParser(prog="bench.controller", description=__doc__.split("\n")[0])
    p.add_argument("--pods", type=int, default=5_000)
    p.add_argument("--nodes", type=int, default=50)
    p.add_argument("--policies", type=int, default=500)
    p.add_argument("--namespaces", type=int, default=250)
    p.add_argument("--flush-interval", type=float, default=200, metavar="MS")
    p.add_argument("--idle", type=float, default=20.0, help="seconds of idle measurement")
    p.add_argument("--out", type=Path, default=RESULTS / "controller.json")
    ns = p.parse_args(argv)
    params = Params(pods=ns.pods, namespaces=ns.namespaces, nodes=ns.nodes, policies=ns.policies)
    result = run(params, ns.flush_interval, ns.idle)
    Console(width=150).print(table(result))
    ns.out.parent.mkdir(parents=True, exist_ok=True)
    ns.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {ns.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
