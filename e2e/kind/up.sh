#!/usr/bin/env bash
# Create a kind cluster with a non-enforcing CNI, build and load the stockade image,
# install stockade (kubectl apply -k manifests/) and wait until it runs.
# Re-running it on an existing cluster rebuilds the image and rolls it out.
set -euo pipefail
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
need_docker
need_kind
need_kubectl

if kind get clusters 2> /dev/null | grep -qx "$CLUSTER"; then
  # Reused: the node containers (so their kernel modules, images and files) and
  # whatever else runs in the cluster. Re-applied from this checkout below: the CNI
  # (e2e/kind/kindnet.yaml) and everything in manifests/ (CRDs, namespace, RBAC,
  # controller, agents), so stockade is this checkout's whatever was there before.
  need_node_image
  for node in "$CLUSTER-control-plane" "$CLUSTER-worker" "$CLUSTER-worker2"; do
    kind get nodes --name "$CLUSTER" | grep -qx "$node" \
      || die "kind cluster $CLUSTER has no node $node (not made from e2e/kind/cluster.yaml): delete it with e2e/kind/down.sh"
  done
  echo "kind cluster $CLUSTER exists (node image $NODE_IMAGE); reusing its nodes, re-applying the CNI and stockade from this checkout"
else
  kind create cluster --name "$CLUSTER" --image "$NODE_IMAGE" --config "$KIND_DIR/cluster.yaml" --wait 0s
fi

echo "installing the CNI (kindnetd without network policy)"
sed -e "s#__POD_SUBNET__#$POD_SUBNET#" \
  -e "s#__CONTROL_PLANE_ENDPOINT__#$CLUSTER-control-plane:6443#" \
  "$KIND_DIR/kindnet.yaml" | kctl apply -f -
kctl -n kube-system rollout status daemonset/kindnet --timeout=180s
kctl wait --for=condition=Ready nodes --all --timeout=180s

echo "building $IMAGE"
docker build -t "$IMAGE" "$ROOT"
kind load docker-image "$IMAGE" --name "$CLUSTER"

echo "installing stockade"
if [[ "$IMAGE" != "stockade:dev" ]]; then
  # An overlay in a temporary directory, so manifests/ stays untouched.
  overlay="$(mktemp -d)"
  trap 'rm -rf "$overlay"' EXIT
  cp -r "$ROOT/manifests" "$overlay/base"
  cat > "$overlay/kustomization.yaml" << YAML
resources: [base]
images:
  - name: stockade
    newName: ${IMAGE%:*}
    newTag: ${IMAGE##*:}
YAML
  kctl apply -k "$overlay"
else
  kctl apply -k "$ROOT/manifests"
fi
# The tag may be unchanged while the image is new: restart to pick it up.
kctl -n stockade-system rollout restart deployment/stockade-controller daemonset/stockade-agent
kctl -n stockade-system rollout status deployment/stockade-controller --timeout=180s
kctl -n stockade-system rollout status daemonset/stockade-agent --timeout=180s
need_installed

echo "starting the external hosts ${EXT_HOSTS[*]}"
for host in "${EXT_HOSTS[@]}"; do
  docker rm -f "$host" > /dev/null 2>&1 || true
  docker run -d --name "$host" --network kind --entrypoint /bin/sh "$AGNHOST_IMAGE" -c '
    for p in 80 81; do
      /agnhost serve-hostname --tcp --http=false --port $p &
      /agnhost serve-hostname --udp --http=false --port $p &
    done
    wait' > /dev/null
done

kctl get nodes -o wide
kctl get noderulesets
echo "ready: kubectl --context $CONTEXT ...; e2e/kind/run-e2e.sh runs the scenarios"
