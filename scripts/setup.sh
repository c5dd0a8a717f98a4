#!/usr/bin/env bash
# Installs what stockade needs on a Debian machine (as root): the kernel tools the
# agent and the integration tests drive, and a virtualenv with the package in
# editable mode. Idempotent: a second run only checks.
set -euo pipefail
cd "$(dirname "$0")/.."

missing=()
have() { command -v "$1" >/dev/null 2>&1; }
have python3 || missing+=(python3)
python3 -c 'import ensurepip, venv' >/dev/null 2>&1 || missing+=(python3-venv)
have iptables || missing+=(iptables)
have ipset || missing+=(ipset)
have ip || missing+=(iproute2)
have conntrack || missing+=(conntrack)
have make || missing+=(make)
# iperf3 only serves the agent benchmark (bench/agent.py), which falls back without it.
have iperf3 || missing+=(iperf3)

if [ ${#missing[@]} -gt 0 ]; then
  if [ "$(id -u)" -ne 0 ]; then
    echo "setup: missing ${missing[*]}; run as root (or install them) first" >&2
    exit 1
  fi
  echo "setup: installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq "${missing[@]}" >/dev/null
fi

python3 - <<'PY'
import sys
if sys.version_info < (3, 11):
    sys.exit(f"setup: stockade needs Python 3.11 or newer, found {sys.version.split()[0]}")
PY

if [ ! -x .venv/bin/python ]; then
  python3 -m venv .venv
fi
# Reinstall only when the declared dependencies changed. The lab (lab/: emulator,
# sandbox, network lab, reference evaluator) is a package of its own, installed here
# for the demo and the tests and never in the runtime image.
stamp=.venv/.stockade-installed
want=$(cat pyproject.toml lab/pyproject.toml | sha256sum | cut -d' ' -f1)
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
  .venv/bin/python -m pip install -q --upgrade pip
  .venv/bin/python -m pip install -q -e '.[dev]'
  .venv/bin/python -m pip install -q --no-deps -e ./lab
  echo "$want" > "$stamp"
fi
