"""Reading Keras' own progress output (trainer.kerasprogress) from real captures of the installed
tf-keras and Keras 3 into a pipe (tests/trainer/keras_output, made by its capture.py), compared
with what each program's History said; then the same bytes split at every byte, and hostile
output: huge lines, binary junk, things that look like bars."""

from __future__ import annotations

import json
import random
import re
from pathlib import Path

import pytest

from trainer.kerasprogress import MAX_SEGMENT, KerasProgress, ProgressReader

OUTPUT = Path(__file__).resolve().parent / "keras_output"
EXPECTED = json.loads((OUTPUT / "expected.json").read_text())


def captured(name: str) -> bytes:
    return (OUTPUT / f"{name}.out").read_bytes()


def printed(value: float) -> float:
    """A metric as Keras prints it (`%.4f`)."""
    return float(f"{value:.4f}")


def read(data: bytes, chunk: int | None = None) -> ProgressReader:
    reader = ProgressReader()
    step = chunk or len(data) or 1
    for i in range(0, len(data), step):
        reader.feed(data[i : i + step], float(i))
    return reader


def fields(progress: KerasProgress | None) -> tuple[object, ...] | None:
    if progress is None:
        return None
    return (progress.epoch, progress.epochs, progress.step, progress.steps_total)


# name: (epoch, epochs, step, steps_total) at the end. Every capture's fit uses 16-row batches
# of 96 rows (6 steps) or steps_per_epoch; History gives loss and accuracy.
REAL = {
    "tfkeras_v1_val_acc": (3, 3, 18, 18),  # verbose=1, validation, accuracy
    "tfkeras_v1_plain": (2, 2, 10, 10),  # verbose=1, loss only
    "tfkeras_v1_unknown_steps": (3, 3, 18, 18),  # the first epoch's bar says `Unknown`
    "tfkeras_v2_val_acc": (3, 3, 18, 18),  # verbose=2: one line per epoch
    "tfkeras_v2_plain": (2, 2, 10, 10),
    "tfkeras_v1_one_epoch_then_evaluate": (1, 1, 4, 4),  # no Epoch line; evaluate's bar after
    "tfkeras_v1_evaluate_after_fit": (2, 2, 8, 8),  # evaluate's bar is not training
    "keras3_v1_val_acc": (3, 3, 18, 18),  # Keras 3: `━` bar, ANSI colours
    "keras3_v2_val_acc": (2, 2, 12, 12),
}


def test_every_capture_has_a_row() -> None:
    assert set(REAL) == set(EXPECTED) == {p.stem for p in OUTPUT.glob("*.out")}


@pytest.mark.parametrize("name", REAL)
def test_the_end_of_a_real_fit_is_what_history_says(name: str) -> None:
    progress = read(captured(name)).latest()
    history = EXPECTED[name]["history"]
    assert fields(progress) == REAL[name]
    assert progress is not None
    assert progress.loss == printed(history["loss"])
    if "accuracy" in history:
        assert progress.accuracy == printed(history["accuracy"])
    else:
        assert progress.accuracy is None
    assert progress.step_in_epoch == 0  # the last epoch closed


@pytest.mark.parametrize("name", REAL)
def test_split_at_every_byte_it_reads_the_same_and_only_moves_forward(name: str) -> None:
    """One byte at a time, asking after each: a bar still being drawn counts once settled
    (`latest(now)` well after the last byte), half a redraw never sends the step back, and
    the epoch always contains the step."""
    data = captured(name)
    (epochs, total), per_epoch = REAL[name][1::2], REAL[name][3] // REAL[name][1]
    verbose = EXPECTED[name]["case"]["verbose"]
    reader = ProgressReader()
    steps: list[int] = []
    last = {False: (0, 0), True: (0, 0)}
    for i in range(len(data)):
        reader.feed(data[i : i + 1], float(i))
        for settled in (False, True):
            progress = reader.latest(i + 10.0 if settled else float(i))
            if progress is None or progress.step is None:
                continue
            here = (progress.epoch, progress.step)
            assert here >= last[settled], (i, data[max(0, i - 80) : i + 1])
            last[settled] = here
            assert progress.epochs == epochs and progress.step <= total
            if progress.steps_per_epoch:
                assert progress.steps_total == total
                e = progress.epoch * per_epoch
                assert e <= progress.step <= e + per_epoch
            steps.append(progress.step)
    assert fields(reader.latest()) == REAL[name]
    # verbose=1 redraws the bar after every step (the captures sleep 0.06 s a step);
    # verbose=2 says each epoch's end; step 0 is the first Epoch line's, if there is one.
    every = 1 if verbose == 1 else per_epoch
    first = 0 if data.startswith(b"Epoch 1/") else every
    assert sorted(set(steps)) == list(range(first, total + 1, every))


@pytest.mark.parametrize("chunk", [2, 7, 64, 1000])
def test_any_chunking_reads_the_same(chunk: int) -> None:
    for name in REAL:
        whole, split = read(captured(name)).latest(), read(captured(name), chunk).latest()
        assert split == whole, name


