"""Ship the trainer (trainer/ and runformat/) to hosts, content-addressed: an unchanged tree
is never sent twice.

The tree's hash names its folder on the host (`<workdir>/code/<hash>/`); a `.complete` marker
written after unpacking makes a half-finished upload look absent, so it is simply redone.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import tarfile
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from launcher.commands import expand_home, home_path, q
from launcher.remote import HostError, HostShell

PROJECT_ROOT = Path(__file__).resolve().parent.parent
SHIPPED = ("trainer", "runformat")  # what `python -m trainer` imports on a host
CODE_DIR = "code"  # `<workdir>/code/<hash>/` on a host
PROGRAMS_DIR = "programs"  # `<workdir>/programs/<hash>/`: a user's script folder, beside code/


def tree_files(root: Path = PROJECT_ROOT) -> list[Path]:
    """The files that make up the trainer (with the run format it imports), sorted, no caches."""
    files: list[Path] = []
    for top in SHIPPED:
        for path in sorted((root / top).rglob("*")):
            if path.is_file() and "__pycache__" not in path.parts and path.suffix != ".pyc":
                files.append(path)
    return files


def tree_hash(root: Path = PROJECT_ROOT) -> str:
    """A short content hash over relative paths and bytes: equal trees, equal hash."""
    h = hashlib.sha256()
    for path in tree_files(root):
        rel = path.relative_to(root).as_posix()
        h.update(rel.encode() + b"\0")
        h.update(hashlib.sha256(path.read_bytes()).digest())
    return h.hexdigest()[:16]


def tree_archive(root: Path = PROJECT_ROOT) -> bytes:
    """A gzip tarball of the tree with fixed metadata (same tree, same bytes: the gzip header's
    time is 0 too, not the time of the call)."""
    buf = io.BytesIO()
    with (
        gzip.GzipFile(fileobj=buf, mode="wb", compresslevel=6, mtime=0) as packed,
        tarfile.open(fileobj=packed, mode="w") as tar,
    ):
        for path in tree_files(root):
            data = path.read_bytes()
            info = tarfile.TarInfo(path.relative_to(root).as_posix())
            info.size = len(data)
            info.mode = 0o644
            info.mtime = 0
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


@dataclass(frozen=True)
class DeployResult:
    sent_bytes: int
    action: str


class Lazy:
    """An archive built on first use, once, whichever host's thread asks first: a tree
    every host already has is never even packed."""

    def __init__(self, build: Callable[[], bytes]) -> None:
        self._build = build
        self._value: bytes | None = None
        self._lock = threading.Lock()

    def __call__(self) -> bytes:
        with self._lock:
            if self._value is None:
                self._value = self._build()
            return self._value


def ship_tree(
    shell: HostShell,
    workdir: str,
    top: str,
    digest: str,
    archive: bytes | Callable[[], bytes],
    current: bool = False,
) -> tuple[DeployResult, str]:
    """Upload and unpack a tree into `<workdir>/<top>/<digest>/` unless its `.complete` marker
    is there already; `current` also points `<workdir>/<top>/current` at it.

    One round trip finds the home directory and whether the tree is there, so that an
    unchanged tree costs a single command per host (and `archive` is not called). Returns the
    absolute workdir too. The workdir is created 0700 (umask 077): other users of a shared
    host see nothing of it.
    """
    wd = home_path(workdir)
    point = f"echo {q(digest)} > {wd}/{q(top)}/current && " if current else ""
    probe = shell.run(
        f'umask 077; echo "$HOME"; d={wd}/{q(top)}/{q(digest)}; '
        f'if [ -f "$d/.complete" ]; then {point}'
        f'echo unchanged; else mkdir -p "$d" && echo missing; fi',
        timeout=30,
    )
    lines = probe.stdout.split("\n")
    if probe.code != 0 or len(lines) < 2:
        raise HostError(shell.host, f"cannot prepare {workdir}/{top}: {probe.stderr.strip()}")
    workdir = expand_home(workdir, lines[0].strip())
    if lines[1].strip() == "unchanged":
        return DeployResult(0, "unchanged"), workdir
    dest = f"{workdir}/{top}/{digest}"
    tarball = f"{dest}.tar.gz"
    data = archive() if callable(archive) else archive
    shell.write_file(tarball, data, 0o600)
    point = f" && echo {q(digest)} > {q(f'{workdir}/{top}/current')}" if current else ""
    unpack = shell.run(
        f"umask 077 && tar -xzf {q(tarball)} -C {q(dest)} && rm -f {q(tarball)} && "
        f"touch {q(dest + '/.complete')}{point}",
        timeout=120,
    )
    if unpack.code != 0:
        raise HostError(shell.host, f"unpacking {top}/{digest} failed: {unpack.stderr.strip()}")
    return DeployResult(len(data), "sent"), workdir


def deploy_code(
    shell: HostShell, workdir: str, code_hash: str, archive: bytes | Callable[[], bytes]
) -> tuple[DeployResult, str]:
    """Ship trainer/ and runformat/ as `<workdir>/code/<hash>/`, the host's current code."""
    return ship_tree(shell, workdir, CODE_DIR, code_hash, archive, current=True)


