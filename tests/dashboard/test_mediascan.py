"""The bulk decoding of media records: the scan finds what protobuf finds, tags group
exactly (fingerprint collisions included), histograms gathered in bulk equal those decoded
one by one, and a track keeps the newest histograms as blocks."""

from __future__ import annotations

from array import array

import numpy as np
import pytest
from tensorboard.compat.proto import event_pb2, summary_pb2, tensor_pb2
from tensorboard.util import tensor_util

from dashboard.media import HISTOGRAMS, Histogram, Track
from dashboard.mediadecode import HistogramBlock, decode
from dashboard.mediascan import TagRecords, histogram_blocks, scan
from dashboard.tfrecord import U64, crc32c, frame_record
from tests.dashboard.media_records import event, histogram_value, image_value, png, text_value


def chunk(*records: bytes) -> tuple[bytes, array, array]:
    """A chunk as the reader's framing hands it over: its bytes, record starts and CRCs."""
    buf = b"".join(records)
    starts, crcs = array("q"), array("I")
    pos = 0
    while pos < len(buf):
        length = U64.unpack_from(buf, pos)[0]
        starts.append(pos)
        crcs.append(crc32c(buf[pos + 12 : pos + 12 + length]))
        pos += 16 + length
    return buf, starts, crcs


def plain(tag: str, tensor: tensor_pb2.TensorProto, step: int = 1) -> bytes:
    """A TF2 summary record with no metadata: what a tag's records after its first are."""
    value = summary_pb2.Summary.Value(tag=tag, tensor=tensor)
    return event(step, value)


