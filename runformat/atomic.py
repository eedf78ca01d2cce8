"""The one way to write a file that others read while it changes: readers (the dashboard, the
launcher's mirror, a host's sync) see the old file or the new one, never half of either."""

from __future__ import annotations

import functools
import json
import os
import tempfile
from pathlib import Path
from typing import Any

from runformat.paths import TEMP_SUFFIX


@functools.cache
def _umask() -> int:
    """This process's umask (set once by whoever started it; workers run with 077)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def write_bytes_atomic(path: Path, data: bytes, mode: int | None = None) -> None:
    """Write a temp file beside `path`, fsync it, then rename it over `path` in one step.

    The temp name starts with a dot and ends in `.tmp`, so mirroring never copies it. The file
    gets `mode`, or what a plain write would give it under this process's umask.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, temporary = tempfile.mkstemp(prefix=f".{path.name}.", suffix=TEMP_SUFFIX, dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(temporary, (0o666 & ~_umask()) if mode is None else mode)
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def write_json_atomic(path: Path, data: Any) -> None:
    """`data` as indented JSON (plus a newline), written atomically."""
    write_bytes_atomic(path, (json.dumps(data, indent=1) + "\n").encode("utf-8"))
