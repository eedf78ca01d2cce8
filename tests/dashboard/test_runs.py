"""Finding runs and reading their JSON: bad input gives warnings, paths never leave the run."""

from __future__ import annotations

import json
import os
import shutil
import time
from pathlib import Path

import pytest

from dashboard import samplerun
from dashboard.cluster import worker_rows
from dashboard.health import disk_note, estimated_offset
from dashboard.live import RunEvents
from dashboard.runs import (
    load_run,
    load_runs,
    parse_cluster,
    read_json,
    runs_dir_from,
    safe_dir,
    safe_file,
    safe_run_dir,
    tail_lines,
)
from dashboard.samplerun import RunPlan, write_run
from runformat import SYSTEM_CPU_PERCENT, SYSTEM_CPU_WAIT_PERCENT, SYSTEM_HOST_CPU_PERCENT


@pytest.mark.parametrize(
    ("argv", "environ", "expected"),
    [
        ([], {}, "runs"),
        (["--runs", "/data/runs"], {}, "/data/runs"),
        (["--runs-dir", "elsewhere"], {"TFCLUSTER_RUNS": "/env"}, "elsewhere"),
        (["--runs=/x"], {}, "/x"),
        ([], {"TFCLUSTER_RUNS": "/env"}, "/env"),
        (["--runs"], {}, "runs"),
    ],
)
def test_runs_folder_comes_from_option_then_env_then_default(
    argv: list[str], environ: dict[str, str], expected: str
) -> None:
    assert runs_dir_from(argv, environ) == Path(expected)


@pytest.fixture
def run_dir(tmp_path: Path) -> Path:
    """A finished sample run inside tmp_path/runs, with a secret file beside the runs folder."""
    (tmp_path / "secret.txt").write_text("secret")
    return write_run(tmp_path / "runs", RunPlan(workers=2), run_id="20261128-120000-abcd")


@pytest.mark.parametrize("name", [".hidden", "x" * 200, "..\\..", "~", "-rf", "a b", "run\n"])
def test_run_names_that_are_not_plain_folders_are_refused(run_dir: Path, name: str) -> None:
    """Each is a real run folder in the runs folder: only the name rule refuses it."""
    runs = run_dir.parent
    shutil.copytree(run_dir, runs / name)
    assert safe_run_dir(runs, name) is None
    assert [run.run_id for run in load_runs(runs)] == [run_dir.name]


def test_a_run_name_with_a_nul_byte_is_refused(run_dir: Path) -> None:
    assert safe_run_dir(run_dir.parent, "run\x00") is None


@pytest.mark.parametrize("name", ["..", ".", "../runs", "/etc", "a/b", ""])
def test_run_names_that_are_paths_are_refused(run_dir: Path, name: str) -> None:
    """Each names a real folder; the name rule and the real-path check each refuse it."""
    runs = run_dir.parent
    (runs / "a" / "b").mkdir(parents=True)
    shutil.copytree(run_dir, runs / "a" / "b", dirs_exist_ok=True)
    assert (runs / name).is_dir()
    assert safe_run_dir(runs, name) is None


def test_run_folder_linked_from_outside_is_refused(run_dir: Path, tmp_path: Path) -> None:
    outside = tmp_path / "outside-run"
    outside.mkdir()
    (run_dir.parent / "20991231-000000-link").symlink_to(outside)
    assert safe_run_dir(run_dir.parent, "20991231-000000-link") is None
    assert safe_run_dir(run_dir.parent, run_dir.name) == run_dir.resolve()
    assert [run.run_id for run in load_runs(run_dir.parent)] == [run_dir.name]


@pytest.mark.parametrize(
    ("relative", "allowed"),
    [
        ("model.h5", True),
        ("workers/0/worker.log", True),
        ("../secret.txt", False),
        ("../../secret.txt", False),
        ("workers/../../secret.txt", False),
        ("/etc/passwd", False),
        ("workers", False),
        ("", False),
        ("nothing.here", False),
    ],
)
def test_files_outside_the_run_are_refused(run_dir: Path, relative: str, allowed: bool) -> None:
    assert (safe_file(run_dir, relative) is not None) is allowed


def test_links_are_judged_by_where_they_lead(run_dir: Path, tmp_path: Path) -> None:
    (run_dir / "out.log").symlink_to(tmp_path / "secret.txt")
    (run_dir / "in.log").symlink_to(run_dir / "launcher.log")
    (run_dir / "loop").symlink_to(run_dir / "loop")
    assert safe_file(run_dir, "out.log") is None
    assert safe_file(run_dir, "in.log") == (run_dir / "launcher.log").resolve()
    assert safe_file(run_dir, "loop") is None


