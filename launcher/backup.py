"""The trainer's --backup folder in a run directory: which files a restart needs."""

from __future__ import annotations

import re
from pathlib import Path, PurePath

_LATEST = re.compile(r'^model_checkpoint_path: "([^"]+)"', re.MULTILINE)


def latest_backup(backup: Path) -> list[Path]:
    """The files of the newest checkpoint in a backup folder, with its `checkpoint` index.

    A mirrored folder may also hold older checkpoints the chief's host has deleted since, and
    the other workers' scratch copies (`workertemp_<i>`): neither is needed to resume.
    """
    files: list[Path] = []
    indexes = sorted(backup.rglob("checkpoint")) if backup.is_dir() else []
    for index in indexes:
        if index.relative_to(backup).parts[0].startswith("workertemp"):
            continue
        try:
            found = _LATEST.search(index.read_text(encoding="utf-8", errors="replace"))
        except OSError:
            continue
        if found:
            prefix = PurePath(found.group(1)).name + "."
            shards = [p for p in index.parent.iterdir() if p.name.startswith(prefix)]
            files += [index, *sorted(shards)]
    return files
