"""The wrapper of a user's own program (`python -m trainer.wrap`): its pure parts, Keras'
printed progress into a shared status.json, then real runs of wrapped workers started the way
a host starts them (TF_CONFIG, the script's folder as working directory, the shipped code on
PYTHONPATH): the example in examples/ (with ClusterProgress), a program that prints Keras'
output without it, and a program that fails on worker 1."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from launcher.display import progress_text
from runformat import ARTIFACTS_DIR, EVENTS_DIR, status_path, worker_dir
from tests.launcher.helpers import fill_disk, small_disk, wait_for
from tests.trainer.test_kerasprogress import EXPECTED, REAL, captured, printed
from tests.trainer.workers import REPO, SYSTEM_TAGS, Finished, read_scalars, tf_configs, wait_all
from trainer import sysmetrics, wrap
from trainer.errors import InputError
from trainer.status import StatusFile, initial_status
from trainer.wrap import KerasStatus, Tail, ending, exit_code_of, parse_args

EXAMPLES = REPO / "examples"
# One test process for the module, so that the example runs once.
pytestmark = pytest.mark.xdist_group("test_wrap")


# --- pure parts -------------------------------------------------------------------------------


def test_options_come_before_the_script_and_the_rest_is_the_programs() -> None:
    config = parse_args(["--run-dir", "r", "train.py", "--epochs", "3", "--run-dir", "x"])
    assert config.script == "train.py"
    assert config.args == ("--epochs", "3", "--run-dir", "x")
    assert config.run_dir == Path("r").absolute()


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["train.py"], "the following arguments are required: --run-dir"),
        (["--run-dir", "r"], "the following arguments are required: script"),
        (["--run-dir", "r", "--system-every", "0", "t.py"], "--system-every: expected seconds"),
    ],
)
def test_bad_options_are_one_line(argv: list[str], message: str) -> None:
    with pytest.raises(InputError, match=message):
        parse_args(argv)


def test_the_tail_keeps_the_last_lines_and_a_progress_bars_last_state() -> None:
    tail = Tail(lines=2)
    tail.feed(b"one\ntw")
    tail.feed(b"o\n\n10%\r50%\r100%\nlast without newline")
    tail.close()
    assert list(tail.lines) == ["100%", "last without newline"]


@pytest.mark.parametrize(
    ("returncode", "state", "error", "code"),
    [
        (0, "finished", None, 0),
        (3, "failed", "ValueError: boom", 3),
        (-15, "failed", "killed by SIGTERM: ValueError: boom", 143),
    ],
)
def test_how_a_program_ended(returncode: int, state: str, error: str | None, code: int) -> None:
    tail = Tail()
    tail.feed(b"Traceback (most recent call last):\nValueError: boom\n")
    fields = ending(returncode, tail)
    assert (fields["state"], fields["error"], fields["exit_code"]) == (state, error, returncode)
    assert exit_code_of(returncode) == code
    assert ("log_tail" in fields) == (returncode != 0)


def test_the_wrapper_samples_as_often_as_the_trainer_by_default() -> None:
    assert wrap.SAMPLE_SECONDS == sysmetrics.SAMPLE_SECONDS


def test_a_silent_failure_still_says_its_exit_code() -> None:
    assert ending(4, Tail())["error"] == "exited with code 4"


# --- Keras' printed progress in status.json ----------------------------------------------------


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def shared_status(tmp_path: Path) -> tuple[StatusFile, Path]:
    """status.json as the wrapper leaves it once the program runs (phase `running`)."""
    path = tmp_path / "status.json"
    status = StatusFile(path, initial_status(0, "chief", "h", 7, None, 1.0), shared=True)
    status.write_now()
    assert status.set_if({"phase": "starting"}, state="running", phase="running")
    return status, path


def running_fields(path: Path) -> tuple[object, ...]:
    st = json.loads(path.read_text())
    return tuple(st[k] for k in ("phase", "epoch", "epochs", "step", "steps_total"))


def test_keras_printed_progress_lands_in_status_json_as_it_comes(tmp_path: Path) -> None:
    status, path = shared_status(tmp_path)
    clock = Clock()
    keras = KerasStatus(status, clock)
    data = captured("tfkeras_v1_val_acc")
    cut = data.index(b"\x08", data.index(b"\r3/6", data.index(b"Epoch 2/3")))
    keras.feed(data[:cut])  # epoch 2's bar drawn at 3/6, no redraw after it yet
    keras.report()
    assert running_fields(path) == ("running", 1, 3, 6 + 2, 18)  # 3/6 not settled yet
    clock.now += 1.0
    keras.report()
    assert running_fields(path) == ("running", 1, 3, 6 + 3, 18)
    before = path.stat().st_mtime_ns
    keras.report()  # nothing moved: nothing written
    assert path.stat().st_mtime_ns == before
    keras.feed(data[cut:])
    keras.report(ended=True)
    st = json.loads(path.read_text())
    history = EXPECTED["tfkeras_v1_val_acc"]["history"]
    assert running_fields(path) == ("running", *REAL["tfkeras_v1_val_acc"])
    assert (st["loss"], st["accuracy"]) == (printed(history["loss"]), printed(history["accuracy"]))
    assert st["examples_per_sec"] is None  # the callback's alone
    # The launcher's table and `fab status` read it as a running worker with steps.
    assert progress_text(st).startswith("running  epoch 3/3  step 18/18  loss 0.6366  acc 0.646")


def test_the_callback_wins_once_it_has_written(tmp_path: Path) -> None:
    """A program with ClusterProgress prints Keras' bar too: the wrapper reads it until the
    callback speaks, then never writes those fields again, even after fit (phase running)."""
    status, path = shared_status(tmp_path)
    keras = KerasStatus(status, Clock())
    data = captured("tfkeras_v1_val_acc")
    keras.feed(data[: data.index(b"Epoch 2/3")])
    keras.report()
    assert running_fields(path) == ("running", 1, 3, 6, 18)
    callback = StatusFile(path, {}, shared=True)
    callback.enter("training", epochs=3, steps_total=18, step=6, epoch=1)
    callback.update(step=10, loss=0.25, examples_per_sec=100.0)
    keras.feed(data[data.index(b"Epoch 2/3") :])
    keras.report(ended=True)
    assert keras.yielded
    callback.enter("running", epoch=3, step=18)  # after fit
    keras.report(ended=True)
    st = json.loads(path.read_text())
    assert running_fields(path) == ("running", 3, 3, 18, 18)
    assert (st["loss"], st["examples_per_sec"]) == (0.25, 100.0)


def test_a_callback_that_spoke_between_two_reports_is_never_overwritten(tmp_path: Path) -> None:
    """A fit shorter than a report's interval: the wrapper never saw phase training, but the
    fields are no longer those it wrote."""
    status, path = shared_status(tmp_path)
    keras = KerasStatus(status, Clock())
    StatusFile(path, {}, shared=True).update(epoch=2, epochs=2, step=10, steps_total=10, loss=0.5)
    keras.feed(captured("tfkeras_v1_plain"))
    keras.report(ended=True)
    assert keras.yielded
    assert json.loads(path.read_text())["loss"] == 0.5


def test_a_phase_of_the_callbacks_own_only_pauses_the_wrapper(tmp_path: Path) -> None:
    """A program that uses ClusterProgress only for `with progress.phase("saving")`."""
    status, path = shared_status(tmp_path)
    keras = KerasStatus(status, Clock())
    data = captured("tfkeras_v1_val_acc")
    StatusFile(path, {}, shared=True).enter("saving")
    keras.feed(data[: data.index(b"Epoch 2/3")])
    keras.report()
    assert running_fields(path) == ("saving", None, None, None, None)
    StatusFile(path, {}, shared=True).enter("running")
    keras.report()
    assert running_fields(path) == ("running", 1, 3, 6, 18) and not keras.yielded


def test_a_nan_loss_is_left_unsaid(tmp_path: Path) -> None:
    status, path = shared_status(tmp_path)
    keras = KerasStatus(status, Clock())
    keras.feed(b"Epoch 1/2\n\r3/9 [=>...] - ETA: 1s - loss: nan - accuracy: 0.5000\n")
    keras.report(ended=True)
    st = json.loads(path.read_text())
    assert (st["step"], st["loss"], st["accuracy"]) == (3, None, 0.5)


# --- real wrapped workers ---------------------------------------------------------------------


def start_wrapped(
    n: int, run_dir: Path, cwd: Path, script: str, *args: str, env: dict[str, str] | None = None
) -> list[subprocess.Popen[str]]:
    """n workers of `python -m trainer.wrap --run-dir RUN SCRIPT ARGS`, as a host runs them."""
    base = {k: v for k, v in (env or os.environ).items() if k != "TF_CONFIG"}
    base.update(CUDA_VISIBLE_DEVICES="-1", TF_CPP_MIN_LOG_LEVEL="2", PYTHONPATH=str(REPO))
    base.pop("TF_USE_LEGACY_KERAS", None)
    argv = [sys.executable, "-m", "trainer.wrap", "--run-dir", str(run_dir)]
    argv += ["--system-every", "0.5", script, *args]
    processes = []
    for tf_config in tf_configs(n):
        worker_env = dict(base)
        if tf_config is not None:
            worker_env["TF_CONFIG"] = tf_config
        processes.append(
            subprocess.Popen(
                argv,
                cwd=cwd,
                env=worker_env,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
                start_new_session=True,
            )
        )
    return processes


def status(run_dir: Path, index: int) -> dict[str, object]:
    return json.loads(status_path(run_dir, index).read_text())


@pytest.fixture(scope="module")
def example_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[Finished]]:
    """examples/train_digits.py on two wrapped workers, 2 epochs of 6 steps."""
    run_dir = tmp_path_factory.mktemp("example") / "run"
    args = ("--epochs", "2", "--steps-per-epoch", "6", "--batch-size", "16")
    started = start_wrapped(2, run_dir, EXAMPLES, "train_digits.py", *args)
    return run_dir, wait_all(started, timeout=300)


@pytest.mark.slow
def test_the_example_trains_on_two_wrapped_workers(
    example_run: tuple[Path, list[Finished]],
) -> None:
    run_dir, workers = example_run
    for w in workers:
        assert w.returncode == 0, w.stderr[-3000:]
        st = status(run_dir, w.index)
        assert (st["state"], st["phase"], st["exit_code"], st["error"]) == (
            "finished", "ended", 0, None
        )  # fmt: skip
        # ClusterProgress inside the program filled the running fields of the same file.
        assert (st["epoch"], st["epochs"], st["step"], st["steps_total"]) == (2, 2, 12, 12)
        assert st["examples_per_sec"] and st["loss"] is not None
        assert isinstance(st["pid"], int) and st["pid"] != os.getpid()
        assert isinstance(st["system"], dict) and st["system"]["memory_mb"] > 100
        scalars = read_scalars(worker_dir(run_dir, w.index) / EVENTS_DIR)
        assert set(scalars) >= SYSTEM_TAGS, sorted(scalars)
        assert {"progress/loss", "progress/examples_per_sec", "epoch/loss"} <= set(scalars)
        assert [step for step, _ in scalars["epoch/loss"]] == [1, 2]
        assert "tfcluster: cannot write" not in w.stderr
        assert f"worker {w.index}: test accuracy" in w.stdout  # the program's own output
        # Keras printed its epochs too (verbose=2): the callback's fields won, not those.
        last_printed = float(re.findall(r" - loss: ([0-9.]+)", w.stdout)[-1])
        assert st["loss"] != last_printed
    # The program's own Keras TensorBoard logs, under the chief's worker folder.
    keras_logs = read_scalars(worker_dir(run_dir, 0) / "tensorboard" / "train")
    assert [step for step, _ in keras_logs["epoch_loss"]] == [0, 1]
    # The chief's artifact, and only the chief's.
    assert (run_dir / ARTIFACTS_DIR / "digits_model.h5").stat().st_size > 10_000
    assert [p.name for p in (run_dir / ARTIFACTS_DIR).iterdir()] == ["digits_model.h5"]


PRINTS_KERAS = """
import os, sys, time
data = open(sys.argv[1], "rb").read()
pause = data.index(b"Epoch 3/3")
sys.stdout.buffer.write(data[:pause])
sys.stdout.flush()
deadline = time.monotonic() + 60
while not os.path.exists("go") and time.monotonic() < deadline:  # silent, like a long save
    time.sleep(0.05)
