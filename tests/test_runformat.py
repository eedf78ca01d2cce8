"""The run format: lenient loading of hostile files, the doc against the code, and the contract
that a real `fab train` and the sample writer both produce runs the dashboard reads whole."""

from __future__ import annotations

import json
import os
import re
import time
from pathlib import Path
from typing import Any

import pytest

import runformat
from dashboard.live import RunEvents
from dashboard.runs import Run, load_run
from dashboard.samplerun import RunPlan, write_run
from runformat import (
    MAX_CLUSTER_BYTES,
    MAX_STATUS_BYTES,
    MAX_WORKERS,
    Attempt,
    ClusterRecord,
    Failure,
    HostEntry,
    MetricsRecord,
    Program,
    StatusRecord,
    SystemSample,
    load_cluster,
    load_status,
    record_keys,
)

REPO = Path(__file__).resolve().parents[1]
DOC = REPO / "docs" / "run-format.md"


# --- lenient loading ---------------------------------------------------------------------------


def _deep(depth: int) -> bytes:
    return b'{"a": ' + b"[" * depth + b"]" * depth + b"}"


@pytest.mark.parametrize(
    ("content", "warning"),
    [
        pytest.param(b"", "status.json: not valid JSON (empty", id="empty"),
        pytest.param(b'{"state": "runn', "status.json: not valid JSON", id="half-written"),
        pytest.param(b"\xff\xfe garbage", "status.json: not valid JSON", id="not-utf8"),
        pytest.param(b"[1, 2]", "status.json: expected a JSON object, found a list", id="list"),
        pytest.param(b"null", "status.json: expected a JSON object, found null", id="null"),
        pytest.param(b'"text"', "status.json: expected a JSON object, found a string", id="str"),
        pytest.param(_deep(100_000), "status.json: nested too deeply", id="deep"),
        pytest.param(
            b" " * (MAX_STATUS_BYTES + 1) + b"{}", "status.json: larger than 1 MB", id="huge"
        ),
    ],
)
def test_a_hostile_file_is_one_warning_and_no_record(
    tmp_path: Path, content: bytes, warning: str
) -> None:
    path = tmp_path / "status.json"
    path.write_bytes(content)
    record, warnings = load_status(path, 0)
    assert record is None
    assert len(warnings) == 1 and warnings[0].startswith(warning), warnings
    assert "\n" not in warnings[0]


@pytest.mark.parametrize(
    ("field", "value", "expected"),
    [
        pytest.param("step", "12", "'step' is a string, expected an integer", id="str-for-int"),
        pytest.param("step", True, "'step' is True, expected an integer", id="bool-for-int"),
        pytest.param("step", 1.5, "'step' is 1.5, expected an integer", id="fraction"),
        pytest.param("loss", "NaN", "'loss' is a string, expected a number", id="str-for-float"),
        pytest.param("loss", float("nan"), "'loss' is nan, expected a finite number", id="nan"),
        pytest.param("loss", float("inf"), "'loss' is inf, expected a finite number", id="inf"),
        pytest.param("state", 3, "'state' is 3, expected a string", id="int-for-str"),
        pytest.param("phase", ["x"], "'phase' is a list, expected a string", id="list-for-str"),
        pytest.param("system", 5, "'system' is 5, expected an object", id="int-for-object"),
        pytest.param(
            "system",
            {"gpu_util_percent": "lots"},
            "system: 'gpu_util_percent' is a string, expected a list of numbers or null",
            id="nested",
        ),
    ],
)
def test_a_field_of_the_wrong_type_is_a_warning_and_missing(
    tmp_path: Path, field: str, value: object, expected: str
) -> None:
    path = tmp_path / "status.json"
    path.write_text(json.dumps({"state": "running", "step": 4, field: value}))
    record, warnings = load_status(path, 2)
    assert record is not None and record.index == 2
    assert len(warnings) == 1 and warnings[0].startswith("status.json")
    assert warnings[0].endswith(f"{expected}; ignored"), warnings
    assert record.step == (4 if field != "step" else None)
    if isinstance(value, dict):
        assert record.system == SystemSample()
    else:
        assert getattr(record, field) is None


