"""The hyperparameters programs log for TensorBoard's HParams tab (dashboard.hparams): read
back as TensorBoard's own parser gives them, hostile records as warnings, on the page in the
header and the Compare tab."""

from __future__ import annotations

import json
import re
import shutil
import time
from pathlib import Path
from typing import Any

import pytest
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from tensorboard.compat.proto import event_pb2, summary_pb2
from tensorboard.plugins.hparams import api_pb2, metadata, plugin_data_pb2

from dashboard import events
from dashboard.hparams import (
    MAX_SESSIONS,
    MAX_VALUE_CHARS,
    HParamsDirectory,
    read_hparams,
    show,
)
from dashboard.samplerun import RunPlan, write_run
from dashboard.tfrecord import frame_record
from tests.dashboard.conftest import OpenApp
from tests.dashboard.tfscript import HPARAMS


def session_start(hparams: dict[str, Any], started: float = 1e9, group: str = "") -> bytes:
    """HParamsPluginData of a session start, as `hp.hparams` serializes it."""
    start = plugin_data_pb2.SessionStartInfo(group_name=group, start_time_secs=started)
    for name, value in hparams.items():
        if isinstance(value, bool):
            start.hparams[name].bool_value = value
        elif isinstance(value, (int, float)):
            start.hparams[name].number_value = value
        else:
            start.hparams[name].string_value = value
    return plugin_data_pb2.HParamsPluginData(session_start_info=start).SerializeToString()


def session_end(status: int = api_pb2.STATUS_SUCCESS, ended: float = 2e9) -> bytes:
    end = plugin_data_pb2.SessionEndInfo(status=status, end_time_secs=ended)  # type: ignore[arg-type]
    return plugin_data_pb2.HParamsPluginData(session_end_info=end).SerializeToString()


def record(
    content: bytes, tag: str = metadata.SESSION_START_INFO_TAG, plugin: str = "hparams"
) -> bytes:
    """One framed event holding one hparams summary, laid out as TensorFlow writes it."""
    value = summary_pb2.Summary.Value(
        tag=tag,
        tensor=metadata.NULL_TENSOR,
        metadata=summary_pb2.SummaryMetadata(
            plugin_data=summary_pb2.SummaryMetadata.PluginData(plugin_name=plugin, content=content)
        ),
    )
    event = event_pb2.Event(
        wall_time=time.time(), step=0, summary=summary_pb2.Summary(value=[value])
    )
    return frame_record(event.SerializeToString())


def scalar(tag: str, step: int, value: float) -> bytes:
    summary = summary_pb2.Summary(value=[summary_pb2.Summary.Value(tag=tag, simple_value=value)])
    return frame_record(
        event_pb2.Event(wall_time=1.0, step=step, summary=summary).SerializeToString()
    )


def write_events(folder: Path, *records: bytes) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "events.out.tfevents.1000000000.host"
    version = event_pb2.Event(wall_time=1.0, file_version="brain.Event:2")
    path.write_bytes(frame_record(version.SerializeToString()) + b"".join(records))
    return path


def tensorboards_sessions(folder: Path) -> tuple[Any, Any]:
    """(session start, end or None) of one folder, as TensorBoard's own reader gives them."""
    board = EventAccumulator(str(folder))
    board.Reload()
    contents = board.PluginTagToContent(metadata.PLUGIN_NAME)
    start = metadata.parse_session_start_info_plugin_data(contents[metadata.SESSION_START_INFO_TAG])
    end_content = contents.get(metadata.SESSION_END_INFO_TAG)
    end = metadata.parse_session_end_info_plugin_data(end_content) if end_content else None
    return start, end


