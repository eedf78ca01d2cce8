"""A run folder of a user's program without ClusterProgress, written by the wrapper's own
code (trainer.wrap, trainer.status, trainer.eventfile): each worker's status.json goes from
`starting` to `running` and then takes what a Keras progress bar, fed to the wrapper's
KerasStatus byte for byte, says; each worker has the wrapper's system event file and no
progress events. The launcher's part (cluster.json) is its record type, written whole.
"""

from __future__ import annotations

import time
from pathlib import Path

from runformat import (
    CLUSTER_JSON,
    PROGRESS_LOSS,
    ClusterRecord,
    HostEntry,
    Program,
    events_dir,
    status_path,
    write_json_atomic,
)
from trainer.eventfile import ScalarFile
from trainer.status import StatusFile, initial_status
from trainer.sysmetrics import Sample
from trainer.wrap import KerasStatus, Tail, ending

BAR = 30


def keras_bar(step: int, steps: int, loss: float, accuracy: float, closing: bool) -> bytes:
    """One redraw of tf-keras' verbose=1 bar (backspaces, a carriage return, the bar), as it
    reaches the wrapper's pipe; `closing`: the epoch's last, ended by a newline."""
    done = BAR * step // steps
    arrow = "=" * done if closing else "=" * max(done - 1, 0) + ">"
    middle = "1s 10ms/step" if closing else "ETA: 1s"
    line = (
        f"{step:>{len(str(steps))}}/{steps} [{arrow:.<{BAR}}] - {middle}"
        f" - loss: {loss:.4f} - accuracy: {accuracy:.4f}"
    )
    return b"\b" * 80 + b"\r" + line.encode() + (b"\n" if closing else b"")


class ScriptRun:
    """runs/<run_id>/ of `train.py` on `workers` local workers, training as told."""

    def __init__(
        self, runs_dir: Path, run_id: str, workers: int = 2, epochs: int = 2, steps: int = 10
    ) -> None:
        self.path = runs_dir / run_id
        self.epochs, self.steps = epochs, steps
        self.now = 0.0  # the wrappers' monotonic clock, moved on by each print
        self.created = time.time()
        hosts = tuple(
            HostEntry(index=i, role="chief" if i == 0 else "worker", name="localhost",
                      local=True, addr="localhost", tf_port=23456 + i)
            for i in range(workers)
        )  # fmt: skip
        self.cluster = ClusterRecord(
            run_id=run_id,
            created=self.created,
            state="running",
            hosts=hosts,
            program=Program(kind="script", script="train.py", folder="/home/me/project"),
            trainer_args=("--epochs", str(epochs)),
            epochs=None,
        )
        write_json_atomic(self.path / CLUSTER_JSON, self.cluster.to_dict())
        self.status: dict[int, StatusFile] = {}
        self.keras: dict[int, KerasStatus] = {}
        for host in hosts:
            i = host.index
            status = StatusFile(
                status_path(self.path, i),
                initial_status(i, host.role, "localhost", 5000 + i, None, time.time()),
                shared=True,
            )
            status.write_now()
            status.set_if({"phase": "starting"}, state="running", phase="running",
                          phase_since=time.time(), pid=6000 + i)  # fmt: skip
            self.status[i] = status
            self.keras[i] = KerasStatus(status, clock=lambda: self.now)
            sample = Sample(time.time(), 97.0, 300.0 + i, 60.0, 40.0, 0.1, 0.1)
            ScalarFile(events_dir(self.path, i)).write(1, sample.scalars(), sample.time)
            status.beat(system=sample.as_status())

    def print(self, data: bytes) -> None:
        """Every worker prints `data` on its stdout; the wrappers then write their status."""
        for keras in self.keras.values():
            keras.feed(data)
        self.now += 2.0  # the bar has settled: the next report reads it
        for keras in self.keras.values():
            keras.report()

    def train(self, step: int, loss: float, accuracy: float) -> None:
        """fit has got to global `step`: 0 prints the first `Epoch` line; the last step of
        an epoch closes its bar (and the next epoch's line follows)."""
        epoch, within = divmod(step, self.steps)
        if step == 0:
            data = f"Epoch 1/{self.epochs}\n".encode()
        elif within:
            data = keras_bar(within, self.steps, loss, accuracy, closing=False)
        else:
            data = keras_bar(self.steps, self.steps, loss, accuracy, closing=True)
            if epoch < self.epochs:
                data += f"Epoch {epoch + 1}/{self.epochs}\n".encode()
        self.print(data)

    def finish(self) -> None:
        """The programs exit 0 and the launcher records the run as finished."""
        for i, keras in self.keras.items():
            keras.report(ended=True)
            self.status[i].enter("ended", **ending(0, Tail()))
        record = {**self.cluster.to_dict(), "state": "finished", "finished": time.time()}
        record["exit_codes"] = {str(i): 0 for i in self.status}
        write_json_atomic(self.path / CLUSTER_JSON, record)


def check_page_of_script_run(run_dir: Path, workers: int) -> None:
    """What the page's builders make of a real, finished `--script` run of a program without
    ClusterProgress that used Keras' TensorBoard callback into $TFCLUSTER_WORKER_DIR/tb
    (tests/launcher/tiny_script): every worker's printed epoch, step and loss in its row,
    only the wrapper's system tags among its events (so the page shows what was printed),
    and the chief's own epoch_loss charted among the program's scalars."""
    from dashboard import charts
    from dashboard.cluster import rows_frame, run_rows
    from dashboard.live import RunEvents
    from dashboard.printed import StatusTrail, latest, shows_printed
    from dashboard.runs import load_run

    run = load_run(run_dir)
    assert run.program.is_script and not run.active, run
    rows = run_rows(run, {}, time.time())
    assert len(rows) == workers
    for row in rows:
        status = run.workers[row.index]
        assert (row.state, row.epoch, row.step) == ("finished", status.epoch, status.step), row
        assert row.fraction == 1.0 and row.loss == status.loss and row.loss is not None, row
    table = rows_frame(rows)
    assert (table["loss"] == f"{rows[0].loss:.4f}").all(), table
    snapshot = RunEvents(run_dir).refresh(run.indices)
    assert shows_printed(run, snapshot), sorted(snapshot.workers[0])
    seen = StatusTrail(run.run_id).record(run.workers, run.local_time)
    newest = latest(run)
    assert newest is not None and seen.workers[newest.index][PROGRESS_LOSS][2][-1] == newest.loss
    name = "epoch_loss · tb/train"
    assert name in snapshot.own_names, snapshot.own_names
    figure = charts.metric_figure(snapshot.own_source(), charts.own_metric(name), smoothing=0)
    assert figure is not None and [trace.name for trace in figure.data] == ["chief (0)"]
    assert list(figure.data[0].x) == list(range(newest.epochs or 0))
