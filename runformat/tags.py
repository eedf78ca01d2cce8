"""Event tags: what every worker writes with tf.summary into workers/<i>/events/, and the
tags of the chief's Keras TensorBoard logs (docs/run-format.md, "Event tags")."""

from __future__ import annotations

PROGRESS_LOSS = "progress/loss"
PROGRESS_ACCURACY = "progress/accuracy"
PROGRESS_EXAMPLES_PER_SEC = "progress/examples_per_sec"
PROGRESS_STEP_TIME_MS = "progress/step_time_ms"
PROGRESS_TAGS = (PROGRESS_LOSS, PROGRESS_ACCURACY, PROGRESS_EXAMPLES_PER_SEC, PROGRESS_STEP_TIME_MS)
"""Step: the global step. Written every --log-every steps."""

EPOCH_LOSS = "epoch/loss"
EPOCH_ACCURACY = "epoch/accuracy"
EPOCH_TAGS = (EPOCH_LOSS, EPOCH_ACCURACY)
"""Step: the number of epochs completed (1 after the first)."""

SYSTEM_CPU_PERCENT = "system/cpu_percent"
SYSTEM_MEMORY_MB = "system/memory_mb"
SYSTEM_HOST_CPU_PERCENT = "system/host_cpu_percent"
SYSTEM_HOST_MEMORY_PERCENT = "system/host_memory_percent"
SYSTEM_NET_SENT_MBPS = "system/net_sent_mbps"
SYSTEM_NET_RECV_MBPS = "system/net_recv_mbps"
SYSTEM_TAGS = (
    SYSTEM_CPU_PERCENT,
    SYSTEM_MEMORY_MB,
    SYSTEM_HOST_CPU_PERCENT,
    SYSTEM_HOST_MEMORY_PERCENT,
    SYSTEM_NET_SENT_MBPS,
    SYSTEM_NET_RECV_MBPS,
)
"""Step: the global step. Sampled every few seconds, not every step."""

SYSTEM_CPU_WAIT_PERCENT = "system/cpu_wait_percent"
SYSTEM_OPTIONAL_TAGS = (SYSTEM_CPU_WAIT_PERCENT,)
"""Only where the host can tell: the time this process waited for a CPU (Linux schedstat)."""

SYSTEM_GPU_UTIL_PERCENT = "system/gpu_util_percent"
SYSTEM_GPU_MEMORY_MB = "system/gpu_memory_mb"
GPU_TAG_BASES = (SYSTEM_GPU_UTIL_PERCENT, SYSTEM_GPU_MEMORY_MB)
"""One series per visible GPU: `<base>/<gpu index>`; no GPU, no such tags."""


def gpu_tag(base: str, gpu: int) -> str:
    """`system/gpu_util_percent/0`: the series of one GPU."""
    return f"{base}/{gpu}"


def gpu_of(tag: str) -> tuple[str, int] | None:
    """(base, gpu index) of a per-GPU tag, None for any other tag."""
    base, _, gpu = tag.rpartition("/")
    return (base, int(gpu)) if base in GPU_TAG_BASES and gpu.isdigit() else None


KERAS_EPOCH_LOSS = "epoch_loss"
KERAS_EPOCH_ACCURACY = "epoch_accuracy"
KERAS_TAGS = (KERAS_EPOCH_LOSS, KERAS_EPOCH_ACCURACY)
"""The chief's Keras TensorBoard callback, under tensorboard/train and tensorboard/validation;
step: the epoch index, counted from 0."""
