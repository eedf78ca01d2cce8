"""Launcher speed figures on real SSH test hosts (tests/sshcluster.py), run as root:

    .venv/bin/python -m benchmarks.bench_launcher

1. `fab deploy` to 1 host and to 4 hosts, each into a fresh workdir: parallel deploy should take
   under 1.5x as long for 4 hosts (reference: 4x for one host after another).
2. A second deploy of the unchanged tree against the first: under 20% (nothing is sent).
3. Log mirroring during `fab train` on 2 hosts: bytes received by the launcher against the bytes
   the workers left on their hosts; close to 1.0 means only new bytes travel (reference: a
   naive copy of every changed file at every pass, also printed).

4. A user's own script (tests/launcher/tiny_script/tiny_keras.py, two workers on this machine):
   its chief's steps/s under `fab train --script` against the same script started by hand
   with TF_CONFIG, side by side, alternating (target >= 0.98x); then on 2 SSH hosts, the bytes
   a second `fab train --script` of the unchanged folder ships (target: 0).

Prints figures and ratios; asserts nothing (timings depend on the machine).

    .venv/bin/python -m benchmarks.bench_launcher script   # part 4 alone
"""

from __future__ import annotations

import json
import os
import re
import secrets
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from tests.sshcluster import SshCluster, free_ports, start_cluster

REPO = Path(__file__).resolve().parents[1]
FAB = [str(Path(sys.executable).parent / "fab"), "-r", str(REPO)]
REPEAT = 3


def fab(cwd: Path, cluster: SshCluster, *args: str) -> tuple[float, str]:
    env = dict(os.environ, TFCLUSTER_KNOWN_HOSTS=str(cluster.known_hosts))
    t0 = time.perf_counter()
    out = subprocess.run(
        [*FAB, *args], cwd=cwd, env=env, capture_output=True, text=True, check=False
    )
    took = time.perf_counter() - t0
    if out.returncode != 0:
        raise SystemExit(f"fab {' '.join(args)} failed:\n{out.stdout}\n{out.stderr}")
    return took, out.stdout


def hosts_file(cluster: SshCluster, path: Path, n: int, workdir: str) -> None:
    cluster.hosts_file(path, n, workdir=workdir)


def bench_deploy(cluster: SshCluster, base: Path) -> None:
    data = base / "mnist.npz"
    data.write_bytes(os.urandom(11_490_434))  # the size of MNIST's mnist.npz
    times: dict[int, list[float]] = {1: [], 4: []}
    second: list[float] = []
    with_data: list[tuple[float, float]] = []
    for _ in range(REPEAT):
        for n in (1, 4):
            d = base / f"deploy-{n}-{secrets.token_hex(3)}"
            d.mkdir()
            hosts_file(cluster, d / "hosts.txt", n, f"~/bench-{d.name}")
            took, _ = fab(d, cluster, "deploy")
            times[n].append(took)
            if n == 4:
                again, out = fab(d, cluster, "deploy")
                assert out.count("unchanged") == 4, out
                second.append(again / took)
                first_data, _ = fab(d, cluster, "deploy", "--mnist", str(data))
                again_data, out = fab(d, cluster, "deploy", "--mnist", str(data))
                assert out.count("mnist.npz unchanged") == 4, out
                with_data.append((first_data, again_data))
    one, four = min(times[1]), min(times[4])
    print("deploy (the real `fab deploy` command, fresh workdir each time, best of 3):")
    print(f"  trainer/ to 1 host  {one:6.2f} s")
    print(f"  trainer/ to 4 hosts {four:6.2f} s   ratio 4/1 = {four / one:.2f}  (target < 1.5)")
    print(
        f"  second deploy of the unchanged tree: {min(second) * 100:.0f}% of the first "
        "(target < 20%; both are mostly fab's own start-up and the SSH handshake, the tree "
        "is small)"
    )
    fd, ad = min(with_data, key=lambda t: t[1] / t[0])
    startup, _ = fab(base, cluster, "--list")
    print(
        f"  with an 11 MB mnist.npz staged on 4 hosts: first {fd:.2f} s, unchanged again "
        f"{ad:.2f} s = {ad / fd * 100:.0f}% (target < 20%)"
    )
    print(f"  for reference, `fab --list` (start-up alone) takes {startup:.2f} s")
    one_w, four_w, again_w = one - startup, four - startup, min(second) * four - startup
    print(
        f"  without that start-up: 1 host {one_w:.2f} s, 4 hosts {four_w:.2f} s, "
        f"unchanged {again_w:.2f} s = {again_w / four_w * 100:.0f}% of the first"
    )


def remote_bytes(cluster: SshCluster, host_index: int, run_dir: str) -> int:
    host = cluster.hosts[host_index]
    out = cluster.run_as(host, f"find {run_dir} -type f -printf '%s\\n'")
    return sum(int(x) for x in out.stdout.split())


