"""A snapshot of the cluster as the engine sees it, and loading it from YAML."""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeGuard

from stockade.cnp import (
    ClusterInput,
    ClusterNetworkPolicy,
    NodeInfo,
    parse_cluster_network_policy,
    parse_node,
)
from stockade.errors import FieldError, InvalidObjectError, ObjectRef
from stockade.isolation import KIND as ISOLATION_KIND
from stockade.isolation import parse_isolation_policy
from stockade.model import Namespace, NetworkPolicy, Pod, object_ref, parse_object
from stockade.yamlload import MAX_DEPTH, MAX_INPUT_BYTES, YamlLoadError, load_documents

SUPPORTED_KINDS = (
    "Namespace",
    "Pod",
    "NetworkPolicy",
    "ClusterNetworkPolicy",
    ISOLATION_KIND,
    "Node",
)


@dataclass(frozen=True)
class Cluster:
    """The objects policy is judged on, by name (``ns/name`` for namespaced ones).

    ``cluster_policies`` are the ClusterNetworkPolicies (by name) and the
    IsolationPolicies (by key, ``IsolationPolicy/<name>``), and ``nodes`` the Nodes
    their ``nodes`` peers select (by name).
    """

    namespaces: Mapping[str, Namespace] = field(default_factory=dict)
    pods: Mapping[str, Pod] = field(default_factory=dict)
    policies: Mapping[str, NetworkPolicy] = field(default_factory=dict)
    cluster_policies: Mapping[str, ClusterNetworkPolicy] = field(default_factory=dict)
    nodes: Mapping[str, NodeInfo] = field(default_factory=dict)

    @staticmethod
    def of(objects: Iterable[ClusterInput]) -> Cluster:
        """Build a snapshot; a later object with the same name replaces an earlier one."""
        namespaces: dict[str, Namespace] = {}
        pods: dict[str, Pod] = {}
        policies: dict[str, NetworkPolicy] = {}
        cluster_policies: dict[str, ClusterNetworkPolicy] = {}
        nodes: dict[str, NodeInfo] = {}
        for obj in objects:
            if isinstance(obj, Namespace):
                namespaces[obj.name] = obj
            elif isinstance(obj, Pod):
                pods[obj.key] = obj
            elif isinstance(obj, ClusterNetworkPolicy):
                cluster_policies[obj.key] = obj
            elif isinstance(obj, NodeInfo):
                nodes[obj.name] = obj
            else:
                policies[obj.key] = obj
        return Cluster(namespaces, pods, policies, cluster_policies, nodes)

    def namespace(self, name: str) -> Namespace:
        """The namespace ``name``; one that was never declared has only its name label."""
        return self.namespaces.get(name) or Namespace.default(name)

    def objects(self) -> Iterator[ClusterInput]:
        """Every object: namespaces, pods, NetworkPolicies, Nodes, ClusterNetworkPolicies."""
        yield from self.namespaces.values()
        yield from self.pods.values()
        yield from self.policies.values()
        yield from self.nodes.values()
        yield from self.cluster_policies.values()

    def active_pods(self) -> list[Pod]:
        """Pods that take part in policy (an IP, not finished), sorted by key."""
        return sorted((p for p in self.pods.values() if p.active), key=lambda p: p.key)


@dataclass(frozen=True)
class LoadResult:
    """What a load produced: the parsed objects and every rejected object's error."""

    objects: tuple[ClusterInput, ...]
    errors: tuple[InvalidObjectError, ...]

    @property
    def cluster(self) -> Cluster:
        """The snapshot of the objects that parsed."""
        return Cluster.of(self.objects)


@dataclass(frozen=True)
class UnreadableList:
    """A ``kind: List`` (or ``PodList``, ...) whose items cannot be read.

    :func:`iter_documents` yields it in place of the items, for the caller to report
    as ``{ref}: {problem}``.
    """

    ref: ObjectRef
    problem: str  # e.g. "items must be a list, not a map"

    def error(self, source: str | None) -> InvalidObjectError:
        """The problem as an object error (``PodList x: items: must be a list, ...``)."""
        field_name, _, message = self.problem.partition(" ")
        return InvalidObjectError(self.ref, [FieldError(field_name, message)], source)


_DONE = object()


def _list_kind(raw: Any) -> TypeGuard[Mapping[str, Any]]:
    if not isinstance(raw, Mapping):
        return False
    kind = raw.get("kind")
    return isinstance(kind, str) and kind.endswith("List")


