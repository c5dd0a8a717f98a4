#!/usr/bin/env bash
# Builds the stockade image on a Debian machine with no image registry (as root):
# Debian's podman, and a base image bootstrapped from Debian's packages to stand in
# for the official slim Python image (Python, pip, no externally-managed marker, the
# host's CA bundle and pip settings so pip reaches the package index as the host
# does). The engine's settings for these machines come from scripts/podman/, never
# from the host's /etc/containers. Prints the image size; fails loudly on any step.
#
#   bash scripts/image.sh            # builds localhost/stockade:dev
#   STOCKADE_IMAGE=localhost/stockade:test bash scripts/image.sh
set -euo pipefail
cd "$(dirname "$0")/.."

IMAGE=${STOCKADE_IMAGE:-localhost/stockade:dev}
BASE=${STOCKADE_BASE_IMAGE:-localhost/stockade-base:bookworm}
SUITE=bookworm
export CONTAINERS_CONF="$PWD/scripts/podman/containers.conf"
export CONTAINERS_STORAGE_CONF="$PWD/scripts/podman/storage.conf"

die() { echo "image: $*" >&2; exit 1; }
step() { echo "== image: $*"; }

[ "$(id -u)" -eq 0 ] || die "run as root (podman builds as root here)"
missing=()
command -v podman >/dev/null || missing+=(podman)
command -v debootstrap >/dev/null || missing+=(debootstrap)
command -v runc >/dev/null || missing+=(runc)
if [ ${#missing[@]} -gt 0 ]; then
  step "installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq || die "apt-get update failed"
  apt-get install -y -qq "${missing[@]}" >/dev/null || die "could not install ${missing[*]}"
fi

start=$(date +%s)
if podman image exists "$BASE"; then
  step "base $BASE exists (podman rmi $BASE to rebuild it)"
else
  step "bootstrapping the base $BASE from Debian $SUITE"
  root=$(mktemp -d /var/tmp/stockade-base.XXXXXX)
  trap 'rm -rf "$root"' EXIT
  debootstrap --variant=minbase --include=python3,python3-pip,python3-venv,ca-certificates \
    "$SUITE" "$root" http://deb.debian.org/debian >/dev/null \
    || die "debootstrap failed (see $root/debootstrap/debootstrap.log)"
  # As the official python image: pip installs into the system Python.
  rm -f "$root"/usr/lib/python3*/EXTERNALLY-MANAGED
  ln -sf python3 "$root/usr/bin/python"
  [ -e "$root/usr/bin/pip" ] || ln -sf pip3 "$root/usr/bin/pip"
  # The host's CA bundle and pip settings: this machine's index may sit behind a
  # proxy with its own certificate.
  cp /etc/ssl/certs/ca-certificates.crt "$root/etc/ssl/certs/ca-certificates.crt"
  [ -f /etc/pip.conf ] && cp /etc/pip.conf "$root/etc/pip.conf"
  rm -rf "$root"/var/cache/apt/archives/*.deb "$root"/var/lib/apt/lists/*
  tar -C "$root" -c . | podman import --change 'CMD ["python3"]' - "$BASE" >/dev/null \
    || die "podman import failed"
  rm -rf "$root"
  trap - EXIT
fi
base_done=$(date +%s)

step "building $IMAGE on $BASE"
# podman's layer cache keys a RUN step by its text, not by what a `--mount ...
# from=build` brings in, so the install step would be reused with the old wheels
# after a source change. The digest of the sources, passed as a build argument the
# step uses, makes the cache follow the code.
source_digest=$(tar -c --sort=name --mtime=@0 --owner=0 --group=0 --numeric-owner \
  pyproject.toml README.md src operator agent | sha256sum | cut -c1-16)
# The host's network for the build's downloads: no bridge, no engine-made rules.
podman build --network=host --build-arg "PYTHON_IMAGE=$BASE" \
  --build-arg "STOCKADE_SOURCE=$source_digest" -t "$IMAGE" . \
  || die "podman build failed"
done_at=$(date +%s)

size=$(podman image inspect "$IMAGE" --format '{{.Size}}')
echo "image: $IMAGE built: $((size / 1024 / 1024)) MiB;" \
  "base $((base_done - start)) s, build $((done_at - base_done)) s"
