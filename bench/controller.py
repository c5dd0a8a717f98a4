"""Control-plane benchmark: the real controller against the emulated API server.

Run: ``.venv/bin/python -m bench.controller [--pods 5000 --nodes 50 --policies 500]``.

The emulator (``python -m stockade_lab.emulator``) and the controller
(``stockade-controller``, standalone, its metrics on a local port) each run in a
process of their own, as they would in a cluster; this process only drives and
polls them, through the emulator's admin API (docs/emulator.md). Namespaces and Node
objects exist first; then a burst of pods and policies (``bench.synth``'s realistic
generator) is loaded into the emulator in one bulk request (committed in chunks,
the watches streaming in between), and the bench measures:

- **writes**: every write request the emulator served during the burst (POST,
  PUT, PATCH, DELETE), by kind, against the number of distinct published objects
  whose content (hash annotation) really changed, before versus after;
- **time to current**: from the commit of the first object of the burst until
  every NodeRuleSet (then every PeerSet) carries the hash of ``compile_cluster`` on
  the same objects, against the time of that compile alone (same run, same machine;
  best of 3). Both ends are the emulator's commit times (``time.monotonic()`` in
  its process), so the polling interval does not enter the figure;
- **idle**: writes over ``--idle`` seconds of a settled controller, per minute.

``--py-spy FILE`` samples the controller with py-spy (``$PY_SPY`` or on the PATH)
from just before the burst until everything is current (``raw`` collapsed stacks).

Prints a table with ratios and PASS/MISS and writes ``bench/results/controller.json``.
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a script: make `bench` importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import yaml
from rich.console import Console
from rich.table import Table

from bench.provenance import describe, finish, provenance
from bench.synth import Params, generate
from stockade.compiler import Compiler, compile_cluster
from stockade.controller.writes import desired_node, desired_peer_set, published_hash
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


class EmulatorProcess:
    """``python -m stockade_lab.emulator`` in a process of its own, driven over HTTP."""

    def __init__(self, log: Path) -> None:
        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.kubeconfig = log.parent / "kubeconfig"
        self._log = open(log, "w+", encoding="utf-8")  # noqa: SIM115
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "stockade_lab.emulator",
                "--port",
                str(self.port),
                "--kubeconfig",
                str(self.kubeconfig),
                "--log-limit",
                "200000",
                "--request-log",
                "2000000",
                "--bookmark-interval",
                "60",
            ],
            stdout=self._log,
            stderr=subprocess.STDOUT,
            cwd=ROOT,
        )
        deadline = time.monotonic() + 30
        while True:
            try:
                self.call("GET", "/healthz")
                break
            except OSError:
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"the emulator did not start: {self.log_tail()}") from None
                time.sleep(0.05)

    def call(self, method: str, path: str, body: Any = None) -> Any:
        """One request; the decoded JSON answer (text for non-JSON)."""
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(self.url + path, data=data, method=method)
        if data is not None:
            req.add_header("Content-Type", "application/json")
        with urllib.request.urlopen(req, timeout=120) as resp:
            raw = resp.read()
            if resp.headers.get_content_type() == "application/json":
                return json.loads(raw)
            return raw.decode()

    def load(self, objects: list[dict[str, Any]], chunk: int = 0) -> dict[str, Any]:
        """Bulk-load objects (``put_object`` semantics); the emulator's report."""
        answer: dict[str, Any] = self.call(
            "POST", f"/_emulator/objects?chunk={chunk}", {"items": objects}
        )
        return answer

    def metadata(self, plural: str, group: str = GROUP, version: str = VERSION) -> dict[str, Any]:
        """Metadata of every object of a resource, with commit times."""
        query = urllib.parse.urlencode({"group": group, "version": version, "plural": plural})
        answer: dict[str, Any] = self.call("GET", f"/_emulator/metadata?{query}")
        return answer

    def requests_since(self, since: int) -> tuple[int, list[tuple[str, str]]]:
        """The API requests served from index ``since`` on, and the total so far."""
        answer = self.call("GET", f"/_emulator/requests?since={since}")
        if answer["first"] > since:
            raise RuntimeError("the emulator's request log lost requests: raise --request-log")
        return answer["total"], [(m, p) for m, p in answer["requests"]]

    def request_count(self) -> int:
        """How many API requests were served so far."""
        total, _ = self.requests_since(1 << 62)
        return total

    def log_tail(self) -> str:
        """The end of the emulator's output."""
        self._log.flush()
        self._log.seek(0)
        return self._log.read()[-2000:]

    def close(self) -> None:
        """Stop the process."""
        _stop(self.proc)
        self._log.close()


