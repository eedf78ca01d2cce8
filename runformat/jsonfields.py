"""Reading JSON that other programs wrote, leniently: the machinery under runformat.records.

A file too big, too deeply nested, not JSON or not an object is a warning and no object; a
field of the wrong type becomes its default plus a one-line warning naming the file. Nothing
here raises on what is in a file.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import fields
from pathlib import Path
from typing import Any, TypeVar

Warnings = list[str]
T = TypeVar("T")


# --- reading JSON -----------------------------------------------------------------------------


def read_json_object(path: Path, limit: int, warnings: Warnings, name: str = "") -> dict | None:
    """A JSON object from `path`, or None with a one-line warning (a missing file is quiet).

    `limit` caps the bytes read: a file beyond it is refused whole, not parsed in part.
    """
    name = name or path.name
    try:
        with open(path, "rb") as handle:
            raw = handle.read(limit + 1)
    except FileNotFoundError:
        return None
    except OSError as error:
        warnings.append(f"{name}: cannot be read ({error.strerror or error})")
        return None
    if len(raw) > limit:
        warnings.append(f"{name}: larger than {_size(limit)}; ignored")
        return None
    return parse_json_object(raw, warnings, name)


def parse_json_object(raw: bytes, warnings: Warnings, name: str) -> dict | None:
    """The JSON object in `raw`, or None with a warning; never raises."""
    try:
        data = json.loads(raw.decode("utf-8"))
    except RecursionError:
        warnings.append(f"{name}: nested too deeply to read; ignored")
        return None
    except (UnicodeDecodeError, ValueError) as error:
        reason = "half-written or damaged" if raw.strip() else "empty"
        warnings.append(f"{name}: not valid JSON ({reason}: {str(error)[:80]}); ignored")
        return None
    if not isinstance(data, dict):
        warnings.append(f"{name}: expected a JSON object, found {_kind(data)}")
        return None
    return data


def _size(limit: int) -> str:
    return f"{limit >> 20} MB" if limit >= 1 << 20 else f"{limit} bytes"


def _kind(value: object) -> str:
    names = {dict: "an object", list: "a list", str: "a string", bool: "a boolean"}
    if value is None:
        return "null"
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    return names.get(type(value), type(value).__name__)


def shown(value: object) -> str:
    """A value as a warning names it: numbers as they are, anything else by its kind."""
    return repr(value) if isinstance(value, int | float | bool) else _kind(value)


# --- lenient fields ---------------------------------------------------------------------------


class Fields:
    """Reads the fields of one JSON object, each as its type or its default plus a warning."""

    def __init__(self, data: Mapping[str, Any], where: str, warnings: Warnings) -> None:
        self.data = data
        self.where = where
        self.warnings = warnings

    def _bad(self, key: str, value: object, expected: str) -> None:
        self.warnings.append(
            f"{self.where}: '{key}' is {shown(value)}, expected {expected}; ignored"
        )

    def num(self, key: str) -> float | None:
        value = self.data.get(key)
        if value is None:
            return None
        if isinstance(value, bool) or not isinstance(value, int | float):
            self._bad(key, value, "a number")
            return None
        if not math.isfinite(value):
            self._bad(key, value, "a finite number")
            return None
        return float(value)

    def integer(self, key: str, default: int | None = None) -> int | None:
        value = self.data.get(key)
        if value is None:
            return default
        if isinstance(value, float) and math.isfinite(value) and value.is_integer():
            return int(value)
        if isinstance(value, bool) or not isinstance(value, int):
            self._bad(key, value, "an integer")
            return default
        return value

    def text(self, key: str) -> str | None:
        value = self.data.get(key)
        if value is None or isinstance(value, str):
            return value
        self._bad(key, value, "a string")
        return None

    def flag(self, key: str, default: bool = False) -> bool:
        value = self.data.get(key)
        if value is None:
            return default
        if isinstance(value, bool):
            return value
        self._bad(key, value, "true or false")
        return default

    def strings(self, key: str) -> tuple[str, ...]:
        value = self.data.get(key)
        if value is None:
            return ()
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            self._bad(key, value, "a list of strings")
            return ()
        return tuple(value)

    def numbers(self, key: str) -> tuple[float, ...] | None:
        value = self.data.get(key)
        if value is None:
            return None
        if not isinstance(value, list) or not all(
            isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)
            for v in value
        ):
            self._bad(key, value, "a list of numbers or null")
            return None
        return tuple(float(v) for v in value)

    def mapping(self, key: str) -> dict[str, Any] | None:
        value = self.data.get(key)
        if value is None or isinstance(value, dict):
            return value
        self._bad(key, value, "an object")
        return None

    def items(self, key: str) -> list[Any]:
        value = self.data.get(key)
        if value is None:
            return []
        if isinstance(value, list):
            return value
        self.warnings.append(f"{self.where}: '{key}' is not a list; ignored")
        return []

    def int_map(self, key: str, *, nullable: bool, below: int) -> dict[int, int | None]:
        """`{"0": 0, "1": -9}`: worker index (under `below`) -> integer (or null where
        allowed)."""
        raw = self.mapping(key) or {}
        result: dict[int, int | None] = {}
        for name, value in raw.items():
            if not (isinstance(name, str) and name.isdigit() and int(name) < below):
                self.warnings.append(f"{self.where}: '{key}' has a key {name[:20]!r}; ignored")
                continue
            if value is None and nullable:
                result[int(name)] = None
            elif isinstance(value, int) and not isinstance(value, bool):
                result[int(name)] = value
            else:
                self._bad(f"{key}.{name}", value, "an integer" + (" or null" if nullable else ""))
                if nullable:
                    result[int(name)] = None
        return result


def objects(
    items: list[Any],
    what: str,
    where: str,
    warnings: Warnings,
    first: int,
    limit: int | None = None,
) -> list[tuple[int, dict[str, Any]]]:
    """(position, object) of a list's objects; anything else is named (counting from `first`)
    and skipped."""
    if limit is not None and len(items) > limit:
        warnings.append(f"{where}: {len(items)} {what}s, more than {limit}; the rest ignored")
        items = items[:limit]
    found = []
    for position, item in enumerate(items):
        if isinstance(item, dict):
            found.append((position, item))
        else:
            warnings.append(f"{where}: {what} #{position + first} is not an object; ignored")
    return found


def plain(value: Any) -> Any:
    """Tuples as lists and int keys as strings: what JSON holds."""
    if isinstance(value, tuple | list):
        return [plain(v) for v in value]
    if isinstance(value, dict):
        return {str(k): plain(v) for k, v in value.items()}
    return value


def as_dict(record: Any, keys: Mapping[str, str] | None = None) -> dict[str, Any]:
    keys = keys or {}
    out = {}
    for f in fields(record):
        value = getattr(record, f.name)
        out[keys.get(f.name, f.name)] = value.to_dict() if hasattr(value, "to_dict") else value
    return plain(out)
