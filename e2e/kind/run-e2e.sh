#!/usr/bin/env bash
# Run the shared end-to-end scenarios (e2e/) against the kind cluster up.sh made.
# Extra arguments go to pytest, e.g. e2e/kind/run-e2e.sh -k default-deny -x
set -euo pipefail
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
need_docker
need_kind
need_kubectl
need_cluster
need_installed
echo "kind cluster $CLUSTER: node image $(cluster_node_image || echo unknown)"

PYTHON="${PYTHON:-$ROOT/.venv/bin/python}"
[[ -x "$PYTHON" ]] || die "no $PYTHON: create the virtualenv first (scripts/test.sh does)"
cd "$ROOT"
STOCKADE_E2E_DRIVER=kind STOCKADE_KIND_CLUSTER="$CLUSTER" \
  "$PYTHON" -m pytest e2e -q -p no:cacheprovider --timeout=1800 "$@"
