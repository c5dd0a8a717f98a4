"""Generated hostile cases: inputs too big, too binary or too invisible to commit.

Each :class:`GeneratedCase` is written into the test's temporary directory at test
time. Its ``header`` uses the same ``# key: value`` lines as a case file under
``cases/`` (see README.md); ``argv``, when given, replaces the header's ``args`` for
command lines a header cannot spell (control characters, other paths).

Run ``python -m tests.hostile.generate DIR`` to write them all into DIR and look.
"""

from __future__ import annotations

import gzip
import json
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

MB = 1024 * 1024

# Two ordinary pods, so that an input that is accepted has a matrix to print.
BASE = """\
apiVersion: v1
kind: Pod
metadata: {name: a, namespace: default, labels: {app: a}}
spec: {nodeName: node-1}
status: {podIP: 10.244.1.10, hostIP: 172.18.0.2}
---
apiVersion: v1
kind: Pod
metadata: {name: b, namespace: default, labels: {app: b}}
spec: {nodeName: node-1}
status: {podIP: 10.244.1.11, hostIP: 172.18.0.2}
"""

ACCEPTED = "# expect: exit=0\n# stdout: default/a\n# stdout: default/b\n"


@dataclass(frozen=True)
class GeneratedCase:
    """One generated input: its id, its expectation and how to make it."""

    name: str
    header: str
    content: Callable[[], bytes]
    # The command line after ``stockade``, given the path the content was written to.
    argv: Callable[[Path], list[str]] | None = None
    # The file name to write, when it is not ``name`` (e.g. a hostile path).
    filename: str | None = None


def _text(text: str) -> Callable[[], bytes]:
    return lambda: text.encode("utf-8")


def _lazy(make: Callable[[], str]) -> Callable[[], bytes]:
    return lambda: make().encode("utf-8")


def _pod(name: str, ip: str, namespace: str = "default", extra_meta: str = "") -> str:
    return (
        "---\napiVersion: v1\nkind: Pod\nmetadata:\n"
        f"  name: {name}\n  namespace: {namespace}\n{extra_meta}"
        f"spec: {{nodeName: node-1}}\nstatus: {{podIP: {ip}, hostIP: 172.18.0.2}}\n"
    )


# --------------------------------------------------------------------------- bombs


def _nested_flow(levels: int) -> str:
    return "[" * levels + "deep" + "]" * levels


def _depth_annotations() -> str:
    value = _nested_flow(520)
    return BASE + _pod("deep", "10.244.1.30", extra_meta=f"  annotations:\n    note: {value}\n")


def _depth_configmap_block() -> str:
    # 1000 nested block mappings, one space of indentation each, in an ignored kind.
    lines = ["---", "apiVersion: v1", "kind: ConfigMap", "metadata: {name: deep}", "data:"]
    lines += [" " * depth + "k:" for depth in range(1, 1001)]
    lines[-1] += " bottom"
    return BASE + "\n".join(lines) + "\n"


def _depth_json() -> str:
    levels = 100_000
    return (
        '{"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "deep"}, "data": '
        + "[" * levels
        + "]" * levels
        + "}\n"
    )


def _depth_selector() -> str:
    value = "{a: " * 600 + "b" + "}" * 600
    return BASE + (
        "---\napiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\n"
        "metadata: {name: deep, namespace: default}\n"
        f"spec:\n  podSelector:\n    matchLabels:\n      app: {value}\n"
    )


def _lol_anchors(indent: str) -> str:
    """Nine anchors, each nine aliases of the previous: *a8 expands to 9**9 strings."""
    lines = [f"{indent}a0: &a0 [" + ", ".join(['"lol"'] * 9) + "]"]
    lines += [f"{indent}a{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * 9) + "]" for i in range(1, 9)]
    return "\n".join(lines) + "\n"


def _alias_label() -> str:
    return BASE + (
        "---\napiVersion: v1\nkind: Pod\nmetadata:\n  name: lol\n  namespace: default\n"
        "  annotations:\n" + _lol_anchors("    ") + "  labels:\n    app: *a8\n"
        "status: {podIP: 10.244.1.40}\n"
    )


def _alias_port() -> str:
    return BASE + (
        "---\napiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata:\n"
        "  name: lol\n  namespace: default\n  annotations:\n" + _lol_anchors("    ") + "spec:\n"
        "  podSelector: {}\n  ingress:\n    - ports:\n        - port: *a8\n"
    )


def _alias_ignored_name() -> str:
    return BASE + (
        "---\napiVersion: v1\nkind: ConfigMap\ndata:\n" + _lol_anchors("  ") + "metadata:\n"
        "  name: *a8\n  namespace: default\n"
    )