def iter_documents(raw: Any) -> Iterator[Any]:
    """Flatten a document that may be a ``v1 List`` (as ``kubectl get -o yaml`` prints).

    Any kind ending in ``List`` is one, and its ``items`` must be a list (``null``
    is an empty one); a List whose items cannot be read, one nested in Lists more
    than :data:`~stockade.yamlload.MAX_DEPTH` deep, or one inside itself is yielded
    as an :class:`UnreadableList`. Empty documents and items (``None``) are skipped.
    The walk is iterative and bounded, whatever ``raw`` is.
    """
    inside: list[int] = []  # ids of the Lists being flattened, outermost first
    pending: list[Iterator[Any]] = [iter((raw,))]
    while pending:
        item = next(pending[-1], _DONE)
        if item is _DONE:
            pending.pop()
            if inside:
                inside.pop()
            continue
        if item is None:
            continue
        if not _list_kind(item):
            yield item
            continue
        items = item.get("items", _DONE)
        if items is None:
            continue
        if not isinstance(items, list):
            shown = "it is missing" if items is _DONE else f"not {_kind_name(items)}"
            yield UnreadableList(object_ref(item), f"items must be a list, {shown}")
        elif id(item) in inside:
            yield UnreadableList(object_ref(item), "items contain this List itself")
        elif len(inside) >= MAX_DEPTH:
            yield UnreadableList(
                object_ref(item), f"items nest Lists in Lists more than {MAX_DEPTH} deep"
            )
        else:
            inside.append(id(item))
            pending.append(iter(items))


def _kind_name(value: Any) -> str:
    if isinstance(value, Mapping):
        return "a map"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    return f"a {type(value).__name__}"


def parse_input(obj: Mapping[str, Any], source: str | None = None) -> ClusterInput:
    """Parse one object of a kind in :data:`SUPPORTED_KINDS`; raises InvalidObjectError."""
    kind = obj.get("kind")
    if kind == "ClusterNetworkPolicy":
        return parse_cluster_network_policy(obj, source)
    if kind == ISOLATION_KIND:
        return parse_isolation_policy(obj, source)
    if kind == "Node":
        return parse_node(obj, source)
    return parse_object(obj, source)


def parse_documents(docs: Iterable[Any], source: str | None = None) -> LoadResult:
    """Parse raw documents; kinds not in :data:`SUPPORTED_KINDS` are errors."""
    objects: list[ClusterInput] = []
    errors: list[InvalidObjectError] = []
    for index, doc in enumerate(docs):
        for item in iter_documents(doc):
            if isinstance(item, UnreadableList):
                errors.append(item.error(source))
                continue
            if not isinstance(item, Mapping):
                errors.append(
                    InvalidObjectError(
                        ObjectRef("<document>", None, f"#{index + 1}"),
                        [FieldError("", "is not a Kubernetes object (a mapping)")],
                        source,
                    )
                )
                continue
            try:
                objects.append(parse_input(item, source))
            except InvalidObjectError as exc:
                errors.append(exc)
    return LoadResult(tuple(objects), tuple(errors))


class UnreadableFileError(InvalidObjectError):
    """A file that is not a readable stream of manifests (:mod:`stockade.yamlload`).

    Its one line is the loader's message, the same the CLI prints:
    ``FILE: line 9, column 7: spec.ingress[0]: duplicate key 'from' (first at line 8)``.
    """

    def __init__(self, error: YamlLoadError) -> None:
        self.message = str(error)
        super().__init__(ObjectRef("<file>", None, error.source), [], error.source)

    def lines(self) -> list[str]:
        """The loader's message, as it is."""
        return [self.message]


def load_files(paths: Iterable[str | Path]) -> LoadResult:
    """Load multi-document YAML (or JSON) files; ``-`` is not special here.

    Files are read as :func:`stockade.yamlload.load_documents` reads them (strict,
    bounded); a file it refuses is one :class:`UnreadableFileError`. A file that
    cannot be opened raises :class:`OSError`.
    """
    objects: list[ClusterInput] = []
    errors: list[InvalidObjectError] = []
    for path in paths:
        with open(path, "rb") as stream:
            data = stream.read(MAX_INPUT_BYTES + 1)
        try:
            docs = load_documents(data, str(path))
        except YamlLoadError as exc:
            errors.append(UnreadableFileError(exc))
            continue
        result = parse_documents(docs, str(path))
        objects.extend(result.objects)
        errors.extend(result.errors)
    return LoadResult(tuple(objects), tuple(errors))
