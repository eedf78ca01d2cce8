"""The program every worker runs: `python -m trainer --run-dir DIR [options]`.

Trains the MNIST CNN under MultiWorkerMirroredStrategy (tf-keras), writes this worker's
progress, status and, on the chief, the model and test metrics into the run directory.
"""
