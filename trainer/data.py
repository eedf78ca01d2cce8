"""The training data as NumPy arrays: MNIST from a staged npz, the Keras cache or the web,
or scikit-learn's bundled digits resized to MNIST's 28x28 so that everything works offline.

No TensorFlow here (except to download MNIST), so bad data fails in milliseconds, before
any worker waits on the others.
"""

from __future__ import annotations

import contextlib
import importlib.metadata
import io
import os
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from runformat import user_cache_dir, write_bytes_atomic
from trainer.config import TrainConfig
from trainer.errors import InputError

MNIST_URL = "https://storage.googleapis.com/tensorflow/tf-keras-datasets/mnist.npz"
MNIST_KEYS = ("x_train", "y_train", "x_test", "y_test")
IMAGE_SHAPE = (28, 28)
NUM_CLASSES = 10
DIGITS_TEST_FRACTION = 0.25
DIGITS_SPLIT_SEED = 0


@dataclass(frozen=True)
class Splits:
    """Images as float32 in [0, 1] of shape (n, 28, 28); labels as int64 class ids."""

    name: str
    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray


def load_data(config: TrainConfig) -> Splits:
    """The splits that config names; raises InputError saying how to fix a missing file."""
    if config.dataset == "digits":
        return load_digits()
    return load_mnist(config.data)


def load_digits(cache: Path | None = None) -> Splits:
    """scikit-learn's 1,797 8x8 digits, upsampled to 28x28, with a fixed stratified split.

    The split is kept in `cache` (default: the user's cache folder), so that a worker starts
    without importing scikit-learn (~2 s of CPU each); a cache that cannot be read or
    written is rebuilt or skipped, never an error."""
    path = (cache or user_cache_dir()) / digits_cache_name()
    try:
        with np.load(path, allow_pickle=False) as cached:
            return Splits("digits", *(cached[key] for key in MNIST_KEYS))
    except (OSError, EOFError, ValueError, KeyError, zipfile.BadZipFile):
        pass
    splits = split_digits()
    buffer = io.BytesIO()
    np.savez(buffer, **{key: getattr(splits, key) for key in MNIST_KEYS})
    with contextlib.suppress(OSError):
        write_bytes_atomic(path, buffer.getvalue())
    return splits


def digits_cache_name() -> str:
    """Named after scikit-learn's version and the split's settings: a change of either makes
    a new file, never a stale split."""
    version = importlib.metadata.version("scikit-learn")
    return f"digits-{version}-{DIGITS_TEST_FRACTION}-{DIGITS_SPLIT_SEED}.npz"


def split_digits() -> Splits:
    """The digits split itself (what load_digits caches)."""
    from scipy.ndimage import zoom
    from sklearn.datasets import load_digits as sklearn_digits
    from sklearn.model_selection import train_test_split

    bunch = sklearn_digits()
    scale = IMAGE_SHAPE[0] / bunch.images.shape[1]
    images = zoom(bunch.images / 16.0, (1, scale, scale), order=1).clip(0.0, 1.0)
    x_train, x_test, y_train, y_test = train_test_split(
        images.astype(np.float32),
        bunch.target.astype(np.int64),
        test_size=DIGITS_TEST_FRACTION,
        random_state=DIGITS_SPLIT_SEED,
        stratify=bunch.target,
    )
    return Splits("digits", x_train, y_train, x_test, y_test)


def keras_cache_path() -> Path:
    """Where Keras keeps a downloaded mnist.npz ($KERAS_HOME, else ~/.keras)."""
    home = os.environ.get("KERAS_HOME") or os.path.join(os.path.expanduser("~"), ".keras")
    return Path(home) / "datasets" / "mnist.npz"


def load_mnist(staged: Path | None) -> Splits:
    """MNIST from the staged file when given, else the Keras cache, else a download."""
    if staged is not None:
        return read_mnist_npz(staged, origin="--data")
    cached = keras_cache_path()
    if cached.is_file():
        return read_mnist_npz(cached, origin="Keras cache")
    return read_mnist_npz(_download_mnist(cached), origin="download")


def _download_mnist(cached: Path) -> Path:
    try:
        from tf_keras.utils import get_file

        return Path(get_file("mnist.npz", origin=MNIST_URL, cache_dir=str(cached.parent.parent)))
    except Exception as e:
        reason = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise InputError(
            f"MNIST not found: no --data given, nothing at {cached}, and the download failed "
            f"({reason}); stage it: fetch {MNIST_URL} on a machine with internet, copy it to "
            "this host and pass --data PATH (or train offline with --dataset digits)"
        ) from None


def read_mnist_npz(path: Path, origin: str = "--data") -> Splits:
    """Load and check an npz in Keras' MNIST layout; raises InputError naming the problem."""
    if not path.is_file():
        raise InputError(
            f"{origin} {path}: no such file; stage MNIST there (from {MNIST_URL}) "
            "or use --dataset digits"
        )
    try:
        with np.load(path, allow_pickle=False) as npz:
            missing = [k for k in MNIST_KEYS if k not in npz.files]
            if missing:
                raise InputError(
                    f"{path}: missing {', '.join(missing)}; expected arrays {', '.join(MNIST_KEYS)}"
                )
            arrays = {k: npz[k] for k in MNIST_KEYS}
    except (OSError, ValueError, zipfile.BadZipFile, EOFError) as e:
        raise InputError(f"{path}: not a readable .npz file ({e}); expected MNIST's npz") from None
    return normalise_mnist(path, arrays)


def normalise_mnist(path: Path, arrays: dict[str, np.ndarray]) -> Splits:
    """Check shapes and label values, then scale pixels from 0..255 to 0..1."""
    for split in ("train", "test"):
        x, y = arrays[f"x_{split}"], arrays[f"y_{split}"]
        if x.ndim != 3 or x.shape[1:] != IMAGE_SHAPE or x.shape[0] == 0:
            raise InputError(
                f"{path}: x_{split} has shape {x.shape}, expected (N, 28, 28) with N > 0"
            )
        if not np.issubdtype(x.dtype, np.number):
            raise InputError(f"{path}: x_{split} holds {x.dtype}, expected numbers 0..255")
        if y.shape != (x.shape[0],):
            raise InputError(
                f"{path}: y_{split} has shape {y.shape}, "
                f"expected ({x.shape[0]},) to match x_{split}"
            )
        if not np.issubdtype(y.dtype, np.integer) or y.min() < 0 or y.max() >= NUM_CLASSES:
            raise InputError(f"{path}: y_{split} must hold integer labels 0..9")
    return Splits(
        "mnist",
        (arrays["x_train"] / np.float32(255.0)).astype(np.float32),
        arrays["y_train"].astype(np.int64),
        (arrays["x_test"] / np.float32(255.0)).astype(np.float32),
        arrays["y_test"].astype(np.int64),
    )
