"""How the data reaches the workers: the tf.data pipelines behind the batch plan.

One epoch is one pass over the training set in global batches. Every worker shuffles with
the same seed, so all agree on the order; each then trains on its own disjoint part of each
global batch. Fewer than one global batch of examples is left out of a pass.
"""

from __future__ import annotations

from typing import TypeAlias

import numpy as np
import tensorflow as tf

from trainer.config import ShardPolicy
from trainer.plan import BatchPlan

AutoShard: TypeAlias = tf.data.experimental.AutoShardPolicy


def train_dataset(
    strategy: tf.distribute.Strategy,
    x: np.ndarray,
    y: np.ndarray,
    plan: BatchPlan,
    seed: int,
    shard: ShardPolicy,
) -> tf.distribute.DistributedDataset:
    """An endless distributed stream of training batches, sharded by the chosen policy."""
    if shard == "index":
        return strategy.distribute_datasets_from_function(
            lambda context: _index_sharded(context, x, y, plan, seed)
        )
    return strategy.experimental_distribute_dataset(_data_sharded(x, y, plan, seed))


def eval_dataset(x: np.ndarray, y: np.ndarray, plan: BatchPlan) -> tf.data.Dataset:
    """The test split in global batches; Keras gives each worker its part (DATA policy)."""
    dataset = tf.data.Dataset.from_tensor_slices((x, y)).batch(plan.global_batch)
    return _with_policy(dataset, AutoShard.DATA)


def _shuffled(x: np.ndarray, y: np.ndarray, seed: int) -> tf.data.Dataset:
    dataset = tf.data.Dataset.from_tensor_slices((x, y))
    return dataset.shuffle(len(x), seed=seed, reshuffle_each_iteration=True)


def _data_sharded(x: np.ndarray, y: np.ndarray, plan: BatchPlan, seed: int) -> tf.data.Dataset:
    """Global batches; the strategy splits each one and DATA sharding keeps this worker's part."""
    dataset = _shuffled(x, y, seed).batch(plan.global_batch, drop_remainder=True)
    return _with_policy(dataset.repeat().prefetch(tf.data.AUTOTUNE), AutoShard.DATA)


def _index_sharded(
    context: tf.distribute.InputContext, x: np.ndarray, y: np.ndarray, plan: BatchPlan, seed: int
) -> tf.data.Dataset:
    """Each worker keeps every W-th example of the same shuffled pass, cut to whole batches."""
    per_replica = context.get_per_replica_batch_size(plan.global_batch)
    dataset = (
        _shuffled(x, y, seed)
        .take(plan.steps_per_pass * plan.global_batch)
        .shard(context.num_input_pipelines, context.input_pipeline_id)
        .batch(per_replica, drop_remainder=True)
    )
    return _with_policy(dataset.repeat().prefetch(tf.data.AUTOTUNE), AutoShard.OFF)


def _with_policy(dataset: tf.data.Dataset, policy: AutoShard) -> tf.data.Dataset:
    options = tf.data.Options()
    options.experimental_distribute.auto_shard_policy = policy
    return dataset.with_options(options)
