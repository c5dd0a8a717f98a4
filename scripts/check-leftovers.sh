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
procs=$(pgrep -af 'stockade[.-](emulator|sandbox|agent|controller)' | grep -v pgrep || true)
[ -z "$procs" ] || problems+=("processes: $procs")
if [ ${#problems[@]} -gt 0 ]; then
  printf 'leftovers after the tests:\n' >&2
  printf -- '- %s\n' "${problems[@]}" >&2
  exit 1
fi
echo "no leftovers (namespaces, state files, processes)"
