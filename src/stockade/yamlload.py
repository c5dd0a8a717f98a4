"""One strict reader for YAML (and JSON) manifests, with limits.

Every place that reads manifests goes through :func:`load_documents`: the CLI
(``stockade matrix -f FILE``, ``-f -``) and :func:`stockade.cluster.load_files`. It
reads what ``yaml.safe_load_all`` reads, with these differences, each of which
closes a way for a careless or hostile file to mislead or hang the tools:

* A duplicate key in a mapping is an error (naming both lines), not "last wins":
  ``except: [10.0.0.1/32]`` followed by ``except: []`` must not silently drop the
  exception. Merge keys (``<<: *base``) still work, and explicit keys override
  merged ones, as YAML defines.
* A mapping key must be a string once YAML has resolved it: ``on:`` and ``yes:``
  are the boolean true to YAML 1.1, ``80:`` is a number; the error says to quote it.
* Timestamps stay the strings they were written as (as JSON and Kubernetes see
  them), never ``datetime`` objects.
* Only plain data: maps, lists, strings, numbers, booleans and null. Tags that
  build anything else (``!!binary``, ``!!set``, ``!!omap``, custom ``!Ref``) are
  errors.
* Limits, so that no input can make the reader grow without bound: at most
  :data:`MAX_INPUT_BYTES` bytes, :data:`MAX_DEPTH` levels of nesting (counted
  through aliases), and :data:`MAX_ALIAS_NODES` nodes produced by expanding
  aliases in one input (a 1 KB "billion laughs" bomb would produce 387 million);
  an alias inside its own anchor is an error.
* The input is bytes, decoded strictly as UTF-8 (a UTF-8 byte order mark is
  dropped), so that a file and the same bytes on stdin read the same.
* An input with no documents, or only empty ones, is an error: a failed
  ``kubectl get ... | stockade matrix -f -`` must not look like an empty cluster.

Objects are built straight from the parser's events (the libyaml parser when
PyYAML has it) in one loop without recursion, so a deep input costs no stack and
an alias costs the size of a reference, while the expansion it stands for is
counted. Aliases share the anchored object, as with ``yaml.safe_load``.

Every error is a :class:`YamlLoadError` whose message is one line,
``SOURCE: line L, column C: [PATH: ]problem``; values echoed from the input pass
through :func:`stockade.safetext.short` or :func:`~stockade.safetext.printable`.

Pure: no I/O. The caller reads the bytes, at most ``MAX_INPUT_BYTES + 1``.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any, Final, Protocol

import yaml
from yaml.constructor import SafeConstructor
from yaml.error import MarkedYAMLError
from yaml.events import (
    AliasEvent,
    DocumentEndEvent,
    DocumentStartEvent,
    MappingEndEvent,
    MappingStartEvent,
    ScalarEvent,
    SequenceEndEvent,
    SequenceStartEvent,
    StreamEndEvent,
)
from yaml.nodes import ScalarNode
from yaml.reader import ReaderError
from yaml.resolver import Resolver

from stockade.safetext import printable, short

MIB: Final = 1024 * 1024

#: The largest input read, in bytes. ``kubectl get pods -A -o yaml`` prints about
#: 3.6 KB per pod, so this is some 18,000 pods; loading it takes seconds and a
#: couple of GB of memory, and beyond it a snapshot is better split by namespace.
MAX_INPUT_BYTES: Final = 64 * MIB

#: The deepest nesting of maps and lists, counted through aliases. Real manifests
#: stay under 20 (a NetworkPolicy's deepest field is at 8, a Pod's under 15); the
#: rest is room for CRDs and ignored kinds, far from Python's recursion limit.
MAX_DEPTH: Final = 100

#: How many nodes (scalars, maps, lists) expanding every alias of one input may
#: produce: an anchor used a few times is far below it, and no bomb gets past it.
MAX_ALIAS_NODES: Final = 100_000

_BOM: Final = b"\xef\xbb\xbf"
_ECHO: Final = 60
_PATH_ECHO: Final = 120

_TAG_PREFIX: Final = "tag:yaml.org,2002:"
_STR: Final = _TAG_PREFIX + "str"
_INT: Final = _TAG_PREFIX + "int"
_FLOAT: Final = _TAG_PREFIX + "float"
_BOOL: Final = _TAG_PREFIX + "bool"
_NULL: Final = _TAG_PREFIX + "null"
_TIMESTAMP: Final = _TAG_PREFIX + "timestamp"
_MAP: Final = _TAG_PREFIX + "map"
_SEQ: Final = _TAG_PREFIX + "seq"

# The implicit resolvers of yaml.SafeLoader (YAML 1.1: yes/no/on/off are booleans,
# 0777 is octal, 1:30 is sexagesimal, ...), by first character of the scalar.
_IMPLICIT: Final[dict[str, tuple[tuple[str, re.Pattern[str]], ...]]] = {
    first: tuple(resolvers)
    for first, resolvers in Resolver.yaml_implicit_resolvers.items()
    if first is not None
}
_CONSTRUCTOR: Final = SafeConstructor()
_BOOL_VALUES: Final[dict[str, bool]] = dict(SafeConstructor.bool_values)
_PARSER: Final[type[Any]] = getattr(yaml, "CSafeLoader", None) or yaml.SafeLoader

# What a value of each type is called in messages.
_KIND_NAMES: Final = {bool: "a boolean", int: "a number", float: "a number", type(None): "null"}


class _Mark(Protocol):
    """Where an event is (yaml.error.Mark, or libyaml's own): 0-based line and column."""

    line: int
    column: int


class YamlLoadError(ValueError):
    """An input that is not a readable stream of manifests; the message is one line."""

    def __init__(
        self, source: str, problem: str, line: int | None = None, column: int | None = None
    ) -> None:
        self.source = source
        self.problem = problem
        self.line = line
        self.column = column
        where = f"line {line}, column {column}: " if line is not None else ""
        super().__init__(f"{source}: {where}{problem}")


def load_documents(data: bytes, source: str) -> list[Any]:
    """Every document of a YAML or JSON stream, as plain Python data.

    ``source`` names the input in messages (a path, or ``-`` for stdin). Documents
    come back in order, empty ones as ``None`` (so that callers can number them);
    at least one is not ``None``. Raises :class:`YamlLoadError`.
    """
    if len(data) > MAX_INPUT_BYTES:
        raise YamlLoadError(
            source,
            f"input is larger than {MAX_INPUT_BYTES // MIB} MiB, the most read from one "
            "file; split it (for example one file per namespace)",
        )
    skipped = len(_BOM) if data.startswith(_BOM) else 0
    body = data[skipped:]
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise YamlLoadError(
            source,
            f"not UTF-8 text (invalid byte 0x{body[exc.start]:02x} "
            f"at offset {exc.start + skipped})",
        ) from None
    # libyaml reads the validated bytes itself (and decodes them faster); the pure
    # parser takes the text.
    docs = _Builder(source, body if _PARSER is not yaml.SafeLoader else text).run()
    if all(doc is None for doc in docs):
        raise YamlLoadError(source, "no objects (empty input)")
    return docs


def _tag_name(tag: str) -> str:
    shown = "!!" + tag[len(_TAG_PREFIX) :] if tag.startswith(_TAG_PREFIX) else tag
    return printable(shown[:_ECHO] + ("..." if len(shown) > _ECHO else ""))


def _raw(text: str) -> str:
    """A scalar as written, for a message: escaped and cut, not quoted."""
    return printable(text[:_ECHO]) + ("..." if len(text) > _ECHO else "")


def _kind_of(value: Any) -> str:
    if isinstance(value, dict):
        return "a map"
    if isinstance(value, list):
        return "a list"
    return _KIND_NAMES.get(type(value), f"a value of type {type(value).__name__}")


class _Merge:
    """The pending key of a mapping whose next value is merged (``<<: *base``)."""


_NO_KEY: Final = object()
_MERGE: Final = _Merge()


class _Frame:
    """A map or list being built (or, at depth 0, the document)."""

    __slots__ = ("anchor", "container", "deep", "depth", "is_map", "key", "keys", "merges", "start")

    def __init__(
        self, container: Any, depth: int, anchor: str | None = None, start: int = 0
    ) -> None:
        self.container = container
        self.is_map = isinstance(container, dict)
        self.key: Any = _NO_KEY
        # Map keys seen, to the mark of their first occurrence (for duplicates).
        self.keys: dict[str, _Mark] = {}
        self.merges: list[dict[str, Any]] | None = None
        self.anchor = anchor
        self.start = start  # nodes produced before this one
        self.depth = depth
        self.deep = depth  # the deepest nesting inside, through aliases


class _Anchor:
    __slots__ = ("height", "mark", "size", "value")

    def __init__(self, value: Any, size: int, height: int, mark: _Mark) -> None:
        self.value = value
        self.size = size  # nodes, aliases expanded
        self.height = height  # levels of maps and lists, aliases expanded
        self.mark = mark


class _Builder:
    """Builds documents from the parser's events; see the module docstring."""

    def __init__(self, source: str, stream: bytes | str) -> None:
        self.source = source
        self.stream = stream
        self.stack: list[_Frame] = []
        self.frame = _Frame([], 0)
        self.anchors: dict[str, _Anchor] = {}
        self.open_anchors: dict[str, _Mark] = {}
        self.produced = 0  # nodes of the input, aliases expanded
        self.expanded = 0  # nodes produced by expanding aliases

    # ------------------------------------------------------------------ errors

    def _path(self, pending: bool) -> str:
        """Where the frame stack is, ``spec.ingress[0].from``; with the pending key if asked."""
        frames = [*self.stack, self.frame]
        parts: list[str] = []
        for index, parent in enumerate(frames):
            if index + 1 == len(frames) and not pending:
                break
            if index == 0:
                continue  # the document frame holds the root itself
            if parent.is_map:
                key = parent.key
                if isinstance(key, str):
                    parts.append(("." if parts else "") + key)
                elif key is _MERGE:
                    parts.append(("." if parts else "") + "<<")
            else:
                parts.append(f"[{len(parent.container)}]")
        text = "".join(parts)
        if len(text) > _PATH_ECHO:
            text = "..." + text[-_PATH_ECHO:]
        return printable(text)

    def error(self, mark: _Mark | None, problem: str, pending: bool = False) -> YamlLoadError:
        """An error at ``mark``, naming where in the document it is."""
        path = self._path(pending) if self.stack else ""
        text = f"{path}: {problem}" if path else problem
        if mark is None:
            return YamlLoadError(self.source, text)
        return YamlLoadError(self.source, text, mark.line + 1, mark.column + 1)

    def _syntax_error(self, exc: yaml.YAMLError) -> YamlLoadError:
        if isinstance(exc, ReaderError):
            # A character YAML does not allow (a raw control character). Its
            # position counts bytes for libyaml, characters for the pure parser.
            stream = self.stream
            if isinstance(stream, bytes):
                before = stream[: exc.position].decode("utf-8", "replace")
            else:
                before = stream[: exc.position]
            line = before.count("\n") + 1
            column = len(before) - (before.rfind("\n") + 1)
            code = exc.character if isinstance(exc.character, int) else ord(exc.character)
            return YamlLoadError(
                self.source,
                f"not valid YAML: character 0x{code:02x} is not allowed ({exc.reason})",
                line,
                column + 1,
            )
        mark = exc.problem_mark if isinstance(exc, MarkedYAMLError) else None
        problem = getattr(exc, "problem", None) or (str(exc).splitlines() or ["error"])[0]
        context = getattr(exc, "context", None)
        detail = printable(f"{problem} ({context})" if context else str(problem))
        if len(detail) > 2 * _PATH_ECHO:
            detail = detail[: 2 * _PATH_ECHO] + "..."
        where = (mark.line + 1, mark.column + 1) if mark is not None else (None, None)
        return YamlLoadError(self.source, f"not valid YAML: {detail}", *where)

    # ------------------------------------------------------------------ building

    def run(self) -> list[Any]:
        """Every document of the stream."""
        try:
            # The pure parser checks the characters here already, libyaml as it reads.
            parser = _PARSER(self.stream)
            try:
                return self._events(parser)
            finally:
                parser.dispose()
        except yaml.YAMLError as exc:
            raise self._syntax_error(exc) from None

    def _events(self, parser: Any) -> list[Any]:
        docs: list[Any] = []
        get_event = parser.get_event
        implicit_resolvers = _IMPLICIT
        while True:
            event: Any = get_event()
            cls = event.__class__
            if cls is ScalarEvent:
                value: Any = event.value
                tag = event.tag
                if tag is None or tag == "!":
                    if event.implicit[0]:
                        resolvers = implicit_resolvers.get(value[:1])
                        if resolvers is not None:
                            value = self._resolve(event, value, resolvers)
                else:
                    value = self._tagged(event, value, tag)
                self.produced += 1
                if event.anchor is not None:
                    name = self._check_anchor(event)
                    self.anchors[name] = _Anchor(value, 1, 0, event.start_mark)
                self._add(event, value)
            elif cls is MappingStartEvent or cls is SequenceStartEvent:
                self._open(event, cls is MappingStartEvent)
            elif cls is MappingEndEvent or cls is SequenceEndEvent:
                self._close(event)
            elif cls is AliasEvent:
                self._alias(event)
            elif cls is DocumentStartEvent:
                self.anchors = {}
                self.open_anchors = {}
                self.frame = _Frame([], 0)
            elif cls is DocumentEndEvent:
                root = self.frame.container
                docs.append(root[0] if root else None)
            elif cls is StreamEndEvent:
                return docs

    def _resolve(
        self, event: Any, value: str, resolvers: Sequence[tuple[str, re.Pattern[str]]]
    ) -> Any:
        for tag, regexp in resolvers:
            if regexp.match(value):
                if tag in (_STR, _TIMESTAMP):
                    return value  # a timestamp stays as written, as JSON has it
                if tag.endswith((":merge", ":value", ":yaml")):
                    # "<<" as a key is a merge (see _add); "=" and the rest are text.
                    return value
                return self._construct(event, value, tag)
        return value

    def _tagged(self, event: Any, value: str, tag: str) -> Any:
        if tag in (_STR, _TIMESTAMP):
            return value
        if tag in (_INT, _FLOAT, _BOOL, _NULL):
            return self._construct(event, value, tag)
        raise self._unsupported(event, tag)

    def _construct(self, event: Any, value: str, tag: str) -> Any:
        try:
            if tag == _NULL:
                return None
            if tag == _BOOL:
                return _BOOL_VALUES[value.lower()]
            node = ScalarNode(tag, value)
            if tag == _INT:
                return _CONSTRUCTOR.construct_yaml_int(node)
            return _CONSTRUCTOR.construct_yaml_float(node)
        except (ValueError, KeyError, TypeError, IndexError):
            # !!int abc, !!bool maybe, or a number of more than 4300 digits.
            noun = {_INT: "an integer", _FLOAT: "a number", _BOOL: "a boolean"}[tag]
            raise self.error(
                event.start_mark, f"{short(value)} cannot be read as {noun}", pending=True
            ) from None

    def _unsupported(self, event: Any, tag: str) -> YamlLoadError:
        return self.error(
            event.start_mark,
            f"tag {_tag_name(tag)} is not supported: manifests hold only maps, lists, "
            "strings, numbers, booleans and null",
            pending=True,
        )

    def _check_anchor(self, event: Any) -> str:
        name: str = event.anchor
        first = self.anchors.get(name)
        first_mark = first.mark if first is not None else self.open_anchors.get(name)
        if first_mark is not None:
            raise self.error(
                event.start_mark,
                f"anchor &{_raw(name)} is defined twice (first at line {first_mark.line + 1})",
            )
        return name

    def _add(self, event: Any, value: Any) -> None:
        """Put a finished value (scalar, map, list or alias) into the current frame."""
        frame = self.frame
        if not frame.is_map:
            frame.container.append(value)
            return
        key = frame.key
        if key is _NO_KEY:
            self._key(event, value)
        elif key is _MERGE:
            self._merge(event, value)
            frame.key = _NO_KEY
        else:
            frame.container[key] = value
            frame.key = _NO_KEY

    def _key(self, event: Any, key: Any) -> None:
        frame = self.frame
        if key.__class__ is not str:
            raise self._bad_key(event, key)
        if (
            key == "<<"
            and event.__class__ is ScalarEvent
            and event.tag is None
            and event.implicit[0]
        ):
            frame.key = _MERGE
        else:
            frame.key = key
        first = frame.keys.get(key)
        if first is not None:
            frame.key = _NO_KEY
            raise self.error(
                event.start_mark,
                f"duplicate key {short(key)} (first at line {first.line + 1}); "
                "YAML would keep only the last",
            )
        frame.keys[key] = event.start_mark

    def _bad_key(self, event: Any, key: Any) -> YamlLoadError:
        if isinstance(event, AliasEvent):
            problem = f"key *{_raw(str(event.anchor))} is {_kind_of(key)}; a key must be a string"
        elif isinstance(event, ScalarEvent) and event.value == "":
            problem = f"empty key is read by YAML as {_kind_of(key)}; a key must be a string"
        elif isinstance(event, ScalarEvent):
            problem = f"key {_raw(event.value)} is read by YAML as {_kind_of(key)}; quote it"
        else:
            problem = f"a key must be a string, not {_kind_of(key)}"
        return self.error(event.start_mark, problem)

    def _merge(self, event: Any, value: Any) -> None:
        # As yaml.SafeLoader: <<: a map, or a list of maps of which the first listed
        # wins; a later << wins over an earlier one; the map's own keys over all.
        frame = self.frame
        if isinstance(value, dict):
            sources = [value]
        elif isinstance(value, list) and all(isinstance(item, dict) for item in value):
            sources = list(reversed(value))
        else:
            raise self.error(
                event.start_mark,
                f"<< (merge) takes a map or a list of maps, not {_kind_of(value)}",
                pending=True,
            )
        if frame.merges is None:
            frame.merges = []
        frame.merges.extend(sources)

    def _open(self, event: Any, is_map: bool) -> None:
        parent = self.frame
        if parent.is_map and parent.key is _NO_KEY:
            raise self._bad_key(event, {} if is_map else [])
        tag = event.tag
        if tag is not None and tag not in ("!", _MAP if is_map else _SEQ):
            raise self._unsupported(event, tag)
        depth = parent.depth + 1
        if depth > MAX_DEPTH:
            raise YamlLoadError(
                self.source,
                f"nested deeper than {MAX_DEPTH} levels of maps and lists",
                event.start_mark.line + 1,
                event.start_mark.column + 1,
            )
        self.produced += 1
        anchor: str | None = event.anchor
        if anchor is not None:
            self.open_anchors[self._check_anchor(event)] = event.start_mark  # usable once closed
        self.stack.append(parent)
        self.frame = _Frame({} if is_map else [], depth, anchor, self.produced)

    def _close(self, event: Any) -> None:
        child = self.frame
        self.frame = parent = self.stack.pop()
        value = child.container
        if child.merges:
            merged: dict[str, Any] = {}
            for source in child.merges:
                merged.update(source)
            merged.update(value)
            value = merged
        if child.anchor is not None:
            mark = self.open_anchors.pop(child.anchor)
            self.anchors[child.anchor] = _Anchor(
                value, self.produced - child.start + 1, child.deep - child.depth + 1, mark
            )
        parent.deep = max(parent.deep, child.deep)
        self._add(event, value)

    def _alias(self, event: Any) -> None:
        name: str = event.anchor
        anchor = self.anchors.get(name)
        if anchor is None:
            if name in self.open_anchors:
                raise self.error(
                    event.start_mark,
                    f"alias *{_raw(name)} is inside its own anchor (line "
                    f"{self.open_anchors[name].line + 1}): a value cannot contain itself",
                    pending=True,
                )
            raise self.error(
                event.start_mark,
                f"alias *{_raw(name)} has no anchor &{_raw(name)} before it",
                pending=True,
            )
        self.expanded += anchor.size
        self.produced += anchor.size
        if self.expanded > MAX_ALIAS_NODES:
            raise self.error(
                event.start_mark,
                f"aliases expand to more than {MAX_ALIAS_NODES:,} nodes (at *{_raw(name)}, "
                f"of {anchor.size:,}): refusing what looks like an alias bomb",
                pending=True,
            )
        frame = self.frame
        if anchor.height:
            deep = frame.depth + anchor.height
            if deep > MAX_DEPTH:
                raise self.error(
                    event.start_mark,
                    f"alias *{_raw(name)} nests deeper than {MAX_DEPTH} levels of maps and lists",
                    pending=True,
                )
            frame.deep = max(frame.deep, deep)
        self._add(event, anchor.value)
