# Shared by the e2e/kind scripts: settings and checks. Source it; do not run it.
# shellcheck shell=bash

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
KIND_DIR="$ROOT/e2e/kind"
# Everything can be overridden from the environment.
CLUSTER="${STOCKADE_KIND_CLUSTER:-stockade}"
CONTEXT="kind-$CLUSTER"
NODE_IMAGE="${STOCKADE_KIND_NODE_IMAGE:-kindest/node:v1.32.2}"
IMAGE="${STOCKADE_IMAGE:-stockade:dev}"
POD_SUBNET="10.244.0.0/16"
# Hosts outside the cluster for the ipBlock scenarios: containers on kind's network.
EXT_HOSTS=(stockade-ext-1 stockade-ext-2)
AGNHOST_IMAGE="registry.k8s.io/e2e-test-images/agnhost:2.53"

die() {
  echo "error: $*" >&2
  exit 1
}

# need TOOL WHY: fail at once, naming the tool and where to get it.
need() {
  command -v "$1" > /dev/null 2>&1 || die "$1 is not installed ($2)"
}

need_docker() {
  need docker "kind runs its nodes as docker containers: https://docs.docker.com/engine/install/"
  docker info > /dev/null 2>&1 || die "docker is installed but its daemon does not answer (is it running, may you use it?)"
}

need_kind() {
  need kind "https://kind.sigs.k8s.io/docs/user/quick-start/#installation"
}

need_kubectl() {
  need kubectl "https://kubernetes.io/docs/tasks/tools/"
}

need_cluster() {
  kind get clusters 2> /dev/null | grep -qx "$CLUSTER" \
    || die "no kind cluster named $CLUSTER: run e2e/kind/up.sh first"
}

kctl() {
  kubectl --context "$CONTEXT" "$@"
}
