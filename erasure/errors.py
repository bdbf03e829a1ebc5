"""The one exception type for user mistakes: its message is one line that says what to do.

The CLI prints it as ``error: <message>`` and exits with code 2, without a traceback.
"""


class ErasureError(Exception):
    """A user-facing error (bad input, missing file, offline model...). One line, actionable."""