def _stop(proc: subprocess.Popen[Any]) -> None:
    proc.terminate()
    try:
        proc.wait(30)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


@contextlib.contextmanager
def emulator_process(tmp: Path) -> Iterator[EmulatorProcess]:
    """A running emulator process, stopped on exit."""
    emu = EmulatorProcess(tmp / "emulator.log")
    try:
        yield emu
    finally:
        emu.close()


def _kind(plural: str) -> str:
    return "NodeRuleSet" if plural == "noderulesets" else "PeerSet"


def published(
    emu: EmulatorProcess, kinds: tuple[str, ...] = ("noderulesets", "peersets")
) -> tuple[Hashes, float]:
    """What is published (kind/name to hash annotation) and when those kinds last changed."""
    out: Hashes = {}
    last = 0.0
    for plural in kinds:
        answer = emu.metadata(plural)
        last = max(last, answer["lastChange"] or 0.0)
        for item in answer["items"]:
            out[f"{_kind(plural)}/{item['name']}"] = published_hash({"metadata": item})
    return out, last


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


def events_per_policy(emu: EmulatorProcess) -> dict[str, Any]:
    """The Events on policies, by reason: how many, and the most any one policy got."""
    answer = emu.call("GET", "/api/v1/events")
    per: collections.Counter[tuple[str, str]] = collections.Counter()
    for event in answer.get("items") or []:
        involved = event.get("involvedObject") or {}
        if involved.get("kind") in ("NetworkPolicy", "ClusterNetworkPolicy"):
            per[(str(event.get("reason")), str(involved.get("uid")))] += 1
    reasons = sorted({reason for reason, _ in per})
    return {
        reason: {
            "events": sum(n for (r, _), n in per.items() if r == reason),
            "policies": sum(1 for (r, _) in per if r == reason),
            "max_per_policy": max(n for (r, _), n in per.items() if r == reason),
        }
        for reason in reasons
    }


def quiet(emu: EmulatorProcess, seconds: float, timeout: float) -> None:
    """Wait until no write request came for ``seconds``."""
    deadline = time.monotonic() + timeout
    last = emu.request_count()
    last_change = time.monotonic()
    while time.monotonic() < deadline:
        time.sleep(0.1)
        last, served = emu.requests_since(last)
        if any(method in WRITE_METHODS for method, _ in served):
            last_change = time.monotonic()
        if time.monotonic() - last_change >= seconds:
            return
    raise TimeoutError("the controller did not go quiet")


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far (Linux ``/proc``; 0 elsewhere)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def controller_command(
    emu: EmulatorProcess,
    port: int,
    flush_ms: float,
    log_level: str = "WARNING",
    extra: Sequence[str] = (),
) -> list[str]:
    """The command line of a standalone controller against ``emu``, metrics on ``port``."""
    return [
        sys.executable,
        "-m",
        "stockade.controller.main",
        "--kubeconfig",
        str(emu.kubeconfig),
        "--standalone",
        "--metrics-port",
        str(port),
        "--metrics-host",
        "127.0.0.1",
        "--flush-interval",
        str(flush_ms),
        "--log-level",
        log_level,
        *extra,
    ]


def peak_rss_bytes(pid: int) -> int | None:
    """The process's peak resident memory (VmHWM; None when unknown)."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None


def params_doc(params: Params) -> dict[str, int]:
    """The cluster's size and seed, for the result document."""
    return {
        "pods": params.pods,
        "namespaces": params.namespaces,
        "nodes": params.nodes,
        "policies": params.policies,
        "seed": params.seed,
    }


def show_and_save(result: dict[str, Any], figures: Table, out: Path) -> None:
    """Print the table and the provenance; write the result document to ``out``."""
    Console(width=150).print(figures)
    finish(result)
    print(describe(result))
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {out}")


def _py_spy() -> str | None:
    return os.environ.get("PY_SPY") or shutil.which("py-spy")


