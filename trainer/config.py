"""Command-line options, parsed and checked into one typed, immutable config."""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, NoReturn

from trainer.errors import InputError

ShardPolicy = Literal["data", "index"]
DatasetName = Literal["mnist", "digits"]


@dataclass(frozen=True)
class TrainConfig:
    """Everything one worker needs to know about the job, the same on every worker."""

    run_dir: Path
    epochs: int = 10
    batch_size: int = 32
    steps_per_epoch: int | None = None
    learning_rate: float = 0.001
    seed: int = 42
    dataset: DatasetName = "mnist"
    data: Path | None = None
    shard: ShardPolicy = "data"
    log_every: int = 10
    system_every: float = 5.0
    threads: int | None = None
    validation: bool = True
    mistakes: bool = True
    backup: bool = False


class _Parser(argparse.ArgumentParser):
    """argparse that raises instead of printing usage, so a mistake costs the user one line."""

    def error(self, message: str) -> NoReturn:
        raise InputError(message)


def _whole_number(text: str, minimum: int) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < minimum:
        raise argparse.ArgumentTypeError(f"expected a number of at least {minimum}, got {value}")
    return value


def _positive_int(text: str) -> int:
    return _whole_number(text, 1)


def _non_negative_int(text: str) -> int:
    return _whole_number(text, 0)


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not 0 < value < float("inf"):
        raise argparse.ArgumentTypeError(f"expected a finite number above 0, got {text}")
    return value


def build_parser() -> argparse.ArgumentParser:
    """The trainer's options; defaults come from TrainConfig so they live in one place."""
    d = TrainConfig(run_dir=Path("."))
    p = _Parser(
        prog="python -m trainer",
        allow_abbrev=False,
        description="Train the MNIST CNN on this worker under MultiWorkerMirroredStrategy. "
        "Reads TF_CONFIG; without it, trains as a single worker.",
    )
    p.add_argument(
        "--run-dir",
        metavar="DIR",
        required=True,
        type=Path,
        help="where this worker writes workers/<index>/ (the chief also model.h5, metrics.json)",
    )
    p.add_argument(
        "--epochs",
        metavar="N",
        type=_positive_int,
        default=d.epochs,
        help="epochs to train (default: %(default)s)",
    )
    p.add_argument(
        "--batch-size",
        metavar="N",
        type=_positive_int,
        default=d.batch_size,
        help="per-worker batch size; the global batch is this times the number of workers "
        "(default: %(default)s)",
    )
    p.add_argument(
        "--steps-per-epoch",
        metavar="N",
        type=_positive_int,
        default=None,
        help="global steps per epoch (default: one pass over the training set)",
    )
    p.add_argument(
        "--learning-rate",
        metavar="RATE",
        type=_positive_float,
        default=d.learning_rate,
        help="Adam step size (default: %(default)s)",
    )
    p.add_argument(
        "--seed",
        metavar="N",
        type=_non_negative_int,
        default=d.seed,
        help="seed for weights and shuffling, the same on every worker (default: %(default)s)",
    )
    p.add_argument(
        "--dataset",
        default=d.dataset,
        metavar="{mnist,digits,PATH}",
        help="mnist, digits (scikit-learn's bundled digits, offline) or a path to an mnist.npz "
        "(default: %(default)s)",
    )
    p.add_argument(
        "--data", metavar="PATH", type=Path, help="a staged mnist.npz for --dataset mnist"
    )
    p.add_argument(
        "--shard",
        choices=["data", "index"],
        default=d.shard,
        help="data: tf.data auto-shard DATA policy; index: explicit shard by worker index "
        "(default: %(default)s)",
    )
    p.add_argument(
        "--log-every",
        metavar="N",
        type=_positive_int,
        default=d.log_every,
        help="write progress scalars and status every N steps (default: %(default)s)",
    )
    p.add_argument(
        "--system-every",
        metavar="SECONDS",
        type=_positive_float,
        default=d.system_every,
        help="sample CPU, memory, network and GPUs every SECONDS (default: %(default)s)",
    )
    p.add_argument(
        "--threads",
        metavar="N",
        type=_positive_int,
        default=None,
        help="limit TensorFlow's CPU threads (several workers sharing one machine)",
    )
    p.add_argument(
        "--validation",
        action=argparse.BooleanOptionalAction,
        default=d.validation,
        help="evaluate on the test split after every epoch (chief's TensorBoard validation/)",
    )
    p.add_argument(
        "--mistakes",
        action=argparse.BooleanOptionalAction,
        default=d.mistakes,
        help="the chief draws the test digits it gets wrong and a confusion matrix after "
        "every epoch (image summaries in its events folder)",
    )
    p.add_argument(
        "--backup",
        action="store_true",
        help="back up the training state to RUN_DIR/backup after every epoch; a worker "
        "restarted on the same run directory resumes from the last completed epoch",
    )
    return p


def parse_args(argv: Sequence[str]) -> TrainConfig:
    """Parse and check the options; raises InputError naming the bad option and value."""
    ns = build_parser().parse_args(list(argv))
    dataset, data = _resolve_dataset(ns.dataset, ns.data)
    return TrainConfig(
        run_dir=ns.run_dir,
        epochs=ns.epochs,
        batch_size=ns.batch_size,
        steps_per_epoch=ns.steps_per_epoch,
        learning_rate=ns.learning_rate,
        seed=ns.seed,
        dataset=dataset,
        data=data,
        shard=ns.shard,
        log_every=ns.log_every,
        system_every=ns.system_every,
        threads=ns.threads,
        validation=ns.validation,
        mistakes=ns.mistakes,
        backup=ns.backup,
    )


def _resolve_dataset(dataset: str, data: Path | None) -> tuple[DatasetName, Path | None]:
    """`--dataset PATH` is shorthand for `--dataset mnist --data PATH`."""
    if dataset == "digits":
        if data is not None:
            raise InputError("--data is only for --dataset mnist, not digits")
        return "digits", None
    if dataset == "mnist":
        return "mnist", data
    if dataset.endswith(".npz"):
        if data is not None:
            raise InputError(f"give the npz once: --dataset {dataset} or --data {data}, not both")
        return "mnist", Path(dataset)
    raise InputError(
        f"argument --dataset: expected mnist, digits or a path to an .npz file, got {dataset!r}"
    )