def _alias_nested_lists() -> str:
    pod = (
        "{apiVersion: v1, kind: Pod, metadata: {name: p, namespace: default}, "
        "status: {podIP: 10.244.9.9}}"
    )
    lines = ["apiVersion: v1", "kind: List", "metadata:", "  annotations:"]
    lines.append(f"    l0: &l0 {{kind: List, items: [{', '.join([pod] * 9)}]}}")
    for i in range(1, 9):
        lines.append(f"    l{i}: &l{i} {{kind: List, items: [{', '.join([f'*l{i - 1}'] * 9)}]}}")
    lines.append("items: [*l8]")
    return "\n".join(lines) + "\n"


# --------------------------------------------------------------------------- sizes


def _subdomain(length: int) -> str:
    """A valid DNS-1123 subdomain of exactly ``length`` characters (labels <= 63)."""
    labels: list[str] = []
    remaining = length
    letters = "abcdefghij"
    while remaining > 0:
        size = min(63, remaining - (1 if labels else 0))
        if labels:
            remaining -= 1
        if remaining - size == 1:  # never leave one character for a lone '.'
            size -= 1
        labels.append(letters[len(labels) % len(letters)] * size)
        remaining -= size
    name = ".".join(labels)
    assert len(name) == length, (len(name), length)
    return name


def _namespace_63() -> str:
    ns = "n" * 63
    return (
        f"apiVersion: v1\nkind: Namespace\nmetadata: {{name: {ns}, labels: {{team: x}}}}\n"
        + _pod("a", "10.244.1.10")
        + _pod("b", "10.244.1.11", namespace=ns)
    )


def _names_253() -> str:
    name = _subdomain(253)
    return (
        BASE
        + _pod(name, "10.244.1.12")
        + "---\napiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\n"
        + f"metadata: {{name: {name}, namespace: default}}\n"
        + "spec: {podSelector: {matchLabels: {app: b}}, ingress: [{}]}\n"
    )


def _label_limits() -> str:
    key = _subdomain(253) + "/" + "k" * 63
    value = "v" * 63
    return (
        BASE
        + _pod("c", "10.244.1.12", extra_meta=f"  labels:\n    {key}: {value}\n")
        + "---\napiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\n"
        + "metadata: {name: limits, namespace: default}\n"
        + f"spec: {{podSelector: {{matchLabels: {{{key}: {value}}}}}, ingress: [{{}}]}}\n"
    )


def _namespace_64() -> str:
    return BASE + f"---\napiVersion: v1\nkind: Namespace\nmetadata: {{name: {'n' * 64}}}\n"


def _pod_name(length: int) -> Callable[[], str]:
    return lambda: BASE + _pod(_subdomain(length) if length <= 300 else "a" * length, "10.244.1.12")


def _policy_254() -> str:
    return BASE + (
        "---\napiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\n"
        f"metadata: {{name: {_subdomain(254)}, namespace: default}}\n"
        "spec: {podSelector: {}}\n"
    )


def _pod_label(key: str, value: str) -> Callable[[], str]:
    return lambda: BASE + _pod("c", "10.244.1.12", extra_meta=f"  labels:\n    {key}: {value}\n")


def _pod_namespace_64() -> str:
    return BASE + _pod("c", "10.244.1.12", namespace="n" * 64)


def _ignored_100k_name() -> str:
    return BASE + f"---\napiVersion: v1\nkind: ConfigMap\nmetadata: {{name: {'c' * 100_000}}}\n"


def _port_digits() -> str:
    return BASE + (
        "---\napiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\n"
        "metadata: {name: digits, namespace: default}\n"
        f"spec:\n  podSelector: {{}}\n  ingress:\n    - ports:\n        - port: {'9' * 100_000}\n"
    )


def _huge_json_line() -> str:
    def pod(name: str, ip: str, note: str) -> dict[str, object]:
        return {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": name, "namespace": "default", "annotations": {"note": note}},
            "spec": {"nodeName": "node-1"},
            "status": {"podIP": ip, "hostIP": "172.18.0.2"},
        }

    doc = {
        "apiVersion": "v1",
        "kind": "List",
        "items": [pod("a", "10.244.1.10", "x" * (20 * MB)), pod("b", "10.244.1.11", "")],
    }
    return json.dumps(doc, separators=(",", ":")) + "\n"


def _huge_yaml_line() -> str:
    return BASE + _pod(
        "c", "10.244.1.12", extra_meta=f"  annotations:\n    note: {'y' * 20 * MB}\n"
    )


