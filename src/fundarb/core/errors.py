"""The root of every error fundarb means for its user.

An error that derives from ``FundarbError`` carries a message written for the
person at the terminal: the CLI prints it as one line, ``error: <message>``,
and exits 2. Anything else that escapes a command is a fault in fundarb and is
reported as an internal error (exit 1). Each subclass keeps its own second
base (``ValueError``, ``RuntimeError``) so callers that catch those still do.

This module imports nothing, so the pure core may derive from it too.
"""


class FundarbError(Exception):
    """An error meant for the user: bad input, a refused output, a failed check."""
