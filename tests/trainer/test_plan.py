import pytest
from hypothesis import given
from hypothesis import strategies as st

from trainer.errors import InputError
from trainer.plan import BatchPlan, plan_batches


@pytest.mark.parametrize(
    ("examples", "batch", "workers", "steps", "expected"),
    [
        (1347, 32, 2, None, BatchPlan(32, 2, 21, 21)),
        (1347, 64, 1, None, BatchPlan(64, 1, 21, 21)),
        (60000, 64, 3, None, BatchPlan(64, 3, 312, 312)),
        (100, 10, 2, 7, BatchPlan(10, 2, 5, 7)),
        (20, 10, 2, None, BatchPlan(10, 2, 1, 1)),
    ],
)
def test_plan_batches_makes_an_epoch_one_pass_in_global_batches(
    examples: int, batch: int, workers: int, steps: int | None, expected: BatchPlan
) -> None:
    plan = plan_batches(examples, batch, workers, steps)
    assert plan == expected
    assert examples - plan.steps_per_pass * plan.global_batch < plan.global_batch


def test_plan_batches_refuses_a_global_batch_larger_than_the_data() -> None:
    with pytest.raises(InputError, match="global batch 40, more than the 39 training examples"):
        plan_batches(39, 20, 2, None)


@given(
    examples=st.integers(1, 100_000),
    batch=st.integers(1, 512),
    workers=st.integers(1, 16),
)
def test_plan_batches_leaves_out_less_than_one_global_batch(
    examples: int, batch: int, workers: int
) -> None:
    try:
        plan = plan_batches(examples, batch, workers, None)
    except InputError:
        assert examples < batch * workers
        return
    assert 0 <= examples - plan.steps_per_pass * plan.global_batch < plan.global_batch
    assert plan.steps_per_epoch == plan.steps_per_pass >= 1
