"""e2e/kind/ scripts, checked without kind: syntax, pins, and runs against fake tools.

kind cannot run here, so the scripts run with fake ``kind``, ``docker``, ``kubectl``,
``curl`` and ``uname`` on PATH (small scripts answering what the scripts ask): the
kind version check, the node-image and CRD checks of a reused cluster, and
conformance.sh's download (host OS/arch, checksum, atomic move, an interrupted
download leaving nothing behind).
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import re
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
KIND = ROOT / "e2e" / "kind"
SCRIPTS = sorted(KIND.glob("*.sh"))
BASH = shutil.which("bash")

pytestmark = pytest.mark.skipif(BASH is None, reason="bash is not installed")


def _lib_default(name: str) -> str:
    match = re.search(rf'^{name}="([^"$]*)"', (KIND / "lib.sh").read_text(), re.M)
    assert match, name
    return match.group(1)


NODE_IMAGE = _lib_default("DEFAULT_NODE_IMAGE")


def test_scripts_parse() -> None:
    assert {p.name for p in SCRIPTS} >= {"lib.sh", "up.sh", "down.sh", "run-e2e.sh"}
    for script in SCRIPTS:
        subprocess.run([str(BASH), "-n", str(script)], check=True)


def test_node_image_is_pinned_by_tag_and_digest() -> None:
    assert re.fullmatch(r"kindest/node:v\d+\.\d+\.\d+@sha256:[0-9a-f]{64}", NODE_IMAGE)
    text = (KIND / "lib.sh").read_text()
    assert "To update" in text
    assert "kind/releases" in text
    assert re.fullmatch(r"\d+\.\d+\.\d+", _lib_default("KIND_MIN"))
    # The docs name the same default.
    assert NODE_IMAGE.split("@")[0] in (ROOT / "docs" / "deploy.md").read_text()


def test_conformance_download_is_atomic_and_host_specific() -> None:
    text = (KIND / "conformance.sh").read_text()
    assert "uname -s" in text
    assert "darwin" in text
    assert "kubernetes-test-linux-" not in text, "the OS must be the host's"
    assert not re.search(r"curl[^\n]*\|\s*tar", text), "no streaming into the cache"
    assert re.search(r'mv "\$tmp/kubernetes" "\$WORK/kubernetes"', text)
    assert ".sha512" in text


# --------------------------------------------------------------------------- fake tools


def _write(path: Path, text: str) -> None:
    path.write_text(text)
    path.chmod(0o755)


FAKE_DOCKER = """#!/bin/bash
case "$1" in
  info) exit 0 ;;
  inspect) echo "$FAKE_NODE_IMAGE" ;;
  exec) exit 0 ;;
  *) echo "fake docker: $*" >&2; exit 2 ;;
esac
"""

FAKE_KIND = """#!/bin/bash
case "$1 $2" in
  "version "*) echo "$FAKE_KIND_VERSION" ;;
  "get clusters") echo stockade ;;
  "get nodes") printf '%s\\n' stockade-control-plane stockade-worker stockade-worker2 ;;
  "get kubeconfig") echo "apiVersion: v1" ;;
  *) echo "fake kind: $*" >&2; exit 2 ;;
esac
"""

FAKE_KUBECTL = f"""#!{sys.executable}
import json, os, sys
import yaml
args = sys.argv[1:]
if args[:1] == ["--context"]:
    args = args[2:]
if args[:2] == ["get", "namespace"]:
    sys.exit(0)
if args[:1] == ["version"]:
    print(json.dumps({{"serverVersion": {{"gitVersion": "v1.32.2"}}}}))
    sys.exit(0)
if args[:1] == ["create"]:
    path = args[args.index("-f") + 1]
    docs = [d for d in yaml.safe_load_all(open(path)) if d]
    print(json.dumps({{"kind": "List", "items": docs}}))
    sys.exit(0)
if args[:2] == ["get", "crd"]:
    print(open(os.environ["FAKE_CRDS_JSON"]).read())
    sys.exit(0)
print("fake kubectl:", args, file=sys.stderr)
sys.exit(2)
"""

FAKE_CURL = """#!/bin/bash
out="" url=""
while [[ $# -gt 0 ]]; do
  case "$1" in
    -o) out="$2"; shift 2 ;;
    -*) shift ;;
    *) url="$1"; shift ;;
  esac