def test_a_bar_still_being_drawn_counts_once_no_byte_came_for_half_a_second() -> None:
    reader = ProgressReader()
    reader.feed(
        b"Epoch 2/3\n\r 12/469 [==>.....] - ETA: 5s - loss: 0.3100 - accuracy: 0.9100", 100.0
    )
    assert fields(reader.latest(100.1)) == (1, 3, None, None)  # steps per epoch: not yet
    progress = reader.latest(100.5)
    assert progress is not None
    assert (progress.epoch, progress.step_in_epoch, progress.steps_per_epoch) == (1, 12, 469)
    assert (progress.step, progress.steps_total) == (469 + 12, 3 * 469)
    assert (progress.loss, progress.accuracy) == (0.31, 0.91)
    assert fields(reader.latest(None)) == (1, 3, 481, 1407)  # the output ended


def test_a_run_resumed_from_a_backup_counts_the_epochs_before_it() -> None:
    """BackupAndRestore: the program's output starts at a later epoch."""
    data = captured("tfkeras_v1_val_acc")
    resumed = data[data.index(b"Epoch 2/3") :]
    reader = ProgressReader()
    reader.feed(resumed[: resumed.index(b"\r2/6")], 0.0)
    assert fields(reader.latest(1.0)) == (1, 3, 7, 18)
    reader.feed(resumed[resumed.index(b"\r2/6") :], 2.0)
    assert fields(reader.latest()) == REAL["tfkeras_v1_val_acc"]


def test_an_epoch_line_alone_says_the_epoch() -> None:
    reader = ProgressReader()
    assert reader.latest() is None
    reader.feed(b"loading\nEpoch 1/10\n", 0.0)
    assert fields(reader.latest()) == (0, 10, 0, None)
    reader.feed(b"Epoch 4/10\n", 1.0)  # a resumed run, its bar not drawn yet
    assert fields(reader.latest()) == (3, 10, None, None)


@pytest.mark.parametrize(
    ("line", "loss", "accuracy"),
    [
        (b" 3/9 [=>...] - ETA: 1s - loss: 0.3100 - acc: 0.9000", 0.31, 0.9),
        (b" 3/9 [=>...] - ETA: 1s - loss: 1.2345e-04 - categorical_accuracy: 0.5", 1.2345e-4, 0.5),
        (b" 3/9 [=>...] - ETA: 1s - loss: nan - val_accuracy: 0.2", None, None),
        (b" 3/9 [=>...] - ETA: 1:02:03 - loss: 0.3100hello - accuracy: x", None, None),
        (b"3/9 - 1s - loss: 0.5000 - accuracy: 0.2500 - 1s/epoch - 10ms/step", 0.5, 0.25),
    ],
)  # fmt: skip
def test_metrics_as_printed(line: bytes, loss: float | None, accuracy: float | None) -> None:
    reader = ProgressReader()
    reader.feed(b"Epoch 1/2\n" + line + b"\n", 0.0)
    progress = reader.latest()
    assert progress is not None and progress.step == 3
    got = progress.loss
    assert (got if got is None or got == got else None) == loss  # NaN reads as NaN: not equal
    assert progress.accuracy == accuracy


@pytest.mark.parametrize(
    "junk",
    [
        b"99999999999999/1 - loss: 1\n",  # more steps than the bar's total
        b"1/0 - loss: 1\n",
        b"12/469\n",  # a fraction, not a bar
        b"Epoch 0/3\nEpoch 5/3\nEpoch 1/\nEpoch x/3\n",
        b"\x1b[31mred\x1b[0m 1/2 nothing\n",
        b"\r\b\n" * 1000,
    ],
)
def test_lines_that_only_look_like_keras_are_not_read(junk: bytes) -> None:
    reader = ProgressReader()
    reader.feed(junk, 0.0)
    assert reader.latest() is None


def test_a_huge_line_without_newlines_is_skipped_in_bounded_memory() -> None:
    """100 MB on one line (a progress bar of the program's own, a binary dump), then Keras."""
    reader = ProgressReader()
    chunk = b"12/469 [==>" + b"x" * 65525
    for i in range(1600):
        reader.feed(chunk, float(i))
        assert reader.buffered <= MAX_SEGMENT
    assert reader.latest() is None
    reader.feed(b"\n" + captured("tfkeras_v1_val_acc"), 2000.0)
    assert fields(reader.latest()) == REAL["tfkeras_v1_val_acc"]


def test_binary_junk_around_a_real_fit_leaves_it_readable() -> None:
    rng = random.Random(0)
    junk = bytes(rng.getrandbits(8) for _ in range(1 << 20))
    assert b"Epoch " not in junk
    reader = ProgressReader()
    data = junk + b"\n" + captured("tfkeras_v1_plain") + junk
    for i in range(0, len(data), 4093):
        reader.feed(data[i : i + 4093], float(i))
        assert reader.buffered <= MAX_SEGMENT
    assert fields(reader.latest()) == REAL["tfkeras_v1_plain"]


def test_a_line_as_long_as_a_bar_may_be_is_still_read() -> None:
    """Many metrics make a long bar; up to MAX_SEGMENT bytes it is read."""
    metrics = "".join(f" - m{i}: 0.{i:04d}" for i in range(300))
    line = f" 3/9 [=>...] - ETA: 1s - loss: 0.2500{metrics}".encode()[: MAX_SEGMENT - 1]
    line = line[: line.rindex(b" - ")]
    reader = ProgressReader()
    reader.feed(b"Epoch 1/2\n" + line + b"\n", 0.0)
    progress = reader.latest()
    assert progress is not None and progress.loss == 0.25
    assert re.fullmatch(r"m\d+", list(progress.metrics)[-1])
