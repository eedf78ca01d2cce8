"""Event records holding images, histograms and text, as TF2's tf.summary writes them: the
builders the media tests share."""

from __future__ import annotations

import io

import numpy as np
from PIL import Image as PILImage
from tensorboard.compat.proto import event_pb2, summary_pb2
from tensorboard.plugins.histogram import metadata as histogram_metadata
from tensorboard.plugins.image import metadata as image_metadata
from tensorboard.plugins.text import metadata as text_metadata
from tensorboard.util import tensor_util

from dashboard.tfrecord import frame_record


def png(width: int = 4, height: int = 3, shade: int = 0) -> bytes:
    out = io.BytesIO()
    PILImage.new("RGB", (width, height), (shade, 0, 0)).save(out, format="PNG")
    return out.getvalue()


def event(step: int, *values: summary_pb2.Summary.Value) -> bytes:
    return frame_record(
        event_pb2.Event(
            step=step, wall_time=1000.0 + step, summary=summary_pb2.Summary(value=values)
        ).SerializeToString()
    )


def image_value(tag: str, pictures: list[bytes], first: bool = True, size: str = "4") -> object:
    value = summary_pb2.Summary.Value(
        tag=tag,
        tensor=tensor_util.make_tensor_proto([size.encode(), b"3", *pictures]),
    )
    if first:
        value.metadata.CopyFrom(image_metadata.create_summary_metadata("", ""))
    return value


def histogram_value(tag: str, buckets: np.ndarray, first: bool = True) -> object:
    value = summary_pb2.Summary.Value(
        tag=tag, tensor=tensor_util.make_tensor_proto(np.asarray(buckets, dtype=np.float64))
    )
    if first:
        value.metadata.CopyFrom(histogram_metadata.create_summary_metadata("", ""))
    return value


def text_value(tag: str, strings: list[str], first: bool = True) -> object:
    value = summary_pb2.Summary.Value(
        tag=tag, tensor=tensor_util.make_tensor_proto([s.encode() for s in strings])
    )
    if first:
        value.metadata.CopyFrom(text_metadata.create_summary_metadata("", ""))
    return value
