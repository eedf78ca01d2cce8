"""README.md stays true: every command in its shell blocks runs as written, or is named below
with the reason it cannot run in a test; every relative link in README.md and docs/*.md
points to a file (and heading) that exists.

A command added to the README that is in neither RUNS_HERE, SERVERS nor CANNOT_RUN fails
`test_every_command_is_accounted_for`; an entry here that the README no longer has fails it
too, so the lists stay honest. Nothing here trains: training is what tests/trainer and
tests/launcher check.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from markdown_it import MarkdownIt
from markdown_it.token import Token

from tests.sshcluster import free_ports

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
DOCS = sorted((ROOT / "docs").glob("*.md"))
SHELL = {"bash", "sh", "shell"}
OTHER_LANGUAGES = {"text", "python", "json", "toml", "yaml"}

# Run as written with `bash -c` in a sandbox folder: this project's fabfile.py, dashboard/,
# .streamlit/ and .venv linked in, a hosts.txt of two local workers on free ports, the
# README's Slurm line in slurm.txt, and a made-up finished run in runs/. Each must exit 0.
RUNS_HERE = {
    "source .venv/bin/activate",
    "fab -l",
    "fab train --help",
    "fab check",
    "fab deploy",
    "fab deploy --venv",
    "fab status",
    "fab export --slurm --hosts-file slurm.txt --epochs 3",
    "python -m dashboard.samplerun runs",
}

# Servers: started as written (port and headless mode from the environment), then stopped
# once they answer their health check.
SERVERS = {
    "streamlit run dashboard/app.py",
    "streamlit run dashboard/app.py -- --runs ~/tfjobs/runs",
}

TRAINS = "trains TensorFlow workers (tests/launcher/test_train_local.py and test_ssh.py do)"
CANNOT_RUN = {
    "scripts/demo.sh": "installs .venv, then trains and serves the dashboard until stopped: "
    "its steps are `fab deploy train` and `streamlit run`, checked here and in tests/launcher",
    "scripts/test.sh": "installs system packages and runs the whole suite, this test included",
    "ssh-keyscan gpu-a gpu-b >> ~/.ssh/known_hosts": "needs the real remote machines gpu-a and "
    "gpu-b, and would change the user's known_hosts",
    "fab deploy train --dataset digits --epochs 3": TRAINS,
    "fab train --epochs 5 --batch-size 64 --env WANDB_API_KEY --max-restarts 2": TRAINS,
    "fab deploy --mnist ~/mnist.npz": "needs an mnist.npz, which no machine here can download "
    "(tests/launcher/test_deploy.py stages a small one)",
    'fab train --script examples/train_digits.py --trainer-args "--epochs 3"': TRAINS,
    "fab deploy --venv --requirements requirements.txt": "builds a venv with TensorFlow on "
    "every SSH host (tests/launcher/test_deploy_venv.py; the requirements step: "
    "test_requirements.py)",
    "fab stop": "needs a run whose workers are alive (tests/launcher/test_train_local.py)",
    "fab fetch --follow": "needs a run on reachable hosts (tests/launcher/test_ssh.py)",
}


def _fences(path: Path) -> list[Token]:
    return [t for t in MarkdownIt().parse(path.read_text()) if t.type == "fence"]


def _commands(block: str) -> list[str]:
    """The commands of one shell block: continuation lines joined, comments dropped."""
    joined = re.sub(r"\\\n\s*", " ", block)
    commands = []
    for line in joined.splitlines():
        command = re.split(r"\s#\s", " " + line, maxsplit=1)[0].strip()
        if command and not command.startswith("#"):
            commands.append(command)
    return commands


def readme_commands() -> list[str]:
    found: list[str] = []
    for fence in _fences(README):
        if fence.info.strip() in SHELL:
            found += [c for c in _commands(fence.content) if c not in found]
    return found


def test_every_fenced_block_says_its_language() -> None:
    """An untagged block would hide its commands from the test below."""
    for fence in _fences(README):
        language = fence.info.strip()
        assert language in SHELL | OTHER_LANGUAGES, (
            f"README.md:{fence.map[0] + 1 if fence.map else '?'}: fenced block with language "
            f"{language!r}; use bash for commands, text for the rest"
        )


def test_every_command_is_accounted_for() -> None:
    commands = readme_commands()
    known = RUNS_HERE | SERVERS | set(CANNOT_RUN)
    unknown = [c for c in commands if c not in known]
    assert not unknown, (
        "README.md commands that no test runs: add each to RUNS_HERE or SERVERS in "
        f"tests/test_readme.py, or to CANNOT_RUN with the reason: {unknown}"
    )
    stale = sorted(known - set(commands))
    assert not stale, f"tests/test_readme.py names commands README.md no longer has: {stale}"
    assert not (RUNS_HERE | SERVERS) & set(CANNOT_RUN)


def _slurm_line() -> str:
    for fence in _fences(README):
        for line in fence.content.splitlines():
            if "scheduler=slurm" in line:
                return line
    raise AssertionError("README.md shows no scheduler=slurm hosts line")


@pytest.fixture(scope="module")
def sandbox(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, str]]:
    folder = tmp_path_factory.mktemp("readme")
    for name in ("fabfile.py", "dashboard", ".streamlit", ".venv"):
        (folder / name).symlink_to(ROOT / name)
    ports = free_ports(2)
    (folder / "hosts.txt").write_text("".join(f"localhost tf_port={p}\n" for p in ports))
    (folder / "slurm.txt").write_text(_slurm_line() + "\n")
    env = {
        **os.environ,
        "PATH": f"{ROOT / '.venv' / 'bin'}{os.pathsep}{os.environ['PATH']}",
        "PYTHONPATH": str(ROOT),
        "STREAMLIT_SERVER_HEADLESS": "true",
        "STREAMLIT_BROWSER_GATHER_USAGE_STATS": "false",
    }
    for name in ("TFCLUSTER_HOSTS", "TFCLUSTER_RUNS"):
        env.pop(name, None)
    made = subprocess.run(
        ["python", "-m", "dashboard.samplerun", "runs"], cwd=folder, env=env, capture_output=True
    )
    assert made.returncode == 0, made.stderr.decode()
    return folder, env


@pytest.mark.parametrize("command", sorted(RUNS_HERE))
def test_command_runs_as_written(command: str, sandbox: tuple[Path, dict[str, str]]) -> None:
    folder, env = sandbox
    done = subprocess.run(
        ["bash", "-c", command], cwd=folder, env=env, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, (
        f"{command!r} exited {done.returncode}:\n{done.stdout}{done.stderr}"
    )


@contextlib.contextmanager
def _serving(command: str, folder: Path, env: dict[str, str]) -> Iterator[subprocess.Popen[bytes]]:
    """Start a server command; yield once it answers its health check; stop its process group."""
    port = free_ports(1)[0]
    process = subprocess.Popen(
        ["bash", "-c", command],
        cwd=folder,
        env={**env, "STREAMLIT_SERVER_PORT": str(port)},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 90
        while process.poll() is None and time.monotonic() < deadline:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/_stcore/health", timeout=2):
                    yield process
                    return
            except OSError:
                time.sleep(0.3)
        pytest.fail(f"{command!r} did not answer on port {port} (exit code {process.poll()})")
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()


def test_servers_start_as_written(sandbox: tuple[Path, dict[str, str]]) -> None:
    folder, env = sandbox
    for command in sorted(SERVERS):
        with _serving(command, folder, env) as process:
            assert process.poll() is None


def _slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces to hyphens."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def _anchors(path: Path) -> set[str]:
    tokens = MarkdownIt().parse(path.read_text())
    return {
        _slug(tokens[i + 1].content)
        for i, t in enumerate(tokens)
        if t.type == "heading_open" and tokens[i + 1].type == "inline"
    }


def _links(path: Path) -> Iterator[str]:
    for token in MarkdownIt().parse(path.read_text()):
        for child in token.children or []:
            if child.type == "link_open":
                yield str(child.attrs["href"])


@pytest.mark.parametrize("path", [README, *DOCS], ids=lambda p: p.name)
def test_relative_links_point_to_what_exists(path: Path) -> None:
    broken = []
    for href in _links(path):
        if re.match(r"[a-z][a-z0-9+.-]*:", href):
            continue  # http:, https:, mailto:
        target, _, anchor = href.partition("#")
        file = (path.parent / target).resolve() if target else path
        if not file.exists():
            broken.append(f"{href} (no such file)")
        elif anchor and file.suffix == ".md" and anchor not in _anchors(file):
            broken.append(f"{href} (no such heading in {file.name})")
    assert not broken, f"{path.relative_to(ROOT)}: broken links: {broken}"
