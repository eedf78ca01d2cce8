"""The command that serves this page headless on one local port (tests and benchmarks)."""

from __future__ import annotations

import sys
from pathlib import Path

APP = Path(__file__).with_name("app.py")


def streamlit_command(port: int, runs: Path | None = None, script: Path = APP) -> list[str]:
    """`streamlit run dashboard/app.py` on 127.0.0.1:`port`, no browser, no usage statistics;
    `runs` is the runs folder (default: the app's own, ./runs or TFCLUSTER_RUNS); `script`
    another page to serve the same way (the benchmark's reference page)."""
    command = [
        sys.executable,
        "-m",
        "streamlit",
        "run",
        str(script),
        "--server.headless",
        "true",
        "--server.address",
        "127.0.0.1",
        "--server.port",
        str(port),
        "--browser.gatherUsageStats",
        "false",
    ]
    return command if runs is None else [*command, "--", "--runs", str(runs)]
