"""The one exception type for user mistakes: the CLI prints its message and exits non-zero, no traceback."""


class MatrixSSLError(Exception):
    """A problem the user can fix (bad path, bad value, missing data); the message says what to do."""