def _cluster_200_pods() -> str:
    # What `kubectl get pods -A -o yaml` gives for a small cluster: 200 pods, 10 policies.
    docs = [
        f"---\napiVersion: v1\nkind: Pod\nmetadata: {{name: p{i}, namespace: ns{i % 10}, "
        f"labels: {{app: a{i % 7}}}}}\nspec: {{nodeName: node-{i % 5}}}\n"
        f"status: {{podIP: 10.244.{i // 200}.{i % 200 + 1}, hostIP: 172.18.0.{i % 5 + 2}}}\n"
        for i in range(200)
    ]
    docs += [
        "---\napiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\n"
        f"metadata: {{name: np, namespace: ns{n}}}\nspec:\n"
        f"  podSelector: {{matchLabels: {{app: a{n % 7}}}}}\n  ingress:\n"
        "    - from: [{podSelector: {matchLabels: {app: a1}}, namespaceSelector: {}}]\n"
        "      ports: [{port: 80}]\n"
        for n in range(10)
    ]
    return "".join(docs)


def _policy_5000_ipblocks() -> str:
    # A blocklist-style policy with a cloud provider's worth of prefixes.
    peers = "".join(
        f"      - ipBlock: {{cidr: {10 + i // 65536}.{i // 256 % 256}.{i % 256}.0/24}}\n"
        for i in range(5000)
    )
    return BASE + (
        "---\napiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\n"
        "metadata: {name: many-cidrs, namespace: default}\n"
        "spec:\n  podSelector: {matchLabels: {app: b}}\n  ingress:\n    - from:\n" + peers
    )


# --------------------------------------------------------------------------- bytes


def _latin1() -> bytes:
    return (
        BASE + _pod("c", "10.244.1.12", extra_meta="  annotations:\n    owner: Jos\xe9\n")
    ).encode("latin-1")


def _utf16() -> bytes:
    # What Windows PowerShell 5 writes for `kubectl get pods -o yaml > pods.yaml`.
    return BASE.encode("utf-16")


def _gzip() -> bytes:
    return gzip.compress(BASE.encode("utf-8"), mtime=0)


def _overlong_slash() -> bytes:
    # 0xC0 0xAF is an overlong (invalid) UTF-8 spelling of '/': a name "x/y" in disguise.
    return BASE.encode() + b"---\napiVersion: v1\nkind: Pod\nmetadata: {name: x\xc0\xafy}\n"


def _raw_control(char: str, where: str) -> Callable[[], str]:
    if where == "label":
        return lambda: (
            BASE + _pod("c", "10.244.1.12", extra_meta=f'  labels:\n    app: "x{char}"\n')
        )
    return lambda: BASE + _pod(f"evil{char}gpj.yaml", "10.244.1.12")


def _ignored_rlo() -> str:
    return BASE + '---\napiVersion: v1\nkind: ConfigMap\nmetadata: {name: "cm\u202egpj.exe"}\n'


def _crlf() -> bytes:
    return BASE.replace("\n", "\r\n").encode("utf-8")


def _bom(text: str) -> bytes:
    return b"\xef\xbb\xbf" + text.encode("utf-8")


# --------------------------------------------------------------------------- command lines


def _explain(src: str, dst: str) -> Callable[[Path], list[str]]:
    return lambda path: ["explain", "-f", str(path), src, dst, "--port", "80"]


def _matrix_of(target: Callable[[Path], str]) -> Callable[[Path], list[str]]:
    return lambda path: ["matrix", "-f", target(path), "--port", "80"]


REJECTED = "# expect: exit=2\n"
EITHER = "# expect: exit=0|2\n"

