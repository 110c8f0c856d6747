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


def absent_file_problem(path: str, missing: str) -> str:
    """What is wrong with a path that is not a usable file: ``missing`` (e.g. "missing label file")
    when nothing is there, otherwise what is there instead (a folder, a dangling symbolic link)."""
    if os.path.islink(path) and not os.path.exists(path):
        return f"{missing.removeprefix('missing ')} is a dangling symbolic link (to {os.readlink(path)})"
    if os.path.isdir(path):
        return f"{missing.removeprefix('missing ')} is a folder, not a file"
    if os.path.exists(path) and not os.path.isfile(path):
        return f"{missing.removeprefix('missing ')} is not a regular file"
    return missing


class Problems:
    """Collects the problems of *all* cases so that one error lists every one of them."""

    def __init__(self) -> None:
        self.items: list[tuple[str | None, str]] = []

    def add(self, path: str | os.PathLike | None, problem: str) -> None:
        self.items.append((None if path is None else os.fspath(path), problem))

    def check_file(self, path: str, missing: str) -> bool:
        """Record a problem unless ``path`` is a file; returns whether it is one."""
        if os.path.isfile(path):
            return True
        self.add(path, absent_file_problem(path, missing))
        return False

    def raise_if_any(self, source: str | os.PathLike | None) -> None:
        """One problem: a :class:`ConversionError` naming its file; several: one listing them all."""
        if not self.items:
            return
        if len(self.items) == 1:
            raise ConversionError(*self.items[0])
        lines = [p if path is None else f"{path}: {p}" for path, p in self.items]
        raise ConversionError(source, f"{len(lines)} problems found; nothing was written:\n  " + "\n  ".join(lines))
