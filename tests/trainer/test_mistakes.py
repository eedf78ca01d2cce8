"""trainer/mistakes.py on the trainer's real (untrained) model: each epoch end writes both
pictures as one event that TensorBoard's own reader reads back, pixel for pixel; a full disk
costs one warning, never the training. The real two-worker run is in
test_train.py (test_the_chief_shows_its_mistakes_and_the_media_tab_shows_them)."""

from __future__ import annotations

import io
import struct
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image
from tensorboard.backend.event_processing.event_accumulator import TENSORS, EventAccumulator

from trainer.cluster import Cluster
from trainer.config import TrainConfig
from trainer.data import Splits
from trainer.guard import RETRY_SECONDS
from trainer.mistakes import (
    CONFUSION_TAG,
    EXAMPLES,
    MISTAKES_TAG,
    SHOWN,
    MistakesLogger,
    mistakes_callbacks,
)
from trainer.pictures import confusion_counts, confusion_picture, mistakes_grid

RNG = np.random.default_rng(0)
X = RNG.random((EXAMPLES + 20, 28, 28)).astype(np.float32)
Y = RNG.integers(0, 10, len(X))


@pytest.fixture(scope="module")
def model() -> Any:
    from trainer.model import build_model

    return build_model(0.001)  # untrained: most digits come out wrong


def logger_for(model: Any, events: Path) -> MistakesLogger:
    logger = MistakesLogger(X, Y, events)
    logger.set_model(model)
    logger.on_train_begin()
    return logger


def read_tensors(events: Path) -> EventAccumulator:
    return EventAccumulator(str(events), size_guidance={TENSORS: 0}).Reload()


def test_each_epoch_end_writes_both_pictures_as_tensorboard_reads_them(
    model: Any, tmp_path: Path
) -> None:
    logger = logger_for(model, tmp_path / "events")
    for epoch in range(2):
        logger.on_epoch_end(epoch)
    logger.on_train_end()
    assert logger.predict is not None
    predicted = logger.predict().numpy()
    truth = Y[:EXAMPLES]
    wrong = np.flatnonzero(predicted != truth)[:SHOWN]
    assert len(predicted) == EXAMPLES and len(wrong) == SHOWN
    # The traced forward pass predicts what Keras does (to rounding: ties may fall apart).
    keras_says = model.predict(X[:EXAMPLES], verbose=0).argmax(axis=1)
    assert (predicted == keras_says).mean() >= 0.98
    expected = {
        MISTAKES_TAG: mistakes_grid(X[wrong], truth[wrong], predicted[wrong]),
        CONFUSION_TAG: confusion_picture(confusion_counts(truth, predicted, 10)),
    }

    accumulator = read_tensors(tmp_path / "events")
    assert set(accumulator.Tags()["tensors"]) == set(expected)
    for tag, picture in expected.items():
        events = accumulator.Tensors(tag)
        assert [event.step for event in events] == [1, 2]
        width, height, png = events[-1].tensor_proto.string_val
        assert (int(width), int(height)) == (picture.width, picture.height)
        assert np.array_equal(np.asarray(Image.open(io.BytesIO(png)).convert("RGB")), picture.rgb())
        assert accumulator.SummaryMetadata(tag).plugin_data.plugin_name == "images"
    assert accumulator.SummaryMetadata(MISTAKES_TAG).summary_description == (
        f"Test digits the model got wrong after epoch 1 (of the first {EXAMPLES}): "
        "true label green, predicted red."
    )
    assert accumulator.SummaryMetadata(CONFUSION_TAG).summary_description == (
        f"Rows: true digit; columns: predicted digit; the first {EXAMPLES} test digits."
    )


def test_a_full_disk_costs_one_warning_and_the_pictures_come_back_with_room(
    model: Any, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A real ENOSPC (a full tmpfs): the epochs that hit it are skipped, never the training,
    and leave no half record and no empty file behind; once there is room a new file takes
    the pictures, and readers find every whole one."""
    from dashboard.media import read_media
    from tests.launcher.helpers import fill_disk, small_disk

    with small_disk(tmp_path / "disk", "256k") as disk:
        logger = logger_for(model, disk / "events")
        now = [0.0]
        logger.images.clock = lambda: now[0]
        logger.on_epoch_end(0)  # written
        filler = fill_disk(disk)
        logger.on_epoch_end(1)  # fails: one warning
        after_failure = whole_records(disk / "events")
        logger.on_epoch_end(2)  # resting: skipped quietly
        now[0] += RETRY_SECONDS
        logger.on_epoch_end(3)  # tried again on the full disk: fails quietly
        still_full = whole_records(disk / "events")
        filler.unlink()
        now[0] += RETRY_SECONDS
        logger.on_epoch_end(4)  # written again, and said so
        logger.on_train_end()
        media = read_media(disk)
        at_end = whole_records(disk / "events")

    # Every file holds whole records only, at least one event each: never half a record
    # where the disk stopped taking it, never an empty file from a try on a full disk.
    assert list(after_failure.values()) == [2], after_failure
    assert still_full == after_failure
    assert sorted(at_end.values()) == [2, 2], at_end

    err = capsys.readouterr().err
    assert err.count("tfcluster: cannot write images in events/") == 1, err
    assert "no space left on device" in err
    assert "tfcluster: writing images in events/ works again" in err
    for tag in (MISTAKES_TAG, CONFUSION_TAG):
        assert [entry.step for entry in media[("events", tag)].entries] == [1, 5]


def whole_records(folder: Path) -> dict[str, int]:
    """Each file's count of records (the version record too), checked to end on a whole,
    CRC-checked record."""
    from dashboard.tfrecord import masked_crc32c

    counts = {}
    for path in sorted(folder.iterdir()):
        data, pos, count = path.read_bytes(), 0, 0
        while pos < len(data):
            assert pos + 12 <= len(data), f"{path.name} ends in half a header at {pos}"
            (length,) = struct.unpack_from("<Q", data, pos)
            end = pos + 12 + length + 4
            assert end <= len(data), f"{path.name} ends in half a record at {pos}"
            body = data[pos + 12 : pos + 12 + length]
            assert struct.unpack_from("<I", data, end - 4)[0] == masked_crc32c(body)
            pos, count = end, count + 1
        counts[path.name] = count
    return counts


@pytest.mark.parametrize(
    ("index", "mistakes", "loggers"), [(0, True, 1), (1, True, 0), (0, False, 0)]
)
def test_only_the_chief_draws_its_mistakes_unless_told_not_to(
    tmp_path: Path, index: int, mistakes: bool, loggers: int
) -> None:
    config = TrainConfig(run_dir=tmp_path, mistakes=mistakes)
    cluster = Cluster(workers=("a:1", "b:2"), index=index)
    splits = Splits("digits", X, Y, X, Y)
    assert len(mistakes_callbacks(config, cluster, splits)) == loggers
