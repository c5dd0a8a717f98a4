"""JSON patch (RFC 6902), JSON merge patch (RFC 7386) and a subset of strategic merge patch.

Strategic merge patch, the subset served (see docs/emulator.md):

- maps merge recursively; ``null`` deletes a key;
- lists named in ``MERGE_KEYS`` merge element by element on their merge key
  (containers by ``name``, container ports by ``containerPort`` and service ports by
  ``port``, conditions by ``type``...); ``metadata.finalizers`` merges as a set;
  every other list is replaced, as for lists without a patch strategy;
- directives: ``$patch: replace`` and ``$patch: delete`` (on maps and list elements),
  ``$retainKeys``, ``$deleteFromPrimitiveList/<field>``, ``$setElementOrder/<field>``
  (reorders); all ``$`` keys are dropped from the stored object.
"""

from __future__ import annotations

import copy
from typing import Any

from stockade_lab.emulator.status_errors import ApiError

# Field name -> merge key(s) of lists Kubernetes types merge by key (first key present wins).
MERGE_KEYS: dict[str, tuple[str, ...]] = {
    "containers": ("name",),
    "initContainers": ("name",),
    "ephemeralContainers": ("name",),
    "volumes": ("name",),
    "env": ("name",),
    "volumeMounts": ("mountPath",),
    "volumeDevices": ("devicePath",),
    "ports": ("containerPort", "port"),
    "conditions": ("type",),
    "ownerReferences": ("uid",),
    "imagePullSecrets": ("name",),
    "hostAliases": ("ip",),
    "podIPs": ("ip",),
    "hostIPs": ("ip",),
    "addresses": ("type",),
    "readinessGates": ("conditionType",),
    "resourceClaims": ("name",),
}
# Lists of scalars merged as sets.
PRIMITIVE_MERGE = frozenset({"finalizers"})

_DELETE = object()


def _unprocessable(message: str) -> ApiError:
    return ApiError(422, "Invalid", message)


# --- JSON patch -------------------------------------------------------------------------------


def _pointer(path: str) -> list[str]:
    if path == "":
        return []
    if not path.startswith("/"):
        raise _unprocessable(f"invalid JSON pointer: {path!r}")
    return [part.replace("~1", "/").replace("~0", "~") for part in path[1:].split("/")]


def _resolve(doc: Any, parts: list[str]) -> Any:
    for part in parts:
        if isinstance(doc, dict):
            if part not in doc:
                raise _unprocessable(f"path not found: /{'/'.join(parts)}")
            doc = doc[part]
        elif isinstance(doc, list):
            try:
                doc = doc[int(part)]
            except (ValueError, IndexError) as exc:
                raise _unprocessable(f"bad index {part!r} in /{'/'.join(parts)}") from exc
        else:
            raise _unprocessable(f"path not found: /{'/'.join(parts)}")
    return doc


def _add(doc: Any, parts: list[str], value: Any) -> Any:
    if not parts:
        return value
    parent = _resolve(doc, parts[:-1])
    last = parts[-1]
    if isinstance(parent, dict):
        parent[last] = value
    elif isinstance(parent, list):
        if last == "-":
            parent.append(value)
        else:
            try:
                index = int(last)
            except ValueError as exc:
                raise _unprocessable(f"bad index {last!r}") from exc
            if not 0 <= index <= len(parent):
                raise _unprocessable(f"index out of range: {index}")
            parent.insert(index, value)
    else:
        raise _unprocessable(f"cannot add to a scalar at /{'/'.join(parts)}")
    return doc


def _remove(doc: Any, parts: list[str]) -> Any:
    if not parts:
        raise _unprocessable("cannot remove the whole document")
    parent = _resolve(doc, parts[:-1])
    last = parts[-1]
    if isinstance(parent, dict):
        if last not in parent:
            raise _unprocessable(f"path not found: /{'/'.join(parts)}")
        return parent.pop(last)
    if isinstance(parent, list):
        try:
            return parent.pop(int(last))
        except (ValueError, IndexError) as exc:
            raise _unprocessable(f"bad index {last!r}") from exc
    raise _unprocessable(f"path not found: /{'/'.join(parts)}")