CASES: tuple[GeneratedCase, ...] = (
    # Depth bombs: rejected within bounds even where nothing is read.
    GeneratedCase("depth-bomb-520-levels-in-annotations.yaml", REJECTED, _lazy(_depth_annotations)),
    GeneratedCase(
        "depth-bomb-1000-block-levels-in-ignored-configmap.yaml",
        REJECTED,
        _lazy(_depth_configmap_block),
    ),
    GeneratedCase("depth-bomb-100k-json-brackets.json", REJECTED, _lazy(_depth_json)),
    GeneratedCase(
        "depth-bomb-600-levels-in-matchlabels-value.yaml", REJECTED, _lazy(_depth_selector)
    ),
    # Alias bombs ("billion laughs"): 9 levels of 9 aliases, 387 420 489 strings.
    GeneratedCase("alias-bomb-as-label-value.yaml", REJECTED, _lazy(_alias_label)),
    GeneratedCase("alias-bomb-as-policy-port.yaml", REJECTED, _lazy(_alias_port)),
    GeneratedCase("alias-bomb-as-ignored-kind-name.yaml", REJECTED, _lazy(_alias_ignored_name)),
    GeneratedCase("alias-bomb-of-nested-lists.yaml", REJECTED, _lazy(_alias_nested_lists)),
    # Names at the API server's limits are accepted ...
    GeneratedCase(
        "namespace-name-63-chars-accepted.yaml",
        "# expect: exit=0\n# stdout: default/a\n# stdout: nnnnnnnnnn",
        _lazy(_namespace_63),
    ),
    GeneratedCase("pod-and-policy-names-253-chars-accepted.yaml", ACCEPTED, _lazy(_names_253)),
    GeneratedCase(
        "label-key-prefix-253-name-63-value-63-accepted.yaml", ACCEPTED, _lazy(_label_limits)
    ),
    # ... and one character more is refused.
    GeneratedCase(
        "namespace-name-64-chars.yaml",
        REJECTED + "# error: metadata.name\n",
        _lazy(_namespace_64),
    ),
    GeneratedCase(
        "pod-name-254-chars.yaml", REJECTED + "# error: metadata.name\n", _lazy(_pod_name(254))
    ),
    GeneratedCase(
        "policy-name-254-chars.yaml", REJECTED + "# error: metadata.name\n", _lazy(_policy_254)
    ),
    GeneratedCase(
        "pod-namespace-64-chars.yaml",
        REJECTED + "# error: metadata.namespace\n",
        _lazy(_pod_namespace_64),
    ),
    GeneratedCase(
        "label-name-64-chars.yaml",
        REJECTED + "# error: metadata.labels\n",
        _lazy(_pod_label("k" * 64, "x")),
    ),
    GeneratedCase(
        "label-prefix-254-chars.yaml",
        REJECTED + "# error: metadata.labels\n",
        _lazy(_pod_label(_subdomain(254) + "/app", "x")),
    ),
    GeneratedCase(
        "label-value-64-chars.yaml",
        REJECTED + "# error: metadata.labels\n",
        _lazy(_pod_label("app", "v" * 64)),
    ),
    # 100 000 characters: refused, and never echoed whole.
    GeneratedCase(
        "pod-name-100k-chars.yaml", REJECTED + "# error: metadata.name\n", _lazy(_pod_name(100_000))
    ),
    GeneratedCase(
        "label-value-100k-chars.yaml",
        REJECTED + "# error: metadata.labels\n",
        _lazy(_pod_label("app", "v" * 100_000)),
    ),
    GeneratedCase(
        "ignored-kind-name-100k-chars-warns.yaml",
        ACCEPTED + "# warning: ConfigMap\n",
        _lazy(_ignored_100k_name),
    ),
    GeneratedCase(
        "policy-port-100k-digits.yaml", REJECTED + "# error: .port\n", _lazy(_port_digits)
    ),
    # A 20 MB single line: loaded or refused, but within the bounds either way.
    GeneratedCase("huge-20mb-single-line-json.json", EITHER, _lazy(_huge_json_line)),
    GeneratedCase(
        "huge-20mb-single-line-stdin.yaml", EITHER + "# stdin: yes\n", _lazy(_huge_yaml_line)
    ),
    # Big but ordinary inputs stay within the bounds too.
    GeneratedCase(
        "cluster-200-pods-accepted.yaml",
        "# expect: exit=0\n# stdout: ns0/p0\n# stdout: ns9/p199\n",
        _lazy(_cluster_200_pods),
    ),
    GeneratedCase("policy-5000-ipblocks-accepted.yaml", ACCEPTED, _lazy(_policy_5000_ipblocks)),
    # Not UTF-8: refused the same way from a file and from stdin.
    GeneratedCase("non-utf8-latin1-file.bin", REJECTED + "# error: UTF-8\n", _latin1),
    GeneratedCase(
        "non-utf8-latin1-stdin.bin", REJECTED + "# error: UTF-8\n# stdin: yes\n", _latin1
    ),
    GeneratedCase("utf16-powershell-redirect.bin", REJECTED + "# error: UTF-8\n", _utf16),
    GeneratedCase(
        "utf16-powershell-pipe-stdin.bin", REJECTED + "# error: UTF-8\n# stdin: yes\n", _utf16
    ),
    GeneratedCase("gzip-compressed-yaml.bin", REJECTED + "# error: UTF-8\n", _gzip),
    GeneratedCase(
        "overlong-utf8-slash-in-name.bin", REJECTED + "# error: UTF-8\n", _overlong_slash
    ),
    # Raw control characters in the bytes: refused, never copied to the terminal.
    GeneratedCase(
        "raw-esc-byte-in-label-value.yaml", REJECTED, _lazy(_raw_control("\x1b[2J", "label"))
    ),
    GeneratedCase("raw-nul-byte-in-pod-name.yaml", REJECTED, _lazy(_raw_control("\x00", "name"))),
    GeneratedCase(
        "raw-bel-and-backspace-in-label-value.yaml",
        REJECTED,
        _lazy(_raw_control("\x07\x08\x08\x08", "label")),
    ),
    GeneratedCase(
        "raw-rlo-in-pod-name.yaml",
        REJECTED + "# error: metadata.name\n",
        _lazy(_raw_control("\u202e", "name")),
    ),
    GeneratedCase(
        "raw-rlo-in-ignored-kind-name-warns.yaml",
        ACCEPTED + "# warning: ConfigMap\n",
        _lazy(_ignored_rlo),
    ),
    # Windows and PowerShell conventions that are still valid UTF-8 YAML.
    GeneratedCase("utf8-bom-file-accepted.yaml", ACCEPTED, lambda: _bom(BASE)),
    GeneratedCase("utf8-bom-stdin-accepted.yaml", ACCEPTED + "# stdin: yes\n", lambda: _bom(BASE)),
    GeneratedCase("crlf-line-endings-accepted.yaml", ACCEPTED, _crlf),
    GeneratedCase(
        "crlf-and-bom-notepad-accepted.yaml",
        ACCEPTED,
        lambda: b"\xef\xbb\xbf" + _crlf(),
    ),
    # Nothing to read.
    GeneratedCase("empty-file.yaml", REJECTED + "# error: no objects\n", _text("")),
    GeneratedCase("empty-stdin.yaml", REJECTED + "# error: no objects\n# stdin: yes\n", _text("")),
    GeneratedCase(
        "whitespace-only-file.yaml", REJECTED + "# error: no objects\n", _text("\n   \n\n")
    ),
    GeneratedCase(
        "document-separators-only-stdin.yaml",
        REJECTED + "# error: no objects\n# stdin: yes\n",
        _text("---\n---\n...\n---\n"),
    ),
    # Hostile command lines and paths.
    GeneratedCase(
        "explain-src-arg-with-osc-title-escape.yaml",
        REJECTED,
        _text(BASE),
        argv=_explain("default/\x1b]0;pwned\x07", "default/b"),
    ),
    GeneratedCase(
        "explain-dst-arg-with-rlo.yaml",
        REJECTED,
        _text(BASE),
        argv=_explain("default/a", "default/\u202eb"),
    ),
    GeneratedCase(
        "explain-dst-ipv6-zone-with-escape.yaml",
        EITHER,
        _text(BASE),
        argv=_explain("default/a", "fe80::1%\x1b[2J\x1b[H"),
    ),
    GeneratedCase(
        "explain-src-arg-100k-chars.yaml",
        REJECTED,
        _text(BASE),
        argv=_explain("default/" + "x" * 100_000, "default/b"),
    ),
    GeneratedCase(
        "file-is-a-directory.yaml",
        REJECTED + "# error: directory\n",
        _text(BASE),
        argv=_matrix_of(lambda path: str(path.parent)),
    ),
    GeneratedCase(
        "file-is-dev-zero.yaml",
        REJECTED,
        _text(""),
        argv=_matrix_of(lambda path: "/dev/zero"),
    ),
    GeneratedCase(
        "file-does-not-exist.yaml",
        REJECTED + "# error: no such file\n",
        _text(""),
        argv=_matrix_of(lambda path: str(path.parent / "no-such-file.yaml")),
    ),
    GeneratedCase(
        "file-path-with-escape-and-bad-content.yaml",
        REJECTED + "# error: spec.hostNetwork\n",
        _text(BASE + _pod("c", "10.244.1.12").replace("spec: {", 'spec: {hostNetwork: "false", ')),
        filename="evil\x1b[31m\u202e.yaml",
    ),
)


def write_all(directory: Path) -> list[Path]:
    """Write every generated case into ``directory`` (for a look by hand)."""
    directory.mkdir(parents=True, exist_ok=True)
    paths = []
    for case in CASES:
        path = directory / case.name
        path.write_bytes(case.content())
        paths.append(path)
    return paths


if __name__ == "__main__":
    for written in write_all(Path(sys.argv[1] if len(sys.argv) > 1 else "hostile-cases")):
        print(written)
