"""The sandbox's EndpointSlice controller stand-in against the API server emulator.

No network namespace is needed: with no node registered, :class:`ServiceStandIns`
only writes EndpointSlices. Checked: the slices follow pods and Services, a pass that
finds nothing to change writes nothing (no write loop with the API server's own
defaulting), hand-made slices are left alone, and the convergence digest follows the
API's versions.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from stockade.kube import ENDPOINT_SLICES, PODS, SERVICES, KubeClient, KubeConfig
from stockade.services import MANAGED_BY_LABEL
from stockade_lab.emulator import EmulatorThread
from stockade_lab.sandbox.servicectl import ServiceStandIns, content_digest

Obj = dict[str, Any]


def pod(name: str, ip: str, labels: dict[str, str], port: int = 8080) -> Obj:
    return {
        "metadata": {"name": name, "namespace": "default", "labels": labels},
        "spec": {
            "nodeName": "n1",
            "containers": [{"name": "c", "ports": [{"name": "http", "containerPort": port}]}],
        },
    }


SERVICE: Obj = {
    "metadata": {"name": "web", "namespace": "default"},
    "spec": {
        "selector": {"app": "web"},
        "ports": [{"name": "http", "port": 80, "targetPort": "http"}],
    },
}
MANUAL: Obj = {
    "apiVersion": "discovery.k8s.io/v1",
    "kind": "EndpointSlice",
    "metadata": {
        "name": "by-hand",
        "namespace": "default",
        "labels": {"kubernetes.io/service-name": "other"},
    },
    "addressType": "IPv4",
    "endpoints": [{"addresses": ["192.0.2.1"]}],
    "ports": [{"name": "", "port": 80}],
}


async def _until(check: Callable[[], Awaitable[bool]], timeout: float = 5.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not await check():
        assert asyncio.get_running_loop().time() < deadline, "timed out"
        await asyncio.sleep(0.05)


async def _scenario(kubeconfig: Path) -> None:
    async with KubeClient(KubeConfig.load(str(kubeconfig))) as client:
        for name, ip, port in (("web-1", "10.0.1.10", 8080), ("web-2", "10.0.1.11", 9090)):
            await client.create(PODS, pod(name, ip, {"app": "web"}, port), "default")
            await client.patch_status(PODS, name, {"phase": "Running", "podIP": ip}, "default")
        await client.create(SERVICES, SERVICE, "default")
        await client.create(ENDPOINT_SLICES, MANUAL, "default")
        ctl = ServiceStandIns(client, "nft", {4: "10.0.0.0/16"}, (4,))
        await ctl.start()
        task = asyncio.create_task(ctl.run())

        async def managed() -> list[Obj]:
            items, _ = await client.list(ENDPOINT_SLICES, "default")
            return [i for i in items if (i["metadata"].get("labels") or {}).get(MANAGED_BY_LABEL)]

        async def settled() -> bool:
            svcs, _ = await client.list(SERVICES)
            slices, _ = await client.list(ENDPOINT_SLICES)
            return ctl.digest == content_digest(svcs, slices)

        try:
            # two named-port mappings (8080 and 9090): two slices
            await _until(lambda: _count(managed, 2))
            await _until(settled)
            ours = {
                s["metadata"]["name"]: s["metadata"]["resourceVersion"] for s in await managed()
            }
            ports = sorted(s["ports"][0]["port"] for s in await managed())
            assert ports == [8080, 9090]
            # quiet: more passes, no write
            syncs = ctl.syncs
            ctl.dirty.set()
            await asyncio.sleep(0.5)
            assert ctl.syncs > syncs
            assert {
                s["metadata"]["name"]: s["metadata"]["resourceVersion"] for s in await managed()
            } == ours
            # a pod leaves the selector: its slice goes
            await client.patch_merge(
                PODS, "web-2", {"metadata": {"labels": {"app": "gone"}}}, "default"
            )
            await _until(lambda: _count(managed, 1))
            # the Service goes: its slices go; the hand-made one stays
            await client.delete(SERVICES, "web", "default")
            await _until(lambda: _count(managed, 0))
            await _until(settled)
            names = [
                s["metadata"]["name"] for s in (await client.list(ENDPOINT_SLICES, "default"))[0]
            ]
            assert names == ["by-hand"]
        finally:
            task.cancel()


async def _count(managed: Callable[[], Awaitable[list[Obj]]], n: int) -> bool:
    return len(await managed()) == n


def test_endpoint_slices_follow_pods_and_services(emu: EmulatorThread, tmp_path: Path) -> None:
    asyncio.run(_scenario(tmp_path / "kubeconfig"))
