#!/usr/bin/env bash
# Delete the kind cluster and the external hosts up.sh started.
set -euo pipefail
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
need_docker
need_kind

for host in "${EXT_HOSTS[@]}"; do
  docker rm -f "$host" > /dev/null 2>&1 || true
done
kind delete cluster --name "$CLUSTER"
