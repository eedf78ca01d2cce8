"""Monitoring never ends training: each errno a host's disk can give the writers of status.json,
event files and the worker's log is skipped, warned about once, retried and announced when it
works again; the worker's own work names its cause. Pure logic fakes the errno; one test per
writer meets a real full file system (tmpfs, root only)."""

from __future__ import annotations

import errno
import json
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.launcher.helpers import fill_disk, small_disk
from tests.trainer.workers import read_scalars
from trainer import eventfile, guard, status
from trainer.eventfile import ScalarFile
from trainer.guard import BestEffort, SafeStream, disk_cause, failure_line
from trainer.status import StatusFile, initial_status

DISK_ERRORS = [
    pytest.param(errno.ENOSPC, "no space left on device", id="ENOSPC"),
    pytest.param(errno.EDQUOT, "disk quota exceeded", id="EDQUOT"),
    pytest.param(errno.EROFS, "read-only file system", id="EROFS"),
    pytest.param(errno.EACCES, "permission denied", id="EACCES"),
    pytest.param(errno.ENOENT, "folder vanished", id="vanished-folder"),
]


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


@pytest.mark.parametrize(("code", "cause"), DISK_ERRORS)
def test_a_failing_write_is_warned_once_retried_later_and_its_recovery_said(
    code: int, cause: str
) -> None:
    said: list[str] = []
    clock = Clock()
    writes = BestEffort("status.json", retry=10, say=said.append, clock=clock)
    broken = True
    done: list[int] = []

    def write() -> None:
        if broken:
            raise OSError(code, os.strerror(code))
        done.append(1)

    assert writes.run(write, "/r/workers/1/status.json") is False
    clock.now = 5
    assert writes.run(write) is False  # resting: not even tried
    clock.now = 11
    assert writes.run(write) is False  # tried, still failing: no second warning
    assert said == [
        f"tfcluster: cannot write status.json (/r/workers/1/status.json): {cause}; training "
        "goes on without it, trying again every 10 s"
    ]
    broken = False
    clock.now = 15
    assert writes.run(write) is False and done == []  # the retry waits its 10 s
    clock.now = 21
    assert writes.run(write) is True and done == [1]
    assert said[1] == "tfcluster: writing status.json works again after 21 s (4 write(s) skipped)"
    assert writes.run(write) is True and len(said) == 2


def test_an_error_that_is_not_an_os_error_is_a_bug_and_raises() -> None:
    writes = BestEffort("status.json", say=lambda line: None)
    with pytest.raises(KeyError):
        writes.run(lambda: {}["x"])


@pytest.fixture
def failing_status_writes(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[int]]:
    """status.json writes raise the errno at the head of the list while it is not empty."""
    errors: list[int] = []
    real = status.write_json_atomic

    def write(path: Path, data: object) -> None:
        if errors:
            raise OSError(errors[0], os.strerror(errors[0]))
        real(path, data)

    monkeypatch.setattr(status, "write_json_atomic", write)
    yield errors


@pytest.mark.parametrize(("code", "cause"), DISK_ERRORS)
def test_status_json_survives_a_disk_that_refuses_it(
    tmp_path: Path,
    failing_status_writes: list[int],
    code: int,
    cause: str,
    capsys: pytest.CaptureFixture[str],
) -> None:
    path = tmp_path / "status.json"
    st = StatusFile(path, initial_status(1, "worker", "h", 7, 3, 1.0))
    st.write_now()
    failing_status_writes.append(code)
    assert st.update(step=10) is False  # no exception: training goes on
    st.enter("evaluating")
    assert json.loads(path.read_text())["step"] == 0  # the disk kept the old file
    failing_status_writes.clear()
    st.writes.next_try = 0  # the retry is due
    assert st.update(step=20) is True
    written = json.loads(path.read_text())
    assert (written["step"], written["phase"]) == (20, "evaluating")  # nothing said is lost
    err = capsys.readouterr().err
    assert err.count("cannot write status.json") == 1 and cause in err
    assert "writing status.json works again" in err


def test_the_first_status_write_still_refuses_an_unusable_run_folder(
    tmp_path: Path, failing_status_writes: list[int]
) -> None:
    failing_status_writes.append(errno.EROFS)
    st = StatusFile(tmp_path / "status.json", {})
    with pytest.raises(OSError, match="Read-only file system"):
        st.write_now()


def test_a_shared_status_json_keeps_each_writers_fields(tmp_path: Path) -> None:
    """The wrapper and the callback inside the program write the same file."""
    path = tmp_path / "w" / "status.json"
    wrapper = StatusFile(path, initial_status(1, "worker", "h", 7, None, 1.0), shared=True)
    wrapper.write_now()
    callback = StatusFile(path, {}, shared=True)
    assert wrapper.set_if({"phase": "starting"}, state="running", phase="running", pid=8)
    callback.enter("training", epochs=3, steps_total=30)
    wrapper.beat(system={"cpu_percent": 50.0})
    callback.update(step=10, loss=0.5)
    assert not wrapper.set_if({"phase": "starting"}, phase="running")  # too late: training
    written = json.loads(path.read_text())
    assert written["pid"] == 8 and written["index"] == 1 and written["host"] == "h"
    assert (written["phase"], written["step"], written["loss"]) == ("training", 10, 0.5)
    assert written["system"] == {"cpu_percent": 50.0}
    wrapper.enter("ended", state="finished", exit_code=0)
    ended = json.loads(path.read_text())
    assert (ended["state"], ended["phase"], ended["step"], ended["exit_code"]) == (
        "finished", "ended", 10, 0
    )  # fmt: skip
    assert [p.name for p in path.parent.iterdir()] == ["status.json"]


