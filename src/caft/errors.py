"""One exception type for every user-facing failure, so stages can print exactly one line and exit non-zero."""


class CaftError(Exception):
    """A problem with the user's input or configuration (not a bug): reported as one line, exit code 2."""
