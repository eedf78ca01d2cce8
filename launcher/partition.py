"""Whether a failed job lost its workers' network, and how that is told.

When every worker ends with TensorFlow's RPC errors (a collective or the coordination
service's heartbeat timed out, a peer unreachable) and none was killed, froze or lost its
host, the cause is between the workers, not in any one of them: the first worker to give up
is only the first to notice. The launcher then stops every worker, so that their tf_ports are
free, and runs `fab check`'s network check between their hosts (launcher/netcheck.py): a
pair that cannot reach each other becomes the failure's cause, named pair by pair.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any

from launcher.failure import Failure

# TensorFlow's errors when a peer does not answer: gRPC's codes as TensorFlow names them,
# and the RPCs a MultiWorkerMirroredStrategy job makes between its workers.
_PEER_ERROR = re.compile(
    r"DeadlineExceeded|Deadline Exceeded|UnavailableError|\bUnavailable\b"
    r"|failed to connect to all addresses|Connection reset by peer|Socket closed"
    r"|CoordinationService|[Hh]eartbeat|Collective ops is aborted"
)


def lost_peers(status: Mapping[str, Any] | None) -> bool:
    """Whether a worker's recorded error says it lost contact with its peers: the error, or
    the stderr lines before it (a user's program's error is its last stderr line, which for
    TensorFlow's errors is the failed op, the error's name being a few lines up)."""
    status = status or {}
    tail = status.get("log_tail")
    lines = [status.get("error"), *(tail if isinstance(tail, list) else [])]
    return any(isinstance(line, str) and _PEER_ERROR.search(line) for line in lines)


def with_network(failure: Failure, problems: Sequence[str]) -> Failure:
    """`failure` once the network check ran: a cut network becomes its cause (its first
    failing pair in the reason, all of them in `network`); a sound one is recorded as such."""
    failure.network = list(problems)
    if problems:
        more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
        failure.reason = f"lost contact with its peers: {problems[0]}{more}"
    return failure


def network_lines(failure: Failure) -> list[str]:
    """What the report says of the network check after the failure, if it ran."""
    if failure.network is None:
        return []
    if not failure.network:
        return [
            "  network check after the failure (as fab check): every worker reached every"
            " other, so the cut did not last or a peer was too busy to answer"
        ]
    return [
        "  network check after the failure (as fab check):",
        *(f"    {problem}" for problem in failure.network),
    ]
