"""A backend made only for a test: local workers started by this process with
subprocess.Popen (each in a session of its own, the launcher their parent) instead of the
SSH backend's detached `setsid nohup` shell. Everything else, status, stop, fetch and the
tf_port locks, it inherits. It proves that a backend is one module plus one registration:
tests/launcher/test_backends.py registers it as a `tfcluster.backends` entry point.
"""

from __future__ import annotations

import subprocess
from collections.abc import Sequence
from contextlib import AbstractContextManager
from pathlib import Path

from launcher import commands
from launcher.backend import Launch
from launcher.backends.ssh import SshBackend, SshReserved
from launcher.display import Output
from launcher.errors import UserError
from launcher.hosts import Host
from launcher.settings import Settings
from launcher.worker import Worker
from runformat import WORKER_LOG


class PopenWorker(Worker):
    """A local worker whose process this launcher starts itself."""

    def start(self) -> None:
        wdir = Path(commands.worker_dir(self.run_dir, self.index))
        wdir.mkdir(mode=0o700, parents=True, exist_ok=True)
        env_file = Path(commands.env_file_path(self.run_dir, self.index))
        env_file.touch(mode=0o600)
        env_file.write_text(commands.env_file_content(self.env))
        script = commands.worker_script(
            self.python, self.module, self.run_dir, self.index, self.trainer_args
        )
        with open(wdir / WORKER_LOG, "ab") as log:
            subprocess.Popen(
                ["sh", "-c", script],
                cwd=self.code_dir,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # `$$` is then the group `fab stop` ends
            )


class PopenBackend(SshBackend):
    name = "popen"
    worker = PopenWorker

    def reserve(
        self, settings: Settings, out: Output, hosts: Sequence[Host], launch: Launch
    ) -> AbstractContextManager[SshReserved]:
        remote = [h for h in hosts if not h.local]
        if remote:
            raise UserError(f"scheduler=popen runs local workers only, not {remote[0].label}")
        return super().reserve(settings, out, hosts, launch)


BACKEND = PopenBackend()