@pytest.mark.parametrize(
    ("content", "warning"),
    [
        (b"", "not valid JSON"),
        (b'{"state": "runn', "not valid JSON"),
        (b"\xff\xfe\x00garbage", "not valid JSON"),
        (b"[1, 2]", "expected a JSON object"),
        (b'"text"', "expected a JSON object"),
        (b"null", "expected a JSON object"),
    ],
)
def test_bad_json_is_a_warning(tmp_path: Path, content: bytes, warning: str) -> None:
    path = tmp_path / "cluster.json"
    path.write_bytes(content)
    warnings: list[str] = []
    assert read_json(path, warnings) is None
    assert len(warnings) == 1
    assert warning in warnings[0]


def test_missing_json_is_quiet(tmp_path: Path) -> None:
    warnings: list[str] = []
    assert read_json(tmp_path / "absent.json", warnings) is None
    assert warnings == []


def test_fields_of_the_wrong_type_are_dropped_not_fatal() -> None:
    warnings: list[str] = []
    cluster = parse_cluster(
        {
            "state": 5,
            "created": "yesterday",
            "finished": float("nan"),
            "epochs": True,
            "hosts": [
                "not a host",
                {"index": "x", "name": 3, "addr": "gpu-a", "tf_port": 23456},
                {"index": 1, "role": "worker", "name": "gpu-b", "local": "yes"},
            ],
            "exit_codes": {"0": 0, "1": "killed", "x": 1},
            "failure": {"index": 1, "reason": None, "log_tail": "not a list"},
            "trainer_args": "--epochs 3",
            "unknown_field": {"ignored": True},
        },
        warnings,
    )
    assert cluster.state is None
    assert cluster.created is None
    assert cluster.finished is None
    assert cluster.epochs is None
    assert [(h.index, h.name, h.address) for h in cluster.hosts] == [
        (1, "gpu-a", "gpu-a:23456"),
        (1, "gpu-b", ""),
    ]
    assert cluster.exit_codes == {0: 0, 1: None}
    assert cluster.failure is not None
    assert cluster.failure.reason == "unknown reason"
    assert cluster.trainer_args == ()
    assert warnings[0] == "cluster.json: host #0 is not an object; ignored"
    for named in (
        "host #1: 'index'",
        "host #1: 'name'",
        "host #2: 'local'",
        "'state' is 5",
        "'created'",
        "'finished' is nan",
        "'epochs' is True",
        "'exit_codes.1'",
        "'exit_codes' has a key 'x'",
        "failure: 'log_tail'",
        "'trainer_args'",
    ):
        assert sum(named in w for w in warnings) == 1, named
    assert len(warnings) == 12
    assert not any("unknown_field" in w for w in warnings)


def test_hosts_that_are_not_a_list_give_a_warning() -> None:
    warnings: list[str] = []
    assert parse_cluster({"hosts": {"0": "a"}}, warnings).hosts == ()
    assert "'hosts' is not a list" in warnings[0]


def test_sample_run_reads_back_whole(run_dir: Path) -> None:
    run = load_run(run_dir)
    assert run.warnings == []
    assert run.state == "finished"
    assert not run.active
    assert run.indices == [0, 1]
    assert run.dataset == "digits"
    assert run.metrics is not None and run.metrics.test_accuracy == pytest.approx(0.967)
    assert run.workers[1].steps_total == 60
    duration = run.duration()
    assert duration is not None and duration > 0


@pytest.mark.parametrize(
    ("states", "expected"),
    [
        (["finished", "finished"], "finished"),
        (["running", "finished"], "running"),
        (["starting", "starting"], "starting"),
        (["failed", "running"], "failed"),
        ([], "unknown"),
    ],
)
def test_state_without_cluster_json_comes_from_the_workers(
    tmp_path: Path, states: list[str], expected: str
) -> None:
    run_dir = tmp_path / "20261128-000000-0000"
    for index, state in enumerate(states):
        worker = run_dir / "workers" / str(index)
        worker.mkdir(parents=True)
        (worker / "status.json").write_text(json.dumps({"state": state}))
    run_dir.mkdir(exist_ok=True)
    run = load_run(run_dir)
    assert run.state == expected
    assert any("cluster.json is missing" in w for w in run.warnings)


def test_removed_run_loads_as_a_warning(tmp_path: Path) -> None:
    run = load_run(tmp_path / "20261128-000000-gone")
    assert run.warnings == ["run 20261128-000000-gone is gone"]
    assert run.indices == []


def test_runs_are_listed_newest_first_and_odd_entries_skipped(tmp_path: Path) -> None:
    for run_id in ("20261127-235959-0001", "20261128-000001-0002", "20261128-000000-0003"):
        write_run(tmp_path, RunPlan(workers=1, steps_per_epoch=2), run_id=run_id)
    (tmp_path / "notes.txt").write_text("not a run")
    (tmp_path / ".partial").mkdir()
    names = [run.run_id for run in load_runs(tmp_path)]
    assert names == ["20261128-000001-0002", "20261128-000000-0003", "20261127-235959-0001"]
    assert load_runs(tmp_path / "absent") == []


