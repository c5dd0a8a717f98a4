"""The sandbox's image mode: the shipped image, run as the manifests run it.

With ``stockade sandbox up --image IMAGE`` each node's agent runs as a container in
that node's network namespace and the controller as a container in node-1's, with
the command, the security context and the volumes read from manifests/agent.yaml
and manifests/controller.yaml (never retyped here), so a change to the manifests
changes what the sandbox runs. Containers get no network of the engine's own: each
joins a namespace the sandbox made (``--network=ns:``); the API server is reached
through a relay the supervisor listens with on 127.0.0.1 inside those namespaces.

:func:`workload` and :func:`podman_args` are pure; the rest runs podman.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[3]
MANIFESTS = ROOT / "manifests"
PODMAN_CONF = ROOT / "scripts" / "podman"
NAME_PREFIX = "stk-sbx-"

# securityContext fields the translation honours; any other is refused, never dropped.
_HONOURED = frozenset(
    {
        "runAsUser",
        "runAsGroup",
        "runAsNonRoot",
        "readOnlyRootFilesystem",
        "capabilities",
        "allowPrivilegeEscalation",
        "privileged",
        "seccompProfile",
    }
)


class ImageModeError(RuntimeError):
    """A manifest asks for something the sandbox cannot honour, or podman failed."""


def podman_env() -> dict[str, str]:
    """The environment for podman: the project's own settings for these machines."""
    return {
        **os.environ,
        "CONTAINERS_CONF": str(PODMAN_CONF / "containers.conf"),
        "CONTAINERS_STORAGE_CONF": str(PODMAN_CONF / "storage.conf"),
    }


def workload(text: str) -> dict[str, Any]:
    """The first container of the Deployment or DaemonSet in a manifest file's text,
    with the pod's securityContext merged under the container's and the pod's
    volumes attached (``_volumes``)."""
    for doc in yaml.safe_load_all(text):
        if isinstance(doc, Mapping) and doc.get("kind") in ("Deployment", "DaemonSet"):
            pod = doc["spec"]["template"]["spec"]
            container = dict(pod["containers"][0])
            merged = dict(pod.get("securityContext") or {})
            merged.update(container.get("securityContext") or {})
            container["securityContext"] = merged
            container["_volumes"] = {v["name"]: v for v in pod.get("volumes") or []}
            return container
    raise ImageModeError("no Deployment or DaemonSet in the manifest")


def security_args(ctx: Mapping[str, Any]) -> list[str]:
    """podman flags for a securityContext; refuses what it cannot honour."""
    unknown = sorted(set(ctx) - _HONOURED)
    if unknown:
        raise ImageModeError(f"securityContext fields the sandbox cannot honour: {unknown}")
    if ctx.get("privileged"):
        raise ImageModeError("privileged containers are not run by the sandbox")
    seccomp = (ctx.get("seccompProfile") or {}).get("type", "RuntimeDefault")
    if seccomp != "RuntimeDefault":
        raise ImageModeError(f"seccompProfile {seccomp} is not supported (RuntimeDefault only)")
    caps = ctx.get("capabilities") or {}
    args = [f"--cap-drop={c}" for c in caps.get("drop", [])]
    args += [f"--cap-add={c}" for c in caps.get("add", [])]
    if ctx.get("readOnlyRootFilesystem"):
        args.append("--read-only")
    if ctx.get("allowPrivilegeEscalation") is False:
        args.append("--security-opt=no-new-privileges")
    user = ctx.get("runAsUser")
    if ctx.get("runAsNonRoot") and user in (None, 0):
        raise ImageModeError("runAsNonRoot without a non-zero runAsUser")
    if user is not None:
        args.append(f"--user={user}:{ctx.get('runAsGroup', user)}")
    return args


def podman_args(
    container: Mapping[str, Any],
    *,
    image: str,
    name: str,
    netns: str,
    host_dirs: Mapping[str, Path],
    args: Sequence[str],
) -> list[str]:
    """``podman run`` for one manifest container in a sandbox namespace.

    ``host_dirs`` maps a mount path of the manifest to the sandbox directory that
    stands in for its volume (emptyDir and hostPath alike); a mount without one is
    a tmpfs, so a read-only root still has its writable places. ``args`` replace
    the manifest's args: the sandbox's API address, node name and state directory.
    """
    env = podman_env()
    run = [
        # The project's podman settings (scripts/podman/), whoever starts the process.
        "env",
        f"CONTAINERS_CONF={env['CONTAINERS_CONF']}",
        f"CONTAINERS_STORAGE_CONF={env['CONTAINERS_STORAGE_CONF']}",
        "podman",
        "run",
        "--rm",
        # A restart replaces a container whose client was killed before it was gone.
        "--replace",
        f"--name={NAME_PREFIX}{name}",
        f"--network=ns:/run/netns/{netns}",
        *security_args(container.get("securityContext") or {}),
    ]
    for mount in container.get("volumeMounts") or []:
        path = mount["mountPath"]
        if path in host_dirs:
            run.append(f"--volume={host_dirs[path]}:{path}:Z")
        elif path.endswith(".lock"):
            # A shared lock file (the xtables lock): the node's own, private here.
            continue
        else:
            run.append(f"--tmpfs={path}")
    command = list(container.get("command") or [])
    if not command:
        raise ImageModeError("the manifest's container has no command")
    return [*run, image, *command, *args]


def remove(names: Sequence[str]) -> None:
    """Stop and remove these sandbox containers (by the names given to podman_args)."""
    if names:
        subprocess.run(
            ["podman", "rm", "-f", "-t", "1", *(NAME_PREFIX + n for n in names)],
            env=podman_env(),
            capture_output=True,
            check=False,
        )


def remove_leftovers() -> None:
    """Remove every sandbox container (after a crash, or at down)."""
    env = podman_env()
    try:
        names = subprocess.run(
            ["podman", "ps", "-a", "--format", "{{.Names}}"],
            env=env,
            capture_output=True,
            text=True,
            check=False,
        ).stdout.split()
    except FileNotFoundError:
        return
    ours = [n for n in names if n.startswith(NAME_PREFIX)]
    if ours:
        subprocess.run(["podman", "rm", "-f", *ours], env=env, capture_output=True, check=False)


def read_manifest(name: str) -> dict[str, Any]:
    """The workload of ``manifests/<name>``."""
    return workload((MANIFESTS / name).read_text(encoding="utf-8"))
