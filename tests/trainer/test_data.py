from pathlib import Path

import numpy as np
import pytest

from trainer import data
from trainer.config import TrainConfig
from trainer.data import load_data, load_digits, load_mnist, read_mnist_npz
from trainer.errors import InputError


def mnist_arrays(train: int = 12, test: int = 4) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    return {
        "x_train": rng.integers(0, 256, (train, 28, 28), dtype=np.uint8),
        "y_train": rng.integers(0, 10, train, dtype=np.uint8),
        "x_test": rng.integers(0, 256, (test, 28, 28), dtype=np.uint8),
        "y_test": rng.integers(0, 10, test, dtype=np.uint8),
    }


@pytest.fixture
def mnist_npz(tmp_path: Path) -> Path:
    """A small file in MNIST's npz layout (uint8 pixels 0..255, uint8 labels)."""
    path = tmp_path / "mnist.npz"
    np.savez(path, **mnist_arrays())
    return path


def test_read_mnist_npz_normalises_pixels_and_labels(mnist_npz: Path) -> None:
    splits = read_mnist_npz(mnist_npz)
    raw = mnist_arrays()
    assert splits.name == "mnist"
    assert splits.x_train.shape == (12, 28, 28) and splits.x_test.shape == (4, 28, 28)
    assert splits.x_train.dtype == np.float32 and splits.y_train.dtype == np.int64
    np.testing.assert_allclose(splits.x_train, raw["x_train"] / 255.0, rtol=1e-6)
    np.testing.assert_array_equal(splits.y_test, raw["y_test"])


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"x_train": np.zeros((12, 28), np.uint8)}, "x_train has shape (12, 28), expected (N, 28"),
        ({"x_test": np.zeros((4, 32, 32), np.uint8)}, "x_test has shape (4, 32, 32), expected"),
        ({"x_train": np.zeros((0, 28, 28), np.uint8)}, "expected (N, 28, 28) with N > 0"),
        ({"y_train": np.zeros(11, np.uint8)}, "y_train has shape (11,), expected (12,)"),
        ({"y_test": np.full(4, 10, np.int64)}, "y_test must hold integer labels 0..9"),
        ({"y_test": np.full(4, 1.5)}, "y_test must hold integer labels 0..9"),
        ({"x_train": np.full((12, 28, 28), "a")}, "x_train holds <U1, expected numbers"),
        ({"y_train": None}, "missing y_train; expected arrays x_train, y_train, x_test, y_test"),
    ],
)
def test_read_mnist_npz_names_what_is_wrong(
    tmp_path: Path, change: dict[str, np.ndarray | None], message: str
) -> None:
    arrays = {k: v for k, v in {**mnist_arrays(), **change}.items() if v is not None}
    path = tmp_path / "bad.npz"
    np.savez(path, **arrays)  # type: ignore[arg-type]
    with pytest.raises(InputError) as error:
        read_mnist_npz(path)
    assert str(error.value).startswith(f"{path}: ")
    assert message in str(error.value)


@pytest.mark.parametrize(
    ("content", "message"),
    [(None, "no such file; stage MNIST there"), (b"not a zip", "not a readable .npz file")],
)
def test_read_mnist_npz_refuses_missing_or_foreign_files(
    tmp_path: Path, content: bytes | None, message: str
) -> None:
    path = tmp_path / "mnist.npz"
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(InputError, match=message):
        read_mnist_npz(path)


def test_load_mnist_uses_the_keras_cache(
    mnist_npz: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cache = tmp_path / "keras" / "datasets" / "mnist.npz"
    cache.parent.mkdir(parents=True)
    mnist_npz.rename(cache)
    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "keras"))
    assert load_mnist(None).x_train.shape == (12, 28, 28)


def test_load_mnist_says_how_to_stage_the_file_when_nothing_works(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "keras"))
    monkeypatch.setattr(data, "MNIST_URL", "http://127.0.0.1:9/mnist.npz")  # nothing listens
    with pytest.raises(InputError) as error:
        load_mnist(None)
    message = str(error.value)
    assert "no --data given, nothing at" in message and "download failed" in message
    assert "pass --data PATH" in message and "--dataset digits" in message
    assert "\n" not in message


def test_load_digits_gives_mnist_shaped_fixed_splits(tmp_path: Path) -> None:
    first, second = load_digits(tmp_path), load_digits(tmp_path)
    assert first.name == "digits"
    assert first.x_train.shape == (1347, 28, 28) and first.x_test.shape == (450, 28, 28)
    assert first.x_train.dtype == np.float32 and first.y_train.dtype == np.int64
    assert first.x_train.min() >= 0.0 and first.x_train.max() <= 1.0
    assert set(np.unique(first.y_test)) == set(range(10))
    np.testing.assert_array_equal(first.x_test, second.x_test)


@pytest.mark.parametrize(
    "cached",
    [None, b"", b"not a zip", b"PK\x03\x04 cut short"],
    ids=["missing", "empty", "garbage", "truncated"],
)
def test_digits_split_is_cached_and_a_bad_cache_is_rebuilt(
    tmp_path: Path, cached: bytes | None
) -> None:
    path = tmp_path / data.digits_cache_name()
    if cached is not None:
        path.write_bytes(cached)
    loaded = load_digits(tmp_path)
    fresh = data.split_digits()
    for key in data.MNIST_KEYS:
        np.testing.assert_array_equal(getattr(loaded, key), getattr(fresh, key))
    with np.load(path) as kept:  # the cache now holds the split itself
        np.testing.assert_array_equal(kept["x_test"], fresh.x_test)


def test_digits_load_without_a_writable_cache(tmp_path: Path) -> None:
    blocked = tmp_path / "file"
    blocked.write_text("a file where the cache folder should be")
    assert load_digits(blocked / "cache").x_train.shape == (1347, 28, 28)


def test_load_data_picks_the_configured_dataset(mnist_npz: Path) -> None:
    config = TrainConfig(run_dir=Path("r"), dataset="mnist", data=mnist_npz)
    assert load_data(config).name == "mnist"
    assert load_data(TrainConfig(run_dir=Path("r"), dataset="digits")).name == "digits"
