"""Server-side Tables (``Accept: application/json;as=Table;v=v1;g=meta.k8s.io``).

kubectl asks for Tables in ``kubectl get`` and prints the cells the server computed, so
the columns of ``kubectl get pods`` and of CRDs' ``additionalPrinterColumns`` come from here.
"""

from __future__ import annotations

import datetime
import json
import re
from collections.abc import Callable
from typing import Any

from stockade_lab.emulator.query_selectors import format_label_selector
from stockade_lab.emulator.resources import PrinterColumn, ResourceDef

Obj = dict[str, Any]
Cell = Any


def parse_time(value: Any) -> datetime.datetime | None:
    """An RFC 3339 timestamp, or None."""
    if not isinstance(value, str) or not value:
        return None
    try:
        return datetime.datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None


def human_duration(seconds_float: float) -> str:
    """Go's ``duration.HumanDuration`` (what AGE columns show)."""
    seconds = int(seconds_float)
    if seconds < -1:
        return "<invalid>"
    if seconds < 0:
        return "0s"
    if seconds < 120:
        return f"{seconds}s"
    minutes = seconds // 60
    if minutes < 10:
        rest = seconds % 60
        return f"{minutes}m" if rest == 0 else f"{minutes}m{rest}s"
    if minutes < 180:
        return f"{minutes}m"
    hours = seconds // 3600
    if hours < 8:
        rest = minutes % 60
        return f"{hours}h" if rest == 0 else f"{hours}h{rest}m"
    if hours < 48:
        return f"{hours}h"
    if hours < 24 * 8:
        rest = hours % 24
        return f"{hours // 24}d" if rest == 0 else f"{hours // 24}d{rest}h"
    if hours < 24 * 365 * 2:
        return f"{hours // 24}d"
    if hours < 24 * 365 * 8:
        days = (hours // 24) % 365
        return f"{hours // 24 // 365}y" if days == 0 else f"{hours // 24 // 365}y{days}d"
    return f"{hours // 24 // 365}y"


def age(value: Any, now: datetime.datetime) -> str:
    """The AGE cell of a timestamp (``<unknown>`` when absent)."""
    when = parse_time(value)
    if when is None:
        return "<unknown>"
    return human_duration((now - when).total_seconds())


_FILTER_RE = re.compile(r"^\?\(@\.([\w.-]+)\s*==\s*[\"']?([^\"')]*)[\"']?\)$")


def jsonpath(obj: Any, path: str) -> list[Any]:
    """A subset of kubectl JSONPath: ``.a.b``, ``.a[0]``, ``.a[*].b``, ``.a[?(@.k=="v")].b``."""
    path = path.strip()
    if path.startswith("{") and path.endswith("}"):
        path = path[1:-1]
    tokens = re.findall(r"\[[^\]]*\]|[^.\[\]]+", path)
    current: list[Any] = [obj]
    for token in tokens:
        found: list[Any] = []
        for value in current:
            if token.startswith("["):
                inner = token[1:-1]
                if not isinstance(value, list):
                    continue
                if inner == "*":
                    found.extend(value)
                elif (match := _FILTER_RE.match(inner)) is not None:
                    key, wanted = match.groups()
                    for item in value:
                        got = jsonpath(item, "." + key)
                        if got and str(got[0]) == wanted:
                            found.append(item)
                else:
                    try:
                        found.append(value[int(inner)])
                    except (ValueError, IndexError):
                        continue
            elif isinstance(value, dict) and token in value:
                found.append(value[token])
        current = found
    return current


def _column_cell(obj: Obj, column: PrinterColumn, now: datetime.datetime) -> Cell:
    values = jsonpath(obj, column.json_path)
    if not values or values[0] is None:
        return None
    value = values[0]
    if column.type == "date":
        return age(value, now)
    if column.type in ("integer", "number", "boolean"):
        return value
    if isinstance(value, str):
        return value
    if len(values) > 1:
        return ",".join(v if isinstance(v, str) else json.dumps(v) for v in values)
    return json.dumps(value)


def _definition(name: str, type_: str = "string", priority: int = 0, fmt: str = "") -> Obj:
    return {"name": name, "type": type_, "format": fmt, "description": "", "priority": priority}


def _pod_status(pod: Obj) -> str:
    status = pod.get("status") or {}
    reason: str = status.get("reason") or status.get("phase") or "Pending"
    for cs in status.get("containerStatuses") or []:
        state = cs.get("state") or {}
        if (waiting := state.get("waiting")) and waiting.get("reason"):
            reason = waiting["reason"]
        elif (terminated := state.get("terminated")) and terminated.get("reason"):
            reason = terminated["reason"]
    if pod.get("metadata", {}).get("deletionTimestamp"):
        reason = "Terminating"
    return reason


def _pod_cells(pod: Obj, now: datetime.datetime) -> list[Cell]:
    spec = pod.get("spec") or {}
    status = pod.get("status") or {}
    statuses = status.get("containerStatuses") or []
    total = len(spec.get("containers") or [])
    ready = sum(1 for cs in statuses if cs.get("ready"))
    restarts = sum(int(cs.get("restartCount", 0)) for cs in statuses)
    gates = spec.get("readinessGates") or []
    return [
        pod["metadata"]["name"],
        f"{ready}/{total}",
        _pod_status(pod),
        str(restarts),
        age(pod["metadata"].get("creationTimestamp"), now),
        status.get("podIP") or "<none>",
        spec.get("nodeName") or "<none>",
        status.get("nominatedNodeName") or "<none>",
        f"{len(gates)}/{len(gates)}" if gates else "<none>",
    ]


def _node_cells(node: Obj, now: datetime.datetime) -> list[Cell]:
    status = node.get("status") or {}
    ready = "Unknown"
    for cond in status.get("conditions") or []:
        if cond.get("type") == "Ready":
            ready = "Ready" if cond.get("status") == "True" else "NotReady"
    if (node.get("spec") or {}).get("unschedulable"):
        ready += ",SchedulingDisabled"
    labels = node.get("metadata", {}).get("labels") or {}
    roles = sorted(
        key.split("/", 1)[1]
        for key in labels
        if key.startswith("node-role.kubernetes.io/") and "/" in key
    )
    info = status.get("nodeInfo") or {}
    addresses = {a.get("type"): a.get("address") for a in status.get("addresses") or []}
    return [
        node["metadata"]["name"],
        ready,
        ",".join(roles) or "<none>",
        age(node["metadata"].get("creationTimestamp"), now),
        info.get("kubeletVersion", ""),
        addresses.get("InternalIP") or "<none>",
        addresses.get("ExternalIP") or "<none>",
        info.get("osImage", "<unknown>"),
        info.get("kernelVersion", "<unknown>"),
        info.get("containerRuntimeVersion", "<unknown>"),
    ]


def _event_cells(ev: Obj, now: datetime.datetime) -> list[Cell]:
    involved = ev.get("involvedObject") or ev.get("regarding") or {}
    last = (
        ev.get("lastTimestamp")
        or ev.get("eventTime")
        or ev.get("metadata", {}).get("creationTimestamp")
    )
    return [
        age(last, now),
        ev.get("type", ""),
        ev.get("reason", ""),
        f"{(involved.get('kind') or '').lower()}/{involved.get('name', '')}",
        ev.get("message") or ev.get("note") or "",
    ]


def _service_external_ip(svc: Obj) -> str:
    """kubectl's EXTERNAL-IP of a Service (``getServiceExternalIP``)."""
    spec = svc.get("spec") or {}
    external = [str(ip) for ip in spec.get("externalIPs") or []]
    kind = spec.get("type") or "ClusterIP"
    if kind in ("ClusterIP", "NodePort"):
        return ",".join(external) or "<none>"
    if kind == "LoadBalancer":
        ingress = ((svc.get("status") or {}).get("loadBalancer") or {}).get("ingress") or []
        found = [i.get("ip") or i.get("hostname") for i in ingress if isinstance(i, dict)]
        result = [str(v) for v in found if v] + external
        return ",".join(result) or "<pending>"
    if kind == "ExternalName":
        return str(spec.get("externalName") or "")
    return "<unknown>"


def _service_cells(svc: Obj, now: datetime.datetime) -> list[Cell]:
    spec = svc.get("spec") or {}
    cluster_ips = spec.get("clusterIPs") or []
    ports = []
    for port in spec.get("ports") or []:
        text = f"{port.get('port')}/{port.get('protocol') or 'TCP'}"
        if port.get("nodePort"):
            text = f"{port.get('port')}:{port['nodePort']}/{port.get('protocol') or 'TCP'}"
        ports.append(text)
    selector = spec.get("selector") or {}
    return [
        svc["metadata"]["name"],
        spec.get("type") or "",
        cluster_ips[0] if cluster_ips else "<none>",
        _service_external_ip(svc),
        ",".join(ports) or "<none>",
        age(svc["metadata"].get("creationTimestamp"), now),
        ",".join(f"{k}={v}" for k, v in sorted(selector.items())) or "<none>",
    ]


def _list_with_more(items: list[str], limit: int = 3) -> str:
    """kubectl's ``a,b,c + 2 more...`` (``<unset>`` when empty)."""
    text = ",".join(items[:limit])
    if len(items) > limit:
        return f"{text} + {len(items) - limit} more..."
    return text or "<unset>"


def _endpointslice_cells(eps: Obj, now: datetime.datetime) -> list[Cell]:
    ports = []
    for port in eps.get("ports") or []:
        if port.get("port") is not None:
            ports.append(str(port["port"]))
        elif port.get("name") is not None:
            ports.append(str(port["name"]))
        else:
            ports.append("*")
    addresses = [
        str(address)
        for endpoint in eps.get("endpoints") or []
        for address in endpoint.get("addresses") or []
    ]
    return [
        eps["metadata"]["name"],
        eps.get("addressType") or "",
        _list_with_more(ports),
        _list_with_more(addresses),
        age(eps["metadata"].get("creationTimestamp"), now),
    ]


_Builtin = tuple[list[Obj], Callable[[Obj, datetime.datetime], list[Cell]]]


def _builtin_table(rd: ResourceDef) -> _Builtin | None:
    name = _definition("Name", fmt="name")
    key = (rd.group, rd.plural)
    if key == ("", "pods"):
        defs = [
            name,
            _definition("Ready"),
            _definition("Status"),
            _definition("Restarts"),
            _definition("Age"),
            _definition("IP", priority=1),
            _definition("Node", priority=1),
            _definition("Nominated Node", priority=1),
            _definition("Readiness Gates", priority=1),
        ]
        return defs, _pod_cells
    if key == ("", "namespaces"):
        return [name, _definition("Status"), _definition("Age")], lambda o, now: [
            o["metadata"]["name"],
            (o.get("status") or {}).get("phase", "Active"),
            age(o["metadata"].get("creationTimestamp"), now),
        ]
    if key == ("", "nodes"):
        defs = [name, _definition("Status"), _definition("Roles"), _definition("Age")]
        defs += [_definition("Version")]
        defs += [
            _definition(title, priority=1)
            for title in ("Internal-IP", "External-IP", "OS-Image", "Kernel-Version")
        ]
        defs += [_definition("Container-Runtime", priority=1)]
        return defs, _node_cells
    if key == ("", "services"):
        defs = [name] + [_definition(t) for t in ("Type", "Cluster-IP", "External-IP")]
        defs += [_definition("Port(s)"), _definition("Age"), _definition("Selector", priority=1)]
        return defs, _service_cells
    if key == ("discovery.k8s.io", "endpointslices"):
        defs = [name] + [_definition(t) for t in ("AddressType", "Ports", "Endpoints", "Age")]
        return defs, _endpointslice_cells
    if key == ("networking.k8s.io", "networkpolicies"):
        return [name, _definition("Pod-Selector"), _definition("Age")], lambda o, now: [
            o["metadata"]["name"],
            format_label_selector((o.get("spec") or {}).get("podSelector")),
            age(o["metadata"].get("creationTimestamp"), now),
        ]
    if rd.plural == "events":
        defs = [_definition(t) for t in ("Last Seen", "Type", "Reason", "Object", "Message")]
        return defs, _event_cells
    if key == ("coordination.k8s.io", "leases"):
        return [name, _definition("Holder"), _definition("Age")], lambda o, now: [
            o["metadata"]["name"],
            (o.get("spec") or {}).get("holderIdentity") or "",
            age(o["metadata"].get("creationTimestamp"), now),
        ]
    if key == ("apiextensions.k8s.io", "customresourcedefinitions"):
        return [name, _definition("Created At", "date")], lambda o, now: [
            o["metadata"]["name"],
            o["metadata"].get("creationTimestamp"),
        ]
    return None


def columns_and_cells(rd: ResourceDef) -> _Builtin:
    """The column definitions of a resource and the function computing a row's cells."""
    if rd.columns is not None:
        columns = rd.columns
        defs = [_definition("Name", fmt="name")] + [
            _definition(c.name, c.type, c.priority, c.format) | {"description": c.description}
            for c in columns
        ]

        def cells(obj: Obj, now: datetime.datetime) -> list[Cell]:
            return [obj["metadata"]["name"]] + [_column_cell(obj, c, now) for c in columns]

        return defs, cells
    builtin = _builtin_table(rd)
    if builtin is not None:
        return builtin
    return [_definition("Name", fmt="name"), _definition("Age")], lambda o, now: [
        o["metadata"]["name"],
        age(o["metadata"].get("creationTimestamp"), now),
    ]


def partial_metadata(obj: Obj) -> Obj:
    """The PartialObjectMetadata form of an object (what Table rows embed by default)."""
    return {
        "kind": "PartialObjectMetadata",
        "apiVersion": "meta.k8s.io/v1",
        "metadata": obj.get("metadata", {}),
    }


def table(
    rd: ResourceDef,
    objs: list[Obj],
    *,
    resource_version: str,
    include_object: str = "Metadata",
    with_columns: bool = True,
    continue_token: str | None = None,
) -> Obj:
    """A meta.k8s.io/v1 Table of the objects."""
    now = datetime.datetime.now(tz=datetime.UTC)
    defs, cells = columns_and_cells(rd)
    rows = []
    for obj in objs:
        row: Obj = {"cells": cells(obj, now)}
        if include_object == "Object":
            row["object"] = obj
        elif include_object != "None":
            row["object"] = partial_metadata(obj)
        rows.append(row)
    metadata: Obj = {"resourceVersion": resource_version}
    if continue_token:
        metadata["continue"] = continue_token
    result: Obj = {"kind": "Table", "apiVersion": "meta.k8s.io/v1", "metadata": metadata}
    if with_columns:
        result["columnDefinitions"] = defs
    result["rows"] = rows
    return result
