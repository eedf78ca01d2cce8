"""What the trainer's instrumentation costs: our trainer against TensorFlow's multi-worker
tutorial loop, side by side in one run, on 2 local workers.

All three train the same model on the same data (the digits) for the same number of steps
of the same global batch, and time `model.fit` alone (startup, evaluation and saving
excluded). Rounds alternate so that a busy machine hurts all of them alike. On a shared
machine single runs swing by 2x in wall time, so the script prints each loop's best and
median steps/s and, steadier, the chief's CPU time per step (what the instrumentation adds
as work); the instrumentation's cost is judged on both.

- trainer: `python -m trainer` with its per-worker events, status.json, phase, system metrics
  (a psutil sample every 5 s in a background thread), TensorBoard logs and the chief's
  mistakes pictures.
- bare loop: the trainer's own `model.fit` set-up with no callbacks; the difference to the
  trainer is what the instrumentation costs (goal: under 5%).
- tutorial loop: "Multi-worker training with Keras" as written (its input pipeline and
  tf-keras' default metric reduction, which adds an all-reduce to every step).

    python -m benchmarks.bench_trainer [--epochs 10] [--rounds 5]   # from the project folder

`--mistakes` measures instead what the chief's mistakes pictures cost (trainer/mistakes.py:
misclassified digits and a confusion matrix after every epoch): the trainer against the same
trainer with `--no-mistakes`, alternating (goal: under 2%), and the callback's own CPU at
every epoch's end, timed inside the same runs.

`--wrapper` measures instead what the wrapper of a user's program (`python -m trainer.wrap`)
costs: how much later the program's first line runs than under plain `python SCRIPT`, and
the CPU the wrapper spends watching (a system sample every second, status.json, events)
against the same program run bare, side by side and alternating.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from tests.trainer.workers import Finished

REPO = Path(__file__).resolve().parents[1]
GOAL = 0.05
MISTAKES_GOAL = 0.02
DIGITS_STEPS_PER_EPOCH = 21  # 1,347 training digits in global batches of 64
LABELS = {
    "trainer": "trainer (events, system, status, TensorBoard, mistakes)",
    "bare": "bare loop (the trainer's model.fit, no callbacks)",
    "tutorial": "tutorial loop (as written, tf-keras defaults)",
}


@dataclass(frozen=True)
class Figure:
    """One run of one loop, as the chief measured it (and its mistakes callback, if timed)."""

    steps_per_sec: float
    cpu_ms_per_step: float
    callback_ms: tuple[float, ...] = ()
    forward_ms: tuple[float, ...] = ()


def parse_args(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--epochs", type=int, default=10, help="epochs of the digits (21 steps each)")
    p.add_argument("--rounds", type=int, default=5, help="runs of each, alternating")
    p.add_argument("--workers", type=int, default=2, help="local worker processes")
    p.add_argument("--loop-worker", choices=["bare", "tutorial"], help=argparse.SUPPRESS)
    p.add_argument(
        "--mistakes", action="store_true", help="measure the mistakes pictures' cost instead"
    )
    p.add_argument("--wrapper", action="store_true", help="measure the wrapper's costs instead")
    return p.parse_args(argv)


def loop_worker(kind: str, epochs: int) -> None:
    """One worker of a reference loop (TF_CONFIG set by the caller); prints steps and time."""
    import tensorflow as tf

    from trainer.data import load_digits
    from trainer.model import build_model
    from trainer.pipeline import train_dataset
    from trainer.plan import plan_batches
    from trainer.train import build_strategy, configure_devices

    configure_devices(threads=1)
    strategy = build_strategy()
    digits = load_digits()
    plan = plan_batches(len(digits.x_train), 32, strategy.num_replicas_in_sync, None)
    with strategy.scope():
        model = build_model(0.001)
    dataset: Any
    if kind == "bare":
        model.distribute_reduction_method = "first"
        dataset = train_dataset(strategy, digits.x_train, digits.y_train, plan, 42, "data")
    else:
        options = tf.data.Options()
        options.experimental_distribute.auto_shard_policy = (
            tf.data.experimental.AutoShardPolicy.DATA
        )
        dataset = (
            tf.data.Dataset.from_tensor_slices((digits.x_train, digits.y_train))
            .shuffle(len(digits.x_train))
            .repeat()
            .batch(plan.global_batch)
            .with_options(options)
        )
    started, cpu_started = time.perf_counter(), time.process_time()
    model.fit(dataset, epochs=epochs, steps_per_epoch=plan.steps_per_epoch, verbose=0)
    seconds, cpu = time.perf_counter() - started, time.process_time() - cpu_started
    print(json.dumps({"steps": plan.steps_per_epoch * epochs, "seconds": seconds, "cpu": cpu}))


def run_loop(kind: str, args: argparse.Namespace) -> Figure:
    from tests.trainer.workers import run_cluster

    argv = [__file__, "--loop-worker", kind, "--epochs", str(args.epochs)]
    results = run_cluster(args.workers, argv)
    check(results, f"{kind} loop")
    chief = json.loads(results[0].stdout.strip().splitlines()[-1])
    return Figure(chief["steps"] / chief["seconds"], 1000 * chief["cpu"] / chief["steps"])


def run_trainer(args: argparse.Namespace) -> Figure:
    from tests.trainer.workers import run_trainers

    with tempfile.TemporaryDirectory(prefix="bench-trainer-") as scratch:
        run_dir = Path(scratch) / "run"
        options = ["--dataset", "digits", "--epochs", str(args.epochs), "--no-validation"]
        check(run_trainers(args.workers, run_dir, *options), "trainer")
        metrics = json.loads((run_dir / "metrics.json").read_text())
    steps = args.epochs * DIGITS_STEPS_PER_EPOCH
    return Figure(metrics["steps_per_sec"], 1000 * metrics["train_cpu_sec"] / steps)


def check(results: Sequence[Finished], name: str) -> None:
    for worker in results:
        if worker.returncode != 0:
            tail = worker.stderr.strip().splitlines()[-1:]
            sys.exit(
                f"bench_trainer: {name}, worker {worker.index}: exit {worker.returncode} {tail}"
            )


def summarize(
    figures: dict[str, list[Figure]],
) -> tuple[dict[str, float], dict[str, float], dict[str, float]]:
    """Per loop: the best steps/s, the median steps/s and the median CPU ms per step."""
    best = {name: max(f.steps_per_sec for f in runs) for name, runs in figures.items()}
    median = {
        name: statistics.median(f.steps_per_sec for f in runs) for name, runs in figures.items()
    }
    cpu = {
        name: statistics.median(f.cpu_ms_per_step for f in runs) for name, runs in figures.items()
    }
    return best, median, cpu


def report(args: argparse.Namespace, figures: dict[str, list[Figure]]) -> list[str]:
    """Best and median steps/s, median CPU ms per step, and the trainer's ratios, as printed."""
    best, median, cpu = summarize(figures)
    return [
        f"{args.workers} local workers, digits, global batch {32 * args.workers}, "
        f"{args.epochs * DIGITS_STEPS_PER_EPOCH} steps, {args.rounds} rounds:",
        f"  {'':<58} steps/s best  median  CPU ms/step",
        *(
            f"  {LABELS[name]:<58} {best[name]:12.1f} {median[name]:7.1f} {cpu[name]:12.1f}"
            for name in figures
        ),
        f"  trainer / bare loop:     steps/s {best['trainer'] / best['bare']:.3f} (best), "
        f"CPU per step {cpu['trainer'] / cpu['bare']:.3f} (goal: cost under {GOAL * 100:.0f}%)",
        f"  trainer / tutorial loop: steps/s {best['trainer'] / best['tutorial']:.3f} (best), "
        f"CPU per step {cpu['trainer'] / cpu['tutorial']:.3f}",
    ]


