"""Reading a workload file: JSON always; YAML with PyYAML when it is installed, else a small YAML subset.

PyYAML is a development dependency of Tidings, not a runtime one, so ``tidings plan`` must read the shipped
example workloads without it. The subset is what those files use: block mappings nested by indentation,
``key: value`` lines with integer, float (``1_000`` and ``1e6`` too), boolean, null and string scalars, and
``#`` comments. Anything else (lists, anchors, multi-line strings) needs PyYAML or JSON, and the error says so.
"""

from __future__ import annotations

import importlib
import json
from pathlib import Path
from typing import Any

from tidings.errors import ConfigError


def load_document(path: str) -> dict[str, Any]:
    """The mapping in ``path`` (``.json``: JSON; otherwise YAML)."""
    try:
        text = Path(path).read_text()
    except OSError as exc:
        raise ConfigError(f"{path}: {exc.strerror}") from exc
    data = _parse(text, path)
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: a workload is a mapping of settings")
    return data


def _parse(text: str, path: str) -> Any:
    if path.endswith(".json"):
        try:
            return json.loads(text)
        except ValueError as exc:
            raise ConfigError(f"{path}: not JSON ({exc})") from exc
    try:
        yaml = importlib.import_module("yaml")
    except ImportError:
        return parse_subset(text, path)
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not YAML ({exc})") from exc


def parse_subset(text: str, path: str = "<workload>") -> dict[str, Any]:
    """Block mappings of scalars, nested by indentation (see the module docstring)."""
    root: dict[str, Any] = {}
    stack: list[tuple[int, dict[str, Any]]] = [(-1, root)]
    for number, raw in enumerate(text.splitlines(), 1):
        line = _strip_comment(raw).rstrip()
        if not line.strip():
            continue
        indent = len(line) - len(line.lstrip(" "))
        key, sep, value = line.strip().partition(":")
        if not sep or not key or line.lstrip().startswith(("-", "[", "{")):
            raise ConfigError(
                f"{path}:{number}: only `key: value` mappings are read without PyYAML "
                "(install pyyaml, or write the workload as JSON)"
            )
        while indent <= stack[-1][0]:
            stack.pop()
        parent = stack[-1][1]
        if value.strip():
            parent[_scalar(key.strip())] = _scalar(value.strip())
        else:
            child: dict[str, Any] = {}
            parent[_scalar(key.strip())] = child
            stack.append((indent, child))
    return root


def _strip_comment(line: str) -> str:
    quoted = ""
    for i, char in enumerate(line):
        if char in "\"'" and (not quoted or quoted == char):
            quoted = "" if quoted else char
        elif char == "#" and not quoted and (i == 0 or line[i - 1] in " \t"):
            return line[:i]
    return line


def _scalar(text: str) -> Any:
    if len(text) >= 2 and text[0] == text[-1] and text[0] in "\"'":
        return text[1:-1]
    lowered = text.lower()
    if lowered in ("true", "yes", "on"):
        return True
    if lowered in ("false", "no", "off"):
        return False
    if lowered in ("null", "~"):
        return None
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return text
