"""The deployment manifests (manifests/ and manifests/cleanup/), checked offline.

- Objects come from ``kubectl kustomize`` when kubectl is installed, else straight
  from the YAML files the kustomization lists (kubectl is not needed; the render
  comparison is skipped with the reason when it is missing).
- Every built-in object validates against the Kubernetes 1.32 OpenAPI schemas
  (kubernetes-validate, which ships them: no network), strictly (unknown fields
  are errors); objects of our own kinds validate against our CRDs' schemas.
- RBAC is least privilege: no wildcard, and the verbs granted per resource are
  exactly the verbs the code uses. :data:`CALL_SITES` names every API call in
  operator/ and agent/ and the permission it needs; a scan of the source fails the
  test when a call is added or removed without updating this list (and so RBAC).
- The workloads carry the settings docs/deploy.md promises (non-root controller
  with probes and leader election, an agent with NET_ADMIN/NET_RAW only, on every
  node, with no cleanup on shutdown) and pass their arguments to parsers that
  accept them.
"""

from __future__ import annotations

import copy
import importlib
import os
import re
import shlex
import shutil
import subprocess
from collections.abc import Iterator
from functools import cache
from pathlib import Path
from typing import Any

import pytest
import yaml

from stockade.agent.cli import build_parser as agent_parser
from stockade.agent.status import SyncState, status_payload
from stockade.cluster import parse_documents
from stockade.compiler import compile_cluster
from stockade.controller.main import parse_args as controller_args
from stockade.ruleset import node_rule_set_to_dict, peer_set_to_dict

ROOT = Path(__file__).resolve().parents[2]
MANIFESTS = ROOT / "manifests"
KUSTOMIZATIONS = (MANIFESTS, MANIFESTS / "cleanup")
NAMESPACE = "stockade-system"
K8S_VERSION = "1.32"

Obj = dict[str, Any]

# --------------------------------------------------------------------------- what the code calls

# Every API call the controller and the agent make, as the scan below finds it:
# (file, KubeClient method, first argument) -> (service account, group, resource, verb).
# Update this table, then the RBAC in manifests/, whenever a call changes.
CALL_SITES: dict[tuple[str, str, str], tuple[str, str, str, str]] = {
    # operator/publisher.py _list_keys: the warm-up lists Pods, Namespaces, NetworkPolicies,
    # Nodes and (when their CRD is served) ClusterNetworkPolicies (_WATCHED).
    ("operator/publisher.py", "list", "_WATCHED[kind]"): ("controller", "*watched", "*", "list"),
    # operator/publisher.py adopt: lists published NodeRuleSets and PeerSets (_RESOURCES).
    ("operator/publisher.py", "list", "resource"): ("controller", "*published", "*", "list"),
    # operator/publisher.py _list_events: Events on NetworkPolicies, read back at adoption.
    ("operator/publisher.py", "list", "EVENTS"): ("controller", "", "events", "list"),
    # operator/feed.py WithoutSpecs: the controller's NodeRuleSet feed lists them, and
    # watches them without their specs (the agents' status, i.e. the sync lag).
    ("operator/feed.py", "list", "resource"): (
        "controller",
        "stockade.dev",
        "noderulesets",
        "list",
    ),
    ("operator/feed.py", "watch", "resource"): (
        "controller",
        "stockade.dev",
        "noderulesets",
        "watch",
    ),
    # operator/publisher.py _write_one: create, merge patch (patch_merge), delete.
    ("operator/publisher.py", "create", "resource"): ("controller", "*published", "*", "create"),
    ("operator/publisher.py", "patch_merge", "resource"): (
        "controller",
        "*published",
        "*",
        "patch",
    ),
    ("operator/publisher.py", "delete", "resource"): ("controller", "*published", "*", "delete"),
    # operator/publisher.py _write_condition (through LeanWrites.patch_status): the
    # Accepted condition, a merge patch of a ClusterNetworkPolicy's status subresource.
    ("operator/publisher.py", "patch_status", "CLUSTER_NETWORK_POLICIES"): (
        "controller",
        "policy.networking.k8s.io",
        "clusternetworkpolicies/status",
        "patch",
    ),
    # The same, of an IsolationPolicy's status.
    ("operator/publisher.py", "patch_status", "ISOLATION_POLICIES"): (
        "controller",
        "stockade.dev",
        "isolationpolicies/status",
        "patch",
    ),
    ("operator/publisher.py", "patch_status", "resource"): (
        "controller",
        "policy.networking.k8s.io",
        "clusternetworkpolicies/status",
        "patch",
    ),
    # operator/publisher.py report: KubeClient.create_event POSTs a core v1 Event.
    ("operator/publisher.py", "create_event", ""): ("controller", "", "events", "create"),
    # operator/leader.py: read the Lease, take or renew it by PUT (replace), create it.
    ("operator/leader.py", "get", "LEASES"): ("controller", "coordination.k8s.io", "leases", "get"),
    ("operator/leader.py", "replace", "LEASES"): (
        "controller",
        "coordination.k8s.io",
        "leases",
        "update",
    ),
    ("operator/leader.py", "create", "LEASES"): (
        "controller",
        "coordination.k8s.io",
        "leases",
        "create",
    ),
    # agent/watch.py Reflector.run: list, then watch, of NODE_RULE_SETS, PEER_SETS and
    # (with --isolate-new-pods) PODS.
    # The same reflector is the controller's Pod feed (SHARED_CALL_SITES).
    ("stockade/reflector.py", "list", "self.resource"): ("agent", "*synced", "*", "list"),
    ("stockade/reflector.py", "watch", "self.resource"): ("agent", "*synced", "*", "watch"),
    # agent/watch.py _status_loop: merge patch of the NodeRuleSet's status subresource.
    ("agent/status_writer.py", "patch_status", "NODE_RULE_SETS"): (
        "agent",
        "stockade.dev",
        "noderulesets/status",
        "patch",
    ),
}

