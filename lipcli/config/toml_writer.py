"""A small TOML writer for resolved configurations (plain tables of TOML scalars, lists and inline tables).

lipcli writes the resolved configuration of every run as ``config.toml``; the file loads back as an
experiment file, so a run can be repeated with ``lipcli train -c RUN/config.toml``. ``None`` means "not
set" and is omitted, which loads back as the same default.
"""

from __future__ import annotations

import json
import math
from typing import Any, Mapping


def dumps(tree: Mapping[str, Any]) -> str:
    """Render top-level keys, then ``{section: {key: value}}`` tables (nested ones as ``[section.key]``)."""
    scalars = [f"{_key(k)} = {_value(v)}" for k, v in tree.items() if v is not None and not isinstance(v, Mapping)]
    blocks = [_table(k, v) for k, v in tree.items() if isinstance(v, Mapping)]
    return "\n".join(([("\n".join(scalars) + "\n")] if scalars else []) + blocks)


def _table(header: str, table: Mapping[str, Any]) -> str:
    lines = [f"[{header}]"]
    subtables = []
    for key, value in table.items():
        if value is None:
            continue
        if isinstance(value, Mapping):
            subtables.append(_table(f"{header}.{_key(key)}", value))
        else:
            lines.append(f"{_key(key)} = {_value(value)}")
    return "\n".join(lines) + "\n" + "".join("\n" + t for t in subtables)


def _key(key: str) -> str:
    bare = key.replace("_", "").replace("-", "").isalnum() and key.isascii()
    return key if bare else json.dumps(key)


def _value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if math.isnan(value):
            return "nan"
        if math.isinf(value):
            return "inf" if value > 0 else "-inf"
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_value(v) for v in value) + "]"
    if isinstance(value, Mapping):
        return "{ " + ", ".join(f"{_key(k)} = {_value(v)}" for k, v in value.items() if v is not None) + " }"
    raise TypeError(f"cannot write {type(value).__name__} to TOML")
