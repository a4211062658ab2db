"""The error type for bad user input: the CLI prints its message as one line and exits with code 2."""


class ReconError(Exception):
    """Bad input or an impossible request; the message names the file and the problem."""


class NotBuiltError(ReconError):
    """A part of the engine that this release does not have yet."""
