"""Lab and calibration files: YAML validated against a pydantic model, every problem located.

The YAML reading itself (duplicate keys, limits, line numbers) is :mod:`labsuite.yamlfile`'s; this
turns pydantic's errors into ``file:line: field.path: what was expected (got ...)`` lines. Used by
:mod:`labsuite.labconfig` and :mod:`labsuite.calibration` (protocol files have their own, richer
messages in :mod:`labsuite.protocol.schema`).
"""

from __future__ import annotations

from collections.abc import Collection
from typing import TypeVar

import yaml
from pydantic import BaseModel, ValidationError

from labsuite.errors import ConfigError
from labsuite.yamlfile import format_path, node_positions, parse_yaml

M = TypeVar("M", bound=BaseModel)


def parse_yaml_model(text: str, file: str, model: type[M], *, what: str,
                     tags: Collection[str] = ()) -> M:
    """Parse YAML ``text`` and validate it as ``model``; ConfigError listing every problem.

    Each problem reads ``file:line: field.path: what was expected (got ...)``. ``tags`` are the
    values of a discriminator field (a device ``kind``), which pydantic puts in error locations
    and the message leaves out.
    """
    try:
        node, data = parse_yaml(text)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = f":{mark.line + 1}" if mark else ""
        msg = " ".join(x for x in (exc.context, exc.problem) if x)
        raise ConfigError(f"{file}{line}: invalid {what}: YAML syntax error: {msg}") from None
    if not isinstance(data, dict):
        got = "an empty file" if data is None else f"a {type(data).__name__}"
        raise ConfigError(f"{file}: invalid {what}: expected a mapping of keys, got {got}")
    positions = {path: line for path, (line, _col) in node_positions(node).items()}
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        problems = []
        for err in exc.errors(include_url=False):
            loc = [p for p in err["loc"] if not (isinstance(p, str) and (
                p.startswith(("literal[", "function-")) or p in tags))]
            loc = ["schema" if p == "schema_" else p for p in loc]
            msg = err["msg"].removeprefix("Value error, ")
            if err["type"] == "missing":
                msg = "required field is missing"
            elif err["type"] == "extra_forbidden":
                msg = "unknown key (check the spelling against docs/devices.md)"
            elif "input" in err and not isinstance(err["input"], (dict, list)):
                msg = f"{msg} (got {err['input']!r})"
            probe = tuple(loc)
            while probe and probe not in positions:
                probe = probe[:-1]
            line_no = positions.get(probe, 0)
            where = f"{file}:{line_no}" if line_no else file
            problems.append(f"{where}: {format_path(loc) or '(top level)'}: {msg}")
        unique = list(dict.fromkeys(problems))
        raise ConfigError(f"{file}: invalid {what} ({len(unique)} problem"
                          f"{'s' if len(unique) != 1 else ''})\n  " + "\n  ".join(unique)) from None
