"""The one error type for mistakes a user can fix: printed as one line, exit code 2."""


class InputError(Exception):
    """A bad option, TF_CONFIG or data file: the message names the culprit and what was expected."""