def test_what_tensorflows_own_writers_logged_reads_back_as_tensorboard_parses_it(
    tf_script_run: Path,
) -> None:
    """hp.KerasCallback on worker 0 (a start and a successful end), hp.hparams on both."""
    logged = read_hparams(tf_script_run, [0, 1])
    assert not logged.problems
    sessions = {session.folder: session for session in logged.sessions}
    assert sorted(sessions) == ["workers/0/logs", "workers/0/tensorboard", "workers/1/logs"]
    for folder, session in sessions.items():
        start, end = tensorboards_sessions(tf_script_run / folder)
        theirs = {name: getattr(v, v.WhichOneof("kind")) for name, v in start.hparams.items()}
        assert session.hparams == theirs
        assert session.group == start.group_name and session.started == start.start_time_secs
        assert session.worker == int(folder.split("/")[1])
        if end is None:
            assert session.status is None and session.ended is None
        else:
            assert session.status == "success" and session.ended == end.end_time_secs
    keras = sessions["workers/0/tensorboard"]
    assert keras.hparams == HPARAMS and keras.status == "success"
    assert logged.values() == {
        "writer": "tf.summary",
        "worker": "0 | 1",
        **{name: show(value) for name, value in HPARAMS.items()},
    }
    assert show(HPARAMS["units"]) == "1" and show(False) == "false" and show(0.25) == "0.25"


