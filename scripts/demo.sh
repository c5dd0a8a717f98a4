#!/usr/bin/env bash
# The demo: set up, then show what stockade decides for the bundled three-tier
# application (web, backend, db), offline, from its YAML.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
ex=examples/three-tier.yaml
for port in 80 8080 5432; do
  echo
  echo "\$ stockade matrix -f $ex --port $port"
  .venv/bin/stockade matrix -f "$ex" --port "$port"
done
echo
echo "\$ stockade explain -f $ex shop/web shop/db --port 5432"
.venv/bin/stockade explain -f "$ex" shop/web shop/db --port 5432 || true
echo
echo "\$ stockade explain -f $ex shop/backend shop/db --port 5432"
.venv/bin/stockade explain -f "$ex" shop/backend shop/db --port 5432