def test_missing_and_unknown_fields_are_quiet(tmp_path: Path) -> None:
    path = tmp_path / "status.json"
    path.write_text(json.dumps({"state": "running", "from_a_newer_trainer": {"x": 1}}))
    record, warnings = load_status(path, 0)
    assert warnings == []
    assert record == StatusRecord(index=0, state="running")
    assert load_status(tmp_path / "absent.json", 0) == (None, [])


def test_a_cluster_json_may_name_at_most_the_worker_cap(tmp_path: Path) -> None:
    path = tmp_path / "cluster.json"
    hosts = [{"index": i, "name": f"h{i}"} for i in range(MAX_WORKERS + 5)]
    hosts.append({"index": 10**9, "name": "far"})
    path.write_text(json.dumps({"hosts": hosts, "exit_codes": {str(10**9): 0, "1": 0}}))
    record, warnings = load_cluster(path)
    assert record is not None and len(record.hosts) == MAX_WORKERS
    assert record.exit_codes == {1: 0}
    assert warnings[0] == f"cluster.json: {MAX_WORKERS + 6} hosts, more than 1024; the rest ignored"
    assert any("'exit_codes' has a key '1000000000'" in w for w in warnings)
    assert len(warnings) == 2


def test_a_cluster_json_beyond_its_cap_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "cluster.json"
    path.write_bytes(b'{"pad": "' + b"x" * MAX_CLUSTER_BYTES + b'"}')
    assert load_cluster(path) == (None, ["cluster.json: larger than 4 MB; ignored"])


def test_records_write_what_they_read() -> None:
    failure = Failure(index=1, host="b", reason="killed by SIGKILL", log_tail=("x",))
    cluster = ClusterRecord(
        run_id="20261130-050000-abcd",
        created=1.0,
        state="failed",
        hosts=(HostEntry(0, "chief", "a", local=True, line="localhost"),),
        program=Program("script", "train.py", "/home/me/project"),
        trainer_args=("--epochs", "2"),
        exit_codes={0: 0, 1: None},
        failure=failure,
        attempts=(Attempt(1, 1.0, 2.0, failure),),
        env=("TOKEN",),
    )
    status = StatusRecord(
        index=1, state="running", phase="training", system=SystemSample(gpu_util_percent=(5.0,))
    )
    metrics = MetricsRecord(test_accuracy=0.9, workers=2)
    for record, parse in (
        (cluster, runformat.cluster_from_dict),
        (metrics, runformat.metrics_from_dict),
        (status, lambda d, w: runformat.status_from_dict(1, d, w)),
    ):
        warnings: list[str] = []
        data = json.loads(json.dumps(record.to_dict()))
        assert parse(data, warnings) == record
        assert warnings == []


@pytest.mark.parametrize(
    ("raw", "program", "warning"),
    [
        pytest.param(None, Program(), None, id="absent-is-the-trainer"),
        pytest.param({"kind": "trainer"}, Program(), None, id="trainer"),
        pytest.param(
            {"kind": "script", "script": "a/t.py", "folder": "/p"},
            Program("script", "a/t.py", "/p"),
            None,
            id="script",
        ),
        pytest.param(
            {"kind": "docker"},
            Program(),
            "cluster.json program: 'kind' is 'docker', expected trainer or script; ignored",
            id="unknown-kind",
        ),
        pytest.param(
            {"kind": "script"},
            Program(),
            "cluster.json program: kind 'script' without 'script' (the file it ran); ignored",
            id="script-without-file",
        ),
        pytest.param(
            {"kind": "script", "script": 3},
            Program(),
            "cluster.json program: 'script' is 3, expected a string; ignored",
            id="script-not-text",
        ),
        pytest.param(
            "train.py",
            Program(),
            "cluster.json: 'program' is a string, expected an object; ignored",
            id="not-an-object",
        ),
    ],
)
def test_the_program_of_a_run(raw: object, program: Program, warning: str | None) -> None:
    warnings: list[str] = []
    data = {} if raw is None else {"program": raw}
    assert runformat.cluster_from_dict(data, warnings).program == program
    assert warnings == ([warning] if warning else [])