def test_a_heartbeat_of_a_shared_file_keeps_training_silence(tmp_path: Path) -> None:
    path = tmp_path / "status.json"
    wrapper = StatusFile(path, initial_status(0, "chief", "h", 7, None, 1.0), shared=True)
    wrapper.write_now()
    StatusFile(path, {}, shared=True).enter("training", step=0)
    before = json.loads(path.read_text())["updated"]
    wrapper.beat(system={"cpu_percent": 1.0})
    after = json.loads(path.read_text())
    assert after["updated"] == before and after["system"] == {"cpu_percent": 1.0}


# --- event files --------------------------------------------------------------------------------


@pytest.mark.parametrize(("code", "cause"), DISK_ERRORS[:3])
def test_an_event_file_never_keeps_half_a_record(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, code: int, cause: str
) -> None:
    events = ScalarFile(tmp_path / "events")
    assert events.write(1, {"system/cpu_percent": 10.0})
    real_write = os.write

    def half_then_fail(fd: int, data: bytes) -> int:
        real_write(fd, data[: len(data) // 2])
        raise OSError(code, os.strerror(code))

    monkeypatch.setattr(eventfile.os, "write", half_then_fail)
    assert events.write(2, {"system/cpu_percent": 20.0}) is False
    monkeypatch.setattr(eventfile.os, "write", real_write)
    events.writes.next_try = 0
    assert events.write(3, {"system/cpu_percent": 30.0})
    assert read_scalars(tmp_path / "events") == {"system/cpu_percent": [(1, 10.0), (3, 30.0)]}


def test_an_event_folder_that_vanished_is_made_again(tmp_path: Path) -> None:
    events = ScalarFile(tmp_path / "w" / "events")
    assert events.write(1, {"a": 1.0})
    (events.path or Path()).unlink()
    (tmp_path / "w" / "events").rmdir()
    assert events.write(2, {"a": 2.0})
    assert read_scalars(tmp_path / "w" / "events") == {"a": [(2, 2.0)]}


# --- the worker's log ------------------------------------------------------------------------


def test_the_log_keeps_what_a_full_disk_refused_and_says_what_was_lost(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    log = tmp_path / "worker.log"
    fd = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_APPEND)
    stream = SafeStream(fd)
    real_write = os.write
    monkeypatch.setattr(guard, "LOG_BACKLOG_BYTES", 10)

    def full(fd: int, data: bytes) -> int:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    stream.write("before\n")
    monkeypatch.setattr(guard.os, "write", full)
    stream.write("kept line\n")
    print("lost line", file=stream)  # type: ignore[arg-type]
    stream.flush()
    monkeypatch.setattr(guard.os, "write", real_write)
    stream.write("after\n")
    os.close(fd)
    assert log.read_text() == (
        "before\nkept line\n\ntfcluster: 10 bytes of output lost here (no space left on device)"
        "\nafter\n"
    )


# --- the worker's own work ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("error", "writing", "line"),
    [
        (
            OSError(errno.ENOSPC, "No space left on device"),
            Path("/r/model.h5"),
            "no space left on device writing /r/model.h5",
        ),
        (
            OSError("Unable to synchronously create file (file write failed: errno = 122)"),
            Path("/r/model.h5"),
            "disk quota exceeded writing /r/model.h5",
        ),
        (
            RuntimeError("/r/backup/chief/ckpt-1.data; No space left on device"),
            None,
            "no space left on device: fallback",
        ),
        (
            OSError(errno.EACCES, "Permission denied"),
            Path("/r/m.h5"),
            "permission denied writing /r/m.h5",
        ),
        (FileNotFoundError(errno.ENOENT, "x"), None, "fallback"),  # not a write: the user's
        (ValueError("bad shape"), Path("/r/model.h5"), "fallback"),
    ],
)
def test_a_failed_piece_of_work_names_the_disk_first(
    error: BaseException, writing: Path | None, line: str
) -> None:
    assert failure_line(error, writing, "fallback") == line


def test_a_cause_is_found_where_the_error_came_from() -> None:
    try:
        try:
            raise OSError(errno.EROFS, "Read-only file system")
        except OSError as inner:
            raise RuntimeError("saving failed") from inner
    except RuntimeError as outer:
        assert disk_cause(outer) == "read-only file system"


# --- a real full disk -------------------------------------------------------------------------


def test_every_monitoring_writer_on_a_real_full_disk(
    tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    """status.json, an event file and the log on a tmpfs filled to its last byte: nothing
    raises, and each works again once room returns."""
    with small_disk(tmp_path / "disk", "256k") as disk:
        st = StatusFile(
            disk / "workers" / "1" / "status.json", initial_status(1, "w", "h", 7, 3, 1)
        )
        st.write_now()
        events = ScalarFile(disk / "workers" / "1" / "events")
        assert events.write(1, {"a": 1.0})
        log_fd = os.open(disk / "worker.log", os.O_WRONLY | os.O_CREAT | os.O_APPEND)
        log = SafeStream(log_fd)
        filler = fill_disk(disk)
        assert st.update(step=5, system={"pad": "x" * 4096}) is False
        assert events.write(2, {"a": 2.0, **{f"pad/{i}": 0.0 for i in range(400)}}) is False
        log.write("y" * 8192)
        filler.unlink()
        st.writes.next_try = events.writes.next_try = 0
        assert st.update(step=6) and events.write(3, {"a": 3.0})
        log.write("room again\n")
        os.close(log_fd)
        assert json.loads(st.path.read_text())["step"] == 6
        assert read_scalars(disk / "workers" / "1" / "events")["a"] == [(1, 1.0), (3, 3.0)]
        assert (disk / "worker.log").read_text().endswith("room again\n")
    err = capfd.readouterr().err
    assert "cannot write status.json" in err and "no space left on device" in err
    assert "writing status.json works again" in err and "writing events in events/ works" in err
