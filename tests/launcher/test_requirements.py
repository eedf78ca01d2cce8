"""`fab deploy --venv --requirements FILE`: a user's own packages go into a host's venv with
the real pip (offline: a small wheel made here), only when the file's content changed; a pip
failure names the host and pip's last line; a bad file is refused before any host."""

from __future__ import annotations

import base64
import hashlib
import subprocess
import zipfile
from pathlib import Path

import pytest

from launcher.deploy import install_requirements
from launcher.hosts import parse_hosts
from launcher.remote import HostError, LocalShell
from tests.launcher.helpers import run_fab


def make_wheel(folder: Path, name: str = "tinypkg", version: str = "1.0") -> Path:
    """A pure-Python wheel holding one module, built by hand: pip needs no index for it."""
    files = {
        f"{name}.py": b"VALUE = 42\n",
        f"{name}-{version}.dist-info/METADATA": (
            f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n".encode()
        ),
        f"{name}-{version}.dist-info/WHEEL": (
            b"Wheel-Version: 1.0\nGenerator: hand\nRoot-Is-Purelib: true\nTag: py3-none-any\n"
        ),
    }
    record = f"{name}-{version}.dist-info/RECORD"
    lines = []
    for path, data in files.items():
        digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
        lines.append(f"{path},sha256={digest},{len(data)}")
    files[record] = ("\n".join([*lines, f"{record},,"]) + "\n").encode()
    wheel = folder / f"{name}-{version}-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as z:
        for path, data in files.items():
            z.writestr(path, data)
    return wheel


@pytest.mark.slow
def test_user_requirements_install_once_and_a_failure_names_host_and_pip(tmp_path: Path) -> None:
    workdir = tmp_path / "wd"
    venv = workdir / "venv"
    subprocess.run(["/usr/bin/python3", "-m", "venv", str(venv)], check=True)
    shell = LocalShell(parse_hosts("localhost\n")[0])
    wheel = make_wheel(tmp_path)
    content = f"{wheel}\n".encode()
    assert install_requirements(shell, str(workdir), "reqs.txt", content) == "installed"
    got = subprocess.run(
        [str(venv / "bin" / "python"), "-c", "import tinypkg; print(tinypkg.VALUE)"],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    assert got.stdout.strip() == "42"
    assert install_requirements(shell, str(workdir), "reqs.txt", content) == "unchanged"
    missing = f"{tmp_path / 'nothere-1.0-py3-none-any.whl'}\n".encode()
    with pytest.raises(HostError) as caught:
        install_requirements(shell, str(workdir), "reqs.txt", missing)
    message = str(caught.value)
    assert message.startswith("worker 0 (localhost): pip install -r reqs.txt failed: ")
    assert "nothere-1.0-py3-none-any.whl" in message and "\n" not in message, message


def test_a_bad_requirements_file_is_refused_before_any_host(tmp_path: Path) -> None:
    (tmp_path / "hosts.txt").write_text("nohost.invalid port=2222\n")
    out = run_fab(tmp_path, "deploy", "--venv", "--requirements", "nothere.txt", timeout=60)
    assert out.returncode == 2
    assert out.stderr.strip() == (
        "error: --requirements nothere.txt: cannot read: No such file or directory"
    )
    out = run_fab(tmp_path, "deploy", "--requirements", "nothere.txt", timeout=60)
    assert out.stderr.strip() == (
        "error: --requirements nothere.txt: installs into the hosts' venv; add --venv"
    )
