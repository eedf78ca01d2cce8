"""Mirror a host's run directory into the local one, sending only bytes that are new.

Event files and logs only grow, so when one of them keeps its inode and grows, just its new
bytes travel (a partial record at the end is completed on the next pass). Every other file
(status.json, the trainer's backup checkpoints, model.h5) is replaced whole by its writer, so
any change to its inode, size or modification time fetches it whole. Inode numbers alone are
not enough: a file system reuses a freed inode for the next replacement, and a checkpoint
index going from `ckpt-1` to `ckpt-2` keeps its size.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

from launcher.commands import listing_command
from launcher.remote import HostError, HostShell


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
    return name.startswith("events.out.tfevents.") or name.endswith(".log")


def parse_listing(text: str) -> list[RemoteFile]:
    """Lines of `path<TAB>size<TAB>inode<TAB>mtime`; skips temp files and anything that
    escapes the dir."""
    files = []
    for line in text.splitlines():
        parts = line.split("\t")
        if len(parts) != 4 or not parts[1].isdigit() or not parts[2].isdigit():
            continue
        rel = PurePosixPath(parts[0])
        if rel.is_absolute() or ".." in rel.parts or rel.name.endswith(".tmp"):
            continue
        files.append(RemoteFile(parts[0], int(parts[1]), int(parts[2]), parts[3]))
    return files


@dataclass
class Mirror:
    """Keeps one host's run directory mirrored into `local_dir`; counts the bytes it moved."""

    shell: HostShell
    remote_dir: str
    local_dir: Path
    seen: dict[str, tuple[int, int, str]] = field(default_factory=dict)
    bytes_received: int = 0

    def sync(self, listing: str | None = None) -> int:
        """One pass; returns the bytes received in it. `listing`: already fetched by the caller."""
        if listing is None:
            result = self.shell.run(listing_command(self.remote_dir), timeout=60)
            if result.code != 0:
                return 0
            listing = result.stdout
        got = 0
        for f in parse_listing(listing):
            got += self._sync_file(f)
        self.bytes_received += got
        return got

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
                local.parent.mkdir(parents=True, exist_ok=True)
                with open(local, "ab") as out:
                    out.write(data)
            else:
                data = self.shell.read_range(self._remote(f.path), 0, f.size)
                local.parent.mkdir(parents=True, exist_ok=True)
                tmp = local.with_name(f".{local.name}.sync")
                tmp.write_bytes(data)
                os.replace(tmp, local)
        except FileNotFoundError:
            return 0  # removed between the listing and the read (a temp file, a rotated log)
        except HostError:
            raise
        except OSError:
            return 0
        got = have + len(data) if append else len(data)
        self.seen[f.path] = (f.inode, got, f.mtime if got == f.size else "")
        return len(data)

    def _remote(self, rel: str) -> str:
        return f"{self.remote_dir}/{rel}"