def run(  # noqa: PLR0915
    params: Params,
    flush_ms: float,
    idle: float,
    chunk: int = 100,
    py_spy_out: Path | None = None,
    controller_env: Mapping[str, str] | None = None,
    controller_args: Sequence[str] = (),
) -> dict[str, Any]:
    """The whole benchmark; returns the result document (``controller_args``: added to
    the controller's command line, for A/B runs)."""
    cluster = generate(params)
    raw_burst = [_with_api_fields(o) for o in [*cluster.pods, *cluster.policies]]
    parsed = [parse_object(o) for o in cluster.objects()]
    compile_s = best_of(lambda: compile_cluster(parsed))
    parse_compile_s = best_of(lambda: compile_cluster([parse_object(o) for o in cluster.objects()]))
    want_rules, want_sets = expected(parsed, cluster.node_names)

    console = Console(stderr=True)
    spy: subprocess.Popen[Any] | None = None
    with (
        tempfile.TemporaryDirectory(prefix="stk-bench-") as tmp,
        emulator_process(Path(tmp)) as emu,
    ):
        emu.load(list(yaml.safe_load_all((ROOT / "manifests/crds.yaml").read_text())))
        emu.load(
            [_with_api_fields(ns) for ns in cluster.namespaces]
            + [_node(name) for name in cluster.node_names]
        )
        port = _free_port()
        cmd = controller_command(emu, port, flush_ms, "WARNING", controller_args)
        log = open(Path(tmp) / "controller.log", "w+", encoding="utf-8")  # noqa: SIM115
        env = {**os.environ, **(controller_env or {})}
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, cwd=ROOT, env=env)
        try:
            console.print(f"controller pid {proc.pid}; waiting for the empty rule sets")

            def all_nodes() -> bool:
                return len(published(emu, ("noderulesets",))[0]) == params.nodes

            wait(all_nodes, 60, 0.1)
            quiet(emu, 1.0, 60)
            before, _ = published(emu)
            mark = emu.request_count()

            if py_spy_out is not None:
                exe = _py_spy()
                if exe is None:
                    raise RuntimeError("--py-spy: no py-spy on the PATH (or set $PY_SPY)")
                spy_cmd = [exe, "record", "--pid", str(proc.pid), "--rate", "500", "--format"]
                spy_cmd += ["raw", "--output", str(py_spy_out), "--nonblocking"]
                spy = subprocess.Popen(
                    spy_cmd,
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL,
                )
                time.sleep(1.0)  # py-spy attaches

            console.print(f"burst: {len(raw_burst)} objects")
            cpu_before = (cpu_seconds(proc.pid), cpu_seconds(emu.proc.pid))
            loaded = emu.load(raw_burst, chunk)
            t0 = float(loaded["started"])
            t_injected = float(loaded["finished"])

            def current(
                want: Hashes, kinds: tuple[str, ...], at: list[float]
            ) -> Callable[[], bool]:
                def check() -> bool:
                    hashes, last = published(emu, kinds)
                    at[:] = [last]
                    return hashes == want

                return check

            at_rules: list[float] = []
            wait(current(want_rules, ("noderulesets",), at_rules), 300, 0.1)
            at_all: list[float] = []
            wait(
                current({**want_rules, **want_sets}, ("noderulesets", "peersets"), at_all), 300, 0.1
            )
            t_rules, t_all = at_rules[0], at_all[0]
            cpu = {
                "controller_s": cpu_seconds(proc.pid) - cpu_before[0],
                "emulator_s": cpu_seconds(emu.proc.pid) - cpu_before[1],
            }
            if spy is not None:
                spy.send_signal(signal.SIGINT)
                spy.wait(60)
            burst_metrics = {
                name: metric(port, name)
                for name in (
                    "stockade_controller_flushes_total",
                    "stockade_controller_flush_duration_seconds_sum",
                    "stockade_controller_flush_duration_seconds_count",
                )
            }
            quiet(emu, 2.0, 120)
            after, _ = published(emu)
            mark, burst_requests = emu.requests_since(mark)
            writes = write_counts(burst_requests)
            changed = changed_objects(before, after)
            events = events_per_policy(emu)

            console.print(f"idle: {idle:.0f} s")
            flushes_before = metric(port, "stockade_controller_flushes_total")
            time.sleep(idle)
            _, idle_requests = emu.requests_since(mark)
            idle_writes = write_counts(idle_requests)
            flushes_after = metric(port, "stockade_controller_flushes_total")
            backlog = metric(port, "stockade_controller_dirty_backlog")
        finally:
            if spy is not None and spy.poll() is None:
                spy.kill()
                spy.wait()
            _stop(proc)
            log.seek(0)
            tail = log.read()[-2000:]
            log.close()

    published_writes = writes.get("NodeRuleSet", 0) + writes.get("PeerSet", 0)
    distinct = changed.get("NodeRuleSet", 0) + changed.get("PeerSet", 0)
    idle_total = sum(idle_writes.values())
    return {
        "params": params_doc(params),
        **provenance(),
        "flush_interval_ms": flush_ms,
        "load_chunk": chunk,
        "burst_objects": len(raw_burst),
        "outputs": {"node_rule_sets": len(want_rules), "peer_set_shards": len(want_sets)},
        "writes": writes,
        "published_writes": published_writes,
        "events_by_reason": events,
        "changed_objects": changed,
        "distinct_changed": distinct,
        "write_ratio": published_writes / distinct if distinct else None,
        "compile_s": compile_s,
        "parse_and_compile_s": parse_compile_s,
        "burst_started_monotonic": t0,
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
        "cpu_until_current": cpu,
        "load_average": os.getloadavg(),
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
        "<= 1.2x",
        verdict(wr is not None and wr <= 1.2),
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
    for reason, e in sorted((result.get("events_by_reason") or {}).items()):
        t.add_row(
            f"  {reason}",
            f"{e['events']:,} on {e['policies']:,} policies",
            "the most on one policy",
            f"{e['max_per_policy']}",
            "<= 1" if reason == "PolicyApplied" else "",
            verdict(e["max_per_policy"] <= 1) if reason == "PolicyApplied" else "",
        )
    ratio = result["time_ratio_parse_and_compile"]
    t.add_row(
        "burst start -> every NodeRuleSet current",
        f"{result['rule_sets_current_s']:.2f} s",
        f"parse + compile {result['parse_and_compile_s']:.3f} s",
        f"{ratio:.1f}x",
        "<= 5x",
        verdict(ratio <= 5.0),
    )
    t.add_row(
        "  vs the compile alone",
        "",
        f"{result['compile_s']:.3f} s",
        f"{result['time_ratio']:.1f}x",
        "",
        "",
    )
    t.add_row(
        "  of which: loading the burst into the API",
        f"{result['inject_s']:.2f} s",
        "",
        "",
        "",
        "",
    )
    t.add_row(
        "  after the last object was committed",
        f"{result['rule_sets_current_after_inject_s']:.2f} s",
        "",
        "",
        "",
        "",
    )
    cpu = result["cpu_until_current"]
    t.add_row(
        "  CPU used meanwhile: controller / emulator",
        f"{cpu['controller_s']:.2f} s / {cpu['emulator_s']:.2f} s",
        f"load average {result['load_average'][0]:.2f}",
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
    p.add_argument(
        "--chunk", type=int, default=100, help="objects committed between watch deliveries"
    )
    p.add_argument("--py-spy", type=Path, metavar="FILE", help="sample the controller in the burst")
    p.add_argument(
        "--cprofile",
        type=Path,
        metavar="FILE",
        help="cProfile the whole controller run (STOCKADE_CONTROLLER_PROFILE)",
    )
    p.add_argument(
        "--controller-arg",
        action="append",
        default=[],
        metavar="ARG",
        help="an argument added to the controller's command line (repeatable; A/B runs)",
    )
    p.add_argument("--out", type=Path, default=RESULTS / "controller.json")
    ns = p.parse_args(argv)
    params = Params(pods=ns.pods, namespaces=ns.namespaces, nodes=ns.nodes, policies=ns.policies)
    env = {"STOCKADE_CONTROLLER_PROFILE": str(ns.cprofile.resolve())} if ns.cprofile else {}
    result = run(params, ns.flush_interval, ns.idle, ns.chunk, ns.py_spy, env, ns.controller_arg)
    show_and_save(result, table(result), ns.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
