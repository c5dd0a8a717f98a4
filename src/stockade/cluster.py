"""A snapshot of the cluster as the engine sees it, and loading it from YAML."""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from stockade.errors import FieldError, InvalidObjectError, ObjectRef
from stockade.model import ClusterObject, Namespace, NetworkPolicy, Pod, parse_object

SUPPORTED_KINDS = ("Namespace", "Pod", "NetworkPolicy")


@dataclass(frozen=True)
class Cluster:
    """Namespaces, Pods and NetworkPolicies by name (``ns/name`` for namespaced)."""

    namespaces: Mapping[str, Namespace] = field(default_factory=dict)
    pods: Mapping[str, Pod] = field(default_factory=dict)
    policies: Mapping[str, NetworkPolicy] = field(default_factory=dict)

    @staticmethod
    def of(objects: Iterable[ClusterObject]) -> Cluster:
        """Build a snapshot; a later object with the same name replaces an earlier one."""
        namespaces: dict[str, Namespace] = {}
        pods: dict[str, Pod] = {}
        policies: dict[str, NetworkPolicy] = {}
        for obj in objects:
            if isinstance(obj, Namespace):
                namespaces[obj.name] = obj
            elif isinstance(obj, Pod):
                pods[obj.key] = obj
            else:
                policies[obj.key] = obj
        return Cluster(namespaces, pods, policies)

    def namespace(self, name: str) -> Namespace:
        """The namespace ``name``; one that was never declared has only its name label."""
        return self.namespaces.get(name) or Namespace.default(name)

    def objects(self) -> Iterator[ClusterObject]:
        """Every object, namespaces first."""
        yield from self.namespaces.values()
        yield from self.pods.values()
        yield from self.policies.values()

    def active_pods(self) -> list[Pod]:
        """Pods that take part in policy (an IP, not finished), sorted by key."""
        return sorted((p for p in self.pods.values() if p.active), key=lambda p: p.key)


@dataclass(frozen=True)
class LoadResult:
    """What a load produced: the parsed objects and every rejected object's error."""

    objects: tuple[ClusterObject, ...]
    errors: tuple[InvalidObjectError, ...]

    @property
    def cluster(self) -> Cluster:
        """The snapshot of the objects that parsed."""
        return Cluster.of(self.objects)


def iter_documents(raw: Any) -> Iterator[Any]:
    """Flatten a document that may be a ``v1 List`` (as ``kubectl get -o yaml`` prints)."""
    if raw is None:
        return
    if (
        isinstance(raw, Mapping)
        and isinstance(raw.get("items"), list)
        and (str(raw.get("kind", "")).endswith("List"))
    ):
        for item in raw["items"]:
            yield from iter_documents(item)
        return
    yield raw


def parse_documents(docs: Iterable[Any], source: str | None = None) -> LoadResult:
    """Parse raw documents; kinds other than Namespace, Pod, NetworkPolicy are errors."""
    objects: list[ClusterObject] = []
    errors: list[InvalidObjectError] = []
    for index, doc in enumerate(docs):
        for item in iter_documents(doc):
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
                objects.append(parse_object(item, source))
            except InvalidObjectError as exc:
                errors.append(exc)
    return LoadResult(tuple(objects), tuple(errors))


def load_files(paths: Iterable[str | Path]) -> LoadResult:
    """Load multi-document YAML (or JSON) files; ``-`` is not special here."""
    objects: list[ClusterObject] = []
    errors: list[InvalidObjectError] = []
    for path in paths:
        text = Path(path).read_text(encoding="utf-8")
        try:
            docs = list(yaml.safe_load_all(text))
        except yaml.YAMLError as exc:
            mark = getattr(exc, "problem_mark", None)
            where = f"line {mark.line + 1}" if mark is not None else "document"
            errors.append(
                InvalidObjectError(
                    ObjectRef("<yaml>", None, "document"),
                    [FieldError(where, f"not valid YAML: {getattr(exc, 'problem', exc)}")],
                    str(path),
                )
            )
            continue
        result = parse_documents(docs, str(path))
        objects.extend(result.objects)
        errors.extend(result.errors)
    return LoadResult(tuple(objects), tuple(errors))
