"""Mirror a host's run directory into the local one, sending only bytes that are new.

Event files and logs only grow, so when one of them keeps its inode and grows, just its new
bytes travel (a partial record at the end is completed on the next pass). Every other file
(status.json, the trainer's backup checkpoints, model.h5) is replaced whole by its writer, so
any change to its inode, size or modification time fetches it whole. Inode numbers alone are
not enough: a file system reuses a freed inode for the next replacement, and a checkpoint
index going from `ckpt-1` to `ckpt-2` keeps its size.

A host is trusted only with its own files: the host of worker i with `workers/<i>/` (any
file at any depth: a user's program writes its own event files where it likes), the chief's
host also with what only the chief writes (a user's program's `artifacts/` among them). A
compromised worker host must not be able to replace the user's model (an .h5 can run code
when loaded) or the launcher's record.
A file is replaced locally only once it arrived whole, so a broken connection or a full local
disk never leaves half a file where a good one was.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

from launcher.commands import listing_command
from launcher.remote import HostShell
from runformat import (
    ARTIFACTS_DIR,
    BACKUP_DIR,
    EVENT_FILE_PREFIX,
    METRICS_JSON,
    MODEL_FILE,
    TEMP_SUFFIX,
    TENSORBOARD_DIR,
    WORKERS_DIR,
    write_bytes_atomic,
)

CHIEF_FILES = frozenset({MODEL_FILE, METRICS_JSON})
CHIEF_DIRS = frozenset({TENSORBOARD_DIR, BACKUP_DIR, ARTIFACTS_DIR})


class LocalWriteError(Exception):
    """The local disk refused a mirrored file (full, read-only): the job may go on, the
    mirror tries again on its next pass."""

    def __init__(self, path: Path, exc: OSError) -> None:
        self.path = path
        super().__init__(f"cannot write {path}: {exc.strerror or exc}")


@dataclass(frozen=True)
class RemoteFile:
    path: str
    size: int
    inode: int
    mtime: str = ""

    @property
    def identity(self) -> tuple[int, int, str]:
        return self.inode, self.size, self.mtime


def append_only(path: str) -> bool:
    """Files that only ever grow in place: TensorBoard event files and logs."""
    name = PurePosixPath(path).name
    return name.startswith(EVENT_FILE_PREFIX) or name.endswith(".log")


def unsafe_name(path: str) -> str | None:
    """Why a listed name must not become a local path, or None if it may."""
    if any(ord(c) < 32 or ord(c) == 127 for c in path):
        return "control character in the name"
    if "\ufffd" in path:
        return "name is not valid UTF-8"
    rel = PurePosixPath(path)
    if not path or rel.is_absolute() or ".." in rel.parts or "" in path.split("/"):
        return "name leaves the run directory"
    return None


def trusted(path: str, indexes: Iterable[int], chief: bool) -> bool:
    """May a host serving workers `indexes` (and the chief, if `chief`) send this file?"""
    parts = PurePosixPath(path).parts
    if len(parts) >= 3 and parts[0] == WORKERS_DIR and parts[1] in {str(i) for i in indexes}:
        return True
    if not chief:
        return False
    return (len(parts) == 1 and parts[0] in CHIEF_FILES) or (
        len(parts) >= 2 and parts[0] in CHIEF_DIRS
    )


@dataclass(frozen=True)
class Listing:
    """What a host listed: files to mirror, and names refused with the reason."""

    files: list[RemoteFile]
    refused: list[tuple[str, str]]


def mirrored(path: str) -> bool:
    """Whether the mirror brings a file home: not a writer's temp file or a hidden one
    (`.model.partial.h5`, `.status.json.tmp`, the exit code's reserved bytes)."""
    return not (PurePosixPath(path).name.startswith(".") or path.endswith(TEMP_SUFFIX))


def parse_listing(text: str, indexes: Iterable[int] = (), chief: bool = True) -> Listing:
    """NUL-terminated `type<TAB>size<TAB>inode<TAB>mtime<TAB>path` records (`listing_command`).

    The path comes last and records end in NUL, which no file name can hold, so no name can
    forge a record. Temp files of writers (hidden names, `.tmp`) are skipped; links, unsafe
    names and files outside what this host may send are refused.
    """
    allowed = list(indexes)
    files, refused = [], []
    for record in text.split("\0"):
        record = record.lstrip("\n")
        parts = record.split("\t", 4)
        if len(parts) != 5 or not parts[1].isdigit() or not parts[2].isdigit():
            continue
        kind, size, inode, mtime, path = parts
        if not mirrored(path):
            continue
        why = unsafe_name(path)
        if why is None and kind != "f":
            why = "a link or special file, not a regular file"
        if why is None and not trusted(path, allowed, chief):
            why = "not this host's to send"
        if why is not None:
            refused.append((path, why))
            continue
        files.append(RemoteFile(path, int(size), int(inode), mtime))
    return Listing(files, refused)


@dataclass
class Mirror:
    """Keeps one host's run directory mirrored into `local_dir`; counts the bytes it moved.

    One Mirror per host and run directory, however many workers that host runs (`indexes`).
    Refused names are collected in `refused` (each once) for the caller to warn about.
    """

    shell: HostShell
    remote_dir: str
    local_dir: Path
    indexes: frozenset[int] = frozenset()
    seen: dict[str, tuple[int, int, str]] = field(default_factory=dict)
    bytes_received: int = 0
    refused: list[str] = field(default_factory=list)
    disk_error: LocalWriteError | None = None  # what the last pass could not write here
    _warned: set[str] = field(default_factory=set)

    @property
    def chief(self) -> bool:
        return 0 in self.indexes

    def sync(self, listing: str | None = None) -> int:
        """One pass; returns the bytes received in it. `listing`: already fetched by the caller.

        Every file is tried even when the local disk refuses one; the first such error is
        raised at the end of the pass (LocalWriteError), with nothing half-written left.
        """
        if listing is None:
            result = self.shell.run(listing_command(self.remote_dir), timeout=60)
            if result.code != 0:
                return 0
            listing = result.stdout
        parsed = parse_listing(listing, self.indexes, self.chief)
        for path, why in parsed.refused:
            if path not in self._warned:
                self._warned.add(path)
                self.refused.append(f"{self.remote_dir}/{path!r}: {why}")
        got = 0
        disk_error: LocalWriteError | None = None
        for f in parsed.files:
            try:
                got += self._sync_file(f)
            except LocalWriteError as exc:
                disk_error = disk_error or exc
        self.bytes_received += got
        self.disk_error = disk_error
        if disk_error is not None:
            raise disk_error
        return got

    def take_refused(self) -> list[str]:
        """Refusals not reported yet (each path is reported once)."""
        out, self.refused = self.refused, []
        return out

    def _sync_file(self, f: RemoteFile) -> int:
        local = self.local_dir / f.path
        inode, size, _ = seen = self.seen.get(f.path, (-1, 0, ""))
        have = local.stat().st_size if local.exists() else 0
        if seen == f.identity and have == f.size:
            return 0
        append = append_only(f.path) and inode == f.inode and f.size >= have and have == size
        try:
            if append:
                data = self.shell.read_range(self._remote(f.path), have, f.size - have)
            else:
                # One byte more than listed: a file replaced since the listing (status.json
                # is, several times a second) shows as a size mismatch instead of being
                # written here cut to the old size.
                data = self.shell.read_range(self._remote(f.path), 0, f.size + 1)
        except OSError:
            return 0  # removed or unreadable between the listing and the read: next pass
        if not append and len(data) > f.size and append_only(f.path):
            # A log or event file that grew since the listing: what was listed is there as
            # its first bytes. Taken now, or a one-time `fab fetch` of a live run, which
            # has no next pass, would leave it as old as before.
            data = data[: f.size]
        if not append and len(data) != f.size:
            return 0  # replaced since the listing: the next pass lists and fetches it whole
        if append:
            _append(local, have, data)
        else:
            _replace(local, data)
        got = have + len(data) if append else len(data)
        self.seen[f.path] = (f.inode, got, f.mtime if got == f.size else "")
        return len(data)

    def _remote(self, rel: str) -> str:
        return f"{self.remote_dir}/{rel}"


@dataclass
class DiskNotices:
    """What a job whose workers do not need this machine's disk tells about it: once when
    the disk starts refusing the mirror's files, once when it takes them again (the SSH
    worker's mirror and the Slurm watcher's share this)."""

    error: str | None = None  # what the last pass could not write here

    def refused(self, exc: LocalWriteError) -> str | None:
        first = self.error is None
        self.error = str(exc)
        return f"{exc}; the job goes on, mirroring is retried" if first else None

    def took(self) -> str | None:
        was_full = self.error is not None
        self.error = None
        return "mirroring works again" if was_full else None


def _append(local: Path, have: int, data: bytes) -> None:
    """Add new bytes at `have`; on failure cut the file back, so the next pass resumes there."""
    try:
        local.parent.mkdir(parents=True, exist_ok=True)
        with open(local, "ab") as out:
            try:
                out.write(data)
                out.flush()
            except OSError:
                out.truncate(have)
                raise
    except OSError as exc:
        raise LocalWriteError(local, exc) from exc


def _replace(local: Path, data: bytes) -> None:
    """Replace the file whole: readers see the old file or the new one."""
    try:
        write_bytes_atomic(local, data)
    except OSError as exc:
        raise LocalWriteError(local, exc) from exc