for i in range(pause, len(data), 100):
    sys.stdout.buffer.write(data[i : i + 100])
    sys.stdout.flush()
"""


def test_a_program_without_the_callback_shows_the_progress_keras_printed(tmp_path: Path) -> None:
    """The bytes of a real tf-keras fit, printed by a program that then stays silent: the
    worker is `running` with the steps Keras printed meanwhile, ends with its last epoch, and
    its log holds the program's bytes unchanged."""
    (tmp_path / "prints.py").write_text(PRINTS_KERAS)
    fixture = Path(__file__).resolve().parent / "keras_output" / "tfkeras_v1_val_acc.out"
    run_dir = tmp_path / "run"
    argv = [sys.executable, "-m", "trainer.wrap", "--run-dir", str(run_dir), "prints.py"]
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.Popen(
        [*argv, str(fixture)], cwd=tmp_path, env=env, stdout=subprocess.PIPE, start_new_session=True
    )
    try:
        wait_for(
            lambda: status_path(run_dir, 0).exists() and status(run_dir, 0).get("step") == 12,
            30,
            "epoch 2's steps in status.json",
        )
        mid = status(run_dir, 0)
        (tmp_path / "go").touch()
        out, _ = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    assert (mid["state"], mid["phase"], mid["epoch"], mid["epochs"]) == ("running", "running", 2, 3)
    assert mid["steps_total"] == 18 and mid["loss"] == 0.8231
    assert proc.returncode == 0
    st = status(run_dir, 0)
    assert (st["state"], st["phase"]) == ("finished", "ended")
    assert (st["epoch"], st["epochs"], st["step"], st["steps_total"]) == REAL["tfkeras_v1_val_acc"]
    assert (st["loss"], st["accuracy"]) == (0.6366, 0.6458)
    data = fixture.read_bytes()
    assert out[: len(data)] == data  # the program's output, byte for byte
    assert re.fullmatch(rb"trainer: worker 0 ended \([0-9.]+ s after start\)\n", out[len(data) :])


