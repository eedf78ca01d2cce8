"""`fab -l` reads well: one short, whole line per task; the detail is in `fab TASK --help`."""

from __future__ import annotations

from pathlib import Path

from tests.launcher.helpers import run_fab

TASKS = ["check", "deploy", "export", "fetch", "status", "stop", "train"]


def test_fab_l_gives_one_whole_sentence_per_task(tmp_path: Path) -> None:
    listed = run_fab(tmp_path, "-l")
    assert listed.returncode == 0, listed.stderr
    rows = [line for line in listed.stdout.splitlines()[1:] if line.strip()]
    assert [row.split()[0] for row in rows] == TASKS, listed.stdout
    for row in rows:
        assert row.endswith(".") and len(row) <= 80, row
    detail = run_fab(tmp_path, "stop", "--help")
    assert "scancel" in detail.stdout and "tf_port locks" in detail.stdout, detail.stdout
