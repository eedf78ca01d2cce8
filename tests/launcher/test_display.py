"""The launcher's terminal output: progress text, log tailing, the table (live and plain),
what each verbosity prints, TensorFlow's noise kept out, and the failure report."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import pytest
from rich.console import Console

from launcher.display import LogTail, Output, WorkerRow, progress_text, worker_table
from launcher.failure import Failure
from launcher.options import Verbosity
from launcher.summary import Peer, failure_report
from runformat.noise import is_keras_progress, is_tf_log, meaningful
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
    more = {**st, "phase": "training", "examples_per_sec": 812.4, "system": {"cpu_percent": 97}}
    assert progress_text(more).startswith("training  epoch 1/3")
    assert progress_text(more).endswith("acc 0.870  812 ex/s  cpu 97%")
    program = {"state": "running", "phase": "running", "epoch": None, "step": None}
    assert progress_text({**program, "system": {"cpu_percent": 95}}) == "running  cpu 95%"
    with_callback = {**program, "phase": "training", "epoch": None, "step": 7}
    assert progress_text(with_callback).startswith("training  epoch 0/?  step 7/?")


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


def status(step: int, total: int = 100) -> dict[str, Any]:
    return {
        "state": "running",
        "phase": "training",
        "epoch": step // 10,
        "epochs": 10,
        "step": step,
        "steps_total": total,
        "loss": 1.0 / (step + 1),
        "accuracy": 0.5,
    }


NOISE = [
    "WARNING: All log messages before absl::InitializeLog() is called are written to STDERR",
    "I0000 00:00:1796016963.009184   15380 cudart_stub.cc:31] Could not find cuda drivers on "
    "your machine, GPU will not be used.",
    "E0000 00:00:1796016978.206989   15380 cuda_platform.cc:52] failed call to cuInit: INTERNAL:"
    " CUDA error: Failed call to cuInit: UNKNOWN ERROR (303)",
    "2026-11-30 05:36:03.123456: I tensorflow/core/util/port.cc:153] oneDNN custom operations "
    "are on. You may see slightly different numerical results.",
    "WARNING:absl:You are saving your model as an HDF5 file via `model.save()`.",
]
KERAS = ["Epoch 1/3", "6/6 - 8s - loss: 2.0714 - accuracy: 0.4115 - 8s/epoch - 1s/step"]


def test_tensorflow_and_keras_lines_are_told_apart() -> None:
    assert all(is_tf_log(line) for line in NOISE)
    assert all(is_keras_progress(line) for line in KERAS)
    mine = "trainer: worker 1 of 2 (worker) on CPU; digits: 1347 train / 450 test"
    crash = "tensorflow.python.framework.errors_impl.UnavailableError: Collective ops is aborted"
    for line in (mine, crash, "Traceback (most recent call last):"):
        assert not is_tf_log(line) and not is_keras_progress(line)
    assert meaningful([mine, *NOISE, *KERAS, "", crash]) == [mine, crash]


def test_plain_lines_come_every_tenth_of_progress_and_the_log_gets_everything(
    tmp_path: Path,
) -> None:
    now = [0.0]
    stream = io.StringIO()
    out = Output(stream, live=False, clock=lambda: now[0])
    out.open_log(tmp_path / "launcher.log")
    out.info("run x: 2 worker(s)")
    out.worker_output(1, "[1 b]", [*NOISE, *KERAS, "trainer: worker 1 of 2"])
    for step in range(101):  # 100 steps in 500 s: 10% every 50 s
        now[0] = step * 5.0
        out.table([WorkerRow(0, "a", status(step)), WorkerRow(1, "b", status(step))])
    out.line("finished")
    out.close()
    printed = stream.getvalue().splitlines()
    assert printed[0] == "run x: 2 worker(s)" and printed[-1] == "finished"
    progress = printed[1:-1]
    assert len(progress) == 20, progress
    assert progress[0].startswith("[0 a] training  epoch 1/10  step 10/100")
    assert progress[-1].startswith("[1 b] training  epoch 10/10  step 100/100")
    log = (tmp_path / "launcher.log").read_text()
    assert "[1 b] Epoch 1/3" in log and f"[1 b] {NOISE[2]}" in log
    assert log.splitlines()[-1] == "finished" and all(line in log for line in printed)


def test_a_short_run_prints_a_line_per_worker_at_most_every_30_s_and_its_last() -> None:
    now = [0.0]
    stream = io.StringIO()
    out = Output(stream, live=False, clock=lambda: now[0])
    for step in range(101):  # 100 steps in 50 s
        now[0] = step * 0.5
        out.table([WorkerRow(0, "a", status(step)), WorkerRow(1, "b", None)])
    assert [line[:30] for line in stream.getvalue().splitlines()] == [
        "[0 a] training  epoch 6/10  st"
    ]
    # Once it finished, its last line comes at once, whatever the gap.
    now[0] += 1.0
    out.table([WorkerRow(0, "a", {**status(100), "state": "finished", "phase": "ended"})])
    assert stream.getvalue().splitlines()[-1].startswith("[0 a] ended  epoch 10/10")


@pytest.mark.parametrize(
    ("verbosity", "shown"),
    [
        (Verbosity.QUIET, ["started training", "FAILED"]),
        (Verbosity.NORMAL, ["header", "started training", "[0 a] training", "FAILED"]),
        (
            Verbosity.VERBOSE,
            [
                "header",
                "[0 a] Epoch 1/3",
                "[1 b] trainer: hi",
                "[1 b] " + NOISE[0],
                "started training",
                "[0 a] training",
                "FAILED",
            ],
        ),
    ],
)
def test_what_each_verbosity_prints(verbosity: Verbosity, shown: list[str]) -> None:
    stream = io.StringIO()
    out = Output(stream, live=False, verbosity=verbosity, plain_gap=0, clock=lambda: 99.0)
    out.info("header")
    out.worker_output(0, "[0 a]", ["Epoch 1/3"])
    out.worker_output(1, "[1 b]", ["Epoch 1/3", "trainer: hi", NOISE[0]])
    out.line("started training")
    out.table([WorkerRow(0, "a", status(50))])
    out.line("FAILED")
    assert [line.split("  ")[0] for line in stream.getvalue().splitlines()] == shown


def test_the_live_table_is_redrawn_in_place_and_lines_print_above_it() -> None:
    stream = io.StringIO()
    out = Output(stream, live=True)
    out.console.width = 100
    out.table([WorkerRow(0, "a", status(10)), WorkerRow(1, "b", status(10))])
    out.line("started training: worker 0 (a), worker 1 (b)")
    out.table([WorkerRow(0, "a", status(20)), WorkerRow(1, "b", status(20))])
    out.close()
    text = stream.getvalue()
    assert text.count("phase") >= 3  # the first frame, again after the line, the update
    assert "\x1b[1A" in text and "\x1b[2K" in text  # cursor up, erase line: drawn in place
    assert text.index("started training") < text.rindex("20/100")


def test_narrow_terminals_drop_columns_least_needed_first() -> None:
    rows = [WorkerRow(0, "localhost", {**status(10), "system": {"cpu_percent": 90.0}})]

    def header(width: int) -> str:
        console = Console(width=width, no_color=True)
        with console.capture() as cap:
            console.print(worker_table(rows, width))
        return cap.get().splitlines()[0]

    assert "cpu" in header(120) and "ex/s" in header(120)
    narrow = header(60)
    assert "cpu" not in narrow and "phase" in narrow and "epoch" in narrow and "step" in narrow


def test_failure_report_names_the_cause_first_then_one_line_per_aborted_peer() -> None:
    failure = Failure(1, "gpu-b", "killed by SIGKILL", [])
    log = ["trainer: worker 1 of 2 (worker) on CPU", *NOISE, "Epoch 3/200", *KERAS]
    st = {"state": "running", "epoch": 2, "epochs": 200, "step": 130}
    peers = [
        Peer(
            0,
            "gpu-a",
            1,
            {
                "state": "failed",
                "error": "UnavailableError: Collective ops is "
                "aborted by: Socket closed\nAdditional GRPC error information",
            },
        ),
        Peer(2, "gpu-c", -15, {"state": "running"}),
        Peer(3, "gpu-d", None, {"state": "failed", "error": "aborted too"}),
        Peer(4, "gpu-e", None, None),
        Peer(5, "gpu-f", 0, {"state": "finished"}),
    ]
    lines = failure_report(failure, st, log, peers)
    assert lines[0] == "FAILED: worker 1 (gpu-b) killed by SIGKILL"
    assert lines[1] == "  error: none recorded in its status.json at epoch 2/200, step 130"
    assert lines[2].startswith("  last lines of workers/1/worker.log")
    assert lines[3] == "    trainer: worker 1 of 2 (worker) on CPU"
    assert lines[4].startswith("  worker 0 (gpu-a) aborted (exited with code 1): Unavailable")
    assert "\n" not in lines[4]
    assert lines[5] == "  worker 2 (gpu-c) stopped by the launcher (killed by SIGTERM)"
    assert lines[6:] == [
        "  worker 3 (gpu-d) aborted: aborted too",
        "  worker 4 (gpu-e) stopped by the launcher",
    ]


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