FAILS_ON_WORKER_1 = """
import os, sys, time
print("worker", os.environ["TFCLUSTER_WORKER_INDEX"], "of", os.environ["TFCLUSTER_NUM_WORKERS"])
print("env", os.environ["TF_USE_LEGACY_KERAS"], os.environ["TFCLUSTER_BACKUP_DIR"], sys.argv[1:])
time.sleep(1.5)
if os.environ["TFCLUSTER_WORKER_INDEX"] == "1":
    print("loading shard 1", file=sys.stderr)
    print("ValueError: shard 1 is empty", file=sys.stderr)
    sys.exit(3)
"""


@pytest.mark.slow
def test_a_program_that_exits_3_on_worker_1(tmp_path: Path) -> None:
    folder = tmp_path / "project"
    folder.mkdir()
    (folder / "job.py").write_text(FAILS_ON_WORKER_1)
    run_dir = tmp_path / "run"
    env = {**os.environ, "TF_USE_LEGACY_KERAS": "0"}
    started = time.monotonic()
    w0, w1 = wait_all(start_wrapped(2, run_dir, folder, "job.py", "--x", "1", env=env), 60)
    assert time.monotonic() - started < 20  # no TensorFlow in the wrapper: it starts at once
    assert w0.returncode == 0, w0.stderr
    assert w1.returncode == 3, w1.stderr
    assert "worker 1 of 2" in w1.stdout
    assert f"env 1 {run_dir}/backup ['--x', '1']" in w1.stdout  # the wrapper's env, args as given
    assert w1.stderr.rstrip().endswith("ValueError: shard 1 is empty")  # teed to the log
    st = status(run_dir, 1)
    assert (st["state"], st["phase"], st["exit_code"]) == ("failed", "ended", 3)
    assert st["error"] == "ValueError: shard 1 is empty"
    assert st["log_tail"][-2:] == ["loading shard 1", "ValueError: shard 1 is empty"]
    assert status(run_dir, 0)["state"] == "finished"
    assert set(read_scalars(worker_dir(run_dir, 1) / EVENTS_DIR)) >= SYSTEM_TAGS