# Call sites shared by both programs: the other users of the same call.
# operator/feed.py: the controller's feeds list and watch Pods, Namespaces and
# NetworkPolicies.
_FEEDS = (("", "pods"), ("", "namespaces"), ("networking.k8s.io", "networkpolicies"))
SHARED_CALL_SITES: dict[tuple[str, str, str], tuple[tuple[str, str, str, str], ...]] = {
    ("stockade/reflector.py", verb, "self.resource"): tuple(
        ("controller", group, resource, verb) for group, resource in _FEEDS
    )
    for verb in ("list", "watch")
}

# What the indirections above stand for (publisher._WATCHED, publisher._RESOURCES,
# the agent's two reflectors).
_GROUPS_OF: dict[str, list[tuple[str, str]]] = {
    "*watched": [
        ("", "pods"),
        ("", "namespaces"),
        ("", "nodes"),
        ("networking.k8s.io", "networkpolicies"),
        ("policy.networking.k8s.io", "clusternetworkpolicies"),
        ("stockade.dev", "isolationpolicies"),
    ],
    "*published": [("stockade.dev", "noderulesets"), ("stockade.dev", "peersets")],
    # Pods: the reflector of --isolate-new-pods (field selector spec.nodeName=<node>).
    "*synced": [("stockade.dev", "noderulesets"), ("stockade.dev", "peersets"), ("", "pods")],
}

# Calls made by kopf, not by KubeClient: operator/handlers.py's kopf.on.event watches
# (Nodes, ClusterNetworkPolicies when served, IsolationPolicies; with --kopf-watches
# Pods, Namespaces, NetworkPolicies and NodeRuleSets too) list and then watch each
# resource. (kopf also reads the
# discovery documents, which every authenticated user may, and tries to watch CRDs
# for new resources; denied, it logs a warning and goes on: no CRD access needed.)
KOPF_WATCH_VERBS = ("list", "watch")

SERVICE_ACCOUNTS = {"controller": "stockade-controller", "agent": "stockade-agent"}

_CALL = re.compile(
    r"\bclient\.(list_pages|list|watch|get|create|replace|patch_merge|patch_status|delete|"
    r"create_event)"
    r"\(\s*([A-Za-z_][\w.]*(?:\[\w+\])?)?"
)
_KOPF = re.compile(r'kopf\.on\.event\(\s*"([^"]*)",\s*"([^"]*)",\s*"([^"]*)"')


def _scan_calls() -> set[tuple[str, str, str]]:
    found: set[tuple[str, str, str]] = set()
    for where in ("operator", "agent", "src/stockade/reflector.py"):
        paths = [ROOT / where] if where.endswith(".py") else sorted((ROOT / where).glob("*.py"))
        folder = where.removeprefix("src/").removesuffix("/reflector.py")
        for path in paths:
            for match in _CALL.finditer(path.read_text(encoding="utf-8")):
                method, arg = match.group(1), match.group(2) or ""
                method = "list" if method == "list_pages" else method  # a list, in pages
                found.add(
                    (f"{folder}/{path.name}", method, "" if method == "create_event" else arg)
                )
    return found


def _kopf_watches() -> set[tuple[str, str]]:
    text = (ROOT / "operator" / "handlers.py").read_text(encoding="utf-8")
    return {(group, plural) for group, _version, plural in _KOPF.findall(text)}