def buckets(count: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    edges = np.sort(rng.normal(size=count + 1))
    return np.stack([edges[:-1], edges[1:], rng.integers(0, 9, count).astype(float)], axis=1)


def by_protobuf(buf: bytes, starts: array) -> dict[str, list[tuple[int, int, float, bytes]]]:
    """tag -> [(record index, step, wall time, tensor bytes)] of every one-value tensor
    record without metadata, as the protobuf parser reads them."""
    out: dict[str, list[tuple[int, int, float, bytes]]] = {}
    for index, pos in enumerate(starts):
        data = buf[pos + 12 : pos + 12 + U64.unpack_from(buf, pos)[0]]
        parsed = event_pb2.Event.FromString(data)
        values = parsed.summary.value
        if len(values) == 1 and values[0].HasField("tensor") and not values[0].HasField("metadata"):
            item = (index, parsed.step, parsed.wall_time, values[0].tensor.SerializeToString())
            out.setdefault(values[0].tag, []).append(item)
    return out


@pytest.mark.parametrize(
    "tag",
    ["", "w", "kernel", "exactly8", "dense/kernel/histogram", "t" * 120],
    ids=["empty", "one", "short", "eight", "long", "longest-scanned"],
)
@pytest.mark.parametrize("step", [0, 1, 300, 2**34], ids=["no-step", "1", "300", "2^34"])
def test_scan_finds_what_protobuf_finds(tag: str, step: int) -> None:
    tensor = tensor_util.make_tensor_proto(buckets(30))
    records = [
        frame_record(
            event_pb2.Event(wall_time=1.0, file_version="brain.Event:2").SerializeToString()
        ),
        event(step, histogram_value(tag, buckets(30))),  # the first, with metadata
        plain(tag, tensor, step),
        event(step, summary_pb2.Summary.Value(tag="loss", simple_value=0.5)),
        plain(tag, tensor_util.make_tensor_proto(buckets(5)), step + 1),
        plain("other", tensor, step),
    ]
    buf, starts, crcs = chunk(*records)
    found = scan(buf, starts, crcs)
    expected = by_protobuf(buf, starts)
    if not tag:  # protobuf leaves an empty tag out: such records are the parser's
        del expected[tag]
    assert [g.tag for g in found.groups] == list(expected)
    for group in found.groups:
        got = [
            (int(r), int(s), float(w), buf[a : a + n])
            for r, s, w, a, n in zip(
                group.rows, group.steps, group.walls, group.tensor_at, group.tensor_len, strict=True
            )
        ]
        assert got == expected[group.tag]
    assert found.slow == ([0, 1, 3] if tag else [0, 1, 2, 3, 4]) and found.damaged == []


def test_a_tag_longer_than_scanned_and_a_damaged_record_are_left_over() -> None:
    tensor = tensor_util.make_tensor_proto(buckets(3))
    good = plain("x" * 121, tensor)
    damaged = bytearray(plain("y", tensor))
    damaged[-6] ^= 0xFF  # a byte of the data: its CRC no longer matches
    buf, starts, crcs = chunk(good, bytes(damaged), plain("z", tensor))
    found = scan(buf, starts, crcs)
    assert found.slow == [0] and found.damaged == [1]
    assert [g.tag for g in found.groups] == ["z"]


def test_tags_whose_fingerprints_match_are_told_apart() -> None:
    """Tags of one length sharing their first and last 8 bytes fingerprint alike."""
    tensor = tensor_util.make_tensor_proto(buckets(3))
    tags = ["layers/1/dense/kernel", "layers/2/dense/kernel", "layers/1/dense/kernel"]
    buf, starts, crcs = chunk(*(plain(tag, tensor, step) for step, tag in enumerate(tags)))
    groups = {g.tag: g.rows.tolist() for g in scan(buf, starts, crcs).groups}
    assert groups == {"layers/1/dense/kernel": [0, 2], "layers/2/dense/kernel": [1]}


def one_by_one(buf: bytes, records: TagRecords) -> list[Histogram | None]:
    return [
        decode(HISTOGRAMS, int(s), float(w), records.tensor(buf, p))[0]  # type: ignore[misc]
        for p, (s, w) in enumerate(zip(records.steps, records.walls, strict=True))
    ]


def test_histograms_in_bulk_equal_those_decoded_one_by_one() -> None:
    """Two bucket counts interleaved, float32, a NaN, and a record the parser read."""
    with_nan = buckets(30, 1)
    with_nan[4, 2] = np.nan
    tensors = [
        tensor_util.make_tensor_proto(buckets(30, 2)),
        tensor_util.make_tensor_proto(buckets(30, 3)),
        tensor_util.make_tensor_proto(buckets(10, 4)),
        tensor_util.make_tensor_proto(buckets(30, 5)),
        tensor_util.make_tensor_proto(buckets(30, 6).astype(np.float32)),
        tensor_util.make_tensor_proto(with_nan),
        tensor_util.make_tensor_proto(buckets(30, 7)),
        tensor_util.make_tensor_proto(buckets(30, 8)),
    ]
    buf, starts, crcs = chunk(*(plain("h", t, step) for step, t in enumerate(tensors)))
    (group,) = scan(buf, starts, crcs).groups
    parsed = (99, 99, 1099.0, tensor_util.make_tensor_proto(buckets(30, 9)))
    records = group.joined([parsed])
    blocks, alone = histogram_blocks(buf, records)
    assert alone == [5, 8]  # the NaN one and the parsed one
    covered = sorted([*alone, *(int(p) for positions, _ in blocks for p in positions)])
    assert covered == list(range(len(records)))
    expected = one_by_one(buf, records)
    for positions, block in blocks:
        assert np.array_equal(positions, np.arange(positions[0], positions[-1] + 1))
        for position, rows in zip(positions, block, strict=True):
            entry = expected[position]
            assert entry is not None and np.array_equal(rows, entry.buckets)
    # One block per layout, split where another record comes between.
    assert sorted((int(p[0]), len(p)) for p, _ in blocks) == [
        (0, 2),
        (2, 1),
        (3, 1),
        (4, 1),
        (6, 2),
    ]


def test_joined_and_newest_keep_the_order_read_and_the_parsed_tensors() -> None:
    tensor = tensor_util.make_tensor_proto(buckets(3))
    buf, starts, crcs = chunk(*(plain("h", tensor, step) for step in (1, 3)))
    (group,) = scan(buf, starts, crcs).groups
    group = TagRecords(
        "h", np.array([1, 3]), group.steps, group.walls, group.tensor_at, group.tensor_len
    )
    marker = tensor_util.make_tensor_proto(buckets(4))
    joined = group.joined([(0, 0, 0.0, marker), (2, 2, 2.0, marker)])
    assert joined.rows.tolist() == [0, 1, 2, 3] and joined.steps.tolist() == [0, 1, 2, 3]
    assert set(joined.parsed) == {0, 2} and joined.tensor(buf, 2) is marker
    newest = joined.newest(3)
    assert newest.steps.tolist() == [1, 2, 3] and set(newest.parsed) == {1}
    assert newest.tensor(buf, 0).SerializeToString() == tensor.SerializeToString()


def block(first: int, count: int) -> HistogramBlock:
    steps = np.arange(first, first + count)
    return HistogramBlock(steps, steps + 0.5, np.zeros((count, 2, 3)))


def test_a_track_keeps_the_newest_histograms_of_its_blocks() -> None:
    track = Track(HISTOGRAMS, limit=5)
    track.add(block(0, 3))
    track.add(Histogram(3, 3.5, np.ones((1, 3))))
    track.add(block(4, 4))
    assert track.count == 5 and track.dropped == 3
    assert track.nbytes == sum(p.nbytes for p in track.parts)
    view = track.view()
    assert [e.step for e in view.entries] == [3, 4, 5, 6, 7]
    assert view.latest_wall == 7.5
    assert view.note() == "3 older histograms dropped: the newest 5 are kept"
    track.drop_all(2)
    assert track.count == 0 and track.dropped == 10 and track.view().latest_wall == 0.0


def test_images_and_text_are_decoded_from_their_scanned_bytes() -> None:
    buf, starts, crcs = chunk(
        event(1, image_value("pic", [png()], first=False)),
        event(2, text_value("note", ["hello"], first=False)),
    )
    found = {g.tag: g for g in scan(buf, starts, crcs).groups}
    image, _ = decode("images", 1, 1.0, found["pic"].tensor(buf, 0))
    text, _ = decode("text", 2, 2.0, found["note"].tensor(buf, 0))
    assert image is not None and image.pictures == (png(),)  # type: ignore[union-attr]
    assert text is not None and text.strings == ("hello",)  # type: ignore[union-attr]
