# stockade: one image for the controller (stockade-controller) and the node agent
# (stockade-agent); the manifests choose the command.
# Build: docker build -t stockade:dev .   (see docs/deploy.md; needs BuildKit or
# podman/buildah for RUN --mount). On a machine without a registry:
# bash scripts/image.sh (podman, a Debian base made with debootstrap).
# The base is pinned by version; pin it by digest too for reproducible builds:
#   docker build --build-arg PYTHON_IMAGE=python:3.11.11-slim-bookworm@sha256:<digest> .
ARG PYTHON_IMAGE=python:3.11.11-slim-bookworm

# ---------------------------------------------------------------- build: wheels only
FROM ${PYTHON_IMAGE} AS build
WORKDIR /src
COPY pyproject.toml README.md ./
COPY src ./src
COPY operator ./operator
COPY agent ./agent
# The symlinks src/stockade/{controller,agent} resolve inside the build context.
# Wheels for stockade and every dependency, so the runtime stage needs no compiler.
# STOCKADE_SOURCE: see the runtime stage; both steps follow the same digest, so the
# install step never mounts the wheels of a build stage the cache skipped.
ARG STOCKADE_SOURCE=unknown
RUN echo "stockade sources ${STOCKADE_SOURCE}" \
 && pip wheel --no-cache-dir --wheel-dir /wheels .

# ---------------------------------------------------------------- runtime
FROM ${PYTHON_IMAGE}
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1
# iptables ships both backends (iptables-legacy* and iptables-nft*); the agent picks
# the one the node uses, as kube-proxy's iptables-wrapper does. ipset for the sets,
# conntrack for inspecting flows, iproute2 for `ip`. The last line fails the build
# if any tool is missing; each check runs without the kernel (a build has no
# CAP_NET_ADMIN: `ipset --version` asks the kernel and fails, `ipset help` does not).
RUN apt-get update \
 && apt-get install -y --no-install-recommends iptables ipset conntrack iproute2 \
 && rm -rf /var/lib/apt/lists/* \
 && iptables-legacy --version && iptables-nft --version \
 && ip6tables-legacy --version && ip6tables-nft --version \
 && ipset help > /dev/null && conntrack --version && ip -V
# The wheels are mounted from the build stage for this one step, never copied into
# a layer (a later `rm` would leave them in the COPY's layer). STOCKADE_SOURCE (a
# digest of the sources, from scripts/image.sh) is part of the step so that a layer
# cache that does not look into the mount (podman's) rebuilds it when the code changes.
ARG STOCKADE_SOURCE=unknown
RUN --mount=type=bind,from=build,source=/wheels,target=/wheels \
    echo "stockade sources ${STOCKADE_SOURCE}" \
 && pip install --no-cache-dir /wheels/*.whl \
 && stockade --version \
 && stockade-controller --help > /dev/null && stockade-agent --help > /dev/null
# The controller runs as this user and group, both 65532 with a name (the
# Deployment's runAsUser/runAsGroup). The agent's DaemonSet sets runAsUser: 0 with
# NET_ADMIN and NET_RAW only.
RUN groupadd --system --gid 65532 stockade \
 && useradd --system --uid 65532 --gid 65532 --no-create-home \
      --shell /usr/sbin/nologin stockade
USER 65532:65532
# No ENTRYPOINT: the Deployment runs `stockade-controller`, the DaemonSet
# `stockade-agent run`, the cleanup `stockade-agent cleanup`.
CMD ["stockade-controller", "--help"]
