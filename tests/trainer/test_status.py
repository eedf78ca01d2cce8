import json
import threading
from pathlib import Path

from runformat import worker_dir, write_json_atomic
from trainer.status import StatusFile, initial_status


def test_worker_dir_follows_the_run_directory_layout() -> None:
    assert worker_dir(Path("runs/x"), 3) == Path("runs/x/workers/3")


def test_initial_status_starts_with_nothing_measured() -> None:
    status = initial_status(index=1, role="worker", host="h", pid=7, epochs=3, now=5.0)
    assert status["state"] == "starting" and status["epoch"] == 0 and status["epochs"] == 3
    assert status["loss"] is None and status["error"] is None
    assert (status["started"], status["updated"]) == (5.0, 5.0)


def test_status_update_rewrites_the_whole_file(tmp_path: Path) -> None:
    status = StatusFile(tmp_path / "w" / "status.json", {"state": "starting", "step": 0})
    status.update(state="running", step=10)
    written = json.loads((tmp_path / "w" / "status.json").read_text())
    assert written["state"] == "running" and written["step"] == 10 and written["updated"] > 0
    assert [p.name for p in (tmp_path / "w").iterdir()] == ["status.json"]


def test_a_reader_never_sees_half_a_status_file(tmp_path: Path) -> None:
    path = tmp_path / "status.json"
    write_json_atomic(path, {"step": 0})
    big = {"history": list(range(5000))}
    seen: list[int] = []
    broken: list[str] = []
    done = threading.Event()

    def read_until_done() -> None:
        while not done.is_set():
            text = path.read_text()
            try:
                seen.append(json.loads(text)["step"])
            except json.JSONDecodeError:
                broken.append(text[-40:])

    reader = threading.Thread(target=read_until_done)
    reader.start()
    try:
        for step in range(1, 300):
            write_json_atomic(path, {"step": step, **big})
    finally:
        done.set()
        reader.join()
    assert broken == []
    assert seen and seen == sorted(seen)