def test_a_session_written_in_pieces_is_read_once_whatever_the_chunks(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Records cut at every byte across polls and reads of 64 bytes: each taken once."""
    monkeypatch.setattr(events, "READ_CHUNK", 64)
    whole = b"".join(
        [scalar("loss", step, 0.5) for step in range(50)]
        + [record(session_start({"lr": 0.1, "name": "x" * 300}))]
        + [scalar("loss", step, 0.5) for step in range(50, 80)]
        + [record(session_end(), metadata.SESSION_END_INFO_TAG)]
    )
    path = write_events(tmp_path / "logs")
    head = path.read_bytes()
    reader = HParamsDirectory(tmp_path)
    for cut in range(0, len(whole), 37):
        path.write_bytes(head + whole[:cut])
        reader.poll()
    path.write_bytes(head + whole)
    reader.poll()
    (session,) = reader.views()
    assert session.hparams == {"lr": 0.1, "name": "x" * 300}
    assert session.status == "success" and session.ended == 2e9
    assert reader.events == 2 and not reader.problems


def test_hostile_hparams_records_are_warnings_and_the_rest_is_read(tmp_path: Path) -> None:
    run = tmp_path / "run"
    good = session_start({"lr": 0.01, "batch": 32})
    many = [record(session_start({"lr": float(n)}, group=str(n))) for n in range(10_000)]
    huge = session_start({"big": "x" * 1_000_000, "ok": True})
    flipped = bytearray(record(good))
    flipped[-10] ^= 0xFF
    text = summary_pb2.Summary.Value(tag="note", tensor=metadata.NULL_TENSOR)
    text.tensor.string_val.append(b"holds \x0a\x07hparams in its bytes")
    write_events(run / "tensorboard", record(b"\xff\x01garbage"), record(good))
    write_events(run / "workers/0/sweep", *many)
    write_events(run / "workers/0/huge", record(huge))
    write_events(run / "workers/1/flipped", bytes(flipped))
    write_events(
        run / "workers/1/noise",
        frame_record(
            event_pb2.Event(summary=summary_pb2.Summary(value=[text])).SerializeToString()
        ),
        record(session_end(), metadata.SESSION_END_INFO_TAG, plugin="hparams"),
    )
    for n in range(MAX_SESSIONS + 5):
        write_events(run / f"workers/1/many/{n:03d}", record(session_start({"n": n})))

    logged = read_hparams(run, [0, 1])

    sessions = {session.folder: session for session in logged.sessions}
    assert len(sessions) == MAX_SESSIONS
    assert sessions["tensorboard"].hparams == {"lr": 0.01, "batch": 32.0}
    assert sessions["workers/0/sweep"].hparams == {"lr": 0.0}, "the first, as TensorBoard"
    big = sessions["workers/0/huge"].hparams
    assert big["ok"] is True and len(str(big["big"])) == MAX_VALUE_CHARS
    assert "workers/1/flipped" not in sessions
    problems = "\n".join(logged.problems)
    assert "tensorboard/events.out.tfevents.1000000000.host at byte" in problems
    assert "is not TensorBoard hparams data" in problems
    assert "more sessions with other hyperparameters in this folder" in problems
    assert problems.count("other hyperparameters") == 1
    assert f"clipped to {MAX_VALUE_CHARS} characters" in problems
    assert "fails its CRC" in problems
    assert f"more than {MAX_SESSIONS} sessions" in problems


# The page ----------------------------------------------------------------------------------


def read(elements: Any) -> str:
    """Markdown as read on the page: escapes resolved, bold markers dropped."""
    return re.sub(r"\\(.)", r"\1", "\n".join(e.value for e in elements).replace("**", ""))


def test_two_sweeps_compare_by_the_hyperparameters_that_differ(
    open_app: OpenApp, script_run: Path
) -> None:
    """The user's script logged its hyperparameters with hp.KerasCallback; a second run of it
    differs in one of them and adds one whose name and value are markdown and HTML."""
    other = Path(shutil.copytree(script_run, script_run.parent / "20261207-160000-5c2p"))
    keras = other / "workers" / "0" / "tensorboard"
    for old in keras.glob("events.out.tfevents.*"):
        old.unlink()
    changed = {**HPARAMS, "dropout": 0.5, "**bold** <b>x</b>": "[link](http://x) :red[y]"}
    write_events(
        keras, record(session_start(changed)), record(session_end(), metadata.SESSION_END_INFO_TAG)
    )

    app = open_app(script_run.parent, tab="Compare")
    app.multiselect(key="compare-runs").set_value([other.name, script_run.name]).run()
    assert not app.exception, [e.value for e in app.exception]

    differing = next(frame.value for frame in app.dataframe if frame.value.index.name == "run")
    assert set(differing.columns) == {"dropout", "**bold** <b>x</b>"}
    assert differing.loc[other.name].to_dict() == {
        "dropout": "0.5",
        "**bold** <b>x</b>": "[link](http://x) :red[y]",
    }
    assert differing.loc[script_run.name].to_dict() == {"dropout": "0.25", "**bold** <b>x</b>": "-"}

    app.session_state["run"] = other.name
    app.run()
    header = next(c.value for c in app.caption if "optimizer" in c.value)
    assert "<b>" not in header and "[link](" not in header and ":red[" not in header
    assert "**bold** <b>x</b> [link](http://x) :red[y]" in read(app.caption)
    assert "optimizer sgd" in read(app.caption) and "dropout 0.5" in read(app.caption)
    sessions = next(e for e in app.expander if "Hyperparameters logged" in e.label)
    table = sessions.dataframe[0].value
    assert table["folder"].tolist() == ["workers/0/logs", "workers/0/tensorboard", "workers/1/logs"]
    assert table["status"].tolist() == ["no end logged", "success", "no end logged"]


def test_a_run_with_hostile_hparams_shows_a_warning_and_the_rest_of_the_page(
    open_app: OpenApp, tmp_path: Path
) -> None:
    runs = tmp_path / "runs"
    run = write_run(runs, RunPlan(workers=2, state="finished"), run_id="20261128-100000-aaaa")
    many = [record(session_start({"lr": float(n)})) for n in range(10_000)]
    write_events(
        run / "tensorboard",
        record(b"garbage"),
        *many,
        record(session_start({"x": "y" * 1_000_000})),
    )

    app = open_app(runs)

    warnings = read(app.warning)
    assert "is not TensorBoard hparams data" in warnings
    assert "more sessions with other hyperparameters" in warnings
    assert "lr 0" in read(app.caption)
    assert [metric.label for metric in app.metric][:2] == ["Workers", "Phase"]
    assert json.loads((run / "cluster.json").read_text())["run_id"] == run.name
