"""A user's script folder as it ships to the hosts: its files (caches, version control, virtual
environments and runs left out), their content hash and a reproducible archive.

The folder travels content-addressed like trainer/ (launcher/deploy.py): its hash names its
folder on a host, so an unchanged folder costs nothing the second time. The hash covers each
file's relative path, bytes and executable bit, never times or owners, and two archives of the
same files are byte-equal. Everything here reads the local disk only; no host is touched.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import os
import stat
import tarfile
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

import pathspec

from launcher.deploy import PROGRAMS_DIR, file_sha256
from runformat import RUNS_DIR

IGNORE_FILE = ".tfclusterignore"

# Left out wherever they appear: version control, caches, virtual environments, editor and
# notebook state (the names torchrun users' and Ray's working_dir users' .gitignores share).
EXCLUDED_DIRS = frozenset(
    {
        ".git",
        ".hg",
        ".svn",
        ".bzr",
        "__pycache__",
        ".venv",
        "venv",
        ".tox",
        ".nox",
        ".mypy_cache",
        ".pytest_cache",
        ".ruff_cache",
        ".hypothesis",
        ".ipynb_checkpoints",
        "node_modules",
        ".eggs",
        ".idea",
        ".vscode",
    }
)
EXCLUDED_SUFFIXES = (".pyc", ".pyo", ".egg-info")
EXCLUDED_FILES = frozenset({".DS_Store", "Thumbs.db"})
# Left out at the folder's top only: the launcher's own run directories when `fab train` is
# typed in the script's folder (a `runs/` deeper down may be the user's data).
EXCLUDED_TOP = frozenset({str(RUNS_DIR)})

# 100 MiB: Ray's working_dir limit for years, for the same reasons. The archive is built in
# memory and sent to every host (64 hosts x 100 MiB is 6.4 GB from this machine); data sets
# belong on the hosts already (`fab deploy --mnist`, shared storage), not in the code folder.
MAX_FOLDER_BYTES = 100 * 1024 * 1024
# A code folder holds tens to hundreds of files: ten thousand means a data set or an
# environment was picked up. The walk stops there, so `--script ~/x.py` never lists a home.
MAX_FOLDER_FILES = 10_000
BIGGEST_SHOWN = 3

HASH_FORMAT = b"tfcluster-folder-1\0"  # changes every hash if the layout of the hash changes
HASH_LENGTH = 16  # hex digits, as deploy.tree_hash


class BundleError(ValueError):
    """A folder that cannot ship: the message is one line naming the folder or file."""


@dataclass(frozen=True)
class FolderFile:
    rel: str  # POSIX path inside the folder
    path: Path  # where it is on this machine
    size: int
    executable: bool

    @property
    def mode(self) -> int:
        """Only the executable bit travels: read and write bits are the host's umask's."""
        return 0o755 if self.executable else 0o644


@dataclass(frozen=True)
class Bundle:
    """What ships of a folder: its files in order and their hash (computed when listed)."""

    root: Path
    files: tuple[FolderFile, ...]
    digest: str

    @property
    def size(self) -> int:
        return sum(f.size for f in self.files)

    def archive(self) -> bytes:
        """The folder as a gzip tarball; refuses if a file changed since it was listed (a
        folder named by its old hash must never hold other bytes)."""
        data, digest = pack(self.files)
        if digest != self.digest:
            raise BundleError(f"{self.root}: files changed while being packed; try again")
        return data


def human_size(n: int) -> str:
    if n < 1024:
        return f"{n} bytes"
    if n < 1024 * 1024:
        return f"{n / 1024:.1f} KiB"
    return f"{n / (1024 * 1024):.1f} MiB"


def excluded(rel: PurePosixPath, is_dir: bool) -> bool:
    """Left out by the built-in rules (before any .tfclusterignore)?"""
    name = rel.name
    if is_dir and (name in EXCLUDED_DIRS or name.endswith(".egg-info")):
        return True
    if len(rel.parts) == 1 and name in EXCLUDED_TOP:
        return True
    return not is_dir and (name in EXCLUDED_FILES or name.endswith(EXCLUDED_SUFFIXES))


def ignore_spec(root: Path) -> pathspec.GitIgnoreSpec | None:
    """The folder's .tfclusterignore (gitignore syntax), if it has one."""
    path = root / IGNORE_FILE
    if not path.is_file():
        return None
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise BundleError(f"{path}: cannot read: {exc}") from None
    try:
        return pathspec.GitIgnoreSpec.from_lines(lines)
    except ValueError as exc:
        raise BundleError(f"{path}: {exc}") from None


