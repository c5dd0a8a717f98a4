"""Discovery and OpenAPI documents of the emulated API server, from its resources.

What ``kubectl`` and the Python client read before they talk to a resource: the
root paths, the API group list, each group version's resource list, and a minimal
OpenAPI v3 document per group version. Pure functions of the resource definitions
(and the CRDs' schemas); the HTTP side serves them.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
from typing import Any

from stockade_lab.emulator.resources import ResourceDef, version_priority
from stockade_lab.emulator.status_errors import ApiError

Obj = dict[str, Any]

KUBE_VERSION = {
    "major": "1",
    "minor": "32",
    "gitVersion": "v1.32.0-stockade-emulator",
    "gitCommit": "0000000000000000000000000000000000000000",
    "gitTreeState": "clean",
    "buildDate": "2025-01-01T00:00:00Z",
    "goVersion": "go1.23.0",
    "compiler": "gc",
    "platform": "linux/amd64",
}


def root_paths(defs: Iterable[ResourceDef]) -> list[str]:
    """The paths ``GET /`` lists."""
    paths = {"/api", "/api/v1", "/apis", "/healthz", "/livez", "/readyz", "/version"}
    paths |= {"/openapi/v2", "/openapi/v3"}
    for rd in defs:
        if rd.group:
            paths |= {f"/apis/{rd.group}", f"/apis/{rd.group}/{rd.version}"}
    return sorted(paths)


def group_list(defs: Iterable[ResourceDef]) -> Obj:
    """The APIGroupList of ``/apis`` (versions by Kubernetes' version priority)."""
    versions: dict[str, set[str]] = {}
    for rd in defs:
        if rd.group:
            versions.setdefault(rd.group, set()).add(rd.version)
    groups = []
    for group in sorted(versions):
        ordered = sorted(versions[group], key=version_priority)
        entries = [{"groupVersion": f"{group}/{v}", "version": v} for v in ordered]
        groups.append({"name": group, "versions": entries, "preferredVersion": entries[0]})
    return {"kind": "APIGroupList", "apiVersion": "v1", "groups": groups}


def resource_list(defs: Iterable[ResourceDef], group: str, version: str) -> Obj:
    """The APIResourceList of one group version; 404 when nothing is served there."""
    here = [rd for rd in defs if (rd.group, rd.version) == (group, version)]
    if not here:
        raise ApiError(404, "NotFound", "the server could not find the requested resource")
    return {
        "kind": "APIResourceList",
        "apiVersion": "v1",
        "groupVersion": f"{group}/{version}" if group else version,
        "resources": [entry for rd in here for entry in rd.discovery()],
    }


def openapi_v3(sub: str, defs: Iterable[ResourceDef], crds: dict[str, Obj]) -> Obj:
    """``/openapi/v3`` (the index, ``sub`` empty) or one group version's document."""
    by_gv: dict[str, list[ResourceDef]] = {}
    for rd in defs:
        by_gv.setdefault(rd.group_version, []).append(rd)
    if not sub:
        paths = {}
        for gv, here in sorted(by_gv.items()):
            digest = hashlib.sha256(
                json.dumps([repr(rd) for rd in here], sort_keys=True).encode()
            ).hexdigest()[:32]
            paths[gv] = {"serverRelativeURL": f"/openapi/v3/{gv}?hash={digest.upper()}"}
        return {"paths": paths}
    if sub not in by_gv:
        raise ApiError(404, "NotFound", "the server could not find the requested resource")
    return openapi_doc(sub, by_gv[sub], crds)


def openapi_doc(gv: str, defs: list[ResourceDef], crds: dict[str, Obj]) -> Obj:
    """A minimal OpenAPI v3 document of one group version.

    kubectl (1.27+) reads it to learn whether the server validates fields itself: it looks
    for the PATCH operation of the kind (``x-kubernetes-group-version-kind``) and its
    ``fieldValidation`` query parameter. Finding it, kubectl skips client-side validation.
    The PATCH request bodies do not list strategic merge patch, so kubectl computes its
    patches from its compiled-in types rather than from these (schema-less) documents.
    """
    paths: Obj = {}
    schemas: Obj = {}
    params = [
        {"name": name, "in": "query", "schema": {"type": "string", "uniqueItems": True}}
        for name in ("dryRun", "fieldManager", "fieldValidation", "force", "pretty")
    ]
    for rd in defs:
        gvk = {"group": rd.group, "version": rd.version, "kind": rd.kind}
        ref = f"{gv.replace('/', '.')}.{rd.kind}"
        schema: Obj = {"type": "object", "x-kubernetes-group-version-kind": [gvk]}
        if rd.crd is not None and rd.crd in crds:
            for version in (crds[rd.crd].get("spec") or {}).get("versions") or []:
                if version.get("name") == rd.version:
                    found = (version.get("schema") or {}).get("openAPIV3Schema")
                    if isinstance(found, dict):
                        schema = {**found, "x-kubernetes-group-version-kind": [gvk]}
        schemas[ref] = schema
        base = (
            f"/{gv}/namespaces/{{namespace}}/{rd.plural}" if rd.namespaced else f"/{gv}/{rd.plural}"
        )
        response = {
            "200": {
                "description": "OK",
                "content": {
                    "application/json": {"schema": {"$ref": f"#/components/schemas/{ref}"}}
                },
            }
        }
        common = {"x-kubernetes-group-version-kind": gvk, "responses": response}
        paths[f"{base}/{{name}}"] = {
            "get": {"operationId": f"read{rd.kind}", "x-kubernetes-action": "get", **common},
            "put": {"operationId": f"replace{rd.kind}", "x-kubernetes-action": "put", **common},
            "patch": {
                "operationId": f"patch{rd.kind}",
                "x-kubernetes-action": "patch",
                "parameters": params,
                "requestBody": {
                    "content": {
                        media: {"schema": {"type": "object"}}
                        for media in (
                            "application/json-patch+json",
                            "application/merge-patch+json",
                            "application/apply-patch+yaml",
                        )
                    }
                },
                **common,
            },
            "delete": {
                "operationId": f"delete{rd.kind}",
                "x-kubernetes-action": "delete",
                **common,
            },
        }
        paths[base] = {
            "get": {"operationId": f"list{rd.kind}", "x-kubernetes-action": "list", **common},
            "post": {
                "operationId": f"create{rd.kind}",
                "x-kubernetes-action": "post",
                "parameters": params,
                **common,
            },
        }
    return {
        "openapi": "3.0.0",
        "info": {"title": "Kubernetes (stockade emulator)", "version": KUBE_VERSION["gitVersion"]},
        "paths": paths,
        "components": {"schemas": schemas},
    }
