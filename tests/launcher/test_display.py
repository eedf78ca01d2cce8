"""The launcher's terminal output: progress text, log tailing, live block and plain fallback."""

from __future__ import annotations

import io
from pathlib import Path

from launcher.display import LogTail, Output, progress_text
from tests.launcher.helpers import fill_disk, small_disk


def test_progress_text() -> None:
    st = {
        "state": "running",
        "epoch": 1,
        "epochs": 3,
        "step": 40,
        "steps_total": 120,
        "loss": 0.53123,
        "accuracy": 0.87,
    }
    assert progress_text(st) == "running  epoch 1/3  step 40/120  loss 0.5312  acc 0.870"
    assert "waiting" in progress_text(None)
    assert "loss -" in progress_text({"state": "starting"})


def test_log_tail_returns_complete_lines_only(tmp_path: Path) -> None:
    log = tmp_path / "worker.log"
    tail = LogTail(log)
    assert tail.new_lines() == []
    log.write_bytes(b"one\ntw")
    assert tail.new_lines() == ["one"]
    with open(log, "ab") as f:
        f.write(b"o\nthree")
    assert tail.new_lines() == ["two"]
    assert tail.flush() == ["three"]


def test_plain_output_goes_to_the_log_too(tmp_path: Path) -> None:
    stream = io.StringIO()
    out = Output(stream, live=False, plain_every=0)
    out.open_log(tmp_path / "launcher.log")
    out.line("[0 a] hello")
    out.progress([("[0 a]", "running step 1")])
    out.progress([("[0 a]", "running step 1")])  # unchanged: not repeated
    out.close()
    assert stream.getvalue() == "[0 a] hello\n[0 a] running step 1\n"
    assert (tmp_path / "launcher.log").read_text() == stream.getvalue()


def test_live_block_is_redrawn_below_the_log() -> None:
    stream = io.StringIO()
    out = Output(stream, live=True)
    out.progress([("[0 a]", "step 1"), ("[1 b]", "step 1")])
    out.line("[1 b] a log line")
    text = stream.getvalue()
    # The block is erased (cursor up 2 lines, clear) before the log line, then drawn again.
    assert text == (
        "[0 a] step 1\n[1 b] step 1\n\x1b[2F\x1b[J[1 b] a log line\n[0 a] step 1\n[1 b] step 1\n"
    )


def test_a_full_disk_does_not_stop_the_launcher_and_the_log_catches_up(tmp_path: Path) -> None:
    with small_disk(tmp_path / "small", "16k") as disk:
        stream = io.StringIO()
        out = Output(stream, live=False)
        out.open_log(disk / "launcher.log")
        out.line("before")
        filler = fill_disk(disk)
        full = [f"while full {i} " + "x" * 3000 for i in range(3)]  # more than the last page
        out.lines(full)
        assert stream.getvalue().count("WARNING: cannot write") == 1, stream.getvalue()
        assert "No space left on device" in stream.getvalue()
        filler.unlink()
        out.line("after")
        out.close()
        log = (disk / "launcher.log").read_text()
        assert log.splitlines() == ["before", *full, "after"]
        assert "is written again" in stream.getvalue()
