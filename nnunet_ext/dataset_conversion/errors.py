"""Errors raised by the dataset converters.

Every problem with the raw input is reported as a :class:`ConversionError` whose message names the
offending file (or folder) and says what is wrong with it, so a user can fix the raw data without
reading a traceback.
"""
from __future__ import annotations

import os


class ConversionError(RuntimeError):
    """A raw dataset cannot be converted.

    Parameters
    ----------
    path : str or os.PathLike or None
        The file or folder the problem was found in (``None`` for problems without one).
    problem : str
        What is wrong, in words.
    """

    def __init__(self, path: str | os.PathLike | None, problem: str):
        self.path = None if path is None else os.fspath(path)
        self.problem = problem
        super().__init__(problem if self.path is None else f"{self.path}: {problem}")

    def __reduce__(self):
        # keeps the exception picklable across worker processes
        return (type(self), (self.path, self.problem))
