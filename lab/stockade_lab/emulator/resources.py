"""The resources the emulator serves: built-in kinds and kinds from CustomResourceDefinitions."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

Obj = dict[str, Any]

ALL_VERBS = ("create", "delete", "deletecollection", "get", "list", "patch", "update", "watch")
SUB_VERBS = ("get", "patch", "update")


@dataclass(frozen=True)
class PrinterColumn:
    """A column of a server-side Table (``additionalPrinterColumns`` of a CRD)."""

    name: str
    type: str
    json_path: str
    priority: int = 0
    description: str = ""
    format: str = ""


@dataclass(frozen=True)
class ResourceDef:
    """One served resource of one group version."""

    group: str
    version: str
    plural: str
    kind: str
    namespaced: bool
    singular: str = ""
    short_names: tuple[str, ...] = ()
    categories: tuple[str, ...] = ()
    status_subresource: bool = False
    columns: tuple[PrinterColumn, ...] | None = None
    crd: str | None = None  # the CustomResourceDefinition that declared it
    extra: tuple[str, ...] = field(default=())  # extra subresources served as plain GET

    @property
    def api_version(self) -> str:
        """``v1`` for the core group, ``group/version`` otherwise."""
        return f"{self.group}/{self.version}" if self.group else self.version

    @property
    def group_version(self) -> str:
        """The discovery path segment: ``api/v1`` or ``apis/group/version``."""
        return f"apis/{self.group}/{self.version}" if self.group else f"api/{self.version}"

    @property
    def list_kind(self) -> str:
        """``PodList`` for ``Pod``."""
        return f"{self.kind}List"

    @property
    def storage_key(self) -> tuple[str, str]:
        """Objects are stored per group and plural, whatever the version asked."""
        return (self.group, self.plural)

    def discovery(self) -> list[Obj]:
        """The APIResource entries of this resource (and its status subresource)."""
        main: Obj = {
            "name": self.plural,
            "singularName": self.singular or self.kind.lower(),
            "namespaced": self.namespaced,
            "kind": self.kind,
            "verbs": list(ALL_VERBS),
        }
        if self.short_names:
            main["shortNames"] = list(self.short_names)
        if self.categories:
            main["categories"] = list(self.categories)
        entries = [main]
        if self.status_subresource:
            entries.append(
                {
                    "name": f"{self.plural}/status",
                    "singularName": "",
                    "namespaced": self.namespaced,
                    "kind": self.kind,
                    "verbs": list(SUB_VERBS),
                }
            )
        return entries


def _builtin(
    group: str,
    version: str,
    plural: str,
    kind: str,
    namespaced: bool,
    short: tuple[str, ...] = (),
    status: bool = False,
    categories: tuple[str, ...] = (),
) -> ResourceDef:
    return ResourceDef(
        group=group,
        version=version,
        plural=plural,
        kind=kind,
        namespaced=namespaced,
        singular=kind.lower(),
        short_names=short,
        categories=categories,
        status_subresource=status,
    )


BUILTIN_RESOURCES: tuple[ResourceDef, ...] = (
    _builtin("", "v1", "namespaces", "Namespace", False, ("ns",), status=True),
    _builtin("", "v1", "pods", "Pod", True, ("po",), status=True, categories=("all",)),
    _builtin("", "v1", "events", "Event", True, ("ev",)),
    _builtin("", "v1", "nodes", "Node", False, ("no",), status=True),
    _builtin("", "v1", "services", "Service", True, ("svc",), status=True, categories=("all",)),
    _builtin("", "v1", "endpoints", "Endpoints", True, ("ep",)),
    _builtin("", "v1", "configmaps", "ConfigMap", True, ("cm",)),
    _builtin("", "v1", "secrets", "Secret", True),
    _builtin("", "v1", "serviceaccounts", "ServiceAccount", True, ("sa",)),
    _builtin("", "v1", "resourcequotas", "ResourceQuota", True, ("quota",), status=True),
    _builtin("", "v1", "limitranges", "LimitRange", True, ("limits",)),
    _builtin("events.k8s.io", "v1", "events", "Event", True, ("ev",)),
    _builtin("discovery.k8s.io", "v1", "endpointslices", "EndpointSlice", True),
    _builtin("networking.k8s.io", "v1", "networkpolicies", "NetworkPolicy", True, ("netpol",)),
    _builtin(
        "apiextensions.k8s.io",
        "v1",
        "customresourcedefinitions",
        "CustomResourceDefinition",
        False,
        ("crd", "crds"),
        status=True,
    ),
    _builtin("coordination.k8s.io", "v1", "leases", "Lease", True),
)


def resources_from_crd(crd: Obj) -> list[ResourceDef]:
    """The resources a CustomResourceDefinition declares (one per served version)."""
    spec = crd.get("spec") or {}
    names = spec.get("names") or {}
    group = spec.get("group", "")
    plural = names.get("plural", "")
    kind = names.get("kind", "")
    if not (group and plural and kind):
        return []
    name = crd.get("metadata", {}).get("name", f"{plural}.{group}")
    result: list[ResourceDef] = []
    for version in spec.get("versions") or []:
        if not version.get("served", True):
            continue
        raw_columns = version.get("additionalPrinterColumns")
        columns: tuple[PrinterColumn, ...] | None
        if raw_columns:
            columns = tuple(
                PrinterColumn(
                    name=col.get("name", ""),
                    type=col.get("type", "string"),
                    json_path=col.get("jsonPath", ""),
                    priority=int(col.get("priority", 0)),
                    description=col.get("description", ""),
                    format=col.get("format", ""),
                )
                for col in raw_columns
            )
        else:
            columns = (PrinterColumn("Age", "date", ".metadata.creationTimestamp"),)
        result.append(
            ResourceDef(
                group=group,
                version=version.get("name", "v1"),
                plural=plural,
                kind=kind,
                namespaced=spec.get("scope", "Namespaced") == "Namespaced",
                singular=names.get("singular", kind.lower()),
                short_names=tuple(names.get("shortNames") or ()),
                categories=tuple(names.get("categories") or ()),
                status_subresource="status" in (version.get("subresources") or {}),
                columns=columns,
                crd=name,
            )
        )
    return result


_VERSION_RE = re.compile(r"^v(\d+)(?:(alpha|beta)(\d+))?$")


def version_priority(version: str) -> tuple[int, int, int, str]:
    """Kubernetes' version order: v2 > v1 > v1beta2 > v1beta1 > v1alpha1 > others (sort key)."""
    match = _VERSION_RE.match(version)
    if not match:
        return (3, 0, 0, version)
    major, stage, minor = match.groups()
    rank = {None: 0, "beta": 1, "alpha": 2}[stage]
    return (rank, -int(major), -int(minor or 0), version)
