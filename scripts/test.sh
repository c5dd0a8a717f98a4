#!/usr/bin/env bash
# The whole test suite, as CI runs it: set-up, lint, types, then every test level.
# Root-only tests (real netns, iptables, ipset) run when this runs as root, which
# CI does; a non-root run skips them with the reason.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh

echo "== ruff"
.venv/bin/ruff check .
.venv/bin/ruff format --check .
echo "== mypy (strict)"
.venv/bin/mypy
echo "== layers (the import contracts in pyproject.toml)"
.venv/bin/lint-imports --no-cache
args=(-q -p no:cacheprovider)
if [ "${CI:-}" = "true" ]; then
  if [ "$(id -u)" -ne 0 ]; then
    echo "test: CI must run as root (the integration tests need it)" >&2
    exit 1
  fi
  # In CI a root-only test may not skip: a missing capability must fail loudly.
  export STOCKADE_REQUIRE_ROOT=1
fi
if [ "$(id -u)" -eq 0 ]; then
  # The shipped image, built with Debian's podman (no registry); the image tests in
  # tests/integration run it with the manifests' security contexts.
  echo "== image"
  bash scripts/image.sh
fi
# Unit, integration, and the e2e scenarios on the offline engine driver.
echo "== pytest"
.venv/bin/pytest "${args[@]}" tests e2e
if [ "$(id -u)" -eq 0 ]; then
  echo "== e2e on the sandbox (real namespaces, processes and packets)"
  STOCKADE_E2E_DRIVER=sandbox .venv/bin/pytest "${args[@]}" e2e
  echo "== e2e on the sandbox through Services (cluster IPs, kube-proxy's NAT)"
  # The upstream suite's way: every matrix connects to the destination pod's
  # Service; an answer counts only when it comes from that pod.
  STOCKADE_E2E_DRIVER=sandbox STOCKADE_E2E_VIA=service \
    .venv/bin/pytest "${args[@]}" e2e/test_scenarios.py
  echo "== e2e through the shipped image (the sandbox's image mode)"
  # Agents and controller as containers with the manifests' security contexts:
  # default deny, ipBlock excepts, named ports, agent and controller restarts.
  STOCKADE_E2E_DRIVER=sandbox STOCKADE_SANDBOX_IMAGE=localhost/stockade:dev \
    .venv/bin/pytest "${args[@]}" e2e -k "default-deny-all or default-deny-ingress \
      or egress-cidr-except-clause or ingress-cidr-except-pod or ingress-on-one-named-port \
      or egress-on-one-named-port or agent-restarted or controller-restarted"
fi
echo "== leftovers"
bash scripts/check-leftovers.sh
