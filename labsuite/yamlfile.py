"""YAML files with located errors: the reading shared by protocol, lab and calibration files.

Parses with a SafeLoader that rejects duplicate keys (PyYAML silently keeps the last), keeps the
line and column of every field so validation errors can point at them, and renders field paths
as ``stages[2].cues.metronome.spm``. Hostile files are refused before they cost time or memory:
at most ``MAX_FILE_BYTES``, ``MAX_DEPTH`` levels of nesting and ``MAX_NODES`` values with every
alias expanded (a YAML "billion laughs" file is refused while it is composed, never built).
Numbers are read as YAML 1.2 does: ``1e9`` is a float (YAML 1.1 wants ``1.0e+9``).
Validation itself stays with each file's schema.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml

from labsuite.errors import ConfigError

Loc = tuple[str | int, ...]
KEY_MARK = "<key>"  # positions[(*path, key, KEY_MARK)] is where the key itself is written

# Limits of every labsuite YAML file (protocol, lab, calibration; docs/protocols.md). The largest
# shipped file is 2.4 kB with 173 values; these leave 50-100 times that room
# and keep parsing plus validation of the worst accepted file well under a second.
MAX_FILE_BYTES = 256 * 1024
MAX_DEPTH = 32
MAX_NODES = 10_000

# YAML 1.2 core-schema floats that YAML 1.1 (PyYAML) reads as strings: an exponent without a dot
# ("1e9", "2.5E-3" is already a float in 1.1, "1e9" is not).
_FLOAT_12 = re.compile(r"^[-+]?(?:[0-9][0-9_]*)(?:\.[0-9_]*)?[eE][-+]?[0-9]+$")


class YamlLimitError(yaml.MarkedYAMLError):
    """A YAML file exceeds one of the limits above (size, nesting depth, expanded values)."""


class StrictLoader(yaml.SafeLoader):
    """SafeLoader that rejects duplicate keys, deep nesting and alias bombs, naming the line.

    Counting happens while the node tree is composed: an alias adds the size of the node it
    repeats, so a file whose aliases expand to more than ``MAX_NODES`` values is refused before
    anything is constructed (composing shares the repeated node; constructing would copy it).
    """

    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        self._depth = 0
        self._nodes = 0
        self._sizes: dict[int, int] = {}  # id(node) -> expanded size, once the node is complete

    def compose_node(self, parent: yaml.Node | None, index: Any) -> yaml.Node:
        """Compose one node, counting it (and what an alias repeats) against the limits."""
        event = self.peek_event()
        if isinstance(event, yaml.AliasEvent):
            target = self.anchors.get(event.anchor)
            if target is not None:
                size = self._sizes.get(id(target))
                if size is None:
                    raise YamlLimitError("while reading an alias", event.start_mark,
                                         f"alias *{event.anchor} refers to a value that contains "
                                         "it (a recursive alias); expected plain values",
                                         event.start_mark)
                self._count(size, event.start_mark)
            return super().compose_node(parent, index)
        self._depth += 1
        try:
            if self._depth > MAX_DEPTH:
                raise YamlLimitError(None, None, f"values nested more than {MAX_DEPTH} levels "
                                     "deep; labsuite files need a few levels", event.start_mark)
            before = self._nodes
            self._count(1, event.start_mark)
            node = super().compose_node(parent, index)
            self._sizes[id(node)] = self._nodes - before
            return node
        finally:
            self._depth -= 1

    def _count(self, n: int, mark: yaml.Mark) -> None:
        self._nodes += n
        if self._nodes > MAX_NODES:
            raise YamlLimitError(None, None, f"more than {MAX_NODES} values (aliases expanded); "
                                 "labsuite files need a few hundred, so this file is refused "
                                 "unread (an alias bomb or a generated file?)", mark)


def _construct_mapping(loader: StrictLoader, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
    seen: dict[Any, yaml.Node] = {}
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=True)
        if key in seen:
            raise yaml.constructor.ConstructorError(
                "while reading a mapping", node.start_mark,
                f"found duplicate key {key!r} (first at line {seen[key].start_mark.line + 1}); "
                "expected each key once", key_node.start_mark)
        seen[key] = key_node
    return yaml.SafeLoader.construct_mapping(loader, node, deep=deep)


StrictLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)
StrictLoader.add_implicit_resolver("tag:yaml.org,2002:float", _FLOAT_12, list("-+0123456789"))


def parse_yaml(text: str) -> tuple[yaml.Node | None, Any]:
    """Parse one YAML document strictly; return (node tree, data). Raises yaml.YAMLError.

    Files beyond the limits of this module raise :class:`YamlLimitError` (a MarkedYAMLError:
    callers report its line like any other YAML error).
    """
    if len(text) > MAX_FILE_BYTES:
        raise YamlLimitError(None, None, f"{len(text)} characters; labsuite YAML files are limited "
                             f"to {MAX_FILE_BYTES // 1024} KiB", None)
    loader = StrictLoader(text)
    try:
        node = loader.get_single_node()
        data = loader.construct_document(node) if node is not None else None
    finally:
        loader.dispose()
    return node, data


def node_positions(node: yaml.Node | None) -> dict[Loc, tuple[int, int]]:
    """Map every field path of a parsed document to its (line, column), both 1-based."""
    out: dict[Loc, tuple[int, int]] = {}

    def walk(n: yaml.Node, path: Loc) -> None:
        out[path] = (n.start_mark.line + 1, n.start_mark.column + 1)
        if isinstance(n, yaml.MappingNode):
            for k, v in n.value:
                key = k.value if isinstance(k, yaml.ScalarNode) else str(k)
                out[(*path, key, KEY_MARK)] = (k.start_mark.line + 1, k.start_mark.column + 1)
                walk(v, (*path, key))
        elif isinstance(n, yaml.SequenceNode):
            for i, v in enumerate(n.value):
                walk(v, (*path, i))

    if node is not None:
        walk(node, ())
    return out


def format_path(loc: Sequence[str | int]) -> str:
    """Render a field location as ``stages[2].cues.metronome.spm``."""
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += ("." if out else "") + str(part)
    return out


def read_text(path: Path, what: str) -> str:
    """Read a UTF-8 text file of at most ``MAX_FILE_BYTES``; ConfigError naming it otherwise."""
    try:
        if path.exists() and not path.is_file():
            raise ConfigError(f"{path}: {what} is not a regular file")
        size = path.stat().st_size
        if size > MAX_FILE_BYTES:
            raise ConfigError(f"{path}: {what} is {size} bytes; labsuite YAML files are limited to "
                              f"{MAX_FILE_BYTES // 1024} KiB (docs/protocols.md)")
        with path.open("rb") as fh:  # read at most the limit, even if the file grows meanwhile
            raw = fh.read(MAX_FILE_BYTES + 1)
        if len(raw) > MAX_FILE_BYTES:
            raise ConfigError(f"{path}: {what} is larger than {MAX_FILE_BYTES // 1024} KiB, "
                              "the limit of labsuite YAML files")
        # Universal newlines, as Path.read_text gives (the text is stored with sessions).
        return raw.decode("utf-8").replace("\r\n", "\n").replace("\r", "\n")
    except FileNotFoundError:
        raise ConfigError(f"{path}: {what} not found") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: cannot read {what}: {exc}") from None