def used_verbs() -> dict[str, dict[tuple[str, str], set[str]]]:
    """Per service account: (apiGroup, resource) -> the verbs the code needs."""
    used: dict[str, dict[tuple[str, str], set[str]]] = {sa: {} for sa in SERVICE_ACCOUNTS.values()}
    shared = [use for uses in SHARED_CALL_SITES.values() for use in uses]
    for who, group, resource, verb in [*CALL_SITES.values(), *shared]:
        targets = _GROUPS_OF.get(group, [(group, resource)])
        for target in targets:
            used[SERVICE_ACCOUNTS[who]].setdefault(target, set()).add(verb)
    for target in _kopf_watches():
        used["stockade-controller"].setdefault(target, set()).update(KOPF_WATCH_VERBS)
    return used


# --------------------------------------------------------------------------- loading


def _kustomization(folder: Path) -> Obj:
    doc: Obj = yaml.safe_load((folder / "kustomization.yaml").read_text(encoding="utf-8"))
    return doc


def image_settings(folder: Path) -> list[Obj]:
    """The kustomization's ``images``, with those of the components it lists."""
    kust = _kustomization(folder)
    images: list[Obj] = list(kust.get("images") or [])
    for component in kust.get("components") or []:
        images += image_settings((folder / component).resolve())
    return images


def load_files(folder: Path) -> list[Obj]:
    """The objects of the files the kustomization lists, with its image tags applied."""
    kust = _kustomization(folder)
    docs: list[Obj] = []
    for name in kust["resources"]:
        text = (folder / name).read_text(encoding="utf-8")
        docs += [d for d in yaml.safe_load_all(text) if d]
    tags = {i["name"]: i.get("newTag") for i in image_settings(folder)}
    for container in _all_containers(docs):
        repo, _, _tag = container["image"].partition(":")
        if tags.get(repo):
            container["image"] = f"{repo}:{tags[repo]}"
    return docs


@cache
def _rendered(folder: Path) -> tuple[Obj, ...]:
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        return tuple(load_files(folder))
    out = subprocess.run(
        [kubectl, "kustomize", str(folder)], capture_output=True, text=True, check=True
    ).stdout
    return tuple(d for d in yaml.safe_load_all(out) if d)


def objects(folder: Path) -> list[Obj]:
    """``kubectl kustomize`` output when kubectl exists, else the files; deep copies."""
    return copy.deepcopy(list(_rendered(folder)))


def everything() -> list[Obj]:
    return [o for folder in KUSTOMIZATIONS for o in objects(folder)]


def _ident(obj: Obj) -> str:
    meta = obj.get("metadata") or {}
    ns = f"{meta['namespace']}/" if meta.get("namespace") else ""
    return f"{obj['kind']} {ns}{meta.get('name')}"


def _pod_specs(docs: list[Obj]) -> Iterator[Obj]:
    for doc in docs:
        if doc.get("kind") in ("Deployment", "DaemonSet", "Job", "StatefulSet"):
            yield doc["spec"]["template"]["spec"]


def _all_containers(docs: list[Obj]) -> Iterator[Obj]:
    for spec in _pod_specs(docs):
        yield from spec.get("initContainers") or []
        yield from spec.get("containers") or []


def find(docs: list[Obj], kind: str, name: str) -> Obj:
    for doc in docs:
        if doc["kind"] == kind and doc["metadata"]["name"] == name:
            return doc
    raise AssertionError(f"no {kind} {name} in the manifests")


def _env(container: Obj) -> dict[str, Obj]:
    return {e["name"]: e for e in container.get("env") or []}


def _flag(args: list[str], name: str) -> str:
    for arg in args:
        if arg.startswith(f"{name}="):
            return arg.split("=", 1)[1]
    raise AssertionError(f"{name} not in {args}")


# --------------------------------------------------------------------------- rendering


def test_kustomize_renders_what_the_files_hold() -> None:
    """``kubectl kustomize`` of each directory gives the files' objects, images tagged."""
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        pytest.skip("kubectl is not installed: the kustomize render is not checked")
    for folder in KUSTOMIZATIONS:
        rendered = objects(folder)
        direct = load_files(folder)
        assert sorted(map(_ident, rendered)) == sorted(map(_ident, direct))
        images = sorted(c["image"] for c in _all_containers(rendered))
        assert images == sorted(c["image"] for c in _all_containers(direct))


