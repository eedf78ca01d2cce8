"""One action on every host at once, and what each host answered.

Like Fabric's GroupResult: the outcome of each host in host order, split into the hosts that
succeeded (with their values) and those that failed (with a HostError naming the host).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from typing import Generic, Protocol, TypeVar

from launcher.hosts import Host
from launcher.remote import HostError, each_host

T = TypeVar("T")
R = TypeVar("R")


class OnHost(Protocol):
    @property
    def host(self) -> Host: ...


def _host_of(item: object) -> Host:
    if isinstance(item, Host):
        return item
    host = getattr(item, "host", None)
    if isinstance(host, Host):
        return host
    raise TypeError(f"{item!r} names no host; pass host=")


class HostResults(Generic[T, R]):
    """Per-host outcomes of `run`: each item with its value or its HostError, in order."""

    def __init__(self, outcomes: Sequence[tuple[T, R | HostError]]) -> None:
        self.outcomes = list(outcomes)

    @classmethod
    def run(
        cls,
        items: Sequence[T],
        action: Callable[[T], R],
        host: Callable[[T], Host] = _host_of,
    ) -> HostResults[T, R]:
        """`action` on every item at once (one thread each); an exception other than
        HostError becomes one naming the item's host."""
        outcomes: list[tuple[T, R | HostError]] = []
        for item, res in zip(items, each_host(items, action), strict=True):
            if isinstance(res, HostError):
                outcomes.append((item, res))
            elif isinstance(res, Exception):
                outcomes.append((item, HostError(host(item), f"{type(res).__name__}: {res}")))
            else:
                outcomes.append((item, res))  # type: ignore[arg-type]
        return cls(outcomes)

    def __iter__(self) -> Iterator[tuple[T, R | HostError]]:
        return iter(self.outcomes)

    def __len__(self) -> int:
        return len(self.outcomes)

    @property
    def succeeded(self) -> list[tuple[T, R]]:
        return [(i, r) for i, r in self.outcomes if not isinstance(r, HostError)]  # type: ignore[misc]

    @property
    def failed(self) -> list[tuple[T, HostError]]:
        return [(i, r) for i, r in self.outcomes if isinstance(r, HostError)]

    @property
    def values(self) -> list[R]:
        return [r for _, r in self.succeeded]

    @property
    def errors(self) -> list[HostError]:
        return [e for _, e in self.failed]

    def raise_first(self) -> None:
        """The first host that could not do its part, as its HostError."""
        for _, error in self.failed:
            raise error
