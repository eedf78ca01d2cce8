"""`python -m trainer.slurm_env`: TF_CONFIG from a Slurm step's environment, no GPUs needed."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from trainer.slurm_env import (
    SlurmEnvError,
    expand_counts,
    expand_hostlist,
    split_args,
    split_options,
    task_addresses,
    tf_config,
)

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize(
    ("text", "names"),
    [
        ("vm", ["vm"]),
        ("gpu[01-03,07],login", ["gpu01", "gpu02", "gpu03", "gpu07", "login"]),
        ("n[8-10]", ["n8", "n9", "n10"]),
        ("rack[1-2]-n[1-2]", ["rack1-n1", "rack1-n2", "rack2-n1", "rack2-n2"]),
        ("a,b[1],c", ["a", "b1", "c"]),
    ],
)
def test_host_lists(text: str, names: list[str]) -> None:
    assert expand_hostlist(text) == names


def test_counts_and_addresses() -> None:
    assert expand_counts("2(x3),1") == [2, 2, 2, 1]
    assert task_addresses("n[1-2]", "2,1", 5000) == ["n1:5000", "n1:5001", "n2:5000"]
    with pytest.raises(SlurmEnvError, match="2 node"):
        task_addresses("n[1-2]", "2", 5000)
    with pytest.raises(SlurmEnvError, match="'x' is not a number or range"):
        expand_hostlist("n[x]")


def test_each_task_gets_its_index_and_port() -> None:
    env = {"SLURM_STEP_NODELIST": "n[1-2]", "SLURM_STEP_TASKS_PER_NODE": "2(x2)"}
    configs = [
        json.loads(tf_config({**env, "SLURM_PROCID": str(i)}, 23456) or "") for i in range(4)
    ]
    workers = ["n1:23456", "n1:23457", "n2:23456", "n2:23457"]
    assert all(c["cluster"] == {"worker": workers} for c in configs)
    assert [c["task"] for c in configs] == [{"type": "worker", "index": i} for i in range(4)]
    single = {"SLURM_STEP_NODELIST": "n1", "SLURM_STEP_TASKS_PER_NODE": "1", "SLURM_PROCID": "0"}
    assert tf_config(single, 23456) is None
    with pytest.raises(SlurmEnvError, match="SLURM_PROCID=4 but the step has 4 task"):
        tf_config({**env, "SLURM_PROCID": "4"}, 1)
    assert split_args(["--tf-port", "7000", "--run-dir", "r"]) == (7000, ["--run-dir", "r"])
    assert split_args(["--run-dir", "r", "--tf-port=7001"]) == (7001, ["--run-dir", "r"])
    assert split_args(["--run-dir", "r"]) == (23456, ["--run-dir", "r"])


def test_outside_a_step_it_says_so_in_one_line() -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SLURM_")}
    out = subprocess.run(
        [sys.executable, "-m", "trainer.slurm_env", "--run-dir", "x"],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert out.returncode == 2
    assert out.stderr == (
        "trainer.slurm_env: error: SLURM_STEP_NODELIST is not set: run this under srun, "
        "inside a Slurm job step\n"
    )


def test_wrap_takes_only_leading_options_the_programs_stay_its_own() -> None:
    argv = ["--tf-port", "7000", "--wrap", "--run-dir", "r", "t.py", "--tf-port", "1"]
    assert split_options(argv) == (
        7000,
        "trainer.wrap",
        ["--run-dir", "r", "t.py", "--tf-port", "1"],
    )
    assert split_options(["--wrap", "--run-dir", "r", "t.py"])[:2] == (23456, "trainer.wrap")
    assert split_options(["--run-dir", "r", "--tf-port", "7001"]) == (
        7001,
        "trainer",
        ["--run-dir", "r"],
    )


def test_a_slurm_task_becomes_the_wrapper_of_a_users_program(tmp_path: Path) -> None:
    """A task's environment as srun gives it (faked: 2 tasks on one node, this is task 1)."""
    (tmp_path / "show.py").write_text(
        "import os, sys\nprint(os.environ['TF_CONFIG'])\nprint(sys.argv[1:])\n"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("SLURM_") and k != "TF_CONFIG"}
    env.update(
        SLURM_STEP_NODELIST="localhost", SLURM_STEP_TASKS_PER_NODE="2", SLURM_PROCID="1",
        PYTHONPATH=str(REPO),
    )  # fmt: skip
    run_dir = tmp_path / "run"
    argv = [sys.executable, "-m", "trainer.slurm_env", "--tf-port", "7000", "--wrap"]
    argv += ["--run-dir", str(run_dir), "show.py", "--tf-port", "1"]
    out = subprocess.run(
        argv, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60, check=False
    )
    assert out.returncode == 0, out.stderr
    config, args = out.stdout.splitlines()[:2]
    assert json.loads(config) == {
        "cluster": {"worker": ["localhost:7000", "localhost:7001"]},
        "task": {"type": "worker", "index": 1},
    }
    assert args == "['--tf-port', '1']"
    status = json.loads((run_dir / "workers" / "1" / "status.json").read_text())
    assert (status["state"], status["exit_code"]) == ("finished", 0)
