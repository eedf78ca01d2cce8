"""Slurm against local processes and SSH hosts: how long from `fab train` to training, as root:

    .venv/bin/python -m benchmarks.bench_slurm [rounds]

Runs the same 2-worker job (digits, 1 epoch of 10 steps, 1 thread each) with the real `fab`
three ways, alternating, `rounds` times (default 2): two local workers; two SSH test hosts
(tests/sshcluster.py, after `fab deploy`); and a `localhost scheduler=slurm` line on a one-node
Slurm of its own (tests/slurmcluster.py: sbatch, then srun). For each it prints the time from
starting `fab train` to the first training step of every worker (both status.json files show
a step), and to `fab train`'s exit, best and median, and the ratio Slurm / local and Slurm /
SSH. Asserts nothing: timings depend on the machine and what else it runs.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from tests.slurmcluster import start_cluster as start_slurm
from tests.sshcluster import free_ports, start_cluster

REPO = Path(__file__).resolve().parents[1]

FAB = [str(Path(sys.executable).parent / "fab"), "-r", str(REPO)]
JOB = [
    "--dataset", "digits", "--threads", "1", "--epochs", "1", "--steps-per-epoch", "10",
    "--log-every", "1", "--interval", "0.5", "--trainer-args", "--no-validation",
]  # fmt: skip


def first_step(run_dir: Path, n: int) -> bool:
    for i in range(n):
        try:
            st = json.loads((run_dir / "workers" / str(i) / "status.json").read_text())
        except (OSError, ValueError):
            return False
        if not st.get("step"):
            return False
    return True


def train(cwd: Path, env: dict[str, str]) -> tuple[float, float]:
    """(seconds to every worker's first step, seconds to fab's exit)."""
    runs = cwd / "runs"
    before = set(runs.iterdir()) if runs.is_dir() else set()
    t0 = time.perf_counter()
    proc = subprocess.Popen(
        [*FAB, "train", *JOB], cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        text=True,
    )  # fmt: skip
    to_step = None
    while proc.poll() is None:
        new = [p for p in runs.iterdir() if p not in before] if runs.is_dir() else []
        if to_step is None and new and first_step(new[0], 2):
            to_step = time.perf_counter() - t0
        time.sleep(0.1)
    total = time.perf_counter() - t0
    out = proc.stdout.read() if proc.stdout else ""
    if proc.returncode != 0:
        raise SystemExit(f"fab train in {cwd} failed:\n{out[-3000:]}")
    return (to_step if to_step is not None else total), total


def summary(name: str, values: list[tuple[float, float]]) -> tuple[float, float]:
    steps = [v[0] for v in values]
    totals = [v[1] for v in values]
    print(
        f"{name:6s} to first step: best {min(steps):5.1f} s, median {statistics.median(steps):5.1f}"
        f" s | whole run: best {min(totals):5.1f} s, median {statistics.median(totals):5.1f} s"
    )
    return min(steps), statistics.median(steps)


def main() -> None:
    rounds = int(sys.argv[1]) if len(sys.argv) > 1 else 2
    base = Path(tempfile.mkdtemp(prefix="bench-slurm-"))
    with start_cluster(2, base) as ssh, start_slurm(base) as slurm:
        dirs = {name: base / f"fab-{name}" for name in ("local", "ssh", "slurm")}
        for d in dirs.values():
            d.mkdir()
        a, b, c = free_ports(3)
        (dirs["local"] / "hosts.txt").write_text(f"localhost tf_port={a}\nlocalhost tf_port={b}\n")
        ssh.hosts_file(dirs["ssh"] / "hosts.txt", 2)
        (dirs["slurm"] / "hosts.txt").write_text(
            f"localhost scheduler=slurm workers=2 tasks_per_node=2 tf_port={c}\n"
        )
        envs = {
            "local": dict(os.environ),
            "ssh": dict(os.environ, TFCLUSTER_KNOWN_HOSTS=str(ssh.known_hosts)),
            "slurm": dict(os.environ, **slurm.env),
        }
        results: dict[str, list[tuple[float, float]]] = {k: [] for k in dirs}
        for r in range(rounds):
            for name in dirs:
                if name == "ssh":  # not timed; sends nothing unless trainer/ changed meanwhile
                    subprocess.run([*FAB, "deploy"], cwd=dirs[name], env=envs[name], check=True)
                results[name].append(train(dirs[name], envs[name]))
                print(f"round {r + 1} {name}: {results[name][-1][0]:.1f} s to first step")
        best = {name: summary(name, values) for name, values in results.items()}
        for other in ("local", "ssh"):
            ratio_best = best["slurm"][0] / best[other][0]
            ratio_median = best["slurm"][1] / best[other][1]
            print(
                f"slurm / {other}, time to first step: best {ratio_best:.2f}, "
                f"median {ratio_median:.2f}"
            )


if __name__ == "__main__":
    main()
