"""The control plane at cluster scale: cold start, restart, a burst of pod changes, memory.

Run: ``.venv/bin/python -m bench.controller_scale`` (50,000 pods, 500 nodes, 5,000
NetworkPolicies, 2,500 namespaces; ``--pods/--nodes/--policies/--namespaces`` for a
smaller run).

The emulator and the controller each run in a process of their own, as in
:mod:`bench.controller`, whose helpers this uses. Every object is loaded into the
emulator before the controller starts; then:

1. **cold start**: from the controller's start until every NodeRuleSet and every
   PeerSet carries the hash of ``compile_cluster`` on the same objects (the emulator's
   commit time of the last write), against parse + compile of the same objects in
   this process (target: at most 3x), and the writes it took;
2. **restart**: the controller stopped (SIGTERM) with everything current, started
   again: the writes until it has been quiet for a while after its warm-up (target:
   0), and the time until its warm-up is done (its log line);
3. **burst**: 5,000 pod changes in one bulk request (half new pods, half pods
   relabelled like another pod of their namespace): time until every rule set is
   current, and API writes against the objects whose content changed (target:
   at most 1.2x);
4. the controller's **peak memory** (VmHWM; target: under 1 GB).

Prints a table with PASS/MISS and writes ``bench/results/controller_scale.json``.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a script: make `bench` importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import yaml
from rich.console import Console
from rich.table import Table

from bench.controller import (
    RESULTS,
    ROOT,
    EmulatorProcess,
    Hashes,
    _free_port,
    _node,
    _stop,
    _with_api_fields,
    best_of,
    changed_objects,
    controller_command,
    cpu_seconds,
    emulator_process,
    expected,
    params_doc,
    peak_rss_bytes,
    published,
    quiet,
    show_and_save,
    wait,
    write_counts,
)
from bench.provenance import provenance
from bench.synth import EventMaker, Params, generate
from stockade.compiler import compile_cluster
from stockade.model import parse_object

COLD_TARGET = 3.0  # cold start <= 3x parse + compile
WRITE_TARGET = 1.2  # burst writes <= 1.2x the changed objects
MEMORY_TARGET = 1 << 30  # controller peak memory < 1 GB
WARM_UP = re.compile(r"warm-up done in ([0-9.]+)s")


def checks(result: Mapping[str, Any]) -> dict[str, bool]:
    """Each target, met or not."""
    cold = result["cold_start"]
    burst = result["burst"]
    memory = result["controller_peak_rss_bytes"]
    return {
        "cold start <= 3x parse + compile": cold["ratio"] <= COLD_TARGET,
        "restart: 0 writes": result["restart"]["writes"] == 0,
        "burst writes <= 1.2x changed objects": (
            burst["write_ratio"] is not None and burst["write_ratio"] <= WRITE_TARGET
        ),
        "controller peak memory < 1 GB": memory is not None and memory < MEMORY_TARGET,
    }


class Controller:
    """A controller process against ``emu``; its log in ``log_path``."""

    def __init__(self, emu: EmulatorProcess, log_path: Path, flush_ms: float) -> None:
        self.port = _free_port()
        self.log_path = log_path
        cmd = controller_command(emu, self.port, flush_ms, "INFO")
        with open(log_path, "a", encoding="utf-8") as log:
            self.proc = subprocess.Popen(
                cmd, stdout=log, stderr=subprocess.STDOUT, cwd=ROOT, env=dict(os.environ)
            )
        self.started = time.monotonic()

    def warm_up_s(self) -> float | None:
        """The warm-up time its log reports (None: not done yet)."""
        text = self.log_path.read_text(encoding="utf-8", errors="replace")
        found = WARM_UP.findall(text)
        return float(found[-1]) if found else None

    def stop(self) -> None:
        """SIGTERM, then wait (kill after 30 s)."""
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(30)
        except subprocess.TimeoutExpired:
            _stop(self.proc)

    def log_tail(self) -> str:
        """The end of its log."""
        return self.log_path.read_text(encoding="utf-8", errors="replace")[-2000:]


def _key(obj: Mapping[str, Any]) -> str:
    meta = obj["metadata"]
    return f"{meta['namespace']}/{meta['name']}"


def _current(emu: EmulatorProcess, want: Hashes, at: list[float]) -> Callable[[], bool]:
    def check() -> bool:
        hashes, last = published(emu)
        at[:] = [last]
        return hashes == want

    return check


def run(  # noqa: PLR0915 - one measurement after another, in order
    params: Params, burst_size: int, flush_ms: float, console: Console
) -> dict[str, Any]:
    """The whole benchmark; the result document."""
    console.print(f"generating {params}")
    cluster = generate(params)
    raw = cluster.objects()
    console.print(f"parse + compile of {len(raw):,} objects (best of 2) ...")
    parse_compile_s = best_of(lambda: compile_cluster([parse_object(o) for o in raw]), 2)
    parsed = [parse_object(o) for o in raw]
    want_rules, want_sets = expected(parsed, cluster.node_names)
    want = {**want_rules, **want_sets}
    console.print(
        f"  {parse_compile_s:.2f} s; {len(want_rules)} NodeRuleSets, {len(want_sets)} PeerSets"
    )
    result: dict[str, Any] = {
        "params": params_doc(params),
        **provenance(),
        "objects": len(raw),
        "outputs": {"node_rule_sets": len(want_rules), "peer_set_shards": len(want_sets)},
        "parse_and_compile_s": parse_compile_s,
        "flush_interval_ms": flush_ms,
    }
    with (
        tempfile.TemporaryDirectory(prefix="stk-bench-") as tmp,
        emulator_process(Path(tmp)) as emu,
    ):
        emu.load(list(yaml.safe_load_all((ROOT / "manifests/crds.yaml").read_text())))
        console.print("loading the cluster into the emulator ...")
        emu.load(
            [_with_api_fields(ns) for ns in cluster.namespaces]
            + [_node(name) for name in cluster.node_names]
        )
        emu.load([_with_api_fields(o) for o in [*cluster.pods, *cluster.policies]], 1000)
        log_path = Path(tmp) / "controller.log"

        # 1. cold start
        mark = emu.request_count()
        ctl = Controller(emu, log_path, flush_ms)
        try:
            console.print(f"cold start: controller pid {ctl.proc.pid}")
            at: list[float] = []
            wait(_current(emu, want, at), 900, 0.5)
            cold_s = at[0] - ctl.started
            quiet(emu, 2.0, 300)
            mark, served = emu.requests_since(mark)
            cold_writes = write_counts(served)
            result["cold_start"] = {
                "current_s": cold_s,
                "ratio": cold_s / parse_compile_s,
                "warm_up_s": ctl.warm_up_s(),
                "writes": cold_writes,
                "controller_cpu_s": cpu_seconds(ctl.proc.pid),
            }
            console.print(f"  current after {cold_s:.2f} s ({cold_s / parse_compile_s:.1f}x)")
            peak = peak_rss_bytes(ctl.proc.pid)
        finally:
            ctl.stop()

        # 2. restart with everything current
        mark = emu.request_count()
        ctl = Controller(emu, log_path.with_name("controller-2.log"), flush_ms)
        try:
            console.print(f"restart: controller pid {ctl.proc.pid}")
            wait(lambda: ctl.warm_up_s() is not None, 600, 0.2)
            ready_s = time.monotonic() - ctl.started
            quiet(emu, 5.0, 300)
            mark, served = emu.requests_since(mark)
            restart_writes = sum(write_counts(served).values())
            result["restart"] = {
                "ready_s": ready_s,
                "warm_up_s": ctl.warm_up_s(),
                "writes": restart_writes,
                "writes_by_kind": write_counts(served),
            }
            console.print(f"  warm after {ready_s:.2f} s; {restart_writes} writes")

            # 3. a burst of pod changes
            before, _ = published(emu)
            maker = EventMaker(cluster)
            burst = [maker.pod_added() for _ in range(burst_size // 2)]
            burst += [maker.pod_relabelled() for _ in range(burst_size - len(burst))]
            final = {_key(p): p for p in cluster.pods}
            final.update((_key(p), p) for p in burst)
            objects = [*cluster.namespaces, *final.values(), *cluster.policies]
            want_rules2, want_sets2 = expected(
                [parse_object(o) for o in objects], cluster.node_names
            )
            want2 = {**want_rules2, **want_sets2}
            cpu_before = cpu_seconds(ctl.proc.pid)
            console.print(f"burst: {len(burst)} pod changes")
            loaded = emu.load([_with_api_fields(p) for p in burst], 100)
            t0 = float(loaded["started"])
            at = []
            wait(_current(emu, want2, at), 600, 0.2)
            burst_s = at[0] - t0
            quiet(emu, 2.0, 300)
            after, _ = published(emu)
            mark, served = emu.requests_since(mark)
            writes = write_counts(served)
            changed = changed_objects(before, after)
            published_writes = writes.get("NodeRuleSet", 0) + writes.get("PeerSet", 0)
            distinct = changed.get("NodeRuleSet", 0) + changed.get("PeerSet", 0)
            result["burst"] = {
                "pod_changes": len(burst),
                "current_s": burst_s,
                "writes": writes,
                "changed_objects": changed,
                "write_ratio": published_writes / distinct if distinct else None,
                "controller_cpu_s": cpu_seconds(ctl.proc.pid) - cpu_before,
            }
            console.print(f"  current after {burst_s:.2f} s; {published_writes} writes")
            second = peak_rss_bytes(ctl.proc.pid)
            peaks = [p for p in (peak, second) if p is not None]
            result["controller_peak_rss_bytes"] = max(peaks) if peaks else None
        finally:
            ctl.stop()
            result["controller_log_tail"] = ctl.log_tail()
            RESULTS.mkdir(parents=True, exist_ok=True)
            for log in Path(tmp).glob("controller*.log"):
                shutil.copy(log, RESULTS / f"scale-{log.name}")
    result["checks"] = checks(result)
    return result


def table(result: Mapping[str, Any]) -> Table:
    """The figures with ratios and PASS/MISS."""
    t = Table(title=f"the control plane at scale ({result['objects']:,} objects)")
    for col in ("measure", "value", "reference", "target", ""):
        t.add_column(col)
    ok = result["checks"]

    def verdict(name: str) -> str:
        return "PASS" if ok[name] else "MISS"

    cold, restart, burst = result["cold_start"], result["restart"], result["burst"]
    pc = result["parse_and_compile_s"]
    t.add_row("parse + compile (baseline)", f"{pc:.2f} s", "", "", "")
    t.add_row(
        "cold start -> every rule set and PeerSet current",
        f"{cold['current_s']:.2f} s",
        f"{cold['ratio']:.1f}x parse + compile",
        "<= 3x",
        verdict("cold start <= 3x parse + compile"),
    )
    t.add_row("  writes", str(sum(cold["writes"].values())), str(cold["writes"]), "", "")
    t.add_row("  controller CPU", f"{cold['controller_cpu_s']:.1f} s", "", "", "")
    t.add_row(
        "restart: writes",
        str(restart["writes"]),
        f"warm-up {restart['warm_up_s']:.2f} s, ready after {restart['ready_s']:.2f} s",
        "0",
        verdict("restart: 0 writes"),
    )
    ratio = burst["write_ratio"]
    t.add_row(
        f"burst of {burst['pod_changes']:,} pod changes -> current",
        f"{burst['current_s']:.2f} s",
        f"controller CPU {burst['controller_cpu_s']:.1f} s",
        "",
        "",
    )
    t.add_row(
        "  writes / changed objects",
        f"{sum(v for k, v in burst['writes'].items() if k != 'Event')}",
        f"{ratio:.2f}x of {burst['changed_objects']}" if ratio is not None else "-",
        "<= 1.2x",
        verdict("burst writes <= 1.2x changed objects"),
    )
    peak = result["controller_peak_rss_bytes"]
    t.add_row(
        "controller peak memory",
        f"{peak / 1e6:,.0f} MB" if peak else "-",
        "",
        "< 1 GB",
        verdict("controller peak memory < 1 GB"),
    )
    return t


def main(argv: list[str] | None = None) -> int:
    """``python -m bench.controller_scale``."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--pods", type=int, default=50_000)
    p.add_argument("--nodes", type=int, default=500)
    p.add_argument("--policies", type=int, default=5_000)
    p.add_argument("--namespaces", type=int, default=2_500)
    p.add_argument("--burst", type=int, default=5_000, help="pod changes in the burst")
    p.add_argument("--flush-interval", type=float, default=200, metavar="MS")
    p.add_argument("--out", type=Path, default=RESULTS / "controller_scale.json")
    ns = p.parse_args(argv)
    params = Params(pods=ns.pods, namespaces=ns.namespaces, nodes=ns.nodes, policies=ns.policies)
    console = Console(stderr=True)
    result = run(params, ns.burst, ns.flush_interval, console)
    show_and_save(result, table(result), ns.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
