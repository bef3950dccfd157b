"""YAML files with located errors: the reading shared by protocol, lab and calibration files.

Parses with a SafeLoader that rejects duplicate keys (PyYAML silently keeps the last), keeps the
line and column of every field so validation errors can point at them, and renders field paths
as ``stages[2].cues.metronome.spm``. Validation itself stays with each file's schema.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml

from labsuite.errors import ConfigError

Loc = tuple[str | int, ...]
KEY_MARK = "<key>"  # positions[(*path, key, KEY_MARK)] is where the key itself is written


class StrictLoader(yaml.SafeLoader):
    """SafeLoader that rejects duplicate keys, naming the line of the first one."""


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


def parse_yaml(text: str) -> tuple[yaml.Node | None, Any]:
    """Parse one YAML document strictly; return (node tree, data). Raises yaml.YAMLError."""
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
    """Read a UTF-8 text file; ConfigError naming it when missing or unreadable."""
    try:
        return path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"{path}: {what} not found") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: cannot read {what}: {exc}") from None