def _walk(
    root: Path, spec: pathspec.GitIgnoreSpec | None, skip: frozenset[Path]
) -> Iterator[tuple[str, Path]]:
    """(relative path, path) of every file that ships, sorted by relative path per folder.

    Links to files ship as the file they point to; links to folders are not followed (they
    may loop or leave the folder). Sockets, pipes and devices are skipped.
    """
    for dirpath, dirnames, filenames in os.walk(root):
        here = PurePosixPath(Path(dirpath).relative_to(root).as_posix())
        kept = []
        for d in sorted(dirnames):
            rel = here / d if str(here) != "." else PurePosixPath(d)
            full = Path(dirpath) / d
            if full.is_symlink() or excluded(rel, True) or full in skip:
                continue
            if spec is not None and spec.match_file(f"{rel}/"):
                continue
            kept.append(d)
        dirnames[:] = kept
        for f in sorted(filenames):
            rel = here / f if str(here) != "." else PurePosixPath(f)
            if excluded(rel, False) or (spec is not None and spec.match_file(str(rel))):
                continue
            yield str(rel), Path(dirpath) / f


def _checked_name(root: Path, rel: str) -> str:
    try:
        rel.encode("utf-8")
    except UnicodeEncodeError:
        raise BundleError(
            f"{root / rel!s}: the name is not valid UTF-8; rename it or list it in {IGNORE_FILE}"
        ) from None
    if any(ord(c) < 32 or ord(c) == 127 for c in rel):
        raise BundleError(
            f"{root}/{rel!r}: control character in the name; rename it or list it in {IGNORE_FILE}"
        )
    return rel


def list_folder(
    root: Path,
    *,
    max_bytes: int = MAX_FOLDER_BYTES,
    max_files: int = MAX_FOLDER_FILES,
    skip: Iterable[Path] = (),
) -> list[FolderFile]:
    """The files of `root` that ship, sorted by relative path; refuses a folder over the
    limits, naming its biggest files so the user knows what to leave out. Folders in `skip`
    (absolute: the local runs folder wherever it is) are left out too."""
    root = Path(os.path.abspath(root))
    spec = ignore_spec(root)
    skipped = frozenset(Path(os.path.abspath(p)) for p in skip)
    files: list[FolderFile] = []
    for rel, path in _walk(root, spec, skipped):
        try:
            st = path.stat()  # follows a link to a file
        except OSError:
            continue  # a dangling link
        if not stat.S_ISREG(st.st_mode):
            continue
        files.append(
            FolderFile(_checked_name(root, rel), path, st.st_size, bool(st.st_mode & 0o111))
        )
        if len(files) > max_files:
            raise BundleError(
                f"{root}: more than {max_files} files to ship (the limit); is this the folder "
                f"you meant? Leave out data and environments with a {IGNORE_FILE}"
            )
    files.sort(key=lambda f: f.rel)
    total = sum(f.size for f in files)
    if total > max_bytes:
        biggest = sorted(files, key=lambda f: (-f.size, f.rel))[:BIGGEST_SHOWN]
        shown = ", ".join(f"{f.rel} ({human_size(f.size)})" for f in biggest)
        raise BundleError(
            f"{root}: {human_size(total)} to ship, over the {human_size(max_bytes)} limit; "
            f"biggest: {shown}. Put data on the hosts and list it in {IGNORE_FILE}"
        )
    return files


def _entry_digest(rel: str, mode: int, content_sha: bytes) -> bytes:
    return rel.encode() + b"\0" + f"{mode:o}".encode() + b"\0" + content_sha


def folder_hash(files: Iterable[FolderFile]) -> str:
    """Content hash over relative paths, executable bits and bytes: equal folders, equal hash,
    whatever their times, owners or read permissions."""
    h = hashlib.sha256(HASH_FORMAT)
    for f in sorted(files, key=lambda f: f.rel):
        h.update(_entry_digest(f.rel, f.mode, bytes.fromhex(file_sha256(f.path))))
    return h.hexdigest()[:HASH_LENGTH]


def pack(files: Sequence[FolderFile]) -> tuple[bytes, str]:
    """A gzip tarball of `files` with fixed metadata (no times, owners or names of this
    machine), and the hash of exactly the bytes it holds."""
    h = hashlib.sha256(HASH_FORMAT)
    buf = io.BytesIO()
    with (
        gzip.GzipFile(fileobj=buf, mode="wb", compresslevel=6, mtime=0) as packed,
        tarfile.open(fileobj=packed, mode="w", format=tarfile.PAX_FORMAT) as tar,
    ):
        for f in sorted(files, key=lambda f: f.rel):
            data = f.path.read_bytes()
            h.update(_entry_digest(f.rel, f.mode, hashlib.sha256(data).digest()))
            info = tarfile.TarInfo(f.rel)
            info.size = len(data)
            info.mode = f.mode
            info.mtime = 0
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue(), h.hexdigest()[:HASH_LENGTH]


def load_bundle(
    root: Path,
    *,
    max_bytes: int = MAX_FOLDER_BYTES,
    max_files: int = MAX_FOLDER_FILES,
    skip: Iterable[Path] = (),
) -> Bundle:
    files = list_folder(root, max_bytes=max_bytes, max_files=max_files, skip=skip)
    return Bundle(root, tuple(files), folder_hash(files))


def host_folder(workdir: str, digest: str) -> str:
    """Where a shipped folder lives on a host: `<workdir>/programs/<hash>` (not under
    `code/`, whose `current` pointer names the trainer's version)."""
    return f"{workdir}/{PROGRAMS_DIR}/{digest}"