def timed_trainer(argv: list[str]) -> int:
    """`python -m trainer ARGV`, with the mistakes callback timed in place (process CPU, like
    the run's train_cpu_sec): the chief prints each epoch end's milliseconds and its forward
    pass's as its last line."""
    import os

    from trainer import cli, mistakes

    for name, value in cli._TENSORFLOW_ENV.items():  # before TensorFlow loads, as cli does
        os.environ.setdefault(name, value)
    epoch_ms: list[float] = []
    forward_ms: list[float] = []
    traced = mistakes.traced_predictions
    epoch_end = mistakes.MistakesLogger.on_epoch_end

    def timed_predictions(model: Any, images: Any) -> Any:
        predict = traced(model, images)

        def timed() -> Any:
            started = time.process_time()
            predicted = predict()
            forward_ms.append(1000 * (time.process_time() - started))
            return predicted

        return timed

    def timed_epoch_end(self: Any, epoch: int, logs: Any = None) -> None:
        started = time.process_time()
        epoch_end(self, epoch, logs)
        epoch_ms.append(1000 * (time.process_time() - started))

    mistakes.traced_predictions = timed_predictions
    mistakes.MistakesLogger.on_epoch_end = timed_epoch_end  # type: ignore[method-assign]
    code = cli.main(argv)
    if epoch_ms:
        print(json.dumps({"epoch_ms": epoch_ms, "forward_ms": forward_ms}), flush=True)
    return code


