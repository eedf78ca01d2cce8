"""Images, histograms and text from event files: equal to TensorBoard's own reading of files
TensorFlow wrote, hostile records as warnings, and the Media tab in AppTest."""

from __future__ import annotations

import json
import os
import pickle
import struct
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from tensorboard.compat.proto import summary_pb2

from dashboard import media, mediadecode
from dashboard.events import READ_CHUNK, EventDirectory
from dashboard.livechart import COMPONENT as LIVE_CHART
from dashboard.media import (
    MAX_ENTRIES,
    Histogram,
    Image,
    MediaDirectory,
    RunMedia,
    Text,
    read_media,
)
from dashboard.mediacharts import HISTOGRAM_MODES, histogram_figure
from dashboard.samplerun import RunPlan, write_run
from dashboard.tfrecord import MAX_RECORD, masked_crc32c
from tests.dashboard.conftest import OpenApp
from tests.dashboard.media_records import event, histogram_value, image_value, png, text_value

WRITER = Path(__file__).with_name("media_writer.py")


def write(folder: Path, *records: bytes, name: str = "events.out.tfevents.1.host") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    with open(path, "ab") as handle:
        for record in records:
            handle.write(record)
    return path


def problems_of(reader: EventDirectory) -> list[str]:
    return [p.message for p in reader.problems]


# --- read back equal to TensorBoard's own EventAccumulator -------------------------------