def ship_folder(
    shell: HostShell, workdir: str, digest: str, archive: Callable[[], bytes]
) -> tuple[DeployResult, str]:
    """Ship a user's script folder as `<workdir>/programs/<hash>/` (launcher/bundle.py)."""
    return ship_tree(shell, workdir, PROGRAMS_DIR, digest, archive)


def deploy_venv(shell: HostShell, workdir: str, python: str, code_hash: str) -> str:
    """Create `<workdir>/venv` and install trainer/requirements.txt, unless already done.

    A venv that `-m venv` could not finish is removed: check and train prefer any
    `<workdir>/venv/bin/python`, and one without pip or TensorFlow would only mislead them.
    Debian's venv says on stdout that ensurepip is missing, hence `>&2`.
    """
    reqs = f"{workdir}/code/{code_hash}/trainer/requirements.txt"
    venv = f"{workdir}/venv"
    marker = f"{venv}/.requirements.sha256"
    cmd = (
        f"want=$(sha256sum {q(reqs)} | cut -d' ' -f1) && "
        f'if [ -f {q(marker)} ] && [ "$(cat {q(marker)})" = "$want" ]; then echo unchanged; '
        f"else {{ {q(python)} -m venv {q(venv)} >&2 || {{ rm -rf {q(venv)}; exit 1; }}; }} && "
        f"{q(venv + '/bin/python')} -m pip install -q -r {q(reqs)} && "
        f'echo "$want" > {q(marker)} && echo installed; fi'
    )
    result = shell.run(cmd, timeout=3600)
    if result.code != 0:
        if "ensurepip is not" in result.stderr:
            raise HostError(
                shell.host,
                f"{python} -m venv failed: ensurepip is missing "
                "(on Debian/Ubuntu: apt install python3-venv)",
            )
        last = (result.stderr.strip().splitlines() or ["no output"])[-1]
        raise HostError(shell.host, f"creating the virtualenv failed: {last}")
    return result.stdout.strip().splitlines()[-1] if result.stdout.strip() else "done"


USER_REQUIREMENTS = "user-requirements.txt"  # in <workdir>/venv/, with its .sha256 marker


def install_requirements(shell: HostShell, workdir: str, shown: str, content: bytes) -> str:
    """Install a user's requirements file into `<workdir>/venv` (made by deploy_venv), unless
    this same content was installed there already. `shown` is the file as the user named it;
    a failure names the host and pip's last line."""
    venv = f"{workdir}/venv"
    target = f"{venv}/{USER_REQUIREMENTS}"
    marker = f"{target}.sha256"
    want = hashlib.sha256(content).hexdigest()
    have = shell.run(f"cat {q(marker)} 2>/dev/null", timeout=30).stdout.strip()
    if have == want:
        return "unchanged"
    shell.write_file(target, content, 0o600)
    result = shell.run(
        f"{q(venv + '/bin/python')} -m pip install -q --disable-pip-version-check -r {q(target)} "
        f"&& echo {q(want)} > {q(marker)}",
        timeout=3600,
    )
    if result.code != 0:
        said = (result.stderr.strip() or result.stdout.strip()).splitlines() or ["no output"]
        raise HostError(shell.host, f"pip install -r {shown} failed: {said[-1].strip()}")
    return "installed"


def stage_file(shell: HostShell, local: Path, remote: str, sha: str) -> DeployResult:
    """Copy a data file (mnist.npz) unless the host has it with the same checksum; verify it.

    The checksum verified at upload is kept beside the file with its size and mtime, so an
    unchanged file is recognised without reading 11 MB again on every host.
    """
    marker = f"{remote}.sha256"
    have = shell.run(
        f"stat -c '%s %.9Y %i' {q(remote)} 2>/dev/null && cat {q(marker)} 2>/dev/null", timeout=60
    )
    lines = have.stdout.split("\n")
    if have.code == 0 and len(lines) >= 2 and lines[1].strip() == f"{sha} {lines[0].strip()}":
        return DeployResult(0, "unchanged")
    shell.run(f"umask 077 && mkdir -p {q(remote.rsplit('/', 1)[0])}", timeout=30)
    data = local.read_bytes()
    shell.write_file(remote + ".tmp", data, 0o644)
    verify = shell.run(
        f"[ \"$(sha256sum {q(remote + '.tmp')} | cut -d' ' -f1)\" = {q(sha)} ] && "
        f"mv {q(remote + '.tmp')} {q(remote)} && "
        f"echo {q(sha)} $(stat -c '%s %.9Y %i' {q(remote)}) > {q(marker)}",
        timeout=120,
    )
    if verify.code != 0:
        raise HostError(shell.host, f"{remote}: checksum mismatch after upload")
    return DeployResult(len(data), "sent")
