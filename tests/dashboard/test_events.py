"""The event reader against TensorFlow's own files and against every way a file goes wrong."""

from __future__ import annotations

import base64
import json
import os
import random
import struct
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from tensorboard.compat.proto import event_pb2

from dashboard import scalardecode
from dashboard.events import EventDirectory
from dashboard.samplerun import EventWriter, scalar_event
from dashboard.scalardecode import scalar_of
from dashboard.tfrecord import frame_record, masked_crc32c

TF_STEPS = 300

TF_WRITER = textwrap.dedent(
    """
    import base64
    import glob
    import json
    import sys
    import tensorflow as tf

    writer = tf.summary.create_file_writer(sys.argv[1])
    with writer.as_default():
        for step in range({steps}):
            tf.summary.scalar("progress/loss", 1.0 / (step + 1), step=step)
            tf.summary.scalar("progress/accuracy", step / {steps}, step=step)
            tf.summary.write("counts/int64", tf.constant(step * 3, tf.int64), step=step)
            tf.summary.write("counts/double", tf.constant(step + 0.25, tf.float64), step=step)
            old = tf.compat.v1.Summary(
                value=[tf.compat.v1.Summary.Value(tag="legacy/simple", simple_value=step * 0.5)]
            )
            tf.summary.experimental.write_raw_pb(old.SerializeToString(), step=step)
            if step % 100 == 0:
                tf.summary.histogram("weights", tf.random.normal([50]), step=step)
                tf.summary.text("note", "hello", step=step)
        # A step beyond 2**21 takes a four-byte varint.
        tf.summary.scalar("progress/loss", 0.5, step=3_000_000)
    writer.close()

    # The reference split of the file into records: TensorFlow's own TFRecord reader.
    (path,) = glob.glob(sys.argv[1] + "/*tfevents*")
    records = [base64.b64encode(r.numpy()).decode() for r in tf.data.TFRecordDataset(path)]
    with open(sys.argv[1] + "/records.json", "w") as out:
        json.dump(records, out)
    """
).format(steps=TF_STEPS)


@pytest.fixture(scope="session")
def tf_event_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A directory holding one event file written by TensorFlow's tf.summary."""
    directory = tmp_path_factory.mktemp("tf_events")
    env = dict(
        os.environ, TF_USE_LEGACY_KERAS="1", TF_CPP_MIN_LOG_LEVEL="2", CUDA_VISIBLE_DEVICES="-1"
    )
    subprocess.run(
        [sys.executable, "-c", TF_WRITER, str(directory)],
        check=True,
        env=env,
        capture_output=True,
        timeout=180,
    )
    return directory


@pytest.fixture(scope="session")
def tf_event_file(tf_event_dir: Path) -> Path:
    (path,) = tf_event_dir.glob("*tfevents*")
    return path


def records_of(tf_file: Path) -> list[bytes]:
    """Every record's Event bytes of the TensorFlow-written file, as TensorFlow's TFRecord
    reader split them (saved beside it by the writer)."""
    saved = json.loads((tf_file.parent / "records.json").read_text())
    return [base64.b64decode(record) for record in saved]


def reference_scalars(path: Path) -> dict[str, list[tuple[int, float, float]]]:
    """What the protobuf parser says, record by record: the reader must agree exactly."""
    result: dict[str, list[tuple[int, float, float]]] = {}
    for data in records_of(path):
        event = event_pb2.Event.FromString(data)
        for value in event.summary.value:
            number = scalar_of(value)
            if number is not None:
                result.setdefault(value.tag, []).append((event.step, event.wall_time, number))
    return result


def points(reader: EventDirectory, tag: str) -> list[tuple[int, float, float]]:
    series = reader.series[tag]
    return list(zip(series.steps, series.walls, series.values, strict=True))


