"""The real distributed input pipeline, run by real workers over a dataset of example ids."""

import json
from pathlib import Path

import pytest

from tests.trainer.workers import run_cluster

SHARDING_WORKER = Path(__file__).with_name("sharding_worker.py")


SHARDS = ("data", "index")


@pytest.mark.slow
@pytest.mark.parametrize(("workers", "examples", "batch"), [(2, 103, 4), (3, 100, 3)])
def test_one_pass_trains_each_example_at_most_once(workers: int, examples: int, batch: int) -> None:
    """Each shard policy in turn, in the same workers (TensorFlow starts once per size)."""
    results = run_cluster(workers, [str(SHARDING_WORKER), str(examples), str(batch), *SHARDS])
    assert [r.returncode for r in results] == [0] * workers, results[0].stderr[-2000:]
    outputs = [[json.loads(line) for line in r.stdout.strip().splitlines()] for r in results]
    for n, shard in enumerate(SHARDS):
        passes = [output[n] for output in outputs]
        assert [p["shard"] for p in passes] == [shard] * workers
        global_batch = passes[0]["global_batch"]
        trained = [i for p in passes for step in p["steps"] for i in step]

        assert global_batch == batch * workers, shard
        assert all(len(step) == batch for p in passes for step in p["steps"]), shard
        assert len(trained) == len(set(trained)), f"{shard}: an example was trained on twice"
        assert set(trained) <= set(range(examples)), shard
        assert 0 <= examples - len(trained) < global_batch, shard
