"""A loss of peers: which recorded errors mean one, and how a network check's answer turns
into the failure's cause (the real cut network: test_reliability.py)."""

from __future__ import annotations

from typing import Any

import pytest

from launcher.failure import Failure
from launcher.partition import lost_peers, network_lines, with_network

CUT = "worker 0 (a@h1) cannot reach worker 1 at 10.0.0.2:23456: timed out (a firewall may drop)"
BACK = "worker 1 (a@h2) cannot reach worker 0 at 10.0.0.1:23456: timed out (a firewall may drop)"


@pytest.mark.parametrize(
    ("status", "lost"),
    [
        ({"error": "DeadlineExceededError: Collective ops is aborted by: Deadline Exceeded"}, True),
        ({"error": "UnavailableError: failed to connect to all addresses"}, True),
        ({"error": "UnavailableError: Socket closed"}, True),
        ({"error": "InternalError: RPC: /tensorflow.CoordinationService/Heartbeat"}, True),
        ({"error": "ValueError: could not convert string to float: 'x'"}, False),
        ({"error": "OSError: [Errno 28] No space left on device"}, False),
        (  # a user's program (trainer.wrap): the error's name is up in its stderr tail
            {
                "error": "\t [[{{node CollectiveReduceV2}}]] [Op:__inference_train_function_9]",
                "log_tail": [
                    "tensorflow.python.framework.errors_impl.DeadlineExceededError: "
                    "Collective ops is aborted by: Deadline Exceeded",
                    "The error could be from a previous operation. Restart your program.",
                    "\t [[{{node CollectiveReduceV2}}]] [Op:__inference_train_function_9]",
                ],
            },
            True,
        ),
        ({"error": "KeyError: 'x'", "log_tail": ["Traceback ...", "KeyError: 'x'"]}, False),
        ({"error": "KeyError: 'x'", "log_tail": "not a list"}, False),
        ({"error": None}, False),
        ({"error": 17}, False),
        ({}, False),
        (None, False),
    ],
)
def test_lost_peers_reads_tensorflows_rpc_errors(status: dict[str, Any] | None, lost: bool) -> None:
    assert lost_peers(status) is lost


def failure() -> Failure:
    return Failure(0, "a@h1", "exited with code 1", [])


def test_a_cut_network_becomes_the_cause() -> None:
    found = with_network(failure(), [CUT, BACK])
    assert found.line() == f"worker 0 (a@h1) lost contact with its peers: {CUT} (and 1 more)"
    assert found.as_dict()["network"] == [CUT, BACK]
    assert network_lines(found) == [
        "  network check after the failure (as fab check):",
        f"    {CUT}",
        f"    {BACK}",
    ]


def test_a_sound_network_leaves_the_cause_and_is_said() -> None:
    found = with_network(failure(), [])
    assert found.reason == "exited with code 1"
    assert found.as_dict()["network"] == []
    assert "every worker reached every other" in network_lines(found)[0]


def test_no_check_no_network_field() -> None:
    assert "network" not in failure().as_dict()
    assert network_lines(failure()) == []