@pytest.fixture(params=["one-by-one", "numpy"])
def decoding(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Run a test with records decoded one by one (a live refresh) and in bulk (a load)."""
    monkeypatch.setattr(scalardecode, "_FEW_RECORDS", 10**9 if request.param == "one-by-one" else 0)
    return str(request.param)


def test_reads_every_scalar_tensorflow_wrote(tf_event_dir: Path, decoding: str) -> None:
    reader = EventDirectory(tf_event_dir)
    result = reader.poll()

    loss = reader.series["progress/loss"]
    assert list(loss.steps) == [*range(TF_STEPS), 3_000_000]
    assert loss.values[:3] == pytest.approx([1.0, 0.5, 1 / 3], rel=1e-6)
    assert list(reader.series["counts/int64"].values) == [3.0 * s for s in range(TF_STEPS)]
    assert reader.series["counts/double"].values[7] == 7.25
    assert list(reader.series["legacy/simple"].values) == [s * 0.5 for s in range(TF_STEPS)]
    assert "weights" not in reader.series
    assert "note" not in reader.series
    assert result.events == 4 * TF_STEPS + TF_STEPS + 1
    assert not reader.problems
    assert reader.pending_bytes == 0


def test_agrees_with_the_protobuf_parser(
    tf_event_dir: Path, tf_event_file: Path, decoding: str
) -> None:
    reader = EventDirectory(tf_event_dir)
    reader.poll()
    expected = reference_scalars(tf_event_file)
    assert sorted(reader.series) == sorted(expected)
    for tag, want in expected.items():
        assert points(reader, tag) == want, tag


def test_sample_writer_writes_the_bytes_tensorflow_writes(tf_event_file: Path) -> None:
    compared = 0
    for data in records_of(tf_event_file):
        event = event_pb2.Event.FromString(data)
        for value in event.summary.value:
            if value.tag == "progress/loss":
                number = scalar_of(value)
                assert number is not None
                mine = scalar_event(value.tag, number, event.step, event.wall_time)
                assert mine == data
                compared += 1
    assert compared == TF_STEPS + 1


def test_masked_crc_matches_tensorflow_framing(tf_event_file: Path) -> None:
    data = tf_event_file.read_bytes()
    (length,) = struct.unpack_from("<Q", data, 0)
    assert frame_record(data[12 : 12 + length]) == data[: 16 + length]
    assert masked_crc32c(data[:8]) == struct.unpack_from("<I", data, 8)[0]


@pytest.fixture
def sample_file(tmp_path: Path) -> Path:
    """An event file of 40 scalar events written by the sample writer, in its own folder."""
    directory = tmp_path / "events"
    with EventWriter.create(directory, wall_time=1000.0) as writer:
        for step in range(20):
            writer.scalar("progress/loss", 1.0 / (step + 1), step, 1000.0 + step)
            writer.scalar("legacy/simple", float(step), step, 1000.0 + step, simple=True)
    (path,) = directory.iterdir()
    return path


def record_offsets(path: Path) -> list[int]:
    data = path.read_bytes()
    offsets = [0]
    while offsets[-1] < len(data):
        (length,) = struct.unpack_from("<Q", data, offsets[-1])
        offsets.append(offsets[-1] + 16 + length)
    return offsets[:-1]


def flip(path: Path, offset: int) -> None:
    data = bytearray(path.read_bytes())
    data[offset] ^= 0x40
    path.write_bytes(bytes(data))


@pytest.mark.parametrize(
    ("cut_inside", "whole_events"),
    [
        pytest.param(0, 9, id="before-the-header"),
        pytest.param(5, 9, id="inside-the-length"),
        pytest.param(14, 9, id="inside-the-event"),
        pytest.param(-2, 9, id="inside-the-footer-crc"),
    ],
)
def test_file_cut_mid_record_stops_and_resumes(
    sample_file: Path, cut_inside: int, whole_events: int
) -> None:
    full = sample_file.read_bytes()
    offsets = record_offsets(sample_file)
    record = 10  # record 0 is the file version, so 9 events come before record 10
    cut = offsets[record] + cut_inside if cut_inside >= 0 else offsets[record + 1] + cut_inside
    sample_file.write_bytes(full[:cut])
    reader = EventDirectory(sample_file.parent)

    first = reader.poll()
    assert first.events == whole_events
    assert not reader.problems
    assert reader.pending_bytes == cut - offsets[record]

    with open(sample_file, "ab") as handle:
        handle.write(full[cut:])
    second = reader.poll()
    assert second.events == 40 - whole_events
    assert not second.reset
    assert reader.pending_bytes == 0
    assert list(reader.series["progress/loss"].steps) == list(range(20))


@pytest.mark.parametrize(
    ("where", "message"),
    [
        pytest.param(20, "fails its CRC", id="byte-in-the-event"),
        pytest.param(2, "damaged record header", id="byte-in-the-length"),
        pytest.param(9, "damaged record header", id="byte-in-the-length-crc"),
        pytest.param(-1, "fails its CRC", id="byte-in-the-event-crc"),
    ],
)
def test_flipped_byte_skips_one_record_and_says_where(
    sample_file: Path, where: int, message: str, decoding: str
) -> None:
    offsets = record_offsets(sample_file)
    damaged = 5
    at = offsets[damaged] + where if where >= 0 else offsets[damaged + 1] + where
    flip(sample_file, at)
    reader = EventDirectory(sample_file.parent)

    result = reader.poll()

    assert result.events == 39
    assert len(reader.problems) == 1
    problem = reader.problems[0]
    assert message in problem.message
    assert problem.offset == offsets[damaged]
    assert str(sample_file) in str(problem)


def test_zero_byte_file_reads_nothing_quietly(tmp_path: Path) -> None:
    (tmp_path / "events.out.tfevents.1.host.1.0.v2").write_bytes(b"")
    reader = EventDirectory(tmp_path)
    assert reader.poll().events == 0
    assert not reader.problems
    assert reader.series == {}


@pytest.mark.parametrize("size", [1, 11, 12, 100, 5000])
def test_garbage_file_never_raises(tmp_path: Path, size: int) -> None:
    rng = random.Random(size)
    (tmp_path / "events.out.tfevents.1.host.1.0.v2").write_bytes(rng.randbytes(size))
    reader = EventDirectory(tmp_path)
    for _ in range(2):
        assert reader.poll().events == 0
    assert reader.series == {}
    assert len(reader.problems) <= 1


def test_garbage_between_good_records_is_stepped_over(sample_file: Path) -> None:
    full = sample_file.read_bytes()
    middle = record_offsets(sample_file)[21]
    sample_file.write_bytes(full[:middle] + random.Random(1).randbytes(300) + full[middle:])
    reader = EventDirectory(sample_file.parent)
    assert reader.poll().events == 40
    assert [p.offset for p in reader.problems] == [middle]


def test_append_between_polls_reads_only_the_new_bytes(sample_file: Path) -> None:
    reader = EventDirectory(sample_file.parent)
    reader.poll()
    size = sample_file.stat().st_size
    with EventWriter(sample_file) as writer:
        for step in range(20, 25):
            writer.scalar("progress/loss", 0.01, step, 2000.0 + step)

    result = reader.poll()

    assert result.events == 5
    assert result.bytes == sample_file.stat().st_size - size
    assert not result.reset
    assert list(reader.series["progress/loss"].steps) == list(range(25))
    assert reader.poll().events == 0


@pytest.mark.parametrize("how", ["replace", "truncate", "rewrite-in-place"])
def test_replaced_or_truncated_file_is_read_again(sample_file: Path, how: str) -> None:
    reader = EventDirectory(sample_file.parent)
    reader.poll()
    shorter = sample_file.parent / "shorter.tmp"
    with EventWriter(shorter, wall_time=5000.0) as writer:
        for step in range(3):
            writer.scalar("progress/loss", 9.0, step, 5000.0 + step)
    if how == "replace":
        os.replace(shorter, sample_file)
    elif how == "truncate":
        with open(sample_file, "r+b") as handle:
            handle.truncate(record_offsets(sample_file)[7])
    else:
        # Same inode, same size or longer, different bytes from the very start.
        data = shorter.read_bytes()
        original = sample_file.read_bytes()
        with open(sample_file, "r+b") as handle:
            handle.write(data + original[len(data) :])

    result = reader.poll()

    assert result.reset
    assert reader.problems
    if how == "truncate":
        assert list(reader.series["progress/loss"].steps) == [0, 1, 2]
    else:
        assert list(reader.series["progress/loss"].values)[:3] == [9.0, 9.0, 9.0]


def test_every_event_file_of_the_directory_is_read(tmp_path: Path) -> None:
    for start in (100, 200):
        with EventWriter.create(tmp_path, wall_time=start, host=f"h{start}") as writer:
            writer.scalar("progress/loss", float(start), start, start)
    (tmp_path / "notes.txt").write_text("not an event file")
    reader = EventDirectory(tmp_path)
    reader.poll()
    assert list(reader.series["progress/loss"].steps) == [100, 200]

    with EventWriter.create(tmp_path, wall_time=300, host="h300") as writer:
        writer.scalar("progress/loss", 3.0, 300, 300)
    assert reader.poll().events == 1
    assert list(reader.series["progress/loss"].steps) == [100, 200, 300]


def test_deleted_file_and_missing_directory_do_not_raise(sample_file: Path) -> None:
    reader = EventDirectory(sample_file.parent)
    reader.poll()
    sample_file.unlink()
    sample_file.parent.rmdir()

    result = reader.poll()

    assert result.reset
    assert reader.series == {}
    assert any("disappeared" in p.message for p in reader.problems)
    assert EventDirectory(sample_file.parent / "nowhere").poll().events == 0


def test_reader_modules_do_not_import_tensorflow() -> None:
    code = (
        "import sys, streamlit, dashboard.events, dashboard.samplerun, dashboard.runs,"
        " dashboard.cluster, dashboard.charts, dashboard.live;"
        " sys.exit('tensorflow' in sys.modules)"
    )
    subprocess.run([sys.executable, "-c", code], check=True, cwd=Path(__file__).parents[2])


def test_record_with_good_crc_but_no_event_inside_is_reported(sample_file: Path) -> None:
    with open(sample_file, "ab") as handle:
        handle.write(frame_record(b"\xff\xff\xff\xff"))
    reader = EventDirectory(sample_file.parent)
    assert reader.poll().events == 40
    assert "not an Event" in reader.problems[0].message


def test_one_tag_in_several_layouts_keeps_the_order_it_was_written(
    tmp_path: Path, decoding: str
) -> None:
    """Template batches, odd steps and protobuf-parsed records merge back in file order."""
    written = []
    with EventWriter.create(tmp_path, wall_time=1.0) as writer:
        for step in [0, 5, 2**36, 7, 127, 128, 16384, 3, 2**35 - 1, 9]:
            simple = step % 2 == 1
            writer.scalar("mixed", float(step % 1000), step, 10.0 + step, simple=simple)
            written.append(step)
            if step == 7:
                old = event_pb2.Event(wall_time=2.0, step=7)
                old.summary.value.add(tag="mixed", simple_value=7.0).metadata.display_name = "x"
                writer.raw(frame_record(old.SerializeToString()))
                written.append(7)
    reader = EventDirectory(tmp_path)
    reader.poll()
    assert list(reader.series["mixed"].steps) == written
    assert reader.series["mixed"].values[2] == float(2**36 % 1000)


def test_quiet_file_is_only_stat_ed_until_it_changes(
    sample_file: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A file silent for a second is not reopened on every poll; any write is still seen."""
    os.utime(sample_file, ns=(10**18, 10**18))
    reader = EventDirectory(sample_file.parent)
    reader.poll()
    opened: list[str] = []
    real_open = open

    def watching(path: object, *args: object, **kwargs: object) -> object:
        opened.append(str(path))
        return real_open(path, *args, **kwargs)  # type: ignore[call-overload]

    monkeypatch.setattr("builtins.open", watching)
    assert reader.poll().events == 0
    assert opened == []
    data = bytearray(sample_file.read_bytes())
    data[20] ^= 0x01  # same inode, same size, one early byte changed: its mtime moves
    with real_open(sample_file, "r+b") as handle:
        handle.write(data)
    opened.clear()
    result = reader.poll()
    assert set(opened) == {str(sample_file)}
    assert result.reset
