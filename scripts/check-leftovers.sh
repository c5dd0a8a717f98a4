#!/usr/bin/env bash
# Fails when a test run left anything with the project's prefix behind: network
# namespaces (stk-*), sandbox or netlab state files, or stockade processes.
set -uo pipefail
problems=()
ns=$(ip netns list 2>/dev/null | awk '{print $1}' | grep '^stk-' || true)
[ -z "$ns" ] || problems+=("network namespaces: $(echo $ns | tr '\n' ' ')")
for dir in /run/stockade-sandbox /run/stockade-netlab; do
  if [ -d "$dir" ] && [ -n "$(ls -A "$dir" 2>/dev/null)" ]; then
    problems+=("state files in $dir: $(ls "$dir" | tr '\n' ' ')")
  fi
done
if command -v podman >/dev/null 2>&1; then
  export CONTAINERS_CONF="$(dirname "$0")/podman/containers.conf"
  export CONTAINERS_STORAGE_CONF="$(dirname "$0")/podman/storage.conf"
  containers=$(podman ps -a --format '{{.Names}}' 2>/dev/null || true)
  [ -z "$containers" ] || problems+=("containers: $(echo $containers | tr '\n' ' ')")
fi
# A container engine must never have made a network of its own in this namespace.
engine=$( (iptables-save 2>/dev/null; nft list ruleset 2>/dev/null) | grep -E 'CNI-|NETAVARK|podman' | head -3 || true)
[ -z "$engine" ] || problems+=("container engine rules in the host namespace: $engine")
procs=$(pgrep -af 'stockade[.-](emulator|sandbox|agent|controller)' | grep -v pgrep || true)
[ -z "$procs" ] || problems+=("processes: $procs")
if [ ${#problems[@]} -gt 0 ]; then
  printf 'leftovers after the tests:\n' >&2
  printf -- '- %s\n' "${problems[@]}" >&2
  exit 1
fi
echo "no leftovers (namespaces, state files, containers, engine rules, processes)"
