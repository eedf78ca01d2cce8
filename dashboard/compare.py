"""A run's configuration as flat text fields, and how several runs' configurations differ.

The launcher records the trainer options it passed (cluster.json `trainer_args`, only the
ones given on the command line) and the chief's metrics.json the global batch; the
hyperparameters the program logged for TensorBoard (dashboard.hparams; the built-in trainer
logs every option's value, defaults included) fill in the rest. Pure functions, tested
without a page.
"""

from __future__ import annotations

import shlex
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

from dashboard import text
from dashboard.runs import Run

if TYPE_CHECKING:
    import pandas as pd

# Trainer options shown as their own columns, in this order (others follow by name).
KNOWN_OPTIONS = {
    "epochs": "epochs",
    "batch-size": "batch/worker",
    "steps-per-epoch": "steps/epoch",
    "learning-rate": "learning rate",
    "seed": "seed",
    "dataset": "dataset",
    "shard": "shard",
}
# Hyperparameters the built-in trainer logs that are not its options, and their columns.
HPARAM_COLUMNS = {**KNOWN_OPTIONS, "global-batch-size": "global batch"}


def parse_trainer_args(args: Sequence[str]) -> dict[str, str]:
    """`--name value`, `--name=value` and bare flags (`--backup` -> yes, `--no-x` -> x: no)."""
    options: dict[str, str] = {}
    position = 0
    while position < len(args):
        arg = args[position]
        position += 1
        if not arg.startswith("--") or len(arg) < 3:
            continue
        name, equals, value = arg[2:].partition("=")
        if not equals:
            following = args[position] if position < len(args) else None
            if following is not None and not following.startswith("--"):
                value = following
                position += 1
            elif name.startswith("no-"):
                name, value = name[3:], "no"
            else:
                value = "yes"
        if name != "run-dir":
            options[text.clip(name, 40)] = text.clip(value, 80)
    return options


def run_config(run: Run, hparams: Mapping[str, str] | None = None) -> dict[str, str]:
    """What the run trained with, as column -> text ('-' where nothing says). A user's
    script shows with its arguments as typed; options given as `--name value` also get
    their own columns, as the trainer's do. Logged hyperparameters (name -> text) fill the
    column of their name where it says nothing or the same, else get one of their own."""
    given = run.cluster.trainer_args if run.cluster else ()
    args = parse_trainer_args(given)
    metrics = run.metrics
    program = run.program
    config = {
        "program": text.clip(program.script or "?", 80) if program.is_script else "trainer",
        "arguments": text.clip(shlex.join(given), 160) if program.is_script and given else "-",
        "workers": str(len(run.indices)),
        "dataset": text.clip(run.dataset or args.get("dataset", text.MISSING), 80),
        "epochs": args.get("epochs")
        or str((run.cluster.epochs if run.cluster else None) or text.MISSING),
        "global batch": str(metrics.global_batch_size)
        if metrics and metrics.global_batch_size
        else text.MISSING,
    }
    for option, column in KNOWN_OPTIONS.items():
        config.setdefault(column, args.get(option, text.MISSING))
    for option, value in sorted(args.items()):
        if option not in KNOWN_OPTIONS:
            config.setdefault(option, value)
    for name, value in (hparams or {}).items():
        column = HPARAM_COLUMNS.get(name, name)
        if config.get(column, text.MISSING) in (text.MISSING, value):
            config[column] = value
        else:
            config[f"{column} (hparam)"] = value
    return config


def config_frame(
    runs: Sequence[Run], hparams: Mapping[str, Mapping[str, str]] | None = None
) -> pd.DataFrame:
    """One row per run (index: run id), one column per configuration field; `hparams`: each
    run's logged hyperparameters by run id."""
    import pandas as pd  # lazily: 1-3 s to import, not before the first chart (app.py)

    logged = hparams or {}
    rows = [{"run": run.run_id, **run_config(run, logged.get(run.run_id))} for run in runs]
    frame = pd.DataFrame(rows).fillna(text.MISSING)
    return frame.set_index("run") if not frame.empty else frame


def differences(frame: pd.DataFrame) -> pd.DataFrame:
    """Only the columns whose value is not the same in every run."""
    if frame.empty:
        return frame
    varying = [column for column in frame.columns if frame[column].nunique(dropna=False) > 1]
    return frame[varying]


def runs_frame(runs: Sequence[Run], now: float) -> pd.DataFrame:
    """The Runs table: state, size, configuration, timing and result of every run."""
    import pandas as pd  # lazily (see config_frame)

    rows = []
    for run in runs:
        accuracy = run.metrics.test_accuracy if run.metrics else None
        rows.append(
            {
                "run": run.run_id,
                "state": run.state,
                **run_config(run),
                "started": text.when(run.started),
                "duration": text.duration(run.duration(now)),
                "test accuracy": text.MISSING if accuracy is None else f"{accuracy:.4f}",
            }
        )
    return pd.DataFrame(rows).fillna(text.MISSING)
