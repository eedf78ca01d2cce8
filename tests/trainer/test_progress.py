import pytest

from trainer.progress import Window


@pytest.mark.parametrize(
    ("window", "examples_per_sec", "step_time_ms"),
    [
        (Window(steps=10, seconds=0.5, examples_per_step=32), 640.0, 50.0),
        (Window(steps=1, seconds=2.0, examples_per_step=64), 32.0, 2000.0),
        (Window(steps=0, seconds=0.0, examples_per_step=32), 0.0, 0.0),
    ],
)
def test_window_measures_this_workers_throughput(
    window: Window, examples_per_sec: float, step_time_ms: float
) -> None:
    assert window.examples_per_sec == pytest.approx(examples_per_sec)
    assert window.step_time_ms == pytest.approx(step_time_ms)
