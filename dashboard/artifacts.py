"""What a run offers for download besides the model: the files and folders a program saved
under artifacts/ (chief only), a folder (a SavedModel) as one .zip made when asked for.

Everything is checked again when the download is made: nothing outside the run folder is
ever read, links included.
"""

from __future__ import annotations

import io
import os
import zipfile
from dataclasses import dataclass
from pathlib import Path

import runformat
from dashboard.runs import safe_dir, safe_file

# The run format's folder name (runformat.ARTIFACTS_DIR where the format names it).
ARTIFACTS_DIR: str = getattr(runformat, "ARTIFACTS_DIR", "artifacts")
# At most this many entries of artifacts/ are offered, and a folder is zipped up to this size.
MAX_ENTRIES = 200
MAX_ZIP_BYTES = 1 << 30


@dataclass(frozen=True)
class Artifact:
    """One entry of artifacts/: a file, or a folder with its files' total size."""

    name: str
    relative: str
    folder: bool
    size: int
    files: int = 1

    @property
    def download_name(self) -> str:
        return f"{self.name}.zip" if self.folder else self.name


def list_artifacts(run_dir: Path) -> tuple[list[Artifact], int]:
    """The entries of artifacts/ by name (files and folders inside the run only), and how
    many more there are beyond MAX_ENTRIES."""
    root = safe_dir(run_dir, ARTIFACTS_DIR)
    if root is None:
        return [], 0
    try:
        names = sorted(os.listdir(root))
    except OSError:
        return [], 0
    found = []
    for name in names[:MAX_ENTRIES]:
        relative = f"{ARTIFACTS_DIR}/{name}"
        if (path := safe_file(run_dir, relative)) is not None:
            found.append(Artifact(name, relative, False, _size(path)))
        elif (folder := safe_dir(run_dir, relative)) is not None:
            files = _files(run_dir, folder)
            size = sum(_size(path) for path, _ in files)
            found.append(Artifact(name, relative, True, size, len(files)))
    return found, max(0, len(names) - MAX_ENTRIES)


def read_artifact(run_dir: Path, artifact: Artifact) -> bytes:
    """The file's bytes, or the folder as a .zip (paths inside it relative to the folder);
    empty when it has gone, left the run, or grew past MAX_ZIP_BYTES."""
    if not artifact.folder:
        path = safe_file(run_dir, artifact.relative)
        return path.read_bytes() if path is not None else b""
    folder = safe_dir(run_dir, artifact.relative)
    if folder is None:
        return b""
    files = _files(run_dir, folder)
    if sum(_size(path) for path, _ in files) > MAX_ZIP_BYTES:
        return b""
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as archive:
        for path, inside in files:
            archive.write(path, f"{artifact.name}/{inside}")
    return out.getvalue()


def _files(run_dir: Path, folder: Path) -> list[tuple[Path, str]]:
    """Every regular file under folder that stays inside the run, with its path in it."""
    root = run_dir.resolve()
    found = []
    for current, subfolders, names in os.walk(folder):
        subfolders.sort()
        for name in sorted(names):
            path = Path(current) / name
            inside = path.relative_to(folder).as_posix()
            relative = path.relative_to(root).as_posix()
            checked = safe_file(run_dir, relative)
            if checked is not None:
                found.append((checked, inside))
    return found


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError:
        return 0
