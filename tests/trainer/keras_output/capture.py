"""Capture what Keras prints on stdout when that stdout is a pipe (as under `trainer.wrap`), for
tests/trainer/test_kerasprogress.py: `python tests/trainer/keras_output/capture.py` rewrites the
`*.out` files beside it from the installed tf-keras and Keras 3, and `expected.json` with what
the program itself knows of each run (History's last values, rounded as Keras prints them), so
the tests compare the reader with Keras, not with itself.

Each case runs in a fresh interpreter whose stdout is a pipe; a short sleep after each step
makes the bar redraw between steps as it does in a real run.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent

CASES: dict[str, dict[str, object]] = {
    # tf-keras (what the workers use: TF_USE_LEGACY_KERAS=1)
    "tfkeras_v1_val_acc": {"verbose": 1, "epochs": 3, "steps": 6, "val": True, "acc": True},
    "tfkeras_v1_plain": {"verbose": 1, "epochs": 2, "steps": 5, "val": False, "acc": False},
    "tfkeras_v1_unknown_steps": {"verbose": 1, "epochs": 3, "steps": None, "acc": True},
    "tfkeras_v2_val_acc": {"verbose": 2, "epochs": 3, "steps": 6, "val": True, "acc": True},
    "tfkeras_v2_plain": {"verbose": 2, "epochs": 2, "steps": 5, "val": False, "acc": False},
    "tfkeras_v1_one_epoch_then_evaluate": {
        "verbose": 1, "epochs": 1, "steps": 4, "acc": True, "evaluate": True,
    },
    "tfkeras_v1_evaluate_after_fit": {
        "verbose": 1, "epochs": 2, "steps": 4, "acc": True, "evaluate": True,
    },
    # Keras 3 (a one-worker program that imports keras itself)
    "keras3_v1_val_acc": {"keras3": True, "verbose": 1, "epochs": 3, "steps": 6, "val": True,
                          "acc": True},
    "keras3_v2_val_acc": {"keras3": True, "verbose": 2, "epochs": 2, "steps": 6, "val": True,
                          "acc": True},
}  # fmt: skip


def run_case(case: dict[str, object]) -> dict[str, object]:
    """Fit a tiny model as `case` says, print Keras' output, return History's last values."""
    import time

    import numpy as np

    if case.get("keras3"):
        import keras
    else:
        import tf_keras as keras
    import tensorflow as tf

    keras.utils.set_random_seed(0)
    rng = np.random.default_rng(0)
    x = rng.normal(size=(96, 4)).astype("float32")
    y = (x.sum(axis=1) > 0).astype("int32")
    data = tf.data.Dataset.from_tensor_slices((x, y)).batch(16)
    steps = case.get("steps")
    # No steps_per_epoch and a dataset of unknown length: the first epoch's bar says `Unknown`.
    train = data.repeat() if steps else data.filter(lambda *_: True)
    model = keras.Sequential([keras.Input(shape=(4,)), keras.layers.Dense(2)])
    model.compile(
        optimizer=keras.optimizers.SGD(0.1),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"] if case.get("acc") else [],
    )

    class Sleep(keras.callbacks.Callback):
        def on_train_batch_end(self, batch: int, logs: dict | None = None) -> None:
            time.sleep(0.06)  # above Progbar's 0.05 s interval: every step redraws the bar

    history = model.fit(
        train,
        epochs=case["epochs"],
        steps_per_epoch=steps,
        validation_data=data.take(2) if case.get("val") else None,
        callbacks=[Sleep()],
        verbose=case["verbose"],
    )
    if case.get("evaluate"):
        model.evaluate(data, verbose=1)
    return {name: values[-1] for name, values in history.history.items()}


def main() -> None:
    if len(sys.argv) == 3 and sys.argv[1] == "--case":
        last = run_case(CASES[sys.argv[2]])
        # On stderr: stdout is the captured output.
        print("HISTORY " + json.dumps({k: float(v) for k, v in last.items()}), file=sys.stderr)
        return
    expected = {}
    for name, case in CASES.items():
        env = {**os.environ, "CUDA_VISIBLE_DEVICES": "-1", "TF_CPP_MIN_LOG_LEVEL": "3"}
        env["TF_USE_LEGACY_KERAS"] = "0" if case.get("keras3") else "1"
        done = subprocess.run(
            [sys.executable, __file__, "--case", name],
            env=env,
            capture_output=True,
            check=True,
        )
        (HERE / f"{name}.out").write_bytes(done.stdout)
        line = next(ln for ln in done.stderr.decode().splitlines() if ln.startswith("HISTORY "))
        history = json.loads(line.removeprefix("HISTORY "))
        expected[name] = {"case": case, "history": history}
        print(f"{name}: {len(done.stdout)} bytes", flush=True)
    (HERE / "expected.json").write_text(json.dumps(expected, indent=1, sort_keys=True) + "\n")


if __name__ == "__main__":
    main()
