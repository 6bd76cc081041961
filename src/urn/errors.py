"""User-facing errors.

Anything a user can cause (a bad file, a bad config value, a missing checkpoint) is raised as a
:class:`UrnError`. The CLI prints such errors as one line, ``error: <message>``, with no traceback,
and exits with :data:`EXIT_USER_ERROR`. Bugs (any other exception) keep their traceback.
"""

from __future__ import annotations

from pathlib import Path

EXIT_USER_ERROR = 2


class UrnError(Exception):
    """An error caused by the user's input, reported as one line without a traceback."""


class ConfigError(UrnError):
    """A configuration key, value or preset is wrong."""


class DataError(UrnError):
    """A dataset file is missing, unreadable or inconsistent.

    Args:
        path: the offending file (named first in the message).
        problem: what is wrong with it, as a short phrase.
    """

    def __init__(self, path: str | Path, problem: str) -> None:
        self.path = str(path)
        self.problem = problem
        super().__init__(f"{self.path}: {problem}")

    def __reduce__(self) -> tuple[type[DataError], tuple[str, str]]:
        """Pickle with both arguments, so the error crosses process boundaries (worker pools)."""
        return (type(self), (self.path, self.problem))


class TrainingError(UrnError):
    """Training cannot go on (NaN loss, too many bad samples)."""
