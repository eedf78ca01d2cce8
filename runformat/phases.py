"""Worker states and phases as the trainer writes them in status.json, and how long each phase
may stay silent before the launcher calls the worker stuck."""

from __future__ import annotations

from typing import Literal, get_args

WorkerState = Literal["starting", "running", "finished", "failed"]
WORKER_STATES: tuple[str, ...] = get_args(WorkerState)
ACTIVE_WORKER_STATES = frozenset({"starting", "running"})

RunState = Literal["starting", "running", "finished", "failed", "stopped"]
RUN_STATES: tuple[str, ...] = get_args(RunState)
"""cluster.json `state`: the launcher's view of the whole run."""
ACTIVE_RUN_STATES = frozenset({"starting", "running"})

Phase = Literal[
    "starting",
    "loading_data",
    "connecting",
    "running",
    "training",
    "evaluating",
    "saving",
    "ended",
]
PHASES: tuple[str, ...] = get_args(Phase)
UNTIMED_PHASES = frozenset({"running"})
"""Phases whose silence proves nothing: a user's program without the progress callback (the
wrapper's heartbeat goes on, with the epoch and step Keras prints when it prints them; a
silent validation or save is not a stall: only its exit, or its process vanishing, ends it)."""

DEFAULT_PHASE_SILENCE = 600.0
"""Seconds a worker may spend in loading_data, evaluating or saving without a word."""


def phase_silence_bound(
    phase: str | None, stall_timeout: float, start_timeout: float
) -> float | None:
    """How many seconds of silence in `phase` mean the worker is stuck; None: no bound.

    Only `training` is judged by the stall rule (no step progress for `stall_timeout`);
    starting and connecting (every worker waits for all the others) are bounded by the
    launcher's start timeout; the other working phases by DEFAULT_PHASE_SILENCE. `running`
    (a user's program that says nothing of its steps: the wrapper's heartbeat refreshes
    `updated`, but no step moves) has no bound, like an ended worker or one too old to say
    its phase: only its exit, or its process vanishing, ends it.
    """
    if phase == "training":
        return stall_timeout
    if phase in ("starting", "connecting"):
        return start_timeout
    if phase in ("loading_data", "evaluating", "saving"):
        return DEFAULT_PHASE_SILENCE
    return None
