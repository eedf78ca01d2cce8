"""What each worker runs (launcher/program.py) and how a script's folder ships (bundle.py):
bad input refused in one exact line, the folder's hash and archive stable across everything
but content, names and the executable bit, and the command a host runs, through a real shell."""

from __future__ import annotations

import gzip
import io
import json
import os
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

from launcher import bundle
from launcher.bundle import Bundle, BundleError, list_folder, load_bundle, pack
from launcher.program import (
    ProgramError,
    Script,
    Trainer,
    WorkerCommand,
    build_program,
    describe,
    entry,
    folder_on_host,
    program_record,
    script_program,
    worker_command,
)

NO_TRAINER_OPTIONS: dict[str, object] = {"epochs": None, "batch_size": None, "shard": None}
NASTY = ["plain", "with space", "$(touch PWNED)", "x' ; touch PWNED; '", "new\nline", "*", "a;b"]


def write(path: Path, text: str = "", mode: int | None = None) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    if mode is not None:
        path.chmod(mode)
    return path


@pytest.fixture
def proj(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A small script folder `proj/`, with the test working in its parent folder."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    root = tmp_path / "proj"
    write(root / "train.py", "import lib.util\nprint(lib.util.X)\n")
    write(root / "lib" / "__init__.py")
    write(root / "lib" / "util.py", "X = 1\n")
    write(root / "notes.txt", "notes\n")
    return root


BAD_SCRIPTS = [
    # (what to do to proj/, --script, trainer options, --folder, the one line)
    (None, "nope.py", {}, None, "--script nope.py: no such file"),
    (None, "proj", {}, None, "--script proj: is a folder; expected a .py file"),
    (None, "proj/notes.txt", {}, None, "--script proj/notes.txt: expected a .py file"),
    (
        ("train.py", 'import os\nprint("a"\n'),
        "proj/train.py",
        {},
        None,
        "proj/train.py:2: '(' was never closed",
    ),
    (
        ("lib/util.py", "X = (\n"),
        "proj/train.py",
        {},
        None,
        "proj/lib/util.py:1: '(' was never closed "
        "(it ships with the script: fix it or list it in .tfclusterignore)",
    ),
    (
        ("train.py", "return 3\n"),
        "proj/train.py",
        {},
        None,
        "proj/train.py:1: 'return' outside function",
    ),
    (
        None,
        "proj/train.py",
        {"epochs": 3},
        None,
        "--script runs your own program: --epochs is an option of the built-in trainer; "
        "give your script its own options with --trainer-args",
    ),
    (
        None,
        "proj/train.py",
        {"epochs": 3, "batch_size": 64, "shard": None, "seed": 0},
        None,
        "--script runs your own program: --epochs, --batch-size, --seed are options of the "
        "built-in trainer; give your script its own options with --trainer-args",
    ),
    (
        (".tfclusterignore", "train.py\n"),
        "proj/train.py",
        {},
        None,
        "--script proj/train.py: left out of what ships (a cache or environment folder, "
        "or .tfclusterignore)",
    ),
    (
        (".venv/train.py", "X = 1\n"),
        "proj/.venv/train.py",
        {},
        "proj",
        "--script proj/.venv/train.py: left out of what ships (a cache or environment "
        "folder, or .tfclusterignore)",
    ),
    (None, "proj/train.py", {}, "elsewhere", "--folder elsewhere: no such folder"),
    (
        ("../other/x.py", ""),
        "other/x.py",
        {},
        "proj",
        "--script other/x.py: not inside the folder {root} that ships",
    ),
    (
        ("../home/t.py", ""),
        "home/t.py",
        {},
        None,
        "--script home/t.py: its folder is {home}, which would ship whole; "
        "put the script in a folder of its own",
    ),
]


@pytest.mark.parametrize(("change", "script", "options", "folder", "message"), BAD_SCRIPTS)
def test_bad_script_is_refused_in_one_line(
    proj: Path,
    change: tuple[str, str] | None,
    script: str,
    options: dict[str, object],
    folder: str | None,
    message: str,
) -> None:
    if change is not None:
        write(proj / change[0], change[1])
    with pytest.raises(ProgramError) as err:
        build_program(script, options, ["--lr", "0.1"], folder=folder)
    home = proj.parent / "home"
    assert str(err.value) == message.format(root=proj, home=home)
    assert "\n" not in str(err.value)


def test_unreadable_file_and_null_bytes_are_refused(proj: Path) -> None:
    write(proj / "lib" / "util.py", "X = 1\x00\n")
    with pytest.raises(ProgramError, match=r"^proj/lib/util\.py(:1)?: .*null bytes"):
        build_program("proj/train.py", {})
    if os.geteuid() == 0:
        return  # root reads anything
    write(proj / "lib" / "util.py", "X = 1\n", mode=0o000)
    with pytest.raises(ProgramError, match=r"^proj/lib/util\.py: cannot read: Permission denied"):
        build_program("proj/train.py", {})


def test_folder_over_the_limits_names_its_biggest_files(proj: Path) -> None:
    (proj / "data").mkdir()
    (proj / "data" / "big.bin").write_bytes(b"x" * 3000)
    (proj / "data" / "mid.bin").write_bytes(b"x" * 2048)
    (proj / "data" / "small.bin").write_bytes(b"x" * 100)
    with pytest.raises(ProgramError) as err:
        script_program("proj/train.py", {}, max_bytes=4096)
    assert str(err.value) == (
        f"--script proj/train.py: {proj}: 5.1 KiB to ship, over the 4.0 KiB limit; biggest: "
        "data/big.bin (2.9 KiB), data/mid.bin (2.0 KiB), data/small.bin (100 bytes). "
        "Put data on the hosts and list it in .tfclusterignore"
    )
    write(proj / ".tfclusterignore", "# data lives on the hosts\ndata/\n")
    assert script_program("proj/train.py", {}, max_bytes=4096).script == "train.py"
    with pytest.raises(ProgramError) as err:
        script_program("proj/train.py", {}, max_files=3)
    assert str(err.value) == (
        f"--script proj/train.py: {proj}: more than 3 files to ship (the limit); is this the "
        "folder you meant? Leave out data and environments with a .tfclusterignore"
    )


def test_a_script_program(proj: Path) -> None:
    program = build_program("proj/train.py", NO_TRAINER_OPTIONS, ["--steps", "5"])
    assert isinstance(program, Script)
    assert (program.folder, program.script, program.args) == (proj, "train.py", ("--steps", "5"))
    assert [f.rel for f in program.bundle.files] == [
        "lib/__init__.py",
        "lib/util.py",
        "notes.txt",
        "train.py",
    ]
    assert program_record(program) == {
        "kind": "script",
        "script": "train.py",
        "folder": str(proj),
        "hash": program.bundle.digest,
    }
    json.dumps(program_record(program))  # goes into cluster.json as it is
    assert entry(program, "/f") == ("trainer.wrap", ("--cwd", "/f", "train.py", "--steps", "5"))
    assert describe(program) == (
        f"script: train.py --steps 5 (from {proj}, 4 file(s), {program.bundle.digest})"
    )


def test_a_script_deeper_in_the_folder_that_ships(proj: Path) -> None:
    write(proj / "jobs" / "mnist.py", "print(1)\n")
    program = build_program("proj/jobs/mnist.py", {}, folder="proj")
    assert isinstance(program, Script)
    assert (program.folder, program.script) == (proj, "jobs/mnist.py")


def test_the_trainer_program() -> None:
    options = {"epochs": 3, "batch_size": None, "dataset": "digits", "shard": None}
    program = build_program(None, options, ["--no-validation"], max_restarts=1)
    assert program == Trainer(
        ("--epochs", "3", "--dataset", "digits", "--no-validation", "--backup")
    )
    assert program_record(program) == {"kind": "trainer"}
    assert entry(program) == ("trainer", program.args)
    assert (
        describe(program) == "trainer options: --epochs 3 --dataset digits --no-validation --backup"
    )
    assert describe(Trainer()) == "trainer options: (defaults)"


@pytest.mark.parametrize(
    ("options", "extra", "folder", "message"),
    [
        (
            {},
            ["--run-dir", "x"],
            None,
            "trainer options: --run-dir is set by the launcher (each host's run directory); "
            "leave it out of --trainer-args",
        ),
        ({}, [], "proj", "--folder is the folder of a --script; give the script too"),
    ],
)
def test_bad_trainer_program(
    options: dict[str, object], extra: list[str], folder: str | None, message: str
) -> None:
    with pytest.raises(ProgramError) as err:
        build_program(None, options, extra, folder=folder)
    assert str(err.value) == message


# --- the folder that ships --------------------------------------------------------------------

SHIPPED_OR_NOT = [
    ("train.py", True),
    ("model/weights.h5", True),
    ("data/runs/keep.txt", True),  # only the top-level runs/ is the launcher's
    (".env", True),
    ("scripts/run.sh", True),
    (".git/config", False),
    (".hg/store/x", False),
    (".svn/entries", False),
    ("sub/__pycache__/m.cpython-311.pyc", False),
    ("m.pyc", False),
    ("m.pyo", False),
    (".venv/bin/activate", False),
    ("venv/lib/site.py", False),
    ("runs/20261207-101010-abcd/cluster.json", False),
    ("node_modules/a/index.js", False),
    (".ipynb_checkpoints/nb-checkpoint.ipynb", False),
    (".mypy_cache/3.11/x.json", False),
    (".pytest_cache/v/cache", False),
    ("pkg.egg-info/PKG-INFO", False),
    (".DS_Store", False),
    ("ckpt/model.ckpt", False),  # .tfclusterignore: *.ckpt
    ("ckpt/keep.ckpt", True),  # .tfclusterignore: !keep.ckpt
    ("scratch/a.txt", False),  # .tfclusterignore: /scratch/
    ("sub/scratch/a.txt", True),  # anchored pattern: the top-level scratch/ only
]


def test_exclusions(tmp_path: Path) -> None:
    for rel, _ in SHIPPED_OR_NOT:
        write(tmp_path / rel, rel)
    write(tmp_path / ".tfclusterignore", "*.ckpt\n!keep.ckpt\n/scratch/\n")
    shipped = {f.rel for f in list_folder(tmp_path)}
    assert shipped == {rel for rel, ships in SHIPPED_OR_NOT if ships} | {".tfclusterignore"}


def test_the_local_runs_folder_is_left_out_wherever_it_is(proj: Path) -> None:
    write(proj / "out" / "runs" / "20261207-101010-abcd" / "launcher.log", "x")
    write(proj / "out" / "keep.txt", "x")
    program = build_program("proj/train.py", {}, runs_dir=Path("proj/out/runs"))
    assert isinstance(program, Script)
    assert "out/keep.txt" in {f.rel for f in program.bundle.files}
    assert not [f.rel for f in program.bundle.files if "launcher.log" in f.rel]


def test_links_ship_as_files_and_linked_folders_are_not_followed(tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    write(outside / "shared.py", "Y = 2\n")
    root = tmp_path / "proj"
    write(root / "train.py", "")
    (root / "shared.py").symlink_to(outside / "shared.py")
    (root / "loop").symlink_to(root)
    (root / "gone.py").symlink_to(tmp_path / "missing.py")
    files = {f.rel: f for f in list_folder(root)}
    assert sorted(files) == ["shared.py", "train.py"]
    data, _ = pack(list(files.values()))
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        member = tar.getmember("shared.py")
        assert member.isfile()
        assert tar.extractfile(member).read() == b"Y = 2\n"  # type: ignore[union-attr]


def test_a_name_that_is_not_utf8_is_refused(tmp_path: Path) -> None:
    write(tmp_path / "train.py", "")
    (tmp_path / os.fsdecode(b"caf\xe9.txt")).write_text("x")
    with pytest.raises(BundleError, match=r"the name is not valid UTF-8; rename it"):
        list_folder(tmp_path)


def test_hash_follows_content_names_and_the_executable_bit_only(tmp_path: Path) -> None:
    root = tmp_path / "proj"
    write(root / "train.py", "print(1)\n")
    write(root / "lib" / "util.py", "X = 1\n")
    write(root / "run.sh", "#!/bin/sh\n", mode=0o644)

    def digest() -> str:
        return load_bundle(root).digest

    first = digest()
    assert len(first) == 16
    os.utime(root / "train.py", (1, 1))  # touch
    os.utime(root / "lib", (1, 1))
    (root / "lib" / "util.py").chmod(0o600)  # read bits are the host's umask's business
    write(root / "__pycache__" / "train.cpython-311.pyc", "cache")
    write(root / ".git" / "HEAD", "ref: refs/heads/main\n")
    assert digest() == first

    (root / "run.sh").chmod(0o755)
    executable = digest()
    assert executable != first
    (root / "run.sh").chmod(0o644)
    assert digest() == first

    (root / "lib" / "util.py").rename(root / "lib" / "util2.py")
    assert digest() != first
    (root / "lib" / "util2.py").rename(root / "lib" / "util.py")
    assert digest() == first

    write(root / "train.py", "print(2)\n")
    assert digest() != first


def test_archive_is_byte_equal_across_touch_and_holds_the_files(tmp_path: Path) -> None:
    root = tmp_path / "proj"
    write(root / "train.py", "print(1)\n")
    write(root / "bin" / "prep.sh", "#!/bin/sh\necho hi\n", mode=0o700)
    write(root / "données.txt", "é")
    first = load_bundle(root)
    data = first.archive()
    os.utime(root / "train.py", (10**9, 10**9))
    (root / "train.py").chmod(0o640)
    again = load_bundle(root)
    assert again.digest == first.digest
    assert again.archive() == data
    assert data[4:8] == b"\0\0\0\0"  # gzip header time

    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        members = {m.name: m for m in tar.getmembers()}
        assert sorted(members) == ["bin/prep.sh", "données.txt", "train.py"]
        assert {m.name: oct(m.mode) for m in members.values()} == {
            "bin/prep.sh": "0o755",
            "données.txt": "0o644",
            "train.py": "0o644",
        }
        assert all(
            (m.mtime, m.uid, m.gid, m.uname, m.gname) == (0, 0, 0, "", "") for m in members.values()
        )
        assert tar.extractfile("train.py").read() == b"print(1)\n"  # type: ignore[union-attr]
    assert pack(list(first.files))[1] == first.digest


def test_archive_refuses_a_file_changed_since_listing(tmp_path: Path) -> None:
    write(tmp_path / "train.py", "print(1)\n")
    listed = load_bundle(tmp_path)
    write(tmp_path / "train.py", "print(2)\n")
    with pytest.raises(BundleError) as err:
        listed.archive()
    assert str(err.value) == f"{tmp_path}: files changed while being packed; try again"


def test_archive_unpacks_with_tar(tmp_path: Path) -> None:
    """The hosts unpack with `tar -xzf` (deploy.py): the same files, the executable bit kept."""
    root = tmp_path / "proj"
    write(root / "train.py", "print(1)\n")
    write(root / "bin" / "prep.sh", "#!/bin/sh\n", mode=0o755)
    dest = tmp_path / "dest"
    dest.mkdir()
    tarball = tmp_path / "p.tar.gz"
    tarball.write_bytes(load_bundle(root).archive())
    subprocess.run(["tar", "-xzf", str(tarball), "-C", str(dest)], check=True)
    assert (dest / "train.py").read_text() == "print(1)\n"
    assert os.access(dest / "bin" / "prep.sh", os.X_OK)
    assert gzip.decompress(tarball.read_bytes())  # a plain gzip stream


def test_host_folder() -> None:
    assert bundle.host_folder("/home/u/tfjobs", "0123456789abcdef") == (
        "/home/u/tfjobs/programs/0123456789abcdef"
    )


# --- the command a host runs --------------------------------------------------------------------


def test_worker_command_strings(proj: Path) -> None:
    trainer = worker_command(Trainer(("--epochs", "2")), "python3", "/w/runs/r 1", "/w/code/abc")
    assert trainer == WorkerCommand(
        "/w/code/abc", ("python3", "-m", "trainer", "--run-dir", "/w/runs/r 1", "--epochs", "2")
    )
    assert trainer.shell() == (
        "cd /w/code/abc && python3 -m trainer --run-dir '/w/runs/r 1' --epochs 2"
    )
    script = build_program("proj/train.py", {}, ["--name", "a b"])
    assert isinstance(script, Script)
    digest = script.bundle.digest
    remote = worker_command(
        script,
        "/opt/py/bin/python",
        "/w/runs/r",
        "~/tfjobs/code/abc",
        folder_on_host(script, "/home/u/tfjobs", local=False),
    )
    assert remote.shell() == (
        'cd "$HOME"/tfjobs/code/abc && /opt/py/bin/python -m trainer.wrap --run-dir /w/runs/r '
        f"--cwd /home/u/tfjobs/programs/{digest} train.py --name 'a b'"
    )
    assert folder_on_host(script, "~/tfjobs", local=True) == str(proj)
    with pytest.raises(ValueError, match="needs the folder"):
        worker_command(script, "python3", "/r", "/c")


@pytest.mark.parametrize("preset", [None, "/already/there"])
def test_a_users_trainer_py_shadows_nothing_and_the_script_runs_in_its_folder(
    tmp_path: Path, preset: str | None
) -> None:
    """Through a real shell and the real wrapper: values with shell metacharacters arrive
    intact; a `trainer.py` and a `runformat/` package in the user's folder shadow nothing of
    the wrapper (it starts in the code's folder); the script runs in its own folder, imports
    its own modules first, and can import the shipped code (PYTHONPATH, after any given)."""
    code = Path(__file__).resolve().parents[2]
    folder = tmp_path / "user's $folder"
    write(folder / "trainer.py", "raise SystemExit('the user trainer.py was imported')\n")
    write(folder / "runformat" / "__init__.py", "raise SystemExit('user runformat imported')\n")
    write(
        folder / "train.py",
        "import json, os, sys\n"
        "json.dump({'argv': sys.argv[1:], 'cwd': os.getcwd(),\n"
        "           'pythonpath': os.environ.get('PYTHONPATH'),\n"
        "           'run_dir': os.environ['TFCLUSTER_RUN_DIR'],\n"
        "           'keras': os.environ['TF_USE_LEGACY_KERAS']},\n"
        "          open(os.path.join(os.environ['TFCLUSTER_WORKER_DIR'], 'got.json'), 'w'))\n",
    )
    program = script_program(str(folder / "train.py"), {}, NASTY)
    run_dir = tmp_path / "run $x"
    cmd = worker_command(program, sys.executable, str(run_dir), str(code), str(folder))
    env = {"PATH": os.environ["PATH"]}
    if preset is not None:
        env["PYTHONPATH"] = preset
    done = subprocess.run(["sh", "-c", cmd.shell()], env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    got = json.loads((run_dir / "workers" / "0" / "got.json").read_text())
    assert got["argv"] == NASTY
    assert got["cwd"] == str(folder)
    assert got["pythonpath"] == (str(code) if preset is None else f"{preset}:{code}")
    assert (got["run_dir"], got["keras"]) == (str(run_dir), "1")
    status = json.loads((run_dir / "workers" / "0" / "status.json").read_text())
    assert status["state"] == "finished"
    assert not list(tmp_path.rglob("PWNED"))


def test_bundle_is_frozen(tmp_path: Path) -> None:
    write(tmp_path / "train.py", "")
    b = load_bundle(tmp_path)
    assert isinstance(b, Bundle)
    assert b.size == 0
    with pytest.raises(AttributeError):
        b.digest = "x"  # type: ignore[misc]