def test_every_namespaced_object_is_in_stockades_namespace() -> None:
    docs = objects(MANIFESTS)
    kinds = {d["kind"] for d in docs}
    assert {"Namespace", "CustomResourceDefinition", "Deployment", "DaemonSet"} <= kinds
    assert find(docs, "Namespace", NAMESPACE)
    cluster_scoped = {"Namespace", "CustomResourceDefinition", "ClusterRole", "ClusterRoleBinding"}
    for doc in docs:
        if doc["kind"] not in cluster_scoped:
            assert doc["metadata"].get("namespace") == NAMESPACE, _ident(doc)


def test_namespace_allows_the_agents_privileges() -> None:
    """Pod Security "privileged": hostNetwork, hostPath and NET_ADMIN are not baseline."""
    for folder in KUSTOMIZATIONS:
        for ns in (d for d in objects(folder) if d["kind"] == "Namespace"):
            labels = ns["metadata"]["labels"]
            assert labels["pod-security.kubernetes.io/enforce"] == "privileged", _ident(ns)


def test_crds_are_the_generated_file() -> None:
    """The kustomization ships manifests/crds.yaml (NodeRuleSet, PeerSet,
    IsolationPolicy) and cnp-crd.yaml unchanged (apart from labels)."""
    generated = [
        d
        for name in ("crds.yaml", "cnp-crd.yaml")
        for d in yaml.safe_load_all((MANIFESTS / name).read_text())
        if d
    ]
    shipped = [d for d in objects(MANIFESTS) if d["kind"] == "CustomResourceDefinition"]
    assert len(shipped) == len(generated) == 4
    for got in shipped:
        got["metadata"].pop("labels", None)
    for want in generated:
        want["metadata"].pop("labels", None)
    assert sorted(shipped, key=_ident) == sorted(generated, key=_ident)


# --------------------------------------------------------------------------- schemas


def test_builtin_objects_match_the_kubernetes_schemas() -> None:
    """Every built-in object is valid for Kubernetes 1.32, unknown fields included."""
    kv = importlib.import_module("kubernetes_validate")  # a dev dependency, untyped

    problems: list[str] = []
    for doc in everything():
        if doc["apiVersion"].split("/")[0] == "stockade.dev":
            continue  # checked against our CRDs below
        try:
            kv.validate(doc, K8S_VERSION, strict=True)
        except kv.ValidationError as exc:
            where = "/".join(str(p) for p in exc.path)
            problems.append(f"{_ident(doc)}: {where}: {exc.message}")
    assert not problems, "\n".join(problems)


def test_the_schema_check_catches_mistakes() -> None:
    """A misspelled field and a wrong type are reported, so the check above is real."""
    kv = importlib.import_module("kubernetes_validate")  # a dev dependency, untyped

    deployment = find(objects(MANIFESTS), "Deployment", "stockade-controller")
    typo = copy.deepcopy(deployment)
    typo["spec"]["template"]["spec"]["containers"][0]["readinesProbe"] = {}
    wrong = copy.deepcopy(deployment)
    wrong["spec"]["replicas"] = "two"
    for bad in (typo, wrong):
        with pytest.raises(kv.ValidationError):
            kv.validate(bad, K8S_VERSION, strict=True)


def _json_schema(schema: Obj) -> Obj:
    """A CRD's structural OpenAPI v3 schema as JSON Schema, with pruning as errors."""
    out: Obj = {}
    for key, value in schema.items():
        if key == "properties":
            out[key] = {k: _json_schema(v) for k, v in value.items()}
        elif key == "items" or (key == "additionalProperties" and isinstance(value, dict)):
            out[key] = _json_schema(value)
        elif key == "nullable" or key.startswith("x-kubernetes-"):
            continue
        else:
            out[key] = value
    if schema.get("nullable") and "type" in out:
        out["type"] = [out["type"], "null"]
    if (
        "properties" in schema
        and "additionalProperties" not in schema
        and not schema.get("x-kubernetes-preserve-unknown-fields")
    ):
        out["additionalProperties"] = False  # the API server would prune the field
    return out


@cache
def _crd_schemas() -> dict[tuple[str, str], Obj]:
    schemas: dict[tuple[str, str], Obj] = {}
    for crd in (d for d in _rendered(MANIFESTS) if d["kind"] == "CustomResourceDefinition"):
        group, kind = crd["spec"]["group"], crd["spec"]["names"]["kind"]
        for version in crd["spec"]["versions"]:
            schema = version["schema"]["openAPIV3Schema"]
            schemas[(f"{group}/{version['name']}", kind)] = _json_schema(schema)
    return schemas