def run_timed_trainer(args: argparse.Namespace, *more: str) -> Figure:
    """The trainer on the digits through timed_trainer: its figures and its callback's."""
    from tests.trainer.workers import run_cluster

    with tempfile.TemporaryDirectory(prefix="bench-mistakes-") as scratch:
        run_dir = Path(scratch) / "run"
        options = ["--dataset", "digits", "--epochs", str(args.epochs), "--no-validation", *more]
        argv = [__file__, "--timed-trainer", "--run-dir", str(run_dir), "--threads", "1"]
        results = run_cluster(args.workers, [*argv, *options])
        check(results, "trainer")
        metrics = json.loads((run_dir / "metrics.json").read_text())
    last = results[0].stdout.strip().splitlines()[-1]
    timed = json.loads(last) if last.startswith("{") else {}  # the chief's callback, if any
    steps = args.epochs * DIGITS_STEPS_PER_EPOCH
    return Figure(
        metrics["steps_per_sec"],
        1000 * metrics["train_cpu_sec"] / steps,
        tuple(timed.get("epoch_ms", ())),
        tuple(timed.get("forward_ms", ())),
    )


def bench_mistakes(args: argparse.Namespace) -> list[str]:
    """The trainer with and without its mistakes pictures, alternating; returns the report."""
    figures: dict[str, list[Figure]] = {"with": [], "without": []}
    for round_number in range(1, args.rounds + 1):
        figures["with"].append(run_timed_trainer(args))
        figures["without"].append(run_timed_trainer(args, "--no-mistakes"))
        latest = ", ".join(f"{name} {runs[-1].steps_per_sec:.1f}" for name, runs in figures.items())
        print(f"round {round_number} (steps/s): {latest}", flush=True)
    return ["", *mistakes_report(args, figures)]


def callback_share(run: Figure, steps: int) -> float:
    """The callback's CPU over the run's training CPU without it."""
    spent = sum(run.callback_ms)
    return spent / (run.cpu_ms_per_step * steps - spent)


def mistakes_report(args: argparse.Namespace, figures: dict[str, list[Figure]]) -> list[str]:
    """Best and median steps/s, median CPU ms per step and the ratios; then the callback as
    timed in the runs, whose share is the steadier figure (on a shared machine the
    end-to-end ratio swings by more than the 2% it is judged against)."""
    best, median, cpu = summarize(figures)
    steps = args.epochs * DIGITS_STEPS_PER_EPOCH
    runs = figures["with"]
    first = statistics.median(run.callback_ms[0] for run in runs)
    later = statistics.median(
        statistics.mean(run.callback_ms[1:] or run.callback_ms) for run in runs
    )
    forward = statistics.median(
        statistics.mean(run.forward_ms[1:] or run.forward_ms) for run in runs
    )
    share = statistics.median(callback_share(run, steps) for run in runs)
    labels = {"with": "trainer", "without": "trainer --no-mistakes"}
    goal = f"goal: under {MISTAKES_GOAL * 100:.0f}%"
    return [
        f"{args.workers} local workers, digits, global batch {32 * args.workers}, "
        f"{steps} steps, {args.rounds} rounds:",
        f"  {'':<24} steps/s best  median  CPU ms/step",
        *(
            f"  {labels[name]:<24} {best[name]:12.1f} {median[name]:7.1f} {cpu[name]:12.2f}"
            for name in figures
        ),
        f"  with / without: steps/s {best['with'] / best['without']:.3f} (best), "
        f"{median['with'] / median['without']:.3f} (median); CPU per step "
        f"{cpu['with'] / cpu['without']:.3f} ({goal})",
        f"  the callback, timed in the runs (median): {first:.1f} ms at the first epoch's end "
        f"(tracing the forward pass), then {later:.2f} ms per epoch ({forward:.2f} ms forward "
        f"pass, {later - forward:.2f} ms pictures and writing); over {args.epochs} epochs "
        f"{100 * share:.2f}% of the chief's training CPU without it ({goal})",
    ]


