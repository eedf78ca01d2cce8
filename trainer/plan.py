"""The batch plan: global batch and steps per epoch, the same on every worker (no TensorFlow)."""

from __future__ import annotations

from dataclasses import dataclass

from trainer.errors import InputError


@dataclass(frozen=True)
class BatchPlan:
    """Batch sizes and steps, the same on every worker."""

    per_worker_batch: int
    num_workers: int
    steps_per_pass: int
    steps_per_epoch: int

    @property
    def global_batch(self) -> int:
        return self.per_worker_batch * self.num_workers


def plan_batches(
    num_examples: int, per_worker_batch: int, num_workers: int, steps_per_epoch: int | None
) -> BatchPlan:
    """The plan for a training set; an epoch defaults to one full pass in global batches."""
    global_batch = per_worker_batch * num_workers
    steps_per_pass = num_examples // global_batch
    if steps_per_pass == 0:
        raise InputError(
            f"--batch-size {per_worker_batch} x {num_workers} workers = global batch "
            f"{global_batch}, more than the {num_examples} training examples; use a smaller "
            "--batch-size"
        )
    return BatchPlan(
        per_worker_batch=per_worker_batch,
        num_workers=num_workers,
        steps_per_pass=steps_per_pass,
        steps_per_epoch=steps_per_epoch or steps_per_pass,
    )
