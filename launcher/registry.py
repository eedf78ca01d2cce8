"""Which module implements each backend, by the name a hosts file gives (`scheduler=NAME`).

The one place a backend is chosen, as torch.distributed.elastic picks a rendezvous handler:
a name maps to a module holding `BACKEND`, imported only when a run needs it. A backend from
another package registers itself with an entry point in the `tfcluster.backends` group
(`slurm2 = "mypackage.slurm2"`), or from Python with `register`.
"""

from __future__ import annotations

import importlib
from importlib.metadata import entry_points
from typing import Any

ENTRY_POINT_GROUP = "tfcluster.backends"
DEFAULT = "ssh"  # a line without scheduler=: its host over SSH, or a local process
_BUILT_IN = {"ssh": "launcher.backends.ssh", "slurm": "launcher.backends.slurm"}
_registered: dict[str, str] = {}


def register(name: str, module: str) -> None:
    """Make `scheduler=NAME` run through `module`'s BACKEND."""
    _registered[name] = module


def _modules() -> dict[str, str]:
    found = {ep.name: ep.value for ep in entry_points(group=ENTRY_POINT_GROUP)}
    return {**found, **_registered, **_BUILT_IN}


def names() -> list[str]:
    return sorted(_modules())


def load(name: str) -> Any:
    """The backend registered as `name`; KeyError when there is none."""
    module = _modules()[name]
    return importlib.import_module(module).BACKEND
