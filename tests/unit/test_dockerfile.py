"""The Dockerfile, checked offline (tests/integration/test_image.py builds and runs it).

Multi-stage; the base pinned by version or digest, never ``latest``; the packages
the agent shells out to; a non-root user for the controller; and every command the
manifests run is a console script of pyproject.toml that imports.
"""

from __future__ import annotations

import importlib
import re
import shlex
import tomllib
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
DOCKERFILE = ROOT / "Dockerfile"

# Tools the image must carry: the agent runs iptables-{legacy,nft}-{save,restore}
# (both backends, agent/backend.py), ipset restore/save; conntrack and ip for
# people debugging a node from the agent's container.
PACKAGES = ("iptables", "ipset", "conntrack", "iproute2")
BINARIES = ("iptables-legacy", "iptables-nft", "ip6tables-legacy", "ip6tables-nft", "ipset")
# Commands the manifests may run that come from the base image, not from pyproject.
BASE_COMMANDS = {"sh", "sleep", "find"}


def _lines() -> list[str]:
    """The Dockerfile's instructions, continuation lines joined, comments dropped."""
    text = DOCKERFILE.read_text(encoding="utf-8")
    joined = re.sub(r"\\\n", " ", text)
    return [
        line.strip() for line in joined.splitlines() if line.strip() and not line.startswith("#")
    ]


def _instructions(name: str) -> list[str]:
    prefix = name.upper() + " "
    return [line[len(prefix) :].strip() for line in _lines() if line.upper().startswith(prefix)]


def _args() -> dict[str, str]:
    out: dict[str, str] = {}
    for arg in _instructions("ARG"):
        key, _, value = arg.partition("=")
        out[key.strip()] = value.strip()
    return out


def _stages() -> list[str]:
    """The image of each FROM, build arguments substituted."""
    args = _args()
    images = []
    for line in _instructions("FROM"):
        image = line.split()[0]
        image = re.sub(r"\$\{(\w+)\}|\$(\w+)", lambda m: args[m.group(1) or m.group(2)], image)
        images.append(image)
    return images


def _final_stage() -> list[str]:
    lines = _lines()
    last = max(i for i, line in enumerate(lines) if line.upper().startswith("FROM "))
    return lines[last:]


def _scripts() -> dict[str, str]:
    data = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    scripts: dict[str, str] = data["project"]["scripts"]
    return scripts


def _manifest_commands() -> set[str]:
    commands: set[str] = set()
    for path in sorted((ROOT / "manifests").rglob("*.yaml")):
        for doc in yaml.safe_load_all(path.read_text(encoding="utf-8")):
            if not doc or doc.get("kind") not in ("Deployment", "DaemonSet", "Job"):
                continue
            spec: dict[str, Any] = doc["spec"]["template"]["spec"]
            for c in (spec.get("initContainers") or []) + spec["containers"]:
                command = c["command"]
                commands.add(command[0])
                if command[0] == "sh":
                    # sh -c "stockade-agent cleanup && ...": every program of the script
                    for part in re.split(r"&&|\|\||;|\|", command[-1]):
                        commands.add(shlex.split(part)[0])
    return commands


def test_multi_stage_with_a_pinned_base() -> None:
    stages = _stages()
    assert len(stages) >= 2, "multi-stage: build wheels, then a slim runtime"
    for image in stages:
        name, _, digest = image.partition("@")
        tag = name.rsplit(":", 1)[1] if ":" in name.rsplit("/", 1)[-1] else ""
        assert digest.startswith("sha256:") or re.search(r"\d", tag), f"{image}: not pinned"
        assert tag != "latest", image
        assert "slim" in tag or digest, f"{image}: use a slim base"


def test_no_latest_tag_anywhere() -> None:
    assert not re.search(r":latest\b", DOCKERFILE.read_text(encoding="utf-8"))
    for path in (ROOT / "manifests").rglob("*.yaml"):
        assert not re.search(r"image:\s*\S+:latest\b", path.read_text(encoding="utf-8")), path


def test_runtime_installs_the_dataplane_tools() -> None:
    runs = " ".join(line for line in _final_stage() if line.upper().startswith("RUN "))
    installs = re.findall(r"apt-get install ([^&;]+)", runs)
    assert installs, "no apt-get install in the runtime stage"
    words = set(" ".join(installs).split())
    assert "--no-install-recommends" in words
    for package in PACKAGES:
        assert package in words, package
    for binary in BINARIES:
        # ipset --version asks the kernel (CAP_NET_ADMIN, which no build has);
        # ipset help checks the binary alone.
        check = "ipset help" if binary == "ipset" else f"{binary} --version"
        assert check in runs, f"the build does not check {binary}"
    assert "ipset --version" not in runs, "ipset --version needs the kernel: the build fails"
    assert "rm -rf /var/lib/apt/lists/*" in runs


def test_no_wheels_are_left_in_a_layer() -> None:
    final = _final_stage()
    assert not any(line.upper().startswith("COPY --FROM=BUILD /WHEELS") for line in final)
    mounts = [line for line in final if "--mount=type=bind,from=build" in line]
    assert mounts, "the runtime stage must mount the wheels for its install step only"


def test_the_user_and_group_are_65532_with_names() -> None:
    runs = " ".join(line for line in _final_stage() if line.upper().startswith("RUN "))
    assert "groupadd --system --gid 65532 stockade" in runs
    assert "useradd --system --uid 65532 --gid 65532" in runs
    users = [line.split(None, 1)[1] for line in _final_stage() if line.upper().startswith("USER ")]
    assert users[-1] == "65532:65532"


def test_runtime_runs_as_a_non_root_user() -> None:
    users = [line.split(None, 1)[1] for line in _final_stage() if line.upper().startswith("USER ")]
    assert users, "the runtime stage sets no USER"
    user = users[-1].split(":")[0]
    assert user not in ("root", "0"), user


def test_the_manifests_commands_are_console_scripts() -> None:
    scripts = _scripts()
    for command in _manifest_commands():
        if command in BASE_COMMANDS:
            continue
        assert command in scripts, f"{command}: not a console script in pyproject.toml"
    assert {"stockade-controller", "stockade-agent"} <= _manifest_commands()


def test_the_image_default_command_is_a_console_script() -> None:
    cmds = _instructions("CMD") + _instructions("ENTRYPOINT")
    assert cmds
    for cmd in cmds:
        program = yaml.safe_load(cmd)[0]
        assert program in _scripts(), program


@pytest.mark.parametrize("script", sorted(_scripts()))
def test_console_scripts_import(script: str) -> None:
    module, _, func = _scripts()[script].partition(":")
    assert callable(getattr(importlib.import_module(module), func)), script


def test_build_command_is_documented() -> None:
    assert "docker build -t stockade:dev ." in (ROOT / "docs" / "deploy.md").read_text()
