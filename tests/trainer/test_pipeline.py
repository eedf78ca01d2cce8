"""The real distributed input pipeline, run by real workers over a dataset of example ids."""

import json
from pathlib import Path

import pytest

from tests.trainer.workers import run_cluster

SHARDING_WORKER = Path(__file__).with_name("sharding_worker.py")


@pytest.mark.slow
@pytest.mark.parametrize(
    ("workers", "shard", "examples", "batch"),
    [(2, "data", 103, 4), (2, "index", 103, 4), (3, "data", 100, 3), (3, "index", 100, 3)],
)
def test_one_pass_trains_each_example_at_most_once(
    workers: int, shard: str, examples: int, batch: int
) -> None:
    results = run_cluster(workers, [str(SHARDING_WORKER), str(examples), str(batch), shard])
    assert [r.returncode for r in results] == [0] * workers, results[0].stderr[-2000:]
    passes = [json.loads(r.stdout.strip().splitlines()[-1]) for r in results]
    global_batch = passes[0]["global_batch"]
    trained = [i for p in passes for step in p["steps"] for i in step]

    assert global_batch == batch * workers
    assert all(len(step) == batch for p in passes for step in p["steps"])
    assert len(trained) == len(set(trained)), "an example was trained on twice"
    assert set(trained) <= set(range(examples))
    assert 0 <= examples - len(trained) < global_batch