def json_patch(doc: Any, ops: Any) -> Any:
    """Apply an RFC 6902 JSON patch; a failed ``test`` (or any bad op) is a 422."""
    if not isinstance(ops, list):
        raise ApiError(400, "BadRequest", "a JSON patch must be a list of operations")
    doc = copy.deepcopy(doc)
    for op in ops:
        if not isinstance(op, dict) or "op" not in op or "path" not in op:
            raise _unprocessable(f"invalid JSON patch operation: {op!r}")
        kind = op["op"]
        parts = _pointer(op["path"])
        if kind == "add":
            doc = _add(doc, parts, copy.deepcopy(op.get("value")))
        elif kind == "remove":
            _remove(doc, parts)
        elif kind == "replace":
            _resolve(doc, parts)  # must exist
            if parts:
                _remove(doc, parts)
            doc = _add(doc, parts, copy.deepcopy(op.get("value")))
        elif kind in ("move", "copy"):
            source = _pointer(op.get("from", ""))
            value = copy.deepcopy(_resolve(doc, source))
            if kind == "move":
                _remove(doc, source)
            doc = _add(doc, parts, value)
        elif kind == "test":
            try:
                actual = _resolve(doc, parts)
            except ApiError:
                actual = None
            if actual != op.get("value"):
                raise _unprocessable(
                    f"the server rejected our request due to an error in our request: "
                    f"testing value {op['path']} failed"
                )
        else:
            raise _unprocessable(f"unknown JSON patch operation: {kind!r}")
    return doc


# --- JSON merge patch -------------------------------------------------------------------------


def merge_patch(target: Any, patch: Any, *, owned: bool = False) -> Any:
    """RFC 7386: maps merge, ``null`` deletes, everything else replaces.

    The result shares the parts of ``target`` the patch leaves alone. ``owned``: the
    patch is the caller's to give, its values are used as they are (not copied).
    """
    if not isinstance(patch, dict):
        return patch if owned else copy.deepcopy(patch)
    result = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = merge_patch(result.get(key), value, owned=owned)
    return result


# --- strategic merge patch --------------------------------------------------------------------


def _strip(value: Any) -> Any:
    """Drop ``$`` directives from a value that is stored as it is."""
    if isinstance(value, dict):
        return {k: _strip(v) for k, v in value.items() if not k.startswith("$")}
    if isinstance(value, list):
        return [_strip(v) for v in value if not (isinstance(v, dict) and "$patch" in v)]
    return value


def _key_of(item: Any, keys: tuple[str, ...]) -> tuple[str, Any] | None:
    if isinstance(item, dict):
        for key in keys:
            if key in item:
                return key, item[key]
    return None


def _merge_list(current: list[Any], patch: list[Any], keys: tuple[str, ...]) -> list[Any]:
    if any(isinstance(item, dict) and item.get("$patch") == "replace" for item in patch):
        return [_strip(item) for item in patch if not (isinstance(item, dict) and "$patch" in item)]
    result = [copy.deepcopy(item) for item in current]
    for item in patch:
        ident = _key_of(item, keys)
        if ident is None:
            result.append(_strip(item))
            continue
        key, value = ident
        index = next(
            (i for i, old in enumerate(result) if isinstance(old, dict) and old.get(key) == value),
            None,
        )
        if isinstance(item, dict) and item.get("$patch") == "delete":
            if index is not None:
                del result[index]
        elif index is None:
            result.append(_strip(item))
        else:
            merged = strategic_merge_patch(result[index], item)
            result[index] = merged
    return result


def _reorder(items: list[Any], order: list[Any], keys: tuple[str, ...]) -> list[Any]:
    def position(item: Any) -> int:
        ident = _key_of(item, keys)
        for index, wanted in enumerate(order):
            if ident is not None and _key_of(wanted, keys) == ident:
                return index
            if ident is None and wanted == item:
                return index
        return len(order)

    return sorted(items, key=position)


def strategic_merge_patch(target: Any, patch: Any) -> Any:
    """Apply a strategic merge patch (the subset described in this module's docstring)."""
    if not isinstance(patch, dict):
        return _strip(patch)
    if patch.get("$patch") == "replace":
        return _strip(patch)
    result: dict[str, Any] = copy.deepcopy(target) if isinstance(target, dict) else {}
    orders: dict[str, list[Any]] = {}
    for key, value in patch.items():
        if key.startswith("$setElementOrder/"):
            orders[key.split("/", 1)[1]] = value
            continue
        if key.startswith("$deleteFromPrimitiveList/"):
            field = key.split("/", 1)[1]
            result[field] = [v for v in result.get(field) or [] if v not in value]
            continue
        if key.startswith("$"):
            continue
        if value is None:
            result.pop(key, None)
        elif isinstance(value, dict):
            if value.get("$patch") == "delete":
                result.pop(key, None)
            else:
                result[key] = strategic_merge_patch(result.get(key), value)
        elif isinstance(value, list) and key in MERGE_KEYS:
            current = result.get(key)
            result[key] = _merge_list(
                current if isinstance(current, list) else [], value, MERGE_KEYS[key]
            )
        elif isinstance(value, list) and key in PRIMITIVE_MERGE:
            merged = list(result.get(key) or [])
            merged += [v for v in value if v not in merged]
            result[key] = merged
        else:
            result[key] = _strip(value)
    retain = patch.get("$retainKeys")
    if isinstance(retain, list):
        result = {k: v for k, v in result.items() if k in retain}
    for field, order in orders.items():
        if isinstance(result.get(field), list):
            result[field] = _reorder(result[field], order, MERGE_KEYS.get(field, ()))
    return result