def test_the_worker_environment_names_its_folders() -> None:
    env = runformat.worker_environment("/r/runs/x", 1, 2)
    assert env == {
        "TFCLUSTER_RUN_DIR": "/r/runs/x",
        "TFCLUSTER_WORKER_DIR": "/r/runs/x/workers/1",
        "TFCLUSTER_BACKUP_DIR": "/r/runs/x/backup",
        "TFCLUSTER_ARTIFACTS_DIR": "/r/runs/x/artifacts",
        "TFCLUSTER_WORKER_INDEX": "1",
        "TFCLUSTER_NUM_WORKERS": "2",
    }
    assert set(env) == set(runformat.WORKER_ENV_NAMES)
    assert runformat.with_worker_environment({}, "/r", 0, 1)["TF_USE_LEGACY_KERAS"] == "1"
    kept = runformat.with_worker_environment({"TF_USE_LEGACY_KERAS": "0"}, "/r", 0, 1)
    assert kept["TF_USE_LEGACY_KERAS"] == "0"


def test_run_ids_sort_by_the_local_clock() -> None:
    earlier = runformat.new_run_id(1_800_000_000.0)
    later = runformat.new_run_id(1_800_000_001.0)
    assert runformat.RUN_ID_PATTERN.match(earlier) and earlier[:15] < later[:15]
    assert earlier[:15] == time.strftime("%Y%m%d-%H%M%S", time.localtime(1_800_000_000.0))
    assert runformat.run_id_time(earlier) == 1_800_000_000.0
    assert runformat.run_id_time("not-a-run") is None


def test_atomic_writes_leave_no_temp_file_and_keep_the_umask(tmp_path: Path) -> None:
    path = tmp_path / "deeper" / "status.json"
    runformat.write_json_atomic(path, {"step": 1})
    runformat.write_bytes_atomic(tmp_path / "model.h5", b"\0" * 10, mode=0o600)
    assert json.loads(path.read_text()) == {"step": 1}
    assert [p.name for p in path.parent.iterdir()] == ["status.json"]
    umask = os.umask(0)
    os.umask(umask)
    assert path.stat().st_mode & 0o777 == 0o666 & ~umask
    assert (tmp_path / "model.h5").stat().st_mode & 0o777 == 0o600


def test_phase_silence_bounds() -> None:
    bound = runformat.phase_silence_bound
    assert bound("training", stall_timeout=300, start_timeout=120) == 300
    assert bound("connecting", 300, 120) == bound("starting", 300, 120) == 120
    assert {bound(p, 300, 120) for p in ("loading_data", "evaluating", "saving")} == {600.0}
    assert bound("ended", 300, 120) is None and bound(None, 300, 120) is None
    assert bound("running", 300, 120) is None
    assert set(runformat.PHASES) == {
        "starting", "loading_data", "connecting", "running", "training", "evaluating", "saving",
        "ended",
    }  # fmt: skip


# --- docs/run-format.md against the module -----------------------------------------------------


def _section(title: str) -> str:
    text = DOC.read_text()
    start = text.index(f"## {title}")
    end = text.find("\n## ", start + 1)
    return text[start : end if end != -1 else len(text)]


def _json_block(title: str) -> tuple[dict[str, Any], str]:
    """The first ```json block of a section, comments stripped, and the raw block."""
    block = re.search(r"```json\n(.*?)```", _section(title), re.S)
    assert block is not None, title
    raw = block.group(1)
    return json.loads(re.sub(r"//[^\n]*", "", raw)), raw


def _comment_values(raw: str, key: str) -> set[str]:
    """`"key": ...  // a | b | c` -> {a, b, c}."""
    match = re.search(rf'"{key}":[^\n]*//\s*([a-z_ |]+)', raw)
    assert match is not None, key
    return {v.strip() for v in match.group(1).split("|")}


def test_doc_names_every_field_of_cluster_json() -> None:
    data, raw = _json_block("cluster.json (launcher)")
    slurm_section = _section("Slurm runs (`scheduler=slurm`)")
    slurm_block = re.search(r"```json\n(.*?)```", slurm_section, re.S)
    assert slurm_block is not None
    slurm = json.loads("{" + re.sub(r"//[^\n]*", "", slurm_block.group(1)) + "}")
    assert set(data) | set(slurm) == set(record_keys(ClusterRecord))
    # Fields the example leaves out (only Slurm runs have them, or only some failures) are
    # named in the prose: the Slurm section's, or the launcher section's own.
    prose = slurm_section + _section("cluster.json (launcher)")
    named = set(re.findall(r"`([a-z_]+)`", prose))
    hosts = set().union(*(set(h) for h in data["hosts"]))
    for record, example in ((HostEntry, hosts), (Failure, set(data["failure"]))):
        assert example <= set(record_keys(record)), record
        assert set(record_keys(record)) - example <= named, record
    assert set(data["attempts"][0]) == set(record_keys(Attempt))
    assert set(record_keys(Program)) <= set(re.findall(r'"([a-z_]+)":', raw.split('"program"')[1]))
    assert _comment_values(raw, "state") == set(runformat.RUN_STATES)