done
echo "$url" >> "$FAKE_CURL_LOG"
if [[ "$url" == *.sha512 ]]; then
  cat "$FAKE_TARBALL.sha512"
elif [[ -n "${FAKE_CURL_FAIL:-}" ]]; then
  head -c 100 "$FAKE_TARBALL" > "$out"
  exit 18
else
  cp "$FAKE_TARBALL" "$out"
fi
"""

FAKE_UNAME = """#!/bin/bash
case "$1" in
  -s) echo "$FAKE_UNAME_S" ;;
  -m) echo "$FAKE_UNAME_M" ;;
  *) echo fake ;;
esac
"""


def _tarball(path: Path) -> None:
    """A kubernetes-test tarball with a fake ginkgo (records its arguments) and e2e.test."""
    ginkgo = (
        '#!/bin/bash\n[[ "$1" == version ]] && { echo 2.0; exit 0; }\necho "$@" > "$FAKE_RAN"\n'
    )
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        for name, body in (("ginkgo", ginkgo), ("e2e.test", "#!/bin/bash\nexit 0\n" + "x" * 4096)):
            data = body.encode()
            info = tarfile.TarInfo(f"kubernetes/test/bin/{name}")
            info.size, info.mode = len(data), 0o755
            tar.addfile(info, io.BytesIO(data))
    path.write_bytes(buf.getvalue())
    path.with_name(path.name + ".sha512").write_text(
        hashlib.sha512(buf.getvalue()).hexdigest() + "  x\n"
    )


@pytest.fixture
def fake(tmp_path: Path) -> dict[str, str]:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for name, text in (
        ("docker", FAKE_DOCKER),
        ("kind", FAKE_KIND),
        ("kubectl", FAKE_KUBECTL),
        ("curl", FAKE_CURL),
        ("uname", FAKE_UNAME),
    ):
        _write(bin_dir / name, text)
    crds = [d for d in yaml.safe_load_all((ROOT / "manifests" / "crds.yaml").read_text()) if d]
    (tmp_path / "crds.json").write_text(json.dumps({"kind": "List", "items": crds}))
    _tarball(tmp_path / "test.tar.gz")
    return {
        "PATH": f"{bin_dir}:{os.environ['PATH']}",
        "HOME": str(tmp_path / "home"),
        "XDG_CACHE_HOME": str(tmp_path / "cache"),
        "FAKE_NODE_IMAGE": NODE_IMAGE,
        "FAKE_KIND_VERSION": "kind v0.27.0 go1.23.6 linux/amd64",
        "FAKE_CRDS_JSON": str(tmp_path / "crds.json"),
        "FAKE_TARBALL": str(tmp_path / "test.tar.gz"),
        "FAKE_CURL_LOG": str(tmp_path / "curl.log"),
        "FAKE_RAN": str(tmp_path / "ran"),
        "FAKE_UNAME_S": "Darwin",
        "FAKE_UNAME_M": "arm64",
        "STOCKADE_SCTP": "1",
    }


def _bash(env: dict[str, str], script: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(BASH), "-c", script], check=False, env=env, capture_output=True, text=True, timeout=60
    )


def _lib(env: dict[str, str], body: str) -> subprocess.CompletedProcess[str]:
    return _bash(env, f'set -euo pipefail; . "{KIND}/lib.sh"; {body}')


@pytest.mark.parametrize(
    ("output", "ok"),
    [
        ("kind v0.27.0 go1.23.6 linux/amd64", True),
        ("kind v0.30.0 go1.24.0 darwin/arm64", True),
        ("kind v1.0.0-alpha+123 go1.25 linux/amd64", True),
        ("kind v0.26.0 go1.23.4 linux/amd64", False),
        ("kind v0.9.0 go1.15 linux/amd64", False),
    ],
)
def test_kind_version_is_checked(fake: dict[str, str], output: str, ok: bool) -> None:
    result = _lib({**fake, "FAKE_KIND_VERSION": output}, "need_kind; echo fine")
    if ok:
        assert result.returncode == 0, result.stderr
    else:
        assert result.returncode == 1
        assert "too old" in result.stderr
        assert "0.27.0" in result.stderr


def test_unreadable_kind_version_fails_clearly(fake: dict[str, str]) -> None:
    result = _lib({**fake, "FAKE_KIND_VERSION": "something else"}, "need_kind")
    assert result.returncode == 1
    assert "cannot read kind's version" in result.stderr


def test_reused_cluster_must_run_the_pinned_node_image(fake: dict[str, str]) -> None:
    assert _lib(fake, "need_node_image").returncode == 0
    other = {**fake, "FAKE_NODE_IMAGE": "kindest/node:v1.29.0"}
    result = _lib(other, "need_node_image")
    assert result.returncode == 1
    assert "runs node image kindest/node:v1.29.0" in result.stderr
    assert "down.sh" in result.stderr


def test_reused_cluster_must_hold_this_checkouts_crds(fake: dict[str, str], tmp_path: Path) -> None:
    assert _lib(fake, "need_installed").returncode == 0, _lib(fake, "need_installed").stderr
    stale = json.loads((tmp_path / "crds.json").read_text())
    columns = stale["items"][1]["spec"]["versions"][0]["additionalPrinterColumns"]
    columns.append({"name": "Old", "type": "integer", "jsonPath": ".status.old"})
    (tmp_path / "stale.json").write_text(json.dumps(stale))
    result = _lib({**fake, "FAKE_CRDS_JSON": str(tmp_path / "stale.json")}, "need_installed")
    assert result.returncode == 1
    assert "not this checkout's manifests/crds.yaml" in result.stderr


def test_conformance_downloads_host_binaries_atomically(
    fake: dict[str, str], tmp_path: Path
) -> None:
    script = f'"{KIND}/conformance.sh"'
    cache = tmp_path / "cache" / "stockade" / "conformance" / "v1.32.2-darwin-arm64"

    # Interrupted: curl fails half-way; nothing is left in the cache.
    failed = _bash({**fake, "FAKE_CURL_FAIL": "1"}, script)
    assert failed.returncode != 0
    assert not (cache / "kubernetes").exists()
    assert not list(cache.glob(".download.*")), "the temp dir is removed"

    # A cache an older script left (e2e.test truncated, no marker) is not trusted.
    old = cache / "kubernetes" / "test" / "bin"
    old.mkdir(parents=True)
    for name in ("e2e.test", "ginkgo"):
        _write(old / name, "#!/bin/bash\n")

    done = _bash(fake, script)
    assert done.returncode == 0, done.stderr
    urls = (tmp_path / "curl.log").read_text().split()
    assert "https://dl.k8s.io/v1.32.2/kubernetes-test-darwin-arm64.tar.gz" in urls
    assert "https://dl.k8s.io/v1.32.2/kubernetes-test-darwin-arm64.tar.gz.sha512" in urls
    assert (cache / "kubernetes" / ".sha512").is_file()
    assert (cache / "kubernetes" / "test" / "bin" / "e2e.test").stat().st_size > 4096
    assert "--ginkgo.focus=NetworkPolicy" in (tmp_path / "ran").read_text()

    # Cached now: no second download.
    before = len(urls)
    assert _bash(fake, script).returncode == 0
    assert len((tmp_path / "curl.log").read_text().split()) == before


def test_conformance_refuses_a_bad_checksum(fake: dict[str, str], tmp_path: Path) -> None:
    (tmp_path / "test.tar.gz.sha512").write_text("0" * 128 + "\n")
    result = _bash(
        {**fake, "FAKE_UNAME_S": "Linux", "FAKE_UNAME_M": "x86_64"}, f'"{KIND}/conformance.sh"'
    )
    assert result.returncode == 1
    assert "checksum mismatch" in result.stderr
    assert "kubernetes-test-linux-amd64" in (tmp_path / "curl.log").read_text()
    cache = tmp_path / "cache" / "stockade" / "conformance" / "v1.32.2-linux-amd64"
    assert not (cache / "kubernetes").exists()


def test_up_refuses_to_reuse_a_cluster_of_another_node_image(fake: dict[str, str]) -> None:
    """Before building or applying anything (the fake docker knows no `build`)."""
    result = _bash({**fake, "FAKE_NODE_IMAGE": "kindest/node:v1.29.0"}, f'"{KIND}/up.sh"')
    assert result.returncode == 1
    assert "runs node image kindest/node:v1.29.0" in result.stderr
    assert "fake docker" not in result.stderr