def test_tail_reads_only_the_end_of_a_big_log(tmp_path: Path) -> None:
    log = tmp_path / "worker.log"
    with open(log, "w") as handle:
        for line in range(200_000):
            handle.write(f"line {line}\n")
    assert tail_lines(log, 3) == ["line 199997", "line 199998", "line 199999"]
    assert tail_lines(tmp_path / "absent.log") == []
    os.truncate(log, 0)
    assert tail_lines(log) == []


def test_worker_folders_linked_outside_are_not_read(run_dir: Path, tmp_path: Path) -> None:
    outside = tmp_path / "outside-worker"
    shutil.copytree(run_dir / "workers" / "1", outside)
    shutil.rmtree(run_dir / "workers" / "1")
    (run_dir / "workers" / "1").symlink_to(outside)

    run = load_run(run_dir)
    snapshot = RunEvents(run_dir).refresh(run.indices)

    assert 1 not in run.workers
    assert any("workers/1/status.json: refused" in w for w in run.warnings)
    assert 1 not in snapshot.workers
    assert safe_dir(run_dir, "workers/1/events") is None
    assert safe_dir(run_dir, "workers/0/events") is not None
    assert "progress/loss" in snapshot.workers[0]


def test_attempts_of_a_restarted_run() -> None:
    warnings: list[str] = []
    cluster = parse_cluster(
        {
            "restarts": 1,
            "attempts": [
                {"attempt": 1, "started": 1.0, "ended": 2.0, "failure": {"index": 1, "host": "b"}},
                "garbage",
                {"started": "soon", "failure": "not an object"},
            ],
        },
        warnings,
    )
    assert [(a.number, a.started, a.ended) for a in cluster.attempts] == [
        (1, 1.0, 2.0),
        (3, None, None),
    ]
    assert [a.number for a in cluster.earlier_failures] == [1]
    first = cluster.attempts[0].failure
    assert first is not None
    assert (first.index, first.host, first.reason) == (1, "b", "unknown reason")
    assert cluster.attempts[1].failure is None
    assert warnings == [
        "cluster.json: attempt #2 is not an object; ignored",
        "cluster.json attempt #3: 'started' is a string, expected a number; ignored",
        "cluster.json attempt #3: 'failure' is a string, expected an object; ignored",
    ]
    assert parse_cluster({"attempts": 3}, warnings).attempts == ()
    assert "'attempts' is not a list" in warnings[-1]


def test_the_preview_writes_a_failed_run_as_a_real_one_ends(tmp_path: Path) -> None:
    """`python -m dashboard.samplerun --state failed`: one cause, the others aborted after it
    with TensorFlow's words, every figure in range."""
    assert samplerun.main([str(tmp_path), "--state", "failed", "--workers", "16"]) == 0
    [run] = load_runs(tmp_path)
    rows = worker_rows(run, {}, time.time())

    assert [row.index for row in rows if row.cause] == [1]
    assert {row.state for row in rows if not row.cause} == {"aborted"}
    assert all("Collective ops is aborted" in (row.error or "") for row in rows if not row.cause)
    assert run.cluster is not None and run.cluster.failure is not None
    assert run.cluster.exit_codes[1] == -9 and run.cluster.exit_codes[0] == 1
    assert all(row.step is not None and 0 < row.step < run.cluster.epochs * 20 for row in rows)
    snapshot = RunEvents(run.path).refresh(run.indices, min_interval=0)
    for series in snapshot.workers.values():
        for tag in (SYSTEM_CPU_PERCENT, SYSTEM_CPU_WAIT_PERCENT):
            values = series[tag][2]
            assert len(values) and values.min() > 0 and values.max() < 400, tag
        host = series[SYSTEM_HOST_CPU_PERCENT][2]
        assert host.min() > 0 and host.max() <= 100
    assert all(
        row.cpu_percent is not None and row.cpu_percent > 0 and row.memory_mb for row in rows
    )


@pytest.mark.parametrize(
    ("raw", "shown"),
    [
        (
            {"full": True, "path": "/r", "free_mb": 0, "message": "no space left"},
            "no space left in /r (0 MB free)",
        ),
        ({"full": True}, "disk full"),
        ({"full": True, "free_mb": float("nan"), "path": 3, "message": ["x"]}, "disk full"),
        ({"full": False, "path": "/r"}, None),
        ({"full": "yes"}, None),
        ("full", None),
        (None, None),
    ],
)
def test_a_disk_note_is_read_defensively(raw: object, shown: str | None) -> None:
    note = disk_note(raw)
    assert (str(note) if note is not None else None) == shown


def test_a_clock_ahead_is_estimated_only_when_clearly_ahead() -> None:
    assert estimated_offset(1000.0 + 3600, 1000.0) == 3600
    assert estimated_offset(1001.0, 1000.0) == 0.0  # within the time a write takes
    assert estimated_offset(900.0, 1000.0) == 0.0  # behind or stale: cannot tell
    assert estimated_offset(None, 1000.0) == 0.0
