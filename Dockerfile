# stockade: one image for the controller and the node agent.
# Build: docker build -t stockade:dev .   (needs a container engine; none runs in CI)
ARG PYTHON_IMAGE=python:3.11.11-slim-bookworm

FROM ${PYTHON_IMAGE} AS build
WORKDIR /src
COPY pyproject.toml README.md ./
COPY src ./src
COPY operator ./operator
COPY agent ./agent
# The symlinks src/stockade/{controller,agent} resolve inside the build context.
RUN pip wheel --no-cache-dir --wheel-dir /wheels .

FROM ${PYTHON_IMAGE}
# iptables ships both backends (legacy and nft); the agent picks the one the node
# uses, as kube-proxy's iptables-wrapper does.
RUN apt-get update \
 && apt-get install -y --no-install-recommends iptables ipset conntrack iproute2 \
 && rm -rf /var/lib/apt/lists/*
COPY --from=build /wheels /wheels
RUN pip install --no-cache-dir /wheels/*.whl && rm -rf /wheels
# The controller runs as this user; the agent's DaemonSet runs as root with
# NET_ADMIN and NET_RAW only.
RUN useradd --system --uid 65532 --no-create-home stockade
USER 65532
ENTRYPOINT ["stockade"]
