"""The one project exception: a mistake the user can fix. Library code raises it (or a standard exception);
only the CLI turns it into one line on stderr and exit status 2, no traceback."""


class MatrixSSLError(ValueError):
    """A problem the user can fix (bad path, bad value, missing data); the message says what to do.

    It is a ValueError, so code that catches bad values from the losses and models catches it too."""