def crd_problems(obj: Obj) -> list[str]:
    """What our CRD's schema says about ``obj`` (an empty list when it conforms)."""
    jsonschema = importlib.import_module("jsonschema")  # comes with kubernetes-validate

    schema = _crd_schemas().get((obj["apiVersion"], obj["kind"]))
    if schema is None:
        return [f"{obj['apiVersion']} {obj['kind']}: no CRD in the manifests"]
    validator = jsonschema.Draft202012Validator(schema)
    return [
        f"{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in validator.iter_errors(obj)
    ]


def _published_samples() -> list[Obj]:
    """NodeRuleSets and PeerSets as the controller publishes them, with an agent status."""
    docs = list(yaml.safe_load_all((ROOT / "examples" / "three-tier.yaml").read_text()))
    result = parse_documents([d for d in docs if d])
    assert not result.errors
    compiled = compile_cluster(result.cluster)
    samples: list[Obj] = []
    for node, rules in compiled.node_rule_sets.items():
        obj: Obj = {
            "apiVersion": "stockade.dev/v1alpha1",
            "kind": "NodeRuleSet",
            "metadata": {"name": node},
            "spec": node_rule_set_to_dict(rules),
        }
        for applied in (True, False):
            state = SyncState(
                observed_generation=1,
                applied=applied,
                reason="Applied" if applied else "Refused",
                message="" if applied else "peer set ps-x is missing",
                applied_generation=1 if applied else None,
                applied_hash="abc" if applied else None,
                applied_rules=rules if applied else None,
                last_sync="2025-01-01T00:00:00Z" if applied else None,
            )
            payload = status_payload(state, "2025-01-01T00:00:00Z")
            # A merge patch deletes the fields that are None.
            samples.append({**obj, "status": {k: v for k, v in payload.items() if v is not None}})
    for name, shard in compiled.peer_sets.items():
        samples.append(
            {
                "apiVersion": "stockade.dev/v1alpha1",
                "kind": "PeerSet",
                "metadata": {"name": name},
                "spec": peer_set_to_dict(shard),
            }
        )
    return samples


def test_custom_objects_match_our_crd_schemas() -> None:
    """Objects of our kinds in the manifests (if any) and as published conform."""
    shipped = [d for d in everything() if d["apiVersion"].split("/")[0] == "stockade.dev"]
    samples = _published_samples()
    assert {s["kind"] for s in samples} == {"NodeRuleSet", "PeerSet"}
    problems = [f"{_ident(o)}: {p}" for o in shipped + samples for p in crd_problems(o)]
    assert not problems, "\n".join(problems)


def test_the_crd_check_catches_mistakes() -> None:
    sample = next(s for s in _published_samples() if s["kind"] == "NodeRuleSet")
    sample["status"]["applied"] = "yes"
    sample["status"]["lag"] = 3
    problems = crd_problems(sample)
    assert any("applied" in p for p in problems)
    assert any("lag" in p for p in problems)


# --------------------------------------------------------------------------- RBAC


def _roles(docs: list[Obj]) -> list[Obj]:
    return [d for d in docs if d["kind"] in ("Role", "ClusterRole")]


def granted_verbs(docs: list[Obj]) -> dict[str, dict[tuple[str, str], set[str]]]:
    """Per service account: (apiGroup, resource) -> verbs granted by its bindings."""
    roles = {(d["kind"], d["metadata"]["name"]): d for d in _roles(docs)}
    granted: dict[str, dict[tuple[str, str], set[str]]] = {}
    for binding in (d for d in docs if d["kind"] in ("RoleBinding", "ClusterRoleBinding")):
        ref = binding["roleRef"]
        role = roles[(ref["kind"], ref["name"])]
        for subject in binding["subjects"]:
            assert subject["kind"] == "ServiceAccount", _ident(binding)
            assert subject["namespace"] == NAMESPACE, _ident(binding)
            table = granted.setdefault(subject["name"], {})
            for rule in role["rules"]:
                for group in rule["apiGroups"]:
                    for resource in rule["resources"]:
                        table.setdefault((group, resource), set()).update(rule["verbs"])
    return granted


def test_no_role_grants_a_wildcard_or_escalation() -> None:
    bad = {"*", "escalate", "bind", "impersonate"}
    for role in _roles(everything()):
        for rule in role["rules"]:
            for field in ("apiGroups", "resources", "verbs"):
                assert "*" not in rule.get(field, []), f"{_ident(role)}: * in {field}"
            assert not bad & set(rule["verbs"]), _ident(role)
            assert "nonResourceURLs" not in rule, _ident(role)


