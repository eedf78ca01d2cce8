"""One worker of the sharding test: for each shard policy given, iterates one pass of the
trainer's real distributed pipeline over a dataset of example ids and prints, as one JSON line,
the ids it was given per step. One strategy serves every policy, so TensorFlow starts once.

Usage (TF_CONFIG set): python sharding_worker.py NUM_EXAMPLES PER_WORKER_BATCH SHARD...
"""

import json
import sys

import numpy as np
import tensorflow as tf

from trainer.pipeline import train_dataset
from trainer.plan import plan_batches


def main(num_examples: int, per_worker_batch: int, shards: list[str]) -> None:
    tf.config.threading.set_intra_op_parallelism_threads(1)
    tf.config.threading.set_inter_op_parallelism_threads(1)
    strategy = tf.distribute.MultiWorkerMirroredStrategy()
    ids = np.arange(num_examples, dtype=np.int64)
    plan = plan_batches(num_examples, per_worker_batch, strategy.num_replicas_in_sync, None)
    for shard in shards:
        dataset = train_dataset(strategy, ids, ids, plan, seed=7, shard=shard)  # type: ignore[arg-type]
        iterator = iter(dataset)
        steps = []
        for _ in range(plan.steps_per_pass):
            x, _labels = next(iterator)
            local = [t.numpy().tolist() for t in strategy.experimental_local_results(x)]
            steps.append([i for replica in local for i in replica])
        print(json.dumps({"shard": shard, "global_batch": plan.global_batch, "steps": steps}))


if __name__ == "__main__":
    main(int(sys.argv[1]), int(sys.argv[2]), sys.argv[3:])