PROGRAM = "import sys, time\nprint(time.time(), flush=True)\ntime.sleep(float(sys.argv[1]))\n"
WATCH_SECONDS = 5.0


def run_program(folder: Path, wrapped: bool, seconds: float) -> tuple[float, float]:
    """(seconds until the program's first line ran, CPU seconds of everything started)."""
    import os
    import resource
    import subprocess

    argv = [sys.executable, "program.py", str(seconds)]
    if wrapped:
        run_dir = tempfile.mkdtemp(prefix="bench-wrap-")
        argv[1:1] = ["-m", "trainer.wrap", "--run-dir", run_dir, "--system-every", "1"]
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    env.pop("TF_CONFIG", None)
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.time()
    out = subprocess.run(argv, cwd=folder, env=env, capture_output=True, text=True, check=True)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return float(out.stdout.split()[0]) - started, cpu


def bench_wrapper(rounds: int) -> list[str]:
    """The wrapper's start delay and watching CPU against the bare program, alternating."""
    with tempfile.TemporaryDirectory() as folder:
        (Path(folder) / "program.py").write_text(PROGRAM)
        starts: dict[bool, list[float]] = {False: [], True: []}
        cpus: dict[bool, list[float]] = {False: [], True: []}
        for _ in range(rounds):
            for wrapped in (False, True):
                start, _ = run_program(Path(folder), wrapped, 0.0)
                starts[wrapped].append(start)
                _, cpu = run_program(Path(folder), wrapped, WATCH_SECONDS)
                cpus[wrapped].append(cpu)
    bare, wrapped = (statistics.median(starts[w]) * 1000 for w in (False, True))
    watch = (statistics.median(cpus[True]) - statistics.median(cpus[False])) / WATCH_SECONDS
    return [
        f"wrapper of a user's program, {rounds} rounds (median):",
        f"  program's first line after launch: bare {bare:.0f} ms, wrapped {wrapped:.0f} ms "
        f"(+{wrapped - bare:.0f} ms, {wrapped / bare:.2f}x)",
        f"  CPU while watching {WATCH_SECONDS:g} s (1 sample/s): "
        f"{100 * watch:.2f}% of one core over the bare program",
    ]


def main(argv: list[str]) -> None:
    if argv[:1] == ["--timed-trainer"]:
        sys.exit(timed_trainer(argv[1:]))
    args = parse_args(argv)
    if args.loop_worker:
        loop_worker(args.loop_worker, args.epochs)
        return
    if args.wrapper:
        print("\n".join(bench_wrapper(args.rounds)))
        return
    if args.mistakes:
        print("\n".join(bench_mistakes(args)))
        return
    figures: dict[str, list[Figure]] = {"trainer": [], "bare": [], "tutorial": []}
    for round_number in range(1, args.rounds + 1):
        figures["trainer"].append(run_trainer(args))
        figures["bare"].append(run_loop("bare", args))
        figures["tutorial"].append(run_loop("tutorial", args))
        latest = ", ".join(f"{name} {runs[-1].steps_per_sec:.1f}" for name, runs in figures.items())
        print(f"round {round_number} (steps/s): {latest}", flush=True)
    print("\n".join(["", *report(args, figures)]))


if __name__ == "__main__":
    main(sys.argv[1:])
