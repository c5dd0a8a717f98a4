"""The strict, bounded YAML loader (stockade.yamlload) and its use by the CLI and load_files.

Every hostile input here once misled or hung ``stockade matrix -f FILE``: duplicate
keys (last wins), deep nesting (RecursionError), a List inside itself (endless
recursion), alias bombs (3 GB), YAML 1.1 boolean keys, timestamps turned into
dates, non-UTF-8 bytes read differently from a file and from stdin, and an empty
input that looked like an empty cluster.
"""

from __future__ import annotations

import io
import time
from pathlib import Path
from typing import Any

import pytest
import yaml

from stockade import cli, inputs, yamlload
from stockade.cluster import UnreadableList, iter_documents, load_files, parse_documents
from stockade.errors import InvalidObjectError
from stockade.yamlload import MAX_ALIAS_NODES, MAX_DEPTH, YamlLoadError, load_documents

ROOT = Path(__file__).resolve().parents[2]
SRC = "in.yaml"
# Bombs, depth and cycles must be refused at once, not after a long climb.
QUICK = 2.0

PARSERS = ["pure"] + (["libyaml"] if hasattr(yaml, "CSafeLoader") else [])


@pytest.fixture(params=PARSERS)
def parser(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Run a test with libyaml's parser and with PyYAML's pure one (the fallback)."""
    chosen = yaml.CSafeLoader if request.param == "libyaml" else yaml.SafeLoader
    monkeypatch.setattr(yamlload, "_PARSER", chosen)
    name: str = request.param
    return name


def _bomb(levels: int = 9, width: int = 9, indent: str = "") -> str:
    """Billion laughs: ``levels`` anchors, each ``width`` aliases of the one before."""
    lines = [f"{indent}a0: &a0 [" + ", ".join(['"lol"'] * width) + "]"]
    lines += [
        f"{indent}a{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * width) + "]" for i in range(1, levels)
    ]
    return "\n".join(lines) + "\n"


POD = """\
apiVersion: v1
kind: Pod
metadata: {name: a, namespace: demo, labels: {app: a}}
spec: {nodeName: n1}
status: {podIP: 10.0.0.1, hostIP: 172.18.0.2}
"""

LABEL_BOMB = (
    "apiVersion: v1\nkind: Pod\nmetadata:\n  name: lol\n  namespace: demo\n  annotations:\n"
    + _bomb(indent="    ")
    + "  labels:\n    app: *a8\nstatus: {podIP: 10.0.0.9}\n"
)
PORT_BOMB = (
    "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata:\n  name: lol\n"
    "  namespace: demo\n  annotations:\n"
    + _bomb(indent="    ")
    + "spec:\n  podSelector: {}\n  ingress:\n    - ports:\n        - port: *a8\n"
)
IGNORED_KIND_BOMB = (
    "apiVersion: v1\nkind: ConfigMap\ndata:\n"
    + _bomb(indent="  ")
    + "metadata:\n  name: *a8\n  namespace: demo\n"
)
LIST_BOMB = (
    "apiVersion: v1\nkind: List\nmetadata:\n  annotations:\n"
    "    l0: &l0 {kind: List, items: ["
    + ", ".join(["{kind: Pod}"] * 9)
    + "]}\n"
    + "".join(
        f"    l{i}: &l{i} {{kind: List, items: [{', '.join([f'*l{i - 1}'] * 9)}]}}\n"
        for i in range(1, 9)
    )
    + "items: [*l8]\n"
)

# name -> (input, a fragment of the one-line message). Each is refused in QUICK seconds.
REFUSED: dict[str, tuple[bytes | str, str]] = {
    # 1. duplicate keys: the exception must not be dropped silently.
    "duplicate except": (
        "spec:\n  ingress:\n    - from:\n        - ipBlock:\n            cidr: 10.0.0.0/8\n"
        "            except: [10.0.0.1/32]\n            except: []\n",
        "in.yaml: line 7, column 13: spec.ingress[0].from[0].ipBlock: duplicate key 'except' "
        "(first at line 6)",
    ),
    "duplicate in flow map": (
        "metadata: {name: a, name: b}\n",
        "line 1, column 21: metadata: duplicate key 'name' (first at line 1)",
    ),
    "duplicate in JSON": ('{"kind": "Pod",\n "kind": "Namespace"}', "line 2, column 2: duplicate"),
    "duplicate top-level key": ("kind: Pod\nkind: Namespace\n", "line 2, column 1: duplicate key"),
    "duplicate merge key": (
        "b: &b {x: 1}\nm:\n  <<: *b\n  <<: *b\n",
        "line 4, column 3: m: duplicate key '<<' (first at line 3)",
    ),
    # 2. depth and cycles.
    "500 levels of flow lists": (
        "metadata:\n  annotations:\n    x: " + "[" * 500 + "]" * 500 + "\n",
        f"nested deeper than {MAX_DEPTH} levels of maps and lists",
    ),
    "1000 levels of block maps": (
        "kind: ConfigMap\ndata:\n" + "".join(" " * d + "k:\n" for d in range(1, 1001)),
        f"line {MAX_DEPTH + 2}, column {MAX_DEPTH + 1}: nested deeper than {MAX_DEPTH}",
    ),
    "100k JSON brackets": ('{"data": ' + "[" * 100_000 + "]" * 100_000 + "}", "nest"),
    "depth through aliases": (
        "a: &a "
        + "[" * 60
        + "]" * 60
        + "\nb: [*a, [[[[*a]]]]]\nc: "
        + "[" * 45
        + "*a"
        + "]" * 45
        + "\n",
        "alias *a nests deeper than",
    ),
    "List inside itself": (
        "&x {apiVersion: v1, kind: List, items: [*x]}\n",
        "line 1, column 41: items[0]: alias *x is inside its own anchor (line 1)",
    ),
    "labels inside themselves": (
        "metadata:\n  labels: &l {app: *l}\n",
        "metadata.labels.app: alias *l is inside its own anchor",
    ),
    "undefined alias": ("a: [*nope]\n", "line 1, column 5: a[0]: alias *nope has no anchor"),
    "anchor defined twice": ("a: &x 1\nb: &x 2\n", "line 2, column 4: anchor &x is defined twice"),
    # 3. alias bombs: refused at the alias that goes past the bound, naming its line.
    "alias bomb as label value": (LABEL_BOMB, "aliases expand to more than 100,000 nodes"),
    "alias bomb as port": (PORT_BOMB, "line 12, column 14: metadata.annotations.a5[0]: aliases"),
    "alias bomb as ignored kind name": (IGNORED_KIND_BOMB, "refusing what looks like an alias"),
    "alias bomb of nested Lists": (LIST_BOMB, "aliases expand to more than"),
    "alias bomb of maps": (
        "a: &a {"
        + ", ".join(f"k{i}: v" for i in range(10))
        + "}\n"
        + "".join(
            f"b{i}: &b{i} {{"
            + ", ".join(f"k{j}: *{'a' if i == 0 else f'b{i - 1}'}" for j in range(10))
            + "}\n"
            for i in range(6)
        ),
        "aliases expand to more than",
    ),
    "alias bomb through merge keys": (
        "a: &a {"
        + ", ".join(f"k{i}: [x, x, x, x, x, x, x, x, x, x]" for i in range(100))
        + "}\n"
        + "".join(f"m{i}: {{<<: *a}}\n" for i in range(100)),
        "at *a, of 1,201",
    ),
    # 4. keys YAML does not read as strings, and values that are not plain data.
    "on key": (
        "metadata:\n  labels:\n    app: web\n    on: enabled\n",
        "line 4, column 5: metadata.labels: key on is read by YAML as a boolean; quote it",
    ),
    "yes key in matchLabels": (
        "spec:\n  podSelector:\n    matchLabels:\n      yes: 'true'\n",
        "spec.podSelector.matchLabels: key yes is read by YAML as a boolean; quote it",
    ),
    "number key": (
        "data:\n  80: http\n",
        "line 2, column 3: data: key 80 is read by YAML as a number",
    ),
    "float key": ("data:\n  1.5: x\n", "key 1.5 is read by YAML as a number; quote it"),
    "null key": ("data:\n  ~: x\n", "key ~ is read by YAML as null; quote it"),
    "empty key": ("data: {? : x}\n", "data: empty key is read by YAML as null"),
    "list as key": (
        "data:\n  ? [a, b]\n  : c\n",
        "line 2, column 5: data: a key must be a string, not a list",
    ),
    "map as key": ("data: {{a: b}: c}\n", "a key must be a string, not a map"),
    "alias to a list as key": (
        "x: &x [a]\ndata: {*x : c}\n",
        "key *x is a list; a key must be a string",
    ),
    "binary tag": (
        "metadata:\n  labels:\n    app: !!binary d2Vi\n",
        "line 3, column 10: metadata.labels.app: tag !!binary is not supported",
    ),
    "set tag": ("metadata:\n  labels: !!set {app, web}\n", "metadata.labels: tag !!set is not"),
    "omap tag": ("spec: !!omap [a: 1]\n", "spec: tag !!omap is not supported"),
    "custom tag": ("metadata:\n  name: !Ref AppName\n", "metadata.name: tag !Ref is not supported"),
    "python tag": (
        "status: !!python/object/apply:os.system ['echo pwned']\n",
        "tag !!python/object/apply:os.system is not supported",
    ),
    "not an integer": ("port: !!int eighty\n", "port: 'eighty' cannot be read as an integer"),
    "100k digits": (
        "port: " + "9" * 100_000 + "\n",
        "(100000 characters) cannot be read as an integer",
    ),
    "merge of a list": (
        "a: &a [1]\nm: {<<: *a}\n",
        "m.<<: << (merge) takes a map or a list of maps",
    ),
    # 4. bytes that are not UTF-8 text.
    "latin-1": (
        b"metadata: {name: Jos\xe9}\n",
        "in.yaml: not UTF-8 text (invalid byte 0xe9 at offset 20)",
    ),
    "latin-1 after a BOM": (
        b"\xef\xbb\xbfa: \xe9\n",
        "not UTF-8 text (invalid byte 0xe9 at offset 6)",
    ),
    "UTF-16": ("a: b\n".encode("utf-16"), "not UTF-8 text (invalid byte 0xff at offset 0)"),
    "overlong slash": (b"name: x\xc0\xafy\n", "invalid byte 0xc0 at offset 7"),
    "raw ESC": (
        b"a: b\x1b[2J\n",
        "line 1, column 5: not valid YAML: character 0x1b is not allowed",
    ),
    "raw NUL": (b"a: \xc3\xa9\x00\n", "line 1, column 5: not valid YAML: character 0x00"),
    # 5. nothing to read.
    "empty": (b"", "in.yaml: no objects (empty input)"),
    "whitespace": (b"\n   \n\n", "in.yaml: no objects (empty input)"),
    "comments and separators": (b"# a: b\n---\n# c\n---\n...\n", "no objects (empty input)"),
    "null documents": (b"--- null\n--- ~\n---\n", "no objects (empty input)"),
    "BOM only": (b"\xef\xbb\xbf", "no objects (empty input)"),
    # Syntax errors keep the shape they had.
    "unclosed flow map": ("metadata: {name: a\nstatus: x\n", "line 2, column 7: not valid YAML: "),
    "tab indentation": ("metadata:\n\tname: a\n", "line 2, column 1: not valid YAML: "),
}


@pytest.mark.parametrize("name", REFUSED)
def test_refused(name: str, parser: str) -> None:
    data, fragment = REFUSED[name]
    raw = data.encode("utf-8") if isinstance(data, str) else data
    start = time.monotonic()
    with pytest.raises(YamlLoadError) as caught:
        load_documents(raw, SRC)
    assert time.monotonic() - start < QUICK
    message = str(caught.value)
    assert fragment in message
    assert message.startswith(f"{SRC}: ")
    assert "\n" not in message
    assert len(message) < 400


def test_the_alias_bound_is_counted_not_guessed() -> None:
    # One anchor of 1,000 nodes used 100 times is exactly the bound; once more is past it.
    anchor = "a: &a [" + ", ".join(["x"] * 999) + "]\n"
    uses = MAX_ALIAS_NODES // 1000
    at_bound = anchor + "b: [" + ", ".join(["*a"] * uses) + "]\n"
    docs = load_documents(at_bound.encode(), SRC)
    assert len(docs[0]["b"]) == uses
    assert docs[0]["b"][0] is docs[0]["a"]  # shared, as yaml.safe_load does
    past = anchor + "b: [" + ", ".join(["*a"] * (uses + 1)) + "]\n"
    with pytest.raises(YamlLoadError, match=rf"line 2, column {5 + 4 * uses}: b\[{uses}\]"):
        load_documents(past.encode(), SRC)


def test_depth_at_the_bound_is_accepted() -> None:
    deepest = "[" * MAX_DEPTH + "x" + "]" * MAX_DEPTH
    assert load_documents(deepest.encode(), SRC)
    with pytest.raises(YamlLoadError, match="nested deeper"):
        load_documents(("[" + deepest + "]").encode(), SRC)


def test_input_size_is_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(yamlload, "MAX_INPUT_BYTES", 100)
    assert load_documents(b"a: " + b"b" * 96 + b"\n", SRC)
    with pytest.raises(YamlLoadError, match=r"^in\.yaml: input is larger than 0 MiB"):
        load_documents(b"a: " + b"b" * 97 + b"\n", SRC)


# --------------------------------------------------------------------------- accepted


def test_multiple_documents_in_order(parser: str) -> None:
    docs = load_documents(b"---\na: 1\n---\n---\nb: 2\n...\n--- c\n", SRC)
    assert docs == [{"a": 1}, None, {"b": 2}, "c"]


def test_json(parser: str) -> None:
    text = '{"kind": "List", "items": [{"a": [1, 2.5, true, null, "\\/x", "\\u00e9"]}]}'
    assert load_documents(text.encode(), SRC) == [
        {"kind": "List", "items": [{"a": [1, 2.5, True, None, "/x", "é"]}]}
    ]


def test_scalars_resolve_as_safe_load(parser: str) -> None:
    text = (
        "a: [yes, No, on, OFF, true, 0x1f, 0o17, 0777, 1_000, 1:30, -5, +3, 1.5e3, .inf, -.Inf,"
        " ~, null, '', '5', \"on\", 2024-05-01, !!str 12, !!int '12', !!float '1', !!bool 'yes',"
        " ! 12, =, <<]\n"
    )
    mine = load_documents(text.encode(), SRC)[0]["a"]
    quoted = text.replace("2024-05-01", "'2024-05-01'").replace("=, <<", "'=', '<<'")
    theirs = yaml.safe_load(quoted)["a"]
    assert mine == theirs
    assert [type(v) for v in mine] == [type(v) for v in theirs]


def test_timestamps_stay_as_written(parser: str) -> None:
    text = (
        "metadata:\n  creationTimestamp: 2024-05-01T10:00:00Z\n  labels:\n    day: 2024-05-01\n"
        "  annotations: {spaced: 2001-12-14 21:59:43.10 -5, tagged: !!timestamp 2001-12-14}\n"
    )
    meta = load_documents(text.encode(), SRC)[0]["metadata"]
    assert meta == {
        "creationTimestamp": "2024-05-01T10:00:00Z",
        "labels": {"day": "2024-05-01"},
        "annotations": {"spaced": "2001-12-14 21:59:43.10 -5", "tagged": "2001-12-14"},
    }


def test_quoted_yaml11_keys_are_strings(parser: str) -> None:
    text = "labels:\n  'on': 'yes'\n  \"off\": no\n  '80': x\n  !!str yes: y\n"
    assert load_documents(text.encode(), SRC) == [
        {"labels": {"on": "yes", "off": False, "80": "x", "yes": "y"}}
    ]


def test_bom_and_crlf(parser: str) -> None:
    assert load_documents(b"\xef\xbb\xbfa: 1\r\nb: [x]\r\n", SRC) == [{"a": 1, "b": ["x"]}]


def test_anchors_used_a_few_times(parser: str) -> None:
    text = (
        "spec:\n  podSelector: &sel\n    matchLabels: {app: b}\n  ingress:\n"
        "    - from: [{podSelector: *sel}]\n    - from: [{podSelector: *sel}]\n"
        "      ports: &ports [{port: 80}, {port: 443}]\n  egress: [{ports: *ports}]\n"
        "name: &n web\nlabels: {*n : *n}\n"
    )
    doc = load_documents(text.encode(), SRC)[0]
    assert doc == yaml.safe_load(text)
    assert doc["spec"]["ingress"][0]["from"][0]["podSelector"] == {"matchLabels": {"app": "b"}}
    assert doc["labels"] == {"web": "web"}


def test_merge_keys_as_safe_load(parser: str) -> None:
    text = (
        "base: &b {x: 1, y: 2}\nother: &o {y: 3, z: 4}\n"
        "one: {<<: *b, x: 9}\n"  # the map's own keys win
        "two:\n  x: 9\n  <<: [*b, *o]\n"  # wherever they are; the first listed map wins
        "three: {<<: {a: 1}}\n"
    )
    assert load_documents(text.encode(), SRC)[0] == yaml.safe_load(text)
    assert load_documents(text.encode(), SRC)[0]["two"] == {"y": 2, "z": 4, "x": 9}


def test_same_as_safe_load_on_the_repository_manifests() -> None:
    paths = sorted((ROOT / "examples").glob("**/*.yaml")) + sorted(
        (ROOT / "manifests").glob("**/*.yaml")
    )
    assert paths
    for path in paths:
        data = path.read_bytes()
        expected = list(yaml.safe_load_all(data))
        if all(doc is None for doc in expected):
            continue
        assert load_documents(data, str(path)) == expected, path


def test_kubectl_output_loads_like_the_c_loader_and_no_slower() -> None:
    if not hasattr(yaml, "CSafeLoader"):
        pytest.skip("PyYAML without libyaml")
    text = "apiVersion: v1\nitems:\n" + "".join(_kubectl_pod(i) for i in range(400))
    text += 'kind: List\nmetadata:\n  resourceVersion: ""\n'
    data = text.encode()
    start = time.perf_counter()
    expected = list(yaml.load_all(data, Loader=yaml.CSafeLoader))
    theirs = time.perf_counter() - start
    start = time.perf_counter()
    docs = load_documents(data, SRC)
    mine = time.perf_counter() - start
    assert docs == expected
    # Measured at about a fifth of the C loader's time (10,000 pods: 3.8 s against
    # 20 s); the margin keeps a slow or busy machine from failing this.
    assert mine < theirs * 1.5 + 0.05


def _kubectl_pod(i: int) -> str:
    return (
        "- apiVersion: v1\n  kind: Pod\n  metadata:\n"
        f'    creationTimestamp: "2024-05-01T10:00:{i % 60:02d}Z"\n'
        f"    labels:\n      app.kubernetes.io/name: web{i % 7}\n      pod-template-hash: 7d9f\n"
        f"    name: web-{i}\n    namespace: ns{i % 5}\n"
        f'    resourceVersion: "{1000 + i}"\n    uid: 8a1b2c3d-{i:04d}\n  spec:\n'
        "    containers:\n    - image: web:1.2\n      name: web\n      ports:\n"
        "      - {containerPort: 8080, name: http, protocol: TCP}\n"
        "      resources: {limits: {cpu: 500m, memory: 256Mi}}\n"
        f"    nodeName: node-{i % 3}\n    tolerations:\n    - effect: NoExecute\n"
        "      key: node.kubernetes.io/not-ready\n      operator: Exists\n"
        "      tolerationSeconds: 300\n  status:\n    conditions:\n"
        '    - {lastProbeTime: null, status: "True", type: Ready}\n'
        f"    hostIP: 172.18.0.{i % 3 + 2}\n    phase: Running\n"
        f"    podIP: 10.244.{i // 250}.{i % 250 + 1}\n    podIPs:\n"
        f"    - ip: 10.244.{i // 250}.{i % 250 + 1}\n"
    )


# --------------------------------------------------------------------------- Lists


def _flat(doc: Any) -> list[Any]:
    return list(iter_documents(doc))


def test_lists_are_flattened() -> None:
    pod = {"kind": "Pod", "metadata": {"name": "a"}}
    nested = {"kind": "List", "items": [pod, None, {"kind": "PodList", "items": [pod, pod]}]}
    assert _flat(nested) == [pod, pod, pod]
    assert _flat({"kind": "PodList", "items": None}) == []
    assert _flat(None) == []
    assert _flat(pod) == [pod]


@pytest.mark.parametrize(
    ("items", "problem"),
    [
        ({"a": 1}, "items must be a list, not a map"),
        ("x", "items must be a list, not a string"),
        (3, "items must be a list, not a number"),
    ],
)
def test_a_list_kind_whose_items_are_not_a_list(items: Any, problem: str) -> None:
    doc = {"kind": "PodList", "metadata": {"name": "pods"}, "items": items}
    (bad,) = _flat(doc)
    assert isinstance(bad, UnreadableList)
    assert bad.problem == problem
    assert str(bad.ref) == "PodList pods"
    (error,) = parse_documents([doc], SRC).errors
    assert error.lines() == [f"{SRC}: PodList pods: items: {problem[len('items ') :]}"]


def test_a_list_kind_without_items() -> None:
    (bad,) = _flat({"kind": "List"})
    assert isinstance(bad, UnreadableList)
    assert bad.problem == "items must be a list, it is missing"


def test_list_flattening_is_bounded_even_for_python_cycles() -> None:
    # YAML input cannot make these (aliases into their own anchor are refused), but
    # iter_documents takes any Python data and must still end.
    looped: dict[str, Any] = {"kind": "List", "items": []}
    looped["items"] += [looped, looped]
    start = time.monotonic()
    flat = _flat(looped)
    assert time.monotonic() - start < QUICK
    assert [item.problem for item in flat] == ["items contain this List itself"] * 2
    deep: dict[str, Any] = {"kind": "List", "items": [{"kind": "Pod"}]}
    for _ in range(MAX_DEPTH + 5):
        deep = {"kind": "List", "items": [deep]}
    (bad,) = _flat(deep)
    assert isinstance(bad, UnreadableList)
    assert "more than" in bad.problem


# --------------------------------------------------------------------------- load_files


def test_load_files_reports_what_the_cli_reports(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "dup.yaml"
    path.write_text(POD + "---\nkind: Pod\nmetadata: {name: b, name: c}\n", encoding="utf-8")
    (error,) = load_files([path]).errors
    expected = f"{path}: line 8, column 21: metadata: duplicate key 'name' (first at line 8)"
    assert error.lines()[0].startswith(expected)
    assert isinstance(error, InvalidObjectError)
    code, _, err = _run(capsys, "matrix", "-f", str(path))
    assert code == 2
    assert err == f"error: {error.lines()[0]}\n"


def test_load_files_reads_bytes_strictly(tmp_path: Path) -> None:
    path = tmp_path / "latin1.yaml"
    path.write_bytes(POD.replace("name: a", "name: \xe9").encode("latin-1"))
    (error,) = load_files([path]).errors
    assert error.lines() == [f"{path}: not UTF-8 text (invalid byte 0xe9 at offset 42)"]
    empty = tmp_path / "empty.yaml"
    empty.write_bytes(b"")
    assert [e.lines() for e in load_files([empty]).errors] == [
        [f"{empty}: no objects (empty input)"]
    ]
    good = tmp_path / "good.yaml"
    good.write_bytes(b"\xef\xbb\xbf" + POD.encode())
    result = load_files([good])
    assert (len(result.objects), result.errors) == (1, ())


# --------------------------------------------------------------------------- CLI


def _run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = cli.main(list(argv))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def _stdin(monkeypatch: pytest.MonkeyPatch, data: bytes) -> None:
    monkeypatch.setattr("sys.stdin", io.TextIOWrapper(io.BytesIO(data), encoding="utf-8"))


def _refused(code: int, out: str, err: str, fragment: str) -> None:
    assert (code, out) == (2, "")
    assert "Traceback" not in err
    lines = err.splitlines()
    assert lines
    assert all(line.startswith("error: ") for line in lines), err
    assert any(fragment in line for line in lines), err


CLI_REFUSED: dict[str, tuple[str, str]] = {
    "duplicate except": (
        POD + "---\napiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\n"
        "metadata: {name: p, namespace: demo}\nspec:\n  podSelector: {}\n  ingress:\n"
        "    - from:\n        - ipBlock:\n            cidr: 10.0.0.0/8\n"
        "            except: [10.0.0.1/32]\n            except: []\n",
        "line 17, column 13: spec.ingress[0].from[0].ipBlock: duplicate key 'except' "
        "(first at line 16)",
    ),
    "deep nesting in an ignored field": (
        POD.replace("spec:", "metadata2: " + "[" * 500 + "]" * 500 + "\nspec:"),
        "nested deeper than 100",
    ),
    "List inside itself": (POD + "--- &x {apiVersion: v1, kind: List, items: [*x]}\n", "alias *x"),
    "alias bomb as label value": (LABEL_BOMB, "aliases expand to more than 100,000 nodes"),
    "alias bomb as port": (PORT_BOMB, "aliases expand"),
    "alias bomb as ignored kind name": (POD + "---\n" + IGNORED_KIND_BOMB, "aliases expand"),
    "alias bomb of nested Lists": (LIST_BOMB, "aliases expand"),
    "on key": (
        POD.replace("labels: {app: a}", "labels: {app: a, on: x}"),
        "line 3, column 55: metadata.labels: key on is read by YAML as a boolean; quote it",
    ),
    "PodList items not a list": (
        POD + "---\napiVersion: v1\nkind: PodList\nmetadata: {name: pods}\nitems: {a: b}\n",
        "document 2 (PodList pods): items must be a list, not a map",
    ),
    "comments only": ("# nothing\n---\n", "no objects (empty input)"),
}


@pytest.mark.parametrize("name", CLI_REFUSED)
def test_cli_refuses(
    name: str, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    text, fragment = CLI_REFUSED[name]
    path = tmp_path / "in.yaml"
    path.write_text(text, encoding="utf-8")
    start = time.monotonic()
    code, out, err = _run(capsys, "matrix", "-f", str(path), "--port", "80")
    assert time.monotonic() - start < QUICK
    _refused(code, out, err, f"error: {path}: ")
    _refused(code, out, err, fragment)
    # The same bytes on stdin: the same message, naming "-".
    _stdin(monkeypatch, text.encode())
    assert _run(capsys, "matrix", "-f", "-", "--port", "80") == (2, "", err.replace(str(path), "-"))


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"", "no objects (empty input)"),
        (b"\n\n", "no objects (empty input)"),
        (b"---\n...\n", "no objects (empty input)"),
        (
            POD.replace("name: a", "name: Jos\xe9").encode("latin-1"),
            "not UTF-8 text (invalid byte 0xe9 at offset 45)",
        ),
        (b"\xff\xfea\x00", "not UTF-8 text (invalid byte 0xff at offset 0)"),
    ],
)
def test_cli_file_and_stdin_read_the_same(
    data: bytes,
    message: str,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    path = tmp_path / "in.yaml"
    path.write_bytes(data)
    assert _run(capsys, "matrix", "-f", str(path)) == (2, "", f"error: {path}: {message}\n")
    _stdin(monkeypatch, data)
    assert _run(capsys, "matrix", "-f", "-") == (2, "", f"error: -: {message}\n")


def test_cli_reads_a_bom_and_unquoted_timestamps(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    text = POD.replace(
        "labels: {app: a}", "labels: {app: a}, creationTimestamp: 2024-05-01T10:00:00Z"
    )
    path = tmp_path / "in.yaml"
    path.write_bytes(b"\xef\xbb\xbf" + text.encode())
    code, out, err = _run(capsys, "matrix", "-f", str(path), "--port", "80", "-o", "json")
    assert (code, err) == (0, "")
    assert "demo/a" in out
    _stdin(monkeypatch, b"\xef\xbb\xbf" + text.encode())
    assert _run(capsys, "matrix", "-f", "-", "--port", "80", "-o", "json") == (0, out, "")


def test_cli_timestamp_as_a_label_value_is_a_string(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # Once read as datetime.date(2024, 5, 1), whose repr leaked into the message.
    path = tmp_path / "in.yaml"
    path.write_text(POD.replace("labels: {app: a}", "labels: {app: a, day: 2024-05-01}"))
    code, out, err = _run(capsys, "matrix", "-f", str(path), "--port", "80")
    assert (code, err) == (0, "")
    assert "datetime" not in out


def test_cli_refuses_an_input_past_the_size_bound(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(yamlload, "MAX_INPUT_BYTES", len(POD))
    monkeypatch.setattr(inputs, "MAX_INPUT_BYTES", len(POD))
    path = tmp_path / "in.yaml"
    path.write_text(POD + "\n")
    code, out, err = _run(capsys, "matrix", "-f", str(path))
    _refused(code, out, err, f"error: {path}: input is larger than")
    _stdin(monkeypatch, (POD + "\n").encode())
    assert _run(capsys, "matrix", "-f", "-")[2] == err.replace(str(path), "-")
    path.write_text(POD)
    assert _run(capsys, "matrix", "-f", str(path))[0] == 0