@pytest.fixture(scope="module")
def tf_written(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Event files written by TensorFlow itself (tf.summary.*, Keras TensorBoard)."""
    root = tmp_path_factory.mktemp("tf-media")
    subprocess.run([sys.executable, str(WRITER), str(root)], check=True, capture_output=True)
    return root


# TensorBoard's EventAccumulator, in a process where it uses its TensorFlow stub (importing
# TensorFlow would cost seconds): plugin -> tag -> [(step, wall time, array)], every sample.
ACCUMULATE = """
import pickle, sys, types
sys.modules["tensorboard.compat.notf"] = types.ModuleType("notf")
from tensorboard.backend.event_processing import plugin_event_accumulator as pea
from tensorboard.util import tensor_util
acc = pea.EventAccumulator(sys.argv[1], size_guidance={"tensors": 0})
acc.Reload()
out = {
    plugin: {
        tag: [(e.step, e.wall_time, tensor_util.make_ndarray(e.tensor_proto))
              for e in acc.Tensors(tag)]
        for tag in acc.PluginTagToContent(plugin)
    } if plugin in acc.ActivePlugins() else {}
    for plugin in ("images", "histograms", "text")
}
sys.stdout.buffer.write(pickle.dumps(out))
assert "tensorflow" not in sys.modules
"""


def accumulated(folder: Path) -> dict[str, dict[str, list[tuple[int, float, np.ndarray]]]]:
    done = subprocess.run(
        [sys.executable, "-c", ACCUMULATE, str(folder)], check=True, capture_output=True
    )
    return pickle.loads(done.stdout)


def assert_equal_to_tensorboard(
    folder: Path, ours: dict[tuple[str, str], media.TrackView], run: str
) -> int:
    """Our tracks of one folder (`run` in ours) equal TensorBoard's; how many entries."""
    theirs = accumulated(folder)
    compared = 0
    mine = {tag: track for (where, tag), track in ours.items() if where == run}
    assert set(mine) == {tag for tags in theirs.values() for tag in tags}
    for plugin, tags in theirs.items():
        for tag, events in tags.items():
            track = mine[tag]
            assert track.kind == plugin and track.dropped == 0
            assert [e.step for e in track.entries] == [step for step, _, _ in events]
            for entry, (_, wall, array) in zip(track.entries, events, strict=True):
                assert entry.wall == pytest.approx(wall)
                if isinstance(entry, Image):
                    assert (entry.width, entry.height) == (int(array[0]), int(array[1]))
                    assert list(entry.pictures) == list(array[2:])
                elif isinstance(entry, Histogram):
                    np.testing.assert_array_equal(entry.buckets, array.reshape(-1, 3))
                else:
                    assert isinstance(entry, Text)
                    assert list(entry.strings) == [s.decode() for s in array.flatten()]
                    assert entry.shape == array.shape
                compared += 1
    return compared


@pytest.mark.slow
def test_tensorflow_written_media_read_like_tensorboard(tf_written: Path) -> None:
    user = read_media(tf_written / "workers" / "1")
    assert {run for run, _ in user} == {"user/own"}
    assert (
        assert_equal_to_tensorboard(tf_written / "workers/1/user/own", user, "user/own")
        == 12 * 6 + 1
    )
    board = read_media(tf_written / "tensorboard")
    compared = sum(
        assert_equal_to_tensorboard(tf_written / "tensorboard" / split, board, split)
        for split in ("train", "validation")
    )
    assert compared == 4 * 3  # Keras' histogram_freq=1: 2 layers x (kernel, bias) x 3 epochs


def test_legacy_image_and_histo_fields_read_like_tensorboard(tmp_path: Path) -> None:
    folder = tmp_path / "legacy"
    histo = summary_pb2.HistogramProto(
        min=-1.0, max=3.0, num=6, sum=4.0, sum_squares=9.0,
        bucket_limit=[-2.0, 0.0, 1.0, 3.5, 1e308], bucket=[0, 2, 1, 3, 0],
    )  # fmt: skip
    picture = summary_pb2.Summary.Image(height=3, width=4, colorspace=3, encoded_image_string=png())
    write(
        folder,
        *(
            event(
                step,
                summary_pb2.Summary.Value(tag="pic/image/0", image=picture),
                summary_pb2.Summary.Value(tag="h", histo=histo),
                summary_pb2.Summary.Value(tag="loss", simple_value=0.5),
            )
            for step in range(3)
        ),
    )
    ours = read_media(folder)
    assert {tag for _, tag in ours} == {"pic/image/0", "h"}
    assert assert_equal_to_tensorboard(folder, ours, ".") == 6


# --- hostile records: a warning each, and the rest is read ----------------------------


def test_image_that_is_not_a_png_is_a_problem_and_its_neighbours_are_kept(tmp_path: Path) -> None:
    write(
        tmp_path,
        event(1, image_value("pics", [png(), b"<html>not a picture</html>"])),
        event(2, image_value("pics", [png(2, 2)], first=False)),
        event(3, image_value("pics", [b"nope"], first=False)),
        event(4, image_value("bad-size", [png()], size="wide")),
    )
    reader = MediaDirectory(tmp_path)
    reader.poll()
    track = reader.views()[(".", "pics")]
    assert [(e.step, len(e.pictures)) for e in track.entries] == [(1, 1), (2, 1)]
    assert problems_of(reader) == [
        "'pics' at step 1: image 1 is not a PNG, JPEG or GIF; skipped",
        "'pics' at step 3: image 0 is not a PNG, JPEG or GIF; skipped",
        "'bad-size' at step 4: the image's width and height are not numbers; skipped",
    ]


def test_a_200_mb_record_is_skipped_unread_and_the_next_one_is_read(tmp_path: Path) -> None:
    path = write(tmp_path, event(1, image_value("pics", [png()])))
    size = 200 << 20
    header = struct.pack("<Q", size)
    with open(path, "ab") as handle:
        handle.write(header + struct.pack("<I", masked_crc32c(header)))
        handle.write(b"\x89PNG")
    reader = MediaDirectory(tmp_path)
    reader.poll()  # the big record is still being written: wait for it, read nothing of it
    assert not reader.problems and reader.pending_bytes <= READ_CHUNK
    with open(path, "r+b") as handle:  # the rest arrives (a sparse file: no 200 MB written)
        handle.truncate(os.path.getsize(path) - 4 + size + 4)
    write(tmp_path, event(3, image_value("pics", [png(shade=9)], first=False)))
    reader.poll()
    assert [e.step for e in reader.views()[(".", "pics")].entries] == [1, 3]
    assert problems_of(reader) == [
        f"record of 210 MB is over the {MAX_RECORD >> 20} MB a reader takes; skipped"
    ]
    scalars = EventDirectory(tmp_path)  # the scalar reader steps over it the same way
    scalars.poll()
    assert problems_of(scalars) == problems_of(reader)


def test_oversized_and_huge_images_are_problems(tmp_path: Path) -> None:
    big = png() + bytes(mediadecode.MAX_IMAGE_BYTES)
    write(
        tmp_path,
        event(1, image_value("pics", [big, png()])),
        event(3, image_value("pics", [png(5000, 4000)], first=False)),
        event(2, image_value("pics", [png()], first=False, size="10000000")),
    )
    reader = MediaDirectory(tmp_path)
    reader.poll()
    assert [e.step for e in reader.views()[(".", "pics")].entries] == [1]
    assert problems_of(reader) == [
        "'pics' at step 1: image 0 is 8.4 MB, over the 8 MB shown; skipped",
        "'pics' at step 3: image 0 has 5,000 x 4,000 pixels, over the 16,000,000 shown; skipped",
        "'pics' at step 2: 10,000,000 x 3 pixels is over the 16,000,000 shown; skipped",
    ]


def test_histograms_with_nans_and_bad_shapes(tmp_path: Path) -> None:
    good = np.array([[0.0, 1.0, 3.0], [1.0, 2.0, 5.0]])
    nan = np.array([[0.0, 1.0, 3.0], [np.nan, 2.0, 5.0], [2.0, np.inf, 1.0]])
    write(
        tmp_path,
        event(1, histogram_value("w", good)),
        event(2, histogram_value("w", nan, first=False)),
        event(3, histogram_value("w", np.ones((2, 4)), first=False)),
        event(4, histogram_value("w", np.zeros((0, 3)), first=False)),
    )
    reader = MediaDirectory(tmp_path)
    reader.poll()
    entries = reader.views()[(".", "w")].entries
    assert [e.step for e in entries] == [1, 2, 4]
    assert isinstance(entries[1], Histogram)
    np.testing.assert_array_equal(entries[1].buckets, [[0.0, 1.0, 3.0]])
    assert problems_of(reader) == [
        "'w' at step 2: 2 of 3 histogram buckets are not finite; left out",
        "'w' at step 3: a histogram is a [k, 3] tensor, not [2, 4]; skipped",
    ]
    for mode in HISTOGRAM_MODES:  # every view draws what is left, empty steps too
        figure = histogram_figure(list(entries), "w", mode)
        assert figure.data and all(np.isfinite(np.asarray(t.y, float)).all() for t in figure.data)


def test_ten_thousand_text_events_keep_the_newest_with_a_note(tmp_path: Path) -> None:
    records = [event(0, text_value("notes", ["first"]))]
    records += [
        event(step, text_value("notes", [f"n{step}"], first=False)) for step in range(1, 10_000)
    ]
    records.append(event(10_000, text_value("notes", ["x" * 20_000], first=False)))
    write(tmp_path, *records)
    reader = MediaDirectory(tmp_path)
    reader.poll()
    track = reader.views()[(".", "notes")]
    limit = MAX_ENTRIES["text"]
    assert len(track.entries) == limit and track.dropped == 10_001 - limit
    assert track.entries[0].step == 10_001 - limit
    assert track.note() == f"{10_001 - limit:,} older text dropped: the newest {limit} are kept"
    last = track.entries[-1]
    assert isinstance(last, Text) and len(last.strings[0]) == mediadecode.MAX_TEXT_CHARS + 1
    assert problems_of(reader) == ["'notes' at step 10000: 1 strings clipped to 10,000 characters"]


def test_images_keep_the_newest_within_a_byte_budget(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setattr(media, "MAX_IMAGE_BYTES_PER_TAG", 3 * len(png()))
    write(tmp_path, *(event(s, image_value("p", [png()], first=s == 0)) for s in range(6)))
    track = read_media(tmp_path)[(".", "p")]
    assert [e.step for e in track.entries] == [3, 4, 5] and track.dropped == 3


def test_partial_records_resume_and_damage_is_skipped(tmp_path: Path) -> None:
    first = event(1, image_value("p", [png()]))
    second = event(2, image_value("p", [png(shade=5)], first=False))
    damaged = bytearray(event(3, image_value("p", [png(shade=6)], first=False)))
    damaged[-10] ^= 0xFF
    fourth = event(4, text_value("t", ["hello"]))
    path = write(tmp_path, first, second[:30])
    reader = MediaDirectory(tmp_path)
    reader.poll()
    assert [e.step for e in reader.views()[(".", "p")].entries] == [1]
    with open(path, "ab") as handle:
        handle.write(second[30:] + bytes(damaged) + fourth)
    reader.poll()
    views = reader.views()
    assert [e.step for e in views[(".", "p")].entries] == [1, 2]
    assert [e.step for e in views[(".", "t")].entries] == [4]
    assert problems_of(reader) == ["record fails its CRC; skipped"]


def test_event_files_found_at_any_depth_are_keyed_by_folder(tmp_path: Path) -> None:
    write(tmp_path / "a" / "b", event(1, text_value("t", ["deep"])))
    write(tmp_path, event(1, text_value("t", ["top"])), name="events.out.tfevents.2.host")
    views = read_media(tmp_path)
    assert sorted(views) == [(".", "t"), ("a/b", "t")]


# --- the Media tab --------------------------------------------------------------------


def media_run(runs_dir: Path) -> Path:
    run_dir = write_run(
        runs_dir, RunPlan(workers=2, state="finished"), run_id="20261207-100000-mmmm"
    )
    records = []
    for step in range(3):
        first = step == 0
        records.append(
            event(
                step,
                image_value("digits", [png(shade=40 * step)], first=first),
                histogram_value("weights", np.array([[0.0, 1.0, step + 1.0]]), first=first),
                text_value(
                    "note", [f"step {step} <script>alert(1)</script> **bold**"], first=first
                ),
            )
        )
    records.append(event(3, image_value("digits", [b"<svg onload=alert(1)>"], first=False)))
    write(run_dir / "workers" / "0" / "events", *records, name="events.out.tfevents.9.host")
    write(run_dir / "workers" / "1" / "mine", event(5, text_value("other", ["worker one"])))
    return run_dir


def test_media_tab_shows_the_chiefs_images_histograms_and_text(
    open_app: OpenApp, runs_dir: Path
) -> None:
    media_run(runs_dir)
    app = open_app(runs_dir, tab="Media")
    warnings = [w.value.replace("\\", "") for w in app.warning]
    assert any("image 0 is not a PNG, JPEG or GIF" in w for w in warnings), warnings
    assert app.selectbox[0].value == 0
    slider = app.select_slider[0]
    assert slider.value == 2 and list(slider.options) == ["0", "1", "2"]
    images = app.get("image")
    assert len(images) == 1 and "step 2" in str(images[0].proto)
    slider.set_value(0).run()
    assert "step 0" in str(app.get("image")[0].proto)
    charts = [
        json.loads(chart.proto.bytes)["figure"]
        for chart in app.get("bidi_component")
        if chart.proto.component_name == LIVE_CHART
    ]
    assert [trace["type"] for chart in charts for trace in chart["data"]] == ["heatmap"]
    texts = [t.value for t in app.text]
    assert texts[0] == "step 2 <script>alert(1)</script> **bold**"  # newest first, as is
    assert not any("<script>" in m.value for m in app.markdown)
    app.selectbox[0].set_value(1).run()
    assert [t.value for t in app.text] == ["worker one"]


def test_media_tab_without_media_says_how_to_log_them(open_app: OpenApp, runs_dir: Path) -> None:
    write_run(runs_dir, RunPlan(workers=2, state="finished"), run_id="20261207-110000-nnnn")
    app = open_app(runs_dir, tab="Media")
    assert "tf.summary.image" in app.info[0].value


def test_run_media_reads_new_records_on_refresh(tmp_path: Path) -> None:
    run_dir = media_run(tmp_path)
    reader = RunMedia(run_dir, min_interval=0.0)
    before = reader.refresh([0, 1])
    assert sorted(before.workers) == [0, 1]
    write(run_dir / "tensorboard" / "train", event(0, histogram_value("k", np.ones((1, 3)))))
    after = reader.refresh([0, 1])
    assert ("tensorboard/train", "k") in after.workers[0]
    assert ("workers/0/events", "digits") in after.workers[0]
    assert after.problems and "workers/0/events" in after.problems[0]


def test_tags_past_the_bound_are_refused_once_with_a_problem(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(media, "MAX_TAGS", 2)
    write(
        tmp_path,
        *(
            event(step, text_value(f"t{n}", ["x"], first=step == 0))
            for step in range(3)
            for n in range(3)
        ),
    )
    reader = MediaDirectory(tmp_path)
    reader.poll()
    assert sorted(tag for _, tag in reader.views()) == ["t0", "t1"]
    assert problems_of(reader) == ["more than 2 text tags: 't2' not kept"]


def test_the_preview_run_has_images_histograms_and_text(tmp_path: Path) -> None:
    from dashboard import samplerun

    assert samplerun.main([str(tmp_path)]) == 0
    run_dir = next(tmp_path.iterdir())
    snapshot = RunMedia(run_dir).refresh([0, 1])
    assert snapshot.problems == ()
    kinds = {
        index: {view.kind for view in tracks.values()} for index, tracks in snapshot.workers.items()
    }
    assert kinds == {0: {"images", "histograms", "text"}, 1: {"histograms"}}
