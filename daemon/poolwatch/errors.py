"""Exceptions that cross module boundaries and map to poolwatch's exit codes."""


class StartupError(Exception):
    """The daemon cannot start, e.g. its listen address cannot be bound (exit code 4).

    The message is shown to the operator on one line, so it should say what failed and why,
    e.g. "cannot listen on :9479: address already in use".
    """