def test_the_scan_finds_exactly_the_listed_api_calls() -> None:
    """A new (or removed) API call fails here: update CALL_SITES and the RBAC."""
    found = _scan_calls()
    assert found == set(CALL_SITES), (
        f"calls not in CALL_SITES: {sorted(found - set(CALL_SITES))}; "
        f"listed but gone: {sorted(set(CALL_SITES) - found)}"
    )
    assert _kopf_watches() == {
        ("", "pods"),
        ("", "namespaces"),
        ("", "nodes"),
        ("networking.k8s.io", "networkpolicies"),
        ("policy.networking.k8s.io", "clusternetworkpolicies"),
        ("stockade.dev", "isolationpolicies"),
        ("stockade.dev", "noderulesets"),
    }


def test_rbac_grants_exactly_the_verbs_the_code_uses() -> None:
    """Nothing the code does not use, and nothing it uses missing (per resource)."""
    granted = granted_verbs(objects(MANIFESTS))
    used = used_verbs()
    assert set(granted) == set(used)
    for account, want in used.items():
        have = granted[account]
        extra = {k: sorted(v - want.get(k, set())) for k, v in have.items()}
        missing = {k: sorted(v - have.get(k, set())) for k, v in want.items()}
        assert not {k: v for k, v in extra.items() if v}, f"{account}: unused grants {extra}"
        assert not {k: v for k, v in missing.items() if v}, f"{account}: missing {missing}"


def test_the_controller_writes_only_cnp_status_and_the_agent_only_status() -> None:
    """The controller's only status write is the Accepted condition of
    ClusterNetworkPolicies (a merge patch); NodeRuleSet status is the agents'."""
    granted = granted_verbs(objects(MANIFESTS))
    writes = {"create", "update", "patch", "delete", "deletecollection"}
    controller, agent = granted["stockade-controller"], granted["stockade-agent"]
    statuses = {(g, r): v for (g, r), v in controller.items() if r.endswith("/status")}
    assert statuses == {
        ("policy.networking.k8s.io", "clusternetworkpolicies/status"): {"patch"},
        ("stockade.dev", "isolationpolicies/status"): {"patch"},
    }
    cnp = controller[("policy.networking.k8s.io", "clusternetworkpolicies")]
    assert cnp == {"list", "watch"}, "the controller never writes a policy itself"
    assert controller[("stockade.dev", "isolationpolicies")] == {"list", "watch"}
    for (_group, resource), verbs in agent.items():
        if verbs & writes:
            assert resource == "noderulesets/status", resource
    assert agent[("stockade.dev", "noderulesets/status")] == {"patch"}


def test_lease_access_is_namespaced_and_named() -> None:
    docs = objects(MANIFESTS)
    for role in (d for d in docs if d["kind"] == "ClusterRole"):
        assert all("leases" not in r["resources"] for r in role["rules"]), _ident(role)
    role = find(docs, "Role", "stockade-controller-leader")
    lease = _flag(_controller_container(docs)["args"], "--lease-name")
    for rule in role["rules"]:
        if set(rule["verbs"]) - {"create"}:
            assert rule.get("resourceNames") == [lease]


def test_cleanup_needs_no_api_access() -> None:
    docs = objects(MANIFESTS / "cleanup")
    assert not _roles(docs)
    for spec in _pod_specs(docs):
        assert spec["automountServiceAccountToken"] is False


# --------------------------------------------------------------------------- the controller


def _controller_container(docs: list[Obj]) -> Obj:
    deploy = find(docs, "Deployment", "stockade-controller")
    containers: list[Obj] = deploy["spec"]["template"]["spec"]["containers"]
    assert len(containers) == 1
    return containers[0]