def test_doc_names_every_field_of_status_json() -> None:
    data, raw = _json_block("workers/<index>/status.json (trainer)")
    assert set(data) == set(record_keys(StatusRecord))
    assert set(data["system"]) == set(record_keys(SystemSample))
    assert _comment_values(raw, "state") == set(runformat.WORKER_STATES)
    assert _comment_values(raw, "phase") == set(runformat.PHASES)
    table = _section("workers/<index>/status.json (trainer)")
    rows = re.findall(r"^\| `([a-z_]+)` \|[^|]*\| ([^|]+) \|$", table, re.M)
    bounds = {phase: bound.strip() for phase, bound in rows}
    assert set(bounds) == set(runformat.PHASES)
    for phase, text in bounds.items():
        limit = runformat.phase_silence_bound(phase, stall_timeout=-1.0, start_timeout=-2.0)
        named = {-1.0: "--stall-timeout", -2.0: "--start-timeout", None: "no bound"}
        expected = named.get(limit) or f"{limit or 0:.0f} s"
        assert expected in text, (phase, text)


def test_doc_names_every_field_of_metrics_json() -> None:
    data, _ = _json_block("metrics.json (chief)")
    assert set(data) == set(record_keys(MetricsRecord))


def test_doc_names_every_event_tag() -> None:
    section = _section("Event tags (every worker, in workers/<index>/events/)")
    documented = set(re.findall(r"`((?:progress|epoch|system)/[a-z_/<>]+)`", section))
    code = {*runformat.PROGRESS_TAGS, *runformat.EPOCH_TAGS, *runformat.SYSTEM_TAGS}
    code |= set(runformat.SYSTEM_OPTIONAL_TAGS)
    code |= {runformat.gpu_tag(base, 0).replace("/0", "/<i>") for base in runformat.GPU_TAG_BASES}
    assert documented == code
    assert all(f"`{tag}`" in section for tag in runformat.KERAS_TAGS)
    assert all(f"tensorboard/{split}" in section for split in runformat.TENSORBOARD_SPLITS)


def test_doc_names_every_variable_of_the_workers_environment() -> None:
    section = _section("The worker's environment (a user's own program)")
    table = set(re.findall(r"^\| `([A-Z_]+)` \|", section, re.M))
    assert table == {
        *runformat.WORKER_ENV_NAMES,
        runformat.TF_CONFIG_ENV,
        runformat.LEGACY_KERAS_ENV,
    }
    for name, value in runformat.worker_environment("$TFCLUSTER_RUN_DIR", 0, 1).items():
        if "/" in value:
            assert value.replace("/0", "/<index>") in section, name


def test_doc_names_every_file_and_limit() -> None:
    text = DOC.read_text()
    layout = re.search(r"```\nruns/<run-id>/(.*?)```", text, re.S)
    assert layout is not None
    for name in (
        runformat.CLUSTER_JSON,
        runformat.LAUNCHER_LOG,
        runformat.METRICS_JSON,
        runformat.MODEL_FILE,
        f"{runformat.BACKUP_DIR}/",
        f"{runformat.ARTIFACTS_DIR}/",
        f"{runformat.TENSORBOARD_DIR}/",
        runformat.status_rel(0).replace("0", "<index>"),
        runformat.worker_log_rel(0).replace("0", "<index>"),
        runformat.events_rel(0).replace("0", "<index>") + "/",
        f"workers/<index>/{runformat.PGID_FILE}",
        f"workers/<index>/{runformat.EXIT_CODE_FILE}",
        f"workers/<index>/{runformat.EXIT_DISK_FILE}",
    ):
        assert name in layout.group(1), name
    limits = dict(re.findall(r"^\| ([a-z. ]+) \| ([0-9]+(?: MB)?) \|$", text, re.M))
    assert limits == {
        "cluster.json size": f"{runformat.MAX_CLUSTER_BYTES >> 20} MB",
        "status.json size": f"{runformat.MAX_STATUS_BYTES >> 20} MB",
        "metrics.json size": f"{runformat.MAX_METRICS_BYTES >> 20} MB",
        "hosts in cluster.json": str(runformat.MAX_WORKERS),
    }
    assert "local clock" in _section("Writing and reading")


