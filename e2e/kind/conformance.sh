#!/usr/bin/env bash
# Run the upstream NetworkPolicy conformance tests (kubernetes/test/e2e/network/netpol)
# against the kind cluster: download the test binaries of the cluster's exact version
# and run e2e.test focused on NetworkPolicy. SCTP tests are skipped when the nodes'
# kernel has no SCTP (set STOCKADE_SCTP=1 or 0 to decide yourself).
# Environment: FOCUS, SKIP (extra ginkgo regexes), WORK (download dir), NODES (parallel).
set -euo pipefail
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
need_docker
need_kind
need_kubectl
need curl "to download the Kubernetes test binaries"
need_cluster
need_installed
echo "kind cluster $CLUSTER: node image $(cluster_node_image || echo unknown)"

version="$(kctl version -o json | python3 -c 'import json,sys; print(json.load(sys.stdin)["serverVersion"]["gitVersion"])')"
# ginkgo and e2e.test run on this host (they only talk to the API server and exec
# into pods), so the binaries are the host's OS and architecture, not the nodes'.
case "$(uname -s)" in
  Linux) os=linux ;;
  Darwin) os=darwin ;;
  *) die "no Kubernetes test binaries for $(uname -s) (Linux and macOS only)" ;;
esac
case "$(uname -m)" in
  x86_64 | amd64) arch=amd64 ;;
  aarch64 | arm64) arch=arm64 ;;
  *) die "no Kubernetes test binaries for $(uname -m)" ;;
esac
WORK="${WORK:-${XDG_CACHE_HOME:-$HOME/.cache}/stockade/conformance/$version-$os-$arch}"
BIN="$WORK/kubernetes/test/bin"
mkdir -p "$WORK"

sha512() {
  if command -v sha512sum > /dev/null 2>&1; then
    sha512sum "$1" | cut -d' ' -f1
  else
    shasum -a 512 "$1" | cut -d' ' -f1
  fi
}

# Download to a temporary directory beside the cache, verify the tarball against the
# published SHA-512 and the extracted binaries, then move them in with one rename:
# an interrupted run leaves no truncated e2e.test behind (only a temp dir, removed).
# The marker .sha512 is written last, inside the temp directory: a cache without it
# (an older script's, which streamed into place) is downloaded again.
rm -rf "$WORK"/.download.* # left by a run that was killed outright
if [[ ! -f "$WORK/kubernetes/.sha512" || ! -x "$BIN/e2e.test" || ! -x "$BIN/ginkgo" ]]; then
  url="https://dl.k8s.io/$version/kubernetes-test-$os-$arch.tar.gz"
  tmp="$(mktemp -d "$WORK/.download.XXXXXX")"
  trap 'rm -rf "$tmp"' EXIT
  echo "downloading $url"
  curl -fsSL --retry 3 -o "$tmp/test.tar.gz" "$url"
  # The published file holds the hex digest (possibly followed by a file name).
  want="$(curl -fsSL --retry 3 "$url.sha512" | awk '{ print $1; exit }')"
  have="$(sha512 "$tmp/test.tar.gz")"
  [[ -n "$want" && "$have" == "$want" ]] || die "checksum mismatch for $url (got $have, published $want)"
  tar -xzf "$tmp/test.tar.gz" -C "$tmp" kubernetes/test/bin/e2e.test kubernetes/test/bin/ginkgo
  for bin in e2e.test ginkgo; do
    [[ -s "$tmp/kubernetes/test/bin/$bin" && -x "$tmp/kubernetes/test/bin/$bin" ]] \
      || die "$url has no usable kubernetes/test/bin/$bin"
  done
  "$tmp/kubernetes/test/bin/ginkgo" version > /dev/null 2>&1 \
    || die "the downloaded ginkgo does not run on this host ($os/$arch)"
  echo "$want" > "$tmp/kubernetes/.sha512"
  rm -rf "$WORK/kubernetes" # an incomplete cache, if any
  mv "$tmp/kubernetes" "$WORK/kubernetes"
  rm -rf "$tmp"
  trap - EXIT
fi

sctp="${STOCKADE_SCTP:-}"
if [[ -z "$sctp" ]]; then
  sctp=1
  for node in $(kind get nodes --name "$CLUSTER"); do
    # The module may be loadable yet not loaded; a node container cannot load it.
    docker exec "$node" test -d /proc/sys/net/sctp || sctp=0
  done
fi
skip='\[Disruptive\]|\[Serial\]'
if [[ "$sctp" == 0 ]]; then
  echo "the nodes' kernel has no SCTP: skipping the SCTP tests (modprobe sctp on the host to run them)"
  skip="$skip|SCTP"
fi
[[ -n "${SKIP:-}" ]] && skip="$skip|$SKIP"
focus="${FOCUS:-NetworkPolicy}"

kubeconfig="$(mktemp)"
trap 'rm -f "$kubeconfig"' EXIT
kind get kubeconfig --name "$CLUSTER" > "$kubeconfig"
report="$WORK/report"
mkdir -p "$report"
echo "running e2e.test $version: focus '$focus', skip '$skip' (report in $report)"
"$BIN/ginkgo" --nodes="${NODES:-4}" --timeout=3h \
  "$BIN/e2e.test" -- \
  --kubeconfig="$kubeconfig" \
  --provider=skeleton \
  --report-dir="$report" \
  --ginkgo.focus="$focus" \
  --ginkgo.skip="$skip"
