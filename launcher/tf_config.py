"""TF_CONFIG for every worker: the same cluster for all, the line's position as the task index."""

from __future__ import annotations

import json
from collections.abc import Sequence

from launcher.hosts import Host


def cluster_spec(hosts: Sequence[Host]) -> dict[str, list[str]]:
    """The `cluster` part, identical on every worker, in hosts-file order."""
    return {"worker": [h.tf_address for h in hosts]}


def tf_config(hosts: Sequence[Host], index: int) -> dict[str, object] | None:
    """TF_CONFIG of worker `index`; None for a one-worker job, which trains without it."""
    if len(hosts) < 2:
        return None
    if not 0 <= index < len(hosts):
        raise IndexError(f"worker index {index} is outside 0..{len(hosts) - 1}")
    return {"cluster": cluster_spec(hosts), "task": {"type": "worker", "index": index}}


def tf_config_json(hosts: Sequence[Host], index: int) -> str | None:
    """TF_CONFIG as the compact JSON string the worker's environment carries."""
    config = tf_config(hosts, index)
    return None if config is None else json.dumps(config, separators=(",", ":"))
