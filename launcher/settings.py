"""Where a command finds its hosts, how it reaches them over SSH, and where runs live."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from launcher.remote import SshSettings
from runformat import RUNS_DIR


@dataclass(frozen=True)
class Settings:
    hosts_file: Path
    ssh: SshSettings
    runs_dir: Path = Path(RUNS_DIR)
