"""Mirroring by byte offset, against a real folder through LocalShell (the SSH path runs the
same listing command and byte-range reads; see test_ssh.py and benchmarks/bench_launcher.py).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from launcher.commands import listing_command
from launcher.hosts import parse_hosts
from launcher.remote import LocalShell
from launcher.sync import DiskNotices, LocalWriteError, Mirror, append_only, parse_listing
from tests.launcher.helpers import small_disk


def make_mirror(tmp_path: Path) -> tuple[Path, Path, Mirror]:
    src, dst = tmp_path / "host-run", tmp_path / "local-run"
    (src / "workers" / "1" / "events").mkdir(parents=True)
    shell = LocalShell(parse_hosts("localhost\n")[0])
    return src, dst, Mirror(shell, str(src), dst, frozenset({0, 1}))


def test_append_only_files_send_only_new_bytes(tmp_path: Path) -> None:
    src, dst, mirror = make_mirror(tmp_path)
    events = src / "workers" / "1" / "events" / "events.out.tfevents.1.host"
    events.write_bytes(b"a" * 1000)
    assert mirror.sync() == 1000
    assert mirror.sync() == 0, "nothing new, nothing sent"
    with open(events, "ab") as f:
        f.write(b"b" * 250)  # includes a partial record: copied as is, completed next time
    assert mirror.sync() == 250
    with open(events, "ab") as f:
        f.write(b"c" * 10)
    assert mirror.sync() == 10
    local = dst / "workers" / "1" / "events" / events.name
    assert local.read_bytes() == events.read_bytes()
    assert mirror.bytes_received == 1260 == events.stat().st_size


def test_replaced_files_are_fetched_whole(tmp_path: Path) -> None:
    src, dst, mirror = make_mirror(tmp_path)
    status = src / "workers" / "1" / "status.json"
    status.write_text('{"step": 1}')
    mirror.sync()
    tmp = status.with_name(".status.json.tmp")
    tmp.write_text('{"step": 12, "loss": 0.5}')
    os.replace(tmp, status)  # how the trainer writes it: a new inode
    mirror.sync()
    assert (dst / "workers" / "1" / "status.json").read_text() == '{"step": 12, "loss": 0.5}'
    status.write_text("{}")  # shrunk in place
    mirror.sync()
    assert (dst / "workers" / "1" / "status.json").read_text() == "{}"


def test_a_file_replaced_after_the_listing_is_never_written_cut(tmp_path: Path) -> None:
    """status.json is replaced several times a second: a read against an older listing must
    not leave the new file cut to the old size (a reader would see broken JSON)."""
    src, dst, mirror = make_mirror(tmp_path)
    status = src / "workers" / "1" / "status.json"
    status.write_text('{"step": 1}')
    listing = mirror.shell.run(listing_command(str(src)), timeout=30).stdout
    tmp = status.with_name(".status.json.tmp")
    tmp.write_text('{"step": 12, "loss": 0.5}')
    os.replace(tmp, status)
    assert mirror.sync(listing) == 0
    assert not (dst / "workers" / "1" / "status.json").exists()
    mirror.sync()
    assert (dst / "workers" / "1" / "status.json").read_text() == '{"step": 12, "loss": 0.5}'


def test_a_log_that_grows_after_the_listing_is_fetched_as_listed(tmp_path: Path) -> None:
    """A first fetch of a live run reads each file whole; a log that grew in between still
    comes back with every byte listed (a one-time `fab fetch` has no next pass)."""
    src, dst, mirror = make_mirror(tmp_path)
    log = src / "workers" / "1" / "worker.log"
    log.write_bytes(b"x" * 910)
    listing = mirror.shell.run(listing_command(str(src)), timeout=30).stdout
    with open(log, "ab") as f:
        f.write(b"y" * 50)
    assert mirror.sync(listing) == 910
    local = dst / "workers" / "1" / "worker.log"
    assert local.read_bytes() == b"x" * 910
    assert mirror.sync() == 50
    assert local.read_bytes() == log.read_bytes()


def test_a_rewritten_file_of_the_same_size_and_inode_is_fetched_again(tmp_path: Path) -> None:
    """A checkpoint index going from ckpt-1 to ckpt-2 keeps its size, and a file system may
    give the replacement the inode it just freed: the modification time tells them apart."""
    src, dst, mirror = make_mirror(tmp_path)
    index = src / "backup" / "checkpoint"
    index.parent.mkdir()
    index.write_text('model_checkpoint_path: "ckpt-1"\n')
    mirror.sync()
    with open(index, "r+") as f:  # same inode, same size, new content
        f.write('model_checkpoint_path: "ckpt-2"\n')
    os.utime(index, ns=(index.stat().st_atime_ns, index.stat().st_mtime_ns + 1_000_000))
    mirror.sync()
    assert (dst / "backup" / "checkpoint").read_text() == 'model_checkpoint_path: "ckpt-2"\n'


def test_only_events_and_logs_are_appended_to(tmp_path: Path) -> None:
    """A replaced file that grew keeps nothing of its old bytes, whatever its inode."""
    src, dst, mirror = make_mirror(tmp_path)
    index = src / "backup" / "checkpoint"
    index.parent.mkdir()
    index.write_text('path: "ckpt-9"\n')
    mirror.sync()
    with open(index, "r+") as f:
        f.write('path: "ckpt-10"\n')
    mirror.sync()
    assert (dst / "backup" / "checkpoint").read_text() == 'path: "ckpt-10"\n'


def test_listing_skips_temp_files_and_refuses_what_the_host_may_not_send() -> None:
    def rec(path: str, kind: str = "f") -> str:
        return f"{kind}\t3\t7\t1.5\t{path}\0"

    text = "".join(
        [
            rec("workers/1/status.json"),
            rec("workers/1/events/.x.tmp"),
            rec(".model.partial.h5"),
            rec("workers/1/../../model.h5"),
            rec("workers/1/a\nb"),
            rec("workers/1/link", "l"),
            rec("workers/0/status.json"),
            rec("model.h5"),
            rec("cluster.json"),
            "garbage\0",
            rec("workers/1/events/e\t1"),
        ]
    )
    worker = parse_listing(text, [1], chief=False)
    assert [f.path for f in worker.files] == ["workers/1/status.json"]
    assert dict(worker.refused) == {
        "workers/1/../../model.h5": "name leaves the run directory",
        "workers/1/a\nb": "control character in the name",
        "workers/1/events/e\t1": "control character in the name",
        "workers/1/link": "a link or special file, not a regular file",
        "workers/0/status.json": "not this host's to send",
        "model.h5": "not this host's to send",
        "cluster.json": "not this host's to send",
    }
    chief = parse_listing(text, [0], chief=True)
    assert [f.path for f in chief.files] == ["workers/0/status.json", "model.h5"]


def test_planted_files_are_refused_once_and_never_written(tmp_path: Path) -> None:
    """A worker host that writes the chief's files or the launcher's record into its run
    directory, or links to files elsewhere, gets none of it mirrored."""
    src, dst, mirror = make_mirror(tmp_path)
    mirror.indexes = frozenset({1})
    (src / "workers" / "1" / "status.json").write_text("{}")
    (src / "model.h5").write_bytes(b"evil")
    (src / "cluster.json").write_text('{"state": "stopped"}')
    (src / "workers" / "0").mkdir()
    (src / "workers" / "0" / "model.h5").write_bytes(b"evil")
    os.symlink("/etc/passwd", src / "workers" / "1" / "passwd")
    dst.mkdir()
    (dst / "cluster.json").write_text('{"state": "running"}')
    mirror.sync()
    mirror.sync()
    refused = mirror.take_refused()
    assert len(refused) == 4 and all(str(src) in r for r in refused), refused
    assert mirror.take_refused() == [], "each refused file is reported once"
    assert (dst / "workers" / "1" / "status.json").read_text() == "{}"
    assert not (dst / "model.h5").exists() and not (dst / "workers" / "0").exists()
    assert not (dst / "workers" / "1" / "passwd").exists()
    assert (dst / "cluster.json").read_text() == '{"state": "running"}'


def test_one_mirror_serves_every_worker_of_a_host(tmp_path: Path) -> None:
    src, dst, mirror = make_mirror(tmp_path)
    mirror.indexes = frozenset({0, 2})
    for i in (0, 2):
        (src / "workers" / str(i)).mkdir(parents=True, exist_ok=True)
        (src / "workers" / str(i) / "worker.log").write_text(f"log {i}\n")
    (src / "model.h5").write_bytes(b"model")
    assert mirror.sync() == 2 * 6 + 5
    assert (dst / "workers" / "2" / "worker.log").read_text() == "log 2\n"
    assert (dst / "model.h5").read_bytes() == b"model"


@pytest.fixture
def disk(tmp_path: Path) -> Iterator[Path]:
    with small_disk(tmp_path / "small", "64k") as path:
        yield path


def test_a_full_local_disk_keeps_the_good_file_and_leaves_no_partial_one(
    tmp_path: Path, disk: Path
) -> None:
    src = tmp_path / "host-run"
    (src / "workers" / "0" / "events").mkdir(parents=True)
    mirror = Mirror(LocalShell(parse_hosts("localhost\n")[0]), str(src), disk, frozenset({0}))
    model, log = src / "model.h5", src / "workers" / "0" / "worker.log"
    model.write_bytes(b"a" * 20_000)
    log.write_bytes(b"line\n" * 100)
    mirror.sync()
    model.write_bytes(b"b" * 100_000)  # a bigger model than the disk can hold
    with open(log, "ab") as f:
        f.write(b"x" * 100_000)
    with pytest.raises(LocalWriteError, match="No space left on device"):
        mirror.sync()
    assert (disk / "model.h5").read_bytes() == b"a" * 20_000, "the good file is kept"
    assert (disk / "workers" / "0" / "worker.log").read_bytes() == b"line\n" * 100
    assert sorted(p.name for p in disk.rglob(".*")) == [], "no partial download is left"
    model.write_bytes(b"c" * 30_000)  # space again: the mirror resumes where it stopped
    log.write_bytes(b"line\n" * 100 + b"y" * 10)
    mirror.sync()
    assert (disk / "model.h5").read_bytes() == model.read_bytes()
    assert (disk / "workers" / "0" / "worker.log").read_bytes() == log.read_bytes()


def test_missing_remote_dir_is_quietly_empty(tmp_path: Path) -> None:
    _, _, mirror = make_mirror(tmp_path)
    mirror.remote_dir = str(tmp_path / "not-yet")
    assert mirror.sync() == 0


def test_disk_notices_tell_once_when_the_disk_refuses_and_once_when_it_takes_again(
    tmp_path: Path,
) -> None:
    error = LocalWriteError(tmp_path / "worker.log", OSError(28, "No space left on device"))
    notices = DiskNotices()
    assert notices.took() is None
    first = notices.refused(error)
    assert first is not None and "No space left on device" in first and "goes on" in first
    assert notices.refused(error) is None
    assert notices.error == str(error)
    assert notices.took() == "mirroring works again"
    assert notices.took() is None and notices.error is None


def test_a_scripts_own_files_at_any_depth_and_the_chiefs_artifacts_come_home() -> None:
    """A user's program writes event files where it likes under its worker folder, under any
    name; `artifacts/` is the chief's alone, like model.h5."""

    def rec(path: str) -> str:
        return f"f\t3\t7\t1.5\t{path}\0"

    nested = "workers/1/tb/train/events.out.tfevents.1.host.v2"
    odd = "workers/1/deep/er/a b=c, (d) é.txt"
    text = "".join(rec(p) for p in [nested, odd, "artifacts/model/saved_model.pb"])
    worker = parse_listing(text, [1], chief=False)
    assert [f.path for f in worker.files] == [nested, odd]
    assert dict(worker.refused) == {"artifacts/model/saved_model.pb": "not this host's to send"}
    assert append_only(nested) and not append_only(odd)
    chief = parse_listing(text.replace("workers/1/", "workers/0/"), [0], chief=True)
    assert [f.path for f in chief.files][-1] == "artifacts/model/saved_model.pb"
