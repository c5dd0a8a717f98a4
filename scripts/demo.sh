#!/usr/bin/env bash
# The demo: set up, then run the bundled three-tier application (web, backend, db)
# in a sandbox cluster on this machine (nodes and pods are network namespaces, the
# real controller and agents enforce policy with iptables and ipset), probe it with
# real packets before and after its policies, and compare with what the engine
# predicts. Without root, or if the sandbox cannot start, the offline matrices are
# shown instead. The offline explanations close the demo either way.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
ex=examples/three-tier.yaml
st=.venv/bin/stockade
export STOCKADE_SANDBOX=demo

# Headings in bold on a terminal, plain when piped.
if [ -t 1 ]; then
  say() { printf '\n\033[1m== %s\033[0m\n' "$*"; }
else
  say() { printf '\n== %s\n' "$*"; }
fi

offline() {
  for port in 80 8080 5432; do
    echo
    echo "\$ stockade matrix -f $ex --port $port"
    "$st" matrix -f "$ex" --port "$port"
  done
}

sandbox_demo() {
  local tmp
  tmp=$(mktemp -d)
  # The application without its policies, and the policies alone.
  .venv/bin/python - "$ex" "$tmp" <<'EOF'
import sys, yaml
docs = [d for d in yaml.safe_load_all(open(sys.argv[1])) if d]
yaml.safe_dump_all([d for d in docs if d["kind"] != "NetworkPolicy"], open(f"{sys.argv[2]}/app.yaml", "w"))
yaml.safe_dump_all([d for d in docs if d["kind"] == "NetworkPolicy"], open(f"{sys.argv[2]}/policies.yaml", "w"))
EOF
  trap '"$st" sandbox down >/dev/null 2>&1 || true; rm -rf "$tmp"' EXIT
  say "1. A two-node cluster on this machine, running web, backend and db"
  "$st" sandbox up --nodes 2 -f "$tmp/app.yaml" >/dev/null || return 1
  KUBECONFIG=$("$st" sandbox kubeconfig)
  export KUBECONFIG
  echo "\$ kubectl get pods -n shop -o wide"
  kubectl get pods -n shop -o wide

  say "2. No policy yet: every pod reaches every port that listens (real TCP connections)"
  echo "(each pod listens on its declared port, and on 80 and 81 as the upstream e2e pods do)"
  for port in 80 8080 5432; do
    echo
    "$st" sandbox probe --port "$port" | sed '/probes in/d'
  done

  say "3. Apply the policies: web takes http from anyone, backend only from web, db only from backend"
  echo "\$ kubectl apply -f policies.yaml"
  kubectl apply -f "$tmp/policies.yaml"
  "$st" sandbox wait | sed 's/^/(every node enforces them: /; s/$/)/'

  say "4. The same probes again, beside what the engine predicts"
  for port in 80 8080 5432; do
    echo
    "$st" sandbox probe --port "$port" --expect
  done

  say "5. Tear down"
  "$st" sandbox down | sed 's/^/  /'
  trap - EXIT
  rm -rf "$tmp"
}

if [ "$(id -u)" = 0 ] && sandbox_demo; then
  :
else
  echo "(the sandbox needs root and network namespaces; showing the offline matrices instead)"
  "$st" sandbox down >/dev/null 2>&1 || true
  offline
fi

say "Why? The engine explains each verdict (offline, from the YAML)"
echo
echo "\$ stockade explain -f $ex shop/web shop/db --port 5432"
"$st" explain -f "$ex" shop/web shop/db --port 5432 || true
echo
echo "\$ stockade explain -f $ex shop/backend shop/db --port 5432"
"$st" explain -f "$ex" shop/backend shop/db --port 5432