def bench_mirror(cluster: SshCluster, base: Path) -> None:
    d = base / "mirror"
    d.mkdir()
    cluster.hosts_file(d / "hosts.txt", 2, tf_ports=free_ports(2))
    args = ["--dataset", "digits", "--threads", "1", "--epochs", "4", "--steps-per-epoch", "20"]
    args += ["--log-every", "1", "--interval", "0.5"]
    took, _ = fab(d, cluster, "deploy", "train", *args)
    run = sorted((d / "runs").iterdir())[-1]
    cluster_json = json.loads((run / "cluster.json").read_text())
    received = sum(cluster_json["sync_bytes"].values())
    written = sum(
        remote_bytes(cluster, int(i), h["run_dir"])
        for i, h in ((str(h["index"]), h) for h in cluster_json["hosts"])
    )
    local = sum(p.stat().st_size for p in run.rglob("*") if p.is_file())
    print(f"log mirroring (fab train, 2 SSH workers, 4 epochs, {took:.1f} s, 0.5 s passes):")
    print(f"  bytes the workers left on their hosts: {written}")
    print(f"  bytes received by the launcher:        {received}")
    print(f"  ratio received/written = {received / written:.3f}  (target close to 1.0)")
    print(f"  local run directory: {local} bytes (includes launcher.log and cluster.json)")


SCRIPT = REPO / "tests" / "launcher" / "tiny_script" / "tiny_keras.py"
SCRIPT_ARGS = ["--epochs", "3", "--steps", "150", "--batch", "64"]  # 300 steps timed
RATE = re.compile(r"worker 0 steps/s ([0-9.]+)")


def by_hand(base: Path) -> float:
    """The script on two workers started by hand, TF_CONFIG set: the chief's steps/s."""
    ports = free_ports(2)
    workers = [f"localhost:{p}" for p in ports]
    env = dict(os.environ, TF_USE_LEGACY_KERAS="1", TF_CPP_MIN_LOG_LEVEL="2")
    procs = []
    for i in range(2):
        config = {"cluster": {"worker": workers}, "task": {"type": "worker", "index": i}}
        procs.append(
            subprocess.Popen(
                [sys.executable, SCRIPT.name, *SCRIPT_ARGS],
                cwd=SCRIPT.parent,
                env=dict(env, TF_CONFIG=json.dumps(config)),
                stdout=subprocess.PIPE,
                stderr=subprocess.DEVNULL,
                text=True,
            )
        )
    outs = [p.communicate(timeout=600)[0] for p in procs]
    found = RATE.search(outs[0])
    if found is None or any(p.returncode for p in procs):
        raise SystemExit(f"the script by hand failed: {outs}")
    return float(found.group(1))


def under_fab(base: Path) -> float:
    """The same script with `fab train --script` on two local workers: the chief's steps/s."""
    d = base / f"script-{secrets.token_hex(3)}"
    d.mkdir()
    ports = free_ports(2)
    (d / "hosts.txt").write_text(
        "".join(f"localhost tf_port={p} workdir={d / 'wd'}\n" for p in ports)
    )
    out = subprocess.run(
        [*FAB, "train", "--script", str(SCRIPT), "--trainer-args", " ".join(SCRIPT_ARGS)],
        cwd=d, capture_output=True, text=True, check=False,
    )  # fmt: skip
    if out.returncode != 0:
        raise SystemExit(f"fab train --script failed:\n{out.stdout}\n{out.stderr}")
    run = sorted((d / "runs").iterdir())[-1]
    found = RATE.search((run / "workers" / "0" / "worker.log").read_text())
    assert found is not None, run
    return float(found.group(1))


def bench_script_speed(base: Path) -> None:
    """Alternating pairs (by hand, then under fab): the ratio of each pair, and of the bests."""
    hand: list[float] = []
    fab_: list[float] = []
    for _ in range(REPEAT):
        hand.append(by_hand(base))
        fab_.append(under_fab(base))
    pairs = sorted(f / h for f, h in zip(fab_, hand, strict=True))
    best_hand, best_fab = max(hand), max(fab_)
    print("a user's script, 2 local workers, the chief's steps/s after the first epoch:")
    print(f"  by hand with TF_CONFIG:  {' '.join(f'{r:.1f}' for r in hand)}  best {best_hand:.1f}")
    print(f"  fab train --script:      {' '.join(f'{r:.1f}' for r in fab_)}  best {best_fab:.1f}")
    print(
        f"  ratio fab/hand: best of {REPEAT} each {best_fab / best_hand:.3f}, median of the "
        f"pairs {pairs[len(pairs) // 2]:.3f}  (target >= 0.98)"
    )


def bench_script_shipping(cluster: SshCluster, base: Path) -> None:
    d = base / "ship"
    d.mkdir()
    cluster.hosts_file(d / "hosts.txt", 2, tf_ports=free_ports(2), workdir="~/bench-ship")
    fab(d, cluster, "deploy")
    args = ["train", "--script", str(SCRIPT), "--trainer-args", "--epochs 1 --steps 2"]
    sent = []
    for _ in range(2):
        _, out = fab(d, cluster, *args, "--interval", "0.5")
        line = next(ln for ln in out.splitlines() if ln.startswith("script folder "))
        sent.append(int(line.split("): ")[1].split()[0]))
    print("shipping the script's folder to 2 SSH hosts (content-addressed):")
    print(f"  first fab train --script: {sent[0]} bytes; unchanged folder again: {sent[1]} bytes")
    print("  (target: 0 bytes the second time)")


def main() -> None:
    if os.geteuid() != 0:
        raise SystemExit("run as root: the SSH test hosts need their own Unix users")
    only_script = sys.argv[1:] == ["script"]
    with tempfile.TemporaryDirectory(prefix="bench-launcher-") as tmp:
        base = Path(tmp)
        with start_cluster(2 if only_script else 4, base) as cluster:
            if not only_script:
                bench_deploy(cluster, base)
                bench_mirror(cluster, base)
            bench_script_speed(base)
            bench_script_shipping(cluster, base)


if __name__ == "__main__":
    main()
