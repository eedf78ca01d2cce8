"""What every worker runs, shipped to every host with runformat/ (`fab deploy`).

Entry points (docs/run-format.md):

- `python -m trainer --run-dir DIR [options]`: the built-in trainer, the MNIST CNN under
  MultiWorkerMirroredStrategy (tf-keras); writes this worker's progress and status and, on
  the chief, the model and test metrics into the run directory.
- `python -m trainer.wrap --run-dir DIR [--system-every S] SCRIPT [ARGS...]`: a user's own
  program as one worker (run from inside its folder, this code on PYTHONPATH): its
  environment, status.json, system metrics; no TensorFlow import.
- `python -m trainer.slurm_env [--tf-port P] [--wrap] ARGS`: one Slurm task becomes the
  trainer (or, with --wrap, the wrapper) with a TF_CONFIG built from the step.
- `from trainer.callback import ClusterProgress`: the Keras callback for step-level progress,
  the trainer's and a user's program's.

Monitoring never ends training (trainer.guard): every write that exists only to watch
survives a full disk.
"""
