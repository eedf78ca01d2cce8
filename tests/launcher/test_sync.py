"""Mirroring by byte offset, against a real folder through LocalShell (the SSH path runs the
same listing command and byte-range reads; see test_ssh.py and benchmarks/bench_launcher.py).
"""

from __future__ import annotations

import os
from pathlib import Path

from launcher.hosts import parse_hosts
from launcher.remote import LocalShell
from launcher.sync import Mirror, parse_listing


def make_mirror(tmp_path: Path) -> tuple[Path, Path, Mirror]:
    src, dst = tmp_path / "host-run", tmp_path / "local-run"
    (src / "workers" / "1" / "events").mkdir(parents=True)
    shell = LocalShell(parse_hosts("localhost\n")[0])
    return src, dst, Mirror(shell, str(src), dst)


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


def test_listing_skips_temp_files_and_escapes() -> None:
    text = (
        "a.txt\t3\t7\t1.5\n../x\t1\t2\t1.5\n/abs\t1\t2\t1.5\n.s.json.123.tmp\t1\t2\t1.5\n"
        "bad line\nw/b\t5\t9\t1.5\n"
    )
    assert [f.path for f in parse_listing(text)] == ["a.txt", "w/b"]


def test_missing_remote_dir_is_quietly_empty(tmp_path: Path) -> None:
    _, _, mirror = make_mirror(tmp_path)
    mirror.remote_dir = str(tmp_path / "not-yet")
    assert mirror.sync() == 0