# --- the contract: what the page reads ---------------------------------------------------------

# What the dashboard shows of each file; every one must be there in a finished run.
PAGE_CLUSTER = ("run_id", "created", "finished", "state", "dataset", "epochs", "exit_codes")
PAGE_HOST = ("index", "role", "name", "addr", "tf_port", "line", "run_dir")
PAGE_STATUS = (
    "role", "host", "pid", "state", "phase", "phase_since", "epoch", "epochs", "step",
    "steps_total", "loss", "accuracy", "examples_per_sec", "started", "updated", "system",
)  # fmt: skip
PAGE_SYSTEM = ("time", "cpu_percent", "memory_mb", "host_cpu_percent", "host_memory_percent")
PAGE_METRICS = tuple(record_keys(MetricsRecord))


def check_the_page_reads_it_whole(run_dir: Path, workers: int, validation: bool) -> Run:
    """The dashboard's loader reads the run with no warning, and every field it shows is set.

    Checked on the sample writer's runs below and on a real two-worker `fab train`
    (tests/launcher/test_train_local.py), so that neither can drift from the other."""
    run = load_run(run_dir)
    assert run.warnings == []
    assert run.state == "finished" and run.indices == list(range(workers))
    assert run.cluster is not None and run.metrics is not None
    missing = [f"cluster.json {f}" for f in PAGE_CLUSTER if getattr(run.cluster, f) in (None, {})]
    assert len(run.cluster.hosts) == workers
    for host in run.cluster.hosts:
        missing += [f"host {host.index} {f}" for f in PAGE_HOST if getattr(host, f) is None]
    for index in range(workers):
        status = run.workers[index]
        missing += [f"worker {index} {f}" for f in PAGE_STATUS if getattr(status, f) is None]
        assert status.state == "finished" and status.phase == "ended"
        assert status.epoch == status.epochs == run.cluster.epochs
        assert status.system is not None
        missing += [
            f"worker {index} system.{f}" for f in PAGE_SYSTEM if getattr(status.system, f) is None
        ]
    missing += [f"metrics.json {f}" for f in PAGE_METRICS if getattr(run.metrics, f) is None]
    assert missing == []
    snapshot = RunEvents(run_dir).refresh(run.indices)
    assert snapshot.problems == ()
    for index in range(workers):
        tags = set(snapshot.workers[index])
        expected = {*runformat.PROGRESS_TAGS, *runformat.EPOCH_TAGS, *runformat.SYSTEM_TAGS}
        assert expected <= tags, (index, expected - tags)
        others = {t for t in tags if runformat.gpu_of(t) is None} - expected
        assert others <= set(runformat.SYSTEM_OPTIONAL_TAGS), others
    splits = runformat.TENSORBOARD_SPLITS if validation else runformat.TENSORBOARD_SPLITS[:1]
    for split in splits:
        assert set(runformat.KERAS_TAGS) <= set(snapshot.chief[split]), split
    return run


def test_the_sample_writer_writes_what_the_page_reads(tmp_path: Path) -> None:
    plan = RunPlan(workers=3, epochs=2, steps_per_epoch=10, system_every=5)
    run_dir = write_run(tmp_path, plan)
    check_the_page_reads_it_whole(run_dir, workers=3, validation=True)
    run_id = run_dir.name
    assert runformat.RUN_ID_PATTERN.match(run_id)
    created = runformat.run_id_time(run_id)
    assert created is not None and abs(created - time.time()) < 120, "local clock, like fab"


@pytest.mark.parametrize(
    ("index", "host", "who"),
    [(1, "alice@gpu-b", "worker 1 (alice@gpu-b)"), (None, "launcher", "the launcher")],
)
def test_a_failure_names_who_caused_it(index: int | None, host: str, who: str) -> None:
    assert Failure(index=index, host=host, reason="x").who == who
