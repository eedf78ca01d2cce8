"""Exit codes: what a worker's code means, and the job's code from all of them."""

from __future__ import annotations

import pytest

from launcher.exits import describe_exit, first_failure, job_exit_code, normalize_exit


@pytest.mark.parametrize(
    ("code", "normal"), [(0, 0), (1, 1), (127, 127), (137, -9), (143, -15), (None, None), (-9, -9)]
)
def test_normalize(code: int | None, normal: int | None) -> None:
    assert normalize_exit(code) == normal


@pytest.mark.parametrize(
    ("code", "text"),
    [
        (0, "finished"),
        (2, "exited with code 2"),
        (-9, "killed by SIGKILL"),
        (-15, "killed by SIGTERM"),
        (127, "command not found"),
        (None, "died without an exit code"),
    ],
)
def test_describe(code: int | None, text: str) -> None:
    assert text in describe_exit(code)


@pytest.mark.parametrize(
    ("codes", "expected", "job", "first"),
    [
        ({0: 0, 1: 0}, 2, 0, None),
        ({0: 0, 1: 1}, 2, 1, 1),
        ({0: -9, 1: 0, 2: 1}, 3, 1, 0),
        ({0: 0}, 2, 1, None),  # a worker that never reported is not a success
        ({0: 0, 1: None}, 2, 1, 1),
        ({}, 1, 1, None),
    ],
)
def test_job_exit_code(
    codes: dict[int, int | None], expected: int, job: int, first: int | None
) -> None:
    assert job_exit_code(codes, expected) == job
    assert first_failure(codes) == first
