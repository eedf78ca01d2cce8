"""TF_CONFIG, read and checked before TensorFlow sees it, so a mistake is one clear line."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from trainer.errors import InputError

_EXAMPLE = (
    '{"cluster": {"worker": ["host-a:23456", "host-b:23456"]}, '
    '"task": {"type": "worker", "index": 0}}'
)


@dataclass(frozen=True)
class Cluster:
    """This worker's place in the job: the worker addresses (empty: alone) and its index."""

    workers: tuple[str, ...] = ()
    index: int = 0

    @property
    def num_workers(self) -> int:
        return max(1, len(self.workers))

    @property
    def is_chief(self) -> bool:
        return self.index == 0

    @property
    def role(self) -> str:
        return "chief" if self.is_chief else "worker"


def parse_tf_config(text: str | None) -> Cluster:
    """The Cluster that TF_CONFIG describes; absent or blank means a single worker."""
    if text is None or not text.strip():
        return Cluster()
    try:
        config = json.loads(text)
    except json.JSONDecodeError as e:
        raise InputError(f"TF_CONFIG is not valid JSON ({e}); expected e.g. {_EXAMPLE}") from None
    if not isinstance(config, dict):
        raise InputError(f"TF_CONFIG: expected a JSON object, got {_kind(config)}; e.g. {_EXAMPLE}")
    workers = _parse_workers(config.get("cluster"))
    index = _parse_task(config.get("task"), len(workers))
    return Cluster(workers=workers, index=index)


def _parse_workers(cluster: Any) -> tuple[str, ...]:
    if not isinstance(cluster, dict):
        raise InputError(
            'TF_CONFIG.cluster: expected an object like {"worker": ["host:port", ...]}, '
            f"got {_kind(cluster)}"
        )
    others = sorted(set(cluster) - {"worker"})
    if others:
        raise InputError(
            f"TF_CONFIG.cluster: only 'worker' tasks are supported (worker 0 is the chief), "
            f"got {', '.join(repr(o) for o in others)}"
        )
    workers = cluster.get("worker")
    if not isinstance(workers, list) or not workers:
        raise InputError(
            'TF_CONFIG.cluster.worker: expected a non-empty list of "host:port", '
            f"got {_kind(workers)}"
        )
    for i, address in enumerate(workers):
        _check_address(i, address)
    duplicates = sorted({a for a in workers if workers.count(a) > 1})
    if duplicates:
        raise InputError(f"TF_CONFIG.cluster.worker: {duplicates[0]!r} is listed twice")
    return tuple(workers)


def _check_address(i: int, address: Any) -> None:
    where = f"TF_CONFIG.cluster.worker[{i}]"
    if not isinstance(address, str):
        raise InputError(f'{where}: expected a "host:port" string, got {_kind(address)}')
    host, sep, port = address.rpartition(":")
    if not sep or not host:
        raise InputError(f'{where}: expected "host:port", got {address!r}')
    if not port.isdigit() or not 1 <= int(port) <= 65535:
        raise InputError(f"{where}: expected a port from 1 to 65535, got {port!r} in {address!r}")


def _parse_task(task: Any, num_workers: int) -> int:
    if not isinstance(task, dict):
        raise InputError(
            f'TF_CONFIG.task: expected an object like {{"type": "worker", "index": 0}}, '
            f"got {_kind(task)}"
        )
    if task.get("type") != "worker":
        raise InputError(f"TF_CONFIG.task.type: expected 'worker', got {task.get('type')!r}")
    index = task.get("index")
    if isinstance(index, bool) or not isinstance(index, int):
        raise InputError(f"TF_CONFIG.task.index: expected a whole number, got {index!r}")
    if not 0 <= index < num_workers:
        raise InputError(
            f"TF_CONFIG.task.index: expected 0 to {num_workers - 1} "
            f"(the cluster lists {num_workers} workers), got {index}"
        )
    return index


def _kind(value: Any) -> str:
    if value is None:
        return "nothing"
    return f"{type(value).__name__} {json.dumps(value)[:60]}"
