"""The sandbox's image mode: manifests translated to podman arguments (pure)."""

from __future__ import annotations

from pathlib import Path

import pytest

from stockade_lab.sandbox.containers import (
    ImageModeError,
    podman_args,
    read_manifest,
    security_args,
)


def _run(manifest: str, **kw: object) -> list[str]:
    return podman_args(
        read_manifest(manifest),
        image="localhost/stockade:dev",
        name="t",
        netns="stk-x-node-1",
        host_dirs=kw.get("host_dirs", {}),  # type: ignore[arg-type]
        args=["--node", "node-1"],
    )


def test_the_agent_runs_with_the_manifests_capabilities_and_mounts() -> None:
    argv = _run("agent.yaml", host_dirs={"/var/lib/stockade": Path("/tmp/state")})
    run = argv[argv.index("run") :]
    assert "--network=ns:/run/netns/stk-x-node-1" in run
    assert [a for a in run if a.startswith("--cap-")] == [
        "--cap-drop=ALL",
        "--cap-add=NET_ADMIN",
        "--cap-add=NET_RAW",
    ]
    assert "--read-only" in run
    assert "--user=0:0" in run
    assert "--volume=/tmp/state:/var/lib/stockade:Z" in run
    assert "--tmpfs=/tmp" in run
    # The command is the manifest's, the args the sandbox's.
    assert run[-4:] == ["stockade-agent", "run", "--node", "node-1"]
    assert not any(a.startswith("--network=host") or a == "--privileged" for a in run)


def test_the_controller_runs_as_the_manifest_says() -> None:
    run = _run("controller.yaml")
    assert "--user=65532:65532" in run
    assert "--cap-drop=ALL" in run
    assert not any(a.startswith("--cap-add") for a in run)
    assert "--read-only" in run
    assert "--security-opt=no-new-privileges" in run


@pytest.mark.parametrize(
    ("ctx", "message"),
    [
        ({"privileged": True}, "privileged"),
        ({"procMount": "Unmasked"}, "cannot honour"),
        ({"seccompProfile": {"type": "Unconfined"}}, "seccompProfile"),
        ({"runAsNonRoot": True}, "runAsNonRoot"),
        ({"runAsNonRoot": True, "runAsUser": 0}, "runAsNonRoot"),
    ],
)
def test_what_cannot_be_honoured_is_refused(ctx: dict[str, object], message: str) -> None:
    with pytest.raises(ImageModeError, match=message):
        security_args(ctx)


def test_a_change_to_the_manifest_changes_what_runs(tmp_path: Path) -> None:
    text = (Path(__file__).resolve().parents[2] / "manifests" / "agent.yaml").read_text()
    from stockade_lab.sandbox.containers import workload  # noqa: PLC0415

    assert "--cap-add=NET_RAW" in security_args(workload(text)["securityContext"])
    fewer = text.replace("add: [NET_ADMIN, NET_RAW]", "add: [NET_ADMIN]")
    assert fewer != text
    assert "--cap-add=NET_RAW" not in security_args(workload(fewer)["securityContext"])