@pytest.mark.slow
def test_a_signal_reaches_the_program_and_the_wrapper_says_so(tmp_path: Path) -> None:
    (tmp_path / "sleep.py").write_text("import time\nprint('up', flush=True)\ntime.sleep(60)\n")
    (proc,) = start_wrapped(1, tmp_path / "run", tmp_path, "sleep.py")
    assert proc.stdout is not None
    assert proc.stdout.readline() == "up\n"
    os.kill(proc.pid, signal.SIGTERM)  # the wrapper alone: it forwards to the program
    (ended,) = wait_all([proc], timeout=30)
    assert ended.returncode == 128 + signal.SIGTERM
    st = status(tmp_path / "run", 0)
    assert (st["state"], st["exit_code"], st["error"]) == ("failed", -15, "killed by SIGTERM")


def test_a_missing_script_is_one_line_before_anything_starts(tmp_path: Path) -> None:
    (proc,) = start_wrapped(1, tmp_path / "run", tmp_path, "nope.py")
    (ended,) = wait_all([proc], timeout=30)
    assert ended.returncode == 2
    assert ended.stderr == f"trainer.wrap: error: nope.py: no such file in {tmp_path}\n"
    assert not (tmp_path / "run").exists()


CHATTY = """
import os, sys, time
i = 0
while not os.path.exists("stop") and i < 1200:  # at most 2 minutes
    print("line", i, "x" * 500, file=sys.stderr, flush=True)
    time.sleep(0.1)
    i += 1
print("last words", file=sys.stderr, flush=True)
"""


