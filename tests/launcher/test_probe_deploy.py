"""Preflight verdicts (pure), and deploy steps against a real folder through LocalShell."""

from __future__ import annotations

import io
import os
import shutil
import tarfile
import time
from pathlib import Path

import pytest

from launcher.deploy import (
    deploy_code,
    file_sha256,
    stage_file,
    tree_archive,
    tree_files,
    tree_hash,
)
from launcher.hosts import parse_hosts
from launcher.probe import ProbeResult, host_problems
from launcher.remote import LocalShell

GOOD = {
    "tensorflow": "2.21.0",
    "python": "3.11.7",
    "port_free": True,
    "free_mb": 9000,
    "deployed": True,
}


def probe(**facts: object) -> ProbeResult:
    host = parse_hosts("gpu-a tf_port=7000\n")[0]
    return ProbeResult(host, "python3", {**GOOD, **facts})


def test_a_ready_host_has_no_problems() -> None:
    assert host_problems(probe(), [GOOD, {**GOOD, "python": "3.11.2"}], local=False) == []


def test_each_problem_says_what_to_do() -> None:
    assert "fab deploy --venv" in host_problems(probe(tensorflow=None), [], False)[0]
    mixed = host_problems(probe(), [GOOD, {**GOOD, "tensorflow": "2.20.0"}], False)
    assert "TensorFlow 2.21.0 differs from other hosts (2.20.0, 2.21.0)" in mixed[0]
    three = [GOOD, GOOD, {**GOOD, "tensorflow": "2.20.0"}]
    assert host_problems(probe(), three, False) == [], "the majority is not blamed"
    odd = host_problems(probe(tensorflow="2.20.0"), three, False)
    assert odd == [
        "TensorFlow 2.20.0 differs from the other hosts' 2.21.0; install 2.21.0 here "
        "(fab deploy --venv installs trainer/requirements.txt)"
    ]
    py = host_problems(probe(), [GOOD, {**GOOD, "python": "3.10.12"}], False)
    assert "Python 3.11 differs from other hosts (3.10, 3.11)" in py[0]
    busy = host_problems(probe(port_free=False, port_error="Address in use"), [], False)
    assert "tf_port 7000 is in use (Address in use)" in busy[0]
    assert "MB free" in host_problems(probe(free_mb=10), [], False)[0]
    assert "run fab deploy" in host_problems(probe(deployed=False), [], False)[0]
    assert host_problems(probe(deployed=False), [], False, need_code=False) == []
    assert host_problems(probe(deployed=False), [], True) == []  # local: runs from here


def test_tree_hash_is_stable_and_archive_holds_the_trainer(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The same files give the same hash and the same archive bytes at another time, in another
    folder, with other modification times; a changed byte changes both."""
    with tarfile.open(fileobj=io.BytesIO(tree_archive())) as tar:
        names = tar.getnames()
    assert "trainer/__main__.py" in names and "trainer/requirements.txt" in names
    assert not any("__pycache__" in n for n in names)
    assert len(names) == len(tree_files())

    first = tmp_path / "first"
    for rel, data in [("trainer/a.py", "A = 1\n"), ("runformat/b.py", "B = 2\n")]:
        (first / rel).parent.mkdir(parents=True, exist_ok=True)
        (first / rel).write_text(data)
    (first / "trainer" / "__pycache__").mkdir()
    (first / "trainer" / "__pycache__" / "a.cpython-311.pyc").write_bytes(b"cache")
    hashed, packed = tree_hash(first), tree_archive(first)

    second = tmp_path / "second"
    shutil.copytree(first, second, ignore=shutil.ignore_patterns("__pycache__"))
    for path in second.rglob("*.py"):
        os.utime(path, (1_000_000_000, 1_000_000_000))
    later = time.time() + 86_400
    monkeypatch.setattr(time, "time", lambda: later)
    assert (tree_hash(second), tree_archive(second)) == (hashed, packed)
    with tarfile.open(fileobj=io.BytesIO(packed)) as tar:
        assert tar.getnames() == ["trainer/a.py", "runformat/b.py"]
        assert all(m.mtime == 0 for m in tar.getmembers())
        assert tar.extractfile("trainer/a.py").read() == b"A = 1\n"  # type: ignore[union-attr]

    (second / "trainer" / "a.py").write_text("A = 3\n")
    assert tree_hash(second) != hashed and tree_archive(second) != packed


def test_deploy_code_sends_once(tmp_path: Path) -> None:
    shell = LocalShell(parse_hosts("localhost\n")[0])
    code, archive = tree_hash(), tree_archive()
    first, wd = deploy_code(shell, str(tmp_path / "wd"), code, archive)
    assert (first.action, first.sent_bytes, wd) == ("sent", len(archive), str(tmp_path / "wd"))
    assert (tmp_path / "wd" / "code" / code / "trainer" / "__main__.py").is_file()
    assert (tmp_path / "wd" / "code" / "current").read_text().strip() == code
    again, _ = deploy_code(shell, str(tmp_path / "wd"), code, archive)
    assert (again.action, again.sent_bytes) == ("unchanged", 0)


def test_stage_file_checks_the_checksum(tmp_path: Path) -> None:
    shell = LocalShell(parse_hosts("localhost\n")[0])
    local = tmp_path / "mnist.npz"
    local.write_bytes(b"x" * 5000)
    sha = file_sha256(local)
    remote = str(tmp_path / "host" / "data" / "mnist.npz")
    assert stage_file(shell, local, remote, sha).action == "sent"
    assert stage_file(shell, local, remote, sha).action == "unchanged"
    Path(remote).write_bytes(b"y" * 5000)  # changed on the host: sent again
    assert stage_file(shell, local, remote, sha).action == "sent"
    assert Path(remote).read_bytes() == local.read_bytes()
