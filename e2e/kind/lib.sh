# Shared by the e2e/kind scripts: settings and checks. Source it; do not run it.
# shellcheck shell=bash

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
KIND_DIR="$ROOT/e2e/kind"
# Everything can be overridden from the environment.
CLUSTER="${STOCKADE_KIND_CLUSTER:-stockade}"
CONTEXT="kind-$CLUSTER"
# The node image, pinned by tag and digest: the digest kind's release notes list for
# this image (a tag alone can be re-pushed). To update, pick the line for the
# Kubernetes version you want from the notes of the kind release in KIND_MIN
# (https://github.com/kubernetes-sigs/kind/releases: "Images pre-built for this
# release"), paste it here, and raise KIND_MIN if that release is newer.
DEFAULT_NODE_IMAGE="kindest/node:v1.32.2@sha256:f226345927d7e348497136874b6d207e0b32cc52154ad8323129352923a3142f"
NODE_IMAGE="${STOCKADE_KIND_NODE_IMAGE:-$DEFAULT_NODE_IMAGE}"
# The oldest kind that runs that image (node images are built for a kind release:
# v0.27.0 published kindest/node:v1.32.2), and whose `kind load` and config we use.
KIND_MIN="0.27.0"
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

# version_at_least HAVE WANT: true when dotted version HAVE >= WANT (numeric parts).
version_at_least() {
  local have want i h w
  IFS=. read -r -a have <<< "$1"
  IFS=. read -r -a want <<< "$2"
  for i in 0 1 2; do
    h="${have[$i]:-0}"
    w="${want[$i]:-0}"
    ((10#$h > 10#$w)) && return 0
    ((10#$h < 10#$w)) && return 1
  done
  return 0
}

need_kind() {
  need kind "https://kind.sigs.k8s.io/docs/user/quick-start/#installation"
  local out version
  out="$(kind version 2> /dev/null)" || die "\`kind version\` failed: is kind broken?"
  # "kind v0.27.0 go1.23.6 linux/amd64" (a "-alpha..." suffix is ignored).
  version="$(sed -nE 's/^kind v?([0-9]+\.[0-9]+\.[0-9]+).*/\1/p' <<< "$out")"
  [[ -n "$version" ]] || die "cannot read kind's version from: $out"
  version_at_least "$version" "$KIND_MIN" \
    || die "kind $version is too old: v$KIND_MIN or newer is needed for $NODE_IMAGE (https://kind.sigs.k8s.io/docs/user/quick-start/#installation)"
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

# The image the cluster's control-plane node container was created from (as given to
# `kind create cluster --image`, digest included).
cluster_node_image() {
  docker inspect -f '{{.Config.Image}}' "$CLUSTER-control-plane" 2> /dev/null
}

# same_image A B: the same image reference (a docker.io/ prefix aside), or the same digest.
same_image() {
  local a="${1#docker.io/}" b="${2#docker.io/}"
  [[ "$a" == "$b" ]] && return 0
  [[ "$a" == *@sha256:* && "$b" == *@sha256:* && "${a##*@}" == "${b##*@}" ]]
}

# need_node_image: the existing cluster runs NODE_IMAGE, or stop and say what differs.
need_node_image() {
  local have
  have="$(cluster_node_image)" || die "no container $CLUSTER-control-plane: is $CLUSTER a kind cluster of this docker host?"
  same_image "$have" "$NODE_IMAGE" \
    || die "kind cluster $CLUSTER runs node image $have, not $NODE_IMAGE: delete it (e2e/kind/down.sh) or set STOCKADE_KIND_NODE_IMAGE=$have"
}

# need_installed: stockade's namespace exists and the cluster's CRDs are the ones of
# this checkout (manifests/crds.yaml: names, versions, schemas, printer columns).
need_installed() {
  kctl get namespace stockade-system > /dev/null 2>&1 \
    || die "no namespace stockade-system in $CLUSTER: run e2e/kind/up.sh"
  local want have
  want="$(kctl create --dry-run=client -o json -f "$ROOT/manifests/crds.yaml")" \
    || die "cannot read manifests/crds.yaml"
  have="$(kctl get crd noderulesets.stockade.dev peersets.stockade.dev -o json 2> /dev/null)" \
    || die "stockade's CRDs are not installed in $CLUSTER: run e2e/kind/up.sh"
  python3 - "$want" "$have" << 'PY' || die "stockade's CRDs in $CLUSTER are not this checkout's manifests/crds.yaml: run e2e/kind/up.sh"
import json
import sys


def essence(text):
    doc = json.loads(text)
    out = {}
    for crd in doc.get("items", [doc]):
        spec = crd["spec"]
        out[crd["metadata"]["name"]] = [
            spec["group"],
            spec["names"]["kind"],
            spec["scope"],
            [
                [
                    v["name"],
                    v.get("served"),
                    v.get("storage"),
                    v.get("schema"),
                    [[c["name"], c["jsonPath"]] for c in v.get("additionalPrinterColumns", [])],
                ]
                for v in spec["versions"]
            ],
        ]
    return out


want, have = essence(sys.argv[1]), essence(sys.argv[2])
for name in sorted(want):
    if want[name] != have.get(name):
        print(f"differs: {name}", file=sys.stderr)
        sys.exit(1)
PY
}
