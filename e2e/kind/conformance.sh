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

version="$(kctl version -o json | python3 -c 'import json,sys; print(json.load(sys.stdin)["serverVersion"]["gitVersion"])')"
case "$(uname -m)" in
  x86_64) arch=amd64 ;;
  aarch64 | arm64) arch=arm64 ;;
  *) die "no Kubernetes test binaries for $(uname -m)" ;;
esac
WORK="${WORK:-${XDG_CACHE_HOME:-$HOME/.cache}/stockade/conformance/$version-$arch}"
mkdir -p "$WORK"
if [[ ! -x "$WORK/kubernetes/test/bin/e2e.test" ]]; then
  url="https://dl.k8s.io/$version/kubernetes-test-linux-$arch.tar.gz"
  echo "downloading $url"
  curl -fsSL "$url" | tar -xz -C "$WORK" kubernetes/test/bin/e2e.test kubernetes/test/bin/ginkgo
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
"$WORK/kubernetes/test/bin/ginkgo" --nodes="${NODES:-4}" --timeout=3h \
  "$WORK/kubernetes/test/bin/e2e.test" -- \
  --kubeconfig="$kubeconfig" \
  --provider=skeleton \
  --report-dir="$report" \
  --ginkgo.focus="$focus" \
  --ginkgo.skip="$skip"
