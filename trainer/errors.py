"""The worker's own errors: a user's mistake (exit code 2) and a failed piece of work."""


class InputError(Exception):
    """A bad option, TF_CONFIG or data file: the message names the culprit and what was expected."""


class WorkError(Exception):
    """The worker's own work (the model, metrics.json) failed; the message is the one line
    that says why, cause first (`no space left on device writing /run/model.h5`)."""