def test_controller_deployment() -> None:
    docs = objects(MANIFESTS)
    deploy = find(docs, "Deployment", "stockade-controller")
    spec = deploy["spec"]["template"]["spec"]
    container = _controller_container(docs)
    assert deploy["spec"]["replicas"] == 2
    assert spec["serviceAccountName"] == "stockade-controller"
    assert spec["securityContext"]["runAsNonRoot"] is True
    assert spec["securityContext"]["runAsUser"] != 0
    sec = container["securityContext"]
    assert sec["readOnlyRootFilesystem"] is True
    assert sec["allowPrivilegeEscalation"] is False
    assert sec["capabilities"]["drop"] == ["ALL"]
    assert "add" not in sec["capabilities"]
    assert container["resources"]["requests"].keys() >= {"cpu", "memory"}
    assert "memory" in container["resources"]["limits"]
    assert container["command"] == ["stockade-controller"]
    options = controller_args(container["args"])  # the real parser accepts them
    assert not options.standalone, "two replicas need leader election"
    assert options.lease_name == _flag(container["args"], "--lease-name")
    env = _env(container)
    assert env["POD_NAMESPACE"]["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.namespace"
    assert env["POD_NAME"]["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.name"
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert ports["metrics"] == options.metrics_port
    # Liveness: the tasks run; readiness: also the CRDs are served (operator/discovery.py).
    for probe, path in (("livenessProbe", "/healthz"), ("readinessProbe", "/readyz")):
        http = container[probe]["httpGet"]
        assert http["path"] == path, probe
        assert http["port"] in ("metrics", options.metrics_port), probe


# --------------------------------------------------------------------------- the agent


def _agent(docs: list[Obj]) -> tuple[Obj, Obj]:
    ds = find(docs, "DaemonSet", "stockade-agent")
    spec = ds["spec"]["template"]["spec"]
    assert len(spec["containers"]) == 1
    assert not spec.get("initContainers")
    return spec, spec["containers"][0]


def _check_node_privileges(spec: Obj, container: Obj) -> None:
    assert spec["hostNetwork"] is True
    sec = container["securityContext"]
    assert sec["privileged"] is False
    assert sec["runAsUser"] == 0
    assert sec["allowPrivilegeEscalation"] is False
    assert sec["capabilities"]["drop"] == ["ALL"]
    assert sorted(sec["capabilities"]["add"]) == ["NET_ADMIN", "NET_RAW"]
    assert {"operator": "Exists"} in spec["tolerations"], "must run on every node"
    assert spec["priorityClassName"] == "system-node-critical"
    volumes = {v["name"]: v for v in spec["volumes"]}
    mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
    lock = volumes[mounts["/run/xtables.lock"]]["hostPath"]
    assert lock == {"path": "/run/xtables.lock", "type": "FileOrCreate"}
    state = volumes[mounts["/var/lib/stockade"]]["hostPath"]
    assert state["path"] == "/var/lib/stockade"


def test_agent_daemonset() -> None:
    docs = objects(MANIFESTS)
    spec, container = _agent(docs)
    _check_node_privileges(spec, container)
    assert spec["serviceAccountName"] == "stockade-agent"
    assert container["command"] == ["stockade-agent", "run"]
    args = agent_parser().parse_args([*container["command"][1:], *container["args"]])
    assert args.node is None, "the node comes from $NODE_NAME"
    assert args.state_dir == "/var/lib/stockade"
    env = _env(container)
    assert env["NODE_NAME"]["valueFrom"]["fieldRef"]["fieldPath"] == "spec.nodeName"
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    assert "memory" in container["resources"]["limits"]


def test_agent_shutdown_leaves_the_rules_in_place() -> None:
    """Fail static: nothing runs `cleanup` when an agent stops (no preStop, no hook)."""
    _spec, container = _agent(objects(MANIFESTS))
    assert "lifecycle" not in container
    assert "cleanup" not in " ".join(container["command"] + container.get("args", []))


def test_cleanup_daemonset_runs_cleanup_with_the_agents_privileges() -> None:
    docs = objects(MANIFESTS / "cleanup")
    ds = find(docs, "DaemonSet", "stockade-cleanup")
    spec = ds["spec"]["template"]["spec"]
    (init,) = spec["initContainers"]
    _check_node_privileges(spec, init)
    script = init["command"][-1]
    first = shlex.split(script.split("&&")[0])
    assert first[:2] == ["stockade-agent", "cleanup"]
    agent_parser().parse_args(first[1:])
    assert spec["containers"][0]["securityContext"]["runAsNonRoot"] is True


# --------------------------------------------------------------------------- images


IMAGE_COMPONENT = MANIFESTS / "image"


def test_images_are_stockade_with_an_overridable_tag() -> None:
    component = _kustomization(IMAGE_COMPONENT)
    assert component["kind"] == "Component"
    assert component["images"] == [{"name": "stockade", "newTag": "dev"}]
    for folder in KUSTOMIZATIONS:
        assert image_settings(folder) == component["images"], folder
        for container in _all_containers(objects(folder)):
            repo, _, tag = container["image"].partition(":")
            assert repo == "stockade", container["name"]
            assert tag, container["name"]
            assert tag != "latest", container["name"]
            assert container["imagePullPolicy"] == "IfNotPresent"


def test_the_documented_isolate_overlay_enables_the_flag(tmp_path: Path) -> None:
    """docs/deploy.md's overlay for --isolate-new-pods renders and parses."""
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        pytest.skip("kubectl is not installed: the overlay is not rendered")
    text = (ROOT / "docs" / "deploy.md").read_text()
    block = re.search(r"```yaml\n(# kustomization.yaml of your overlay\n.*?)```", text, re.S)
    assert block is not None, "the overlay example is gone from docs/deploy.md"
    overlay = yaml.safe_load(block.group(1))
    overlay["resources"] = [os.path.relpath(MANIFESTS, tmp_path)]
    (tmp_path / "kustomization.yaml").write_text(yaml.safe_dump(overlay))
    out = subprocess.run(
        [kubectl, "kustomize", str(tmp_path)], capture_output=True, text=True, check=True
    ).stdout
    docs = [d for d in yaml.safe_load_all(out) if d]
    _spec, container = _agent(docs)
    args = agent_parser().parse_args([*container["command"][1:], *container["args"]])
    assert args.isolate_new_pods is True


def test_install_and_cleanup_take_the_image_from_one_setting() -> None:
    """Both trees list the one image component and set no image of their own."""
    for folder in KUSTOMIZATIONS:
        kust = _kustomization(folder)
        assert "images" not in kust, f"{folder}: set the image in manifests/image/ only"
        listed = [(folder / c).resolve() for c in kust.get("components") or []]
        assert listed == [IMAGE_COMPONENT], folder
    install = {c["image"] for c in _all_containers(objects(MANIFESTS))}
    cleanup = {c["image"] for c in _all_containers(objects(MANIFESTS / "cleanup"))}
    assert install == cleanup == {"stockade:dev"}


def _doc_block(text: str, header: str) -> str:
    block = re.search(rf"```yaml\n(# {re.escape(header)}\n.*?)```", text, re.S)
    assert block is not None, f"the overlay {header} is gone from docs/deploy.md"
    return block.group(1)


def test_the_documented_image_overlays_give_both_trees_the_same_image(tmp_path: Path) -> None:
    """docs/deploy.md's image component and its two overlays, rendered: one image."""
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        pytest.skip("kubectl is not installed: the overlays are not rendered")
    text = (ROOT / "docs" / "deploy.md").read_text()
    root = tmp_path / "my-stockade"
    files = {
        "image": "my-stockade/image/kustomization.yaml",
        "install": "my-stockade/kustomization.yaml",
        "cleanup": "my-stockade/cleanup/kustomization.yaml",
    }
    docs = {key: yaml.safe_load(_doc_block(text, header)) for key, header in files.items()}
    # The documented layout names the checkout ../stockade; point it at this one.
    docs["install"]["resources"] = [os.path.relpath(MANIFESTS, root)]
    docs["cleanup"]["resources"] = [os.path.relpath(MANIFESTS / "cleanup", root / "cleanup")]
    for key, header in files.items():
        path = tmp_path / header
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(yaml.safe_dump(docs[key]))
    want = {"registry.example/stockade:v0.1.0"}
    for folder in (root, root / "cleanup"):
        out = subprocess.run(
            [kubectl, "kustomize", str(folder)], capture_output=True, text=True, check=True
        ).stdout
        rendered = [d for d in yaml.safe_load_all(out) if d]
        assert {c["image"] for c in _all_containers(rendered)} == want, folder


# --------------------------------------------------------------------------- priority quota

CRITICAL = ["system-node-critical", "system-cluster-critical"]


@pytest.mark.parametrize(
    ("folder", "namespace"),
    [(MANIFESTS, NAMESPACE), (MANIFESTS / "cleanup", "stockade-cleanup")],
    ids=["install", "cleanup"],
)
def test_critical_priority_classes_come_with_their_quota(folder: Path, namespace: str) -> None:
    """GKE admits system-*-critical pods outside kube-system only with a scoped quota."""
    docs = objects(folder)
    quotas = [d for d in docs if d["kind"] == "ResourceQuota"]
    assert len(quotas) == 1, [_ident(q) for q in quotas]
    quota = quotas[0]
    assert quota["metadata"]["namespace"] == namespace
    (expr,) = quota["spec"]["scopeSelector"]["matchExpressions"]
    assert expr["scopeName"] == "PriorityClass"
    assert expr["operator"] == "In"
    assert sorted(expr["values"]) == sorted(CRITICAL)
    assert set(quota["spec"]["hard"]) == {"pods"}
    # Every critical pod of this tree is in the quota's namespace and scope.
    for doc in docs:
        if doc["kind"] in ("Deployment", "DaemonSet"):
            klass = doc["spec"]["template"]["spec"].get("priorityClassName")
            if klass and klass.startswith("system-"):
                assert klass in expr["values"], _ident(doc)
                assert doc["metadata"]["namespace"] == namespace, _ident(doc)
    # kustomize puts the quota before the workloads (applied first).
    order = [d["kind"] for d in docs]
    assert order.index("ResourceQuota") < min(
        order.index(k) for k in ("Deployment", "DaemonSet") if k in order
    )