@pytest.mark.slow
def test_a_full_disk_never_ends_a_wrapped_program(tmp_path: Path) -> None:
    """The worker's folder (status.json, events, its log) on a tmpfs filled to the last byte
    while the program runs: it still ends with its own exit code and the last status lands."""
    (tmp_path / "chatty.py").write_text(CHATTY)
    run_dir = tmp_path / "run"
    with small_disk(worker_dir(run_dir, 0), "256k") as disk:
        log_path = disk / "worker.log"
        with open(log_path, "wb") as log:
            argv = [sys.executable, "-m", "trainer.wrap", "--run-dir", str(run_dir)]
            argv += ["--system-every", "0.2", "chatty.py"]
            env = {**os.environ, "PYTHONPATH": str(REPO)}
            proc = subprocess.Popen(argv, cwd=tmp_path, env=env, stdout=log, stderr=log)
        try:
            events = worker_dir(run_dir, 0) / EVENTS_DIR
            wait_for(lambda: list(events.glob("events.out.*")), 30, "the first system sample")
            filler = fill_disk(disk)
            time.sleep(3)  # ~15 system samples, each a status.json and an event write refused
            filler.unlink()
            time.sleep(3)  # room again: the writes resume and say so
        finally:
            (tmp_path / "stop").touch()
            (ended,) = wait_all([proc], timeout=60)  # type: ignore[list-item]
        log_text = log_path.read_text()
        st = status(run_dir, 0)
        scalars = read_scalars(worker_dir(run_dir, 0) / EVENTS_DIR)
    assert ended.returncode == 0
    assert (st["state"], st["exit_code"]) == ("finished", 0)
    assert log_text.count("tfcluster: cannot write status.json") == 1, log_text[-2000:]
    assert "no space left on device" in log_text
    assert "tfcluster: writing status.json works again" in log_text
    assert "last words" in log_text  # the program's last line reached the log
    assert set(scalars) >= SYSTEM_TAGS


@pytest.mark.slow
def test_a_process_the_program_leaves_behind_does_not_hold_the_wrapper(tmp_path: Path) -> None:
    (tmp_path / "leave.py").write_text(
        "import subprocess\nsubprocess.Popen(['sleep', '60'])\nprint('bye', flush=True)\n"
    )
    (proc,) = start_wrapped(1, tmp_path / "run", tmp_path, "leave.py")
    try:
        (ended,) = wait_all([proc], timeout=30)  # sleep holds the pipes: the wrapper moves on
    finally:
        os.killpg(proc.pid, signal.SIGKILL)  # the sleep, in the wrapper's process group
    assert ended.returncode == 0 and ended.stdout.startswith("bye\n")
    assert status(tmp_path / "run", 0)["state"] == "finished"
