"""Output paths checked before any work: a command that cannot write its result says so in one
line up front, instead of failing with a traceback after minutes of work (or leaving a folder)."""

from __future__ import annotations

import os
from pathlib import Path

from nassearch.errors import NasSearchError


def _nearest_existing(path: Path) -> Path:
    path = path.absolute()
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


def _check_creatable(path: Path, flag: str) -> None:
    """Every missing folder on the way to `path` can be made, and the last existing one written."""
    base = _nearest_existing(path)
    if not base.is_dir():
        raise NasSearchError(f"{flag} {path}: cannot be created, {base} is a file")
    if not os.access(base, os.W_OK | os.X_OK):
        raise NasSearchError(f"{flag} {path}: cannot be created, {base} is not writable")


def check_output_folder(path: str | os.PathLike, flag: str = "--out") -> Path:
    """A folder the command will create or write into."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise NasSearchError(f"{flag} {path}: exists and is not a folder")
    _check_creatable(path, flag)
    return path


def check_output_file(path: str | os.PathLike, flag: str = "--out") -> Path:
    """A file the command will write (its folder is created when missing)."""
    path = Path(path)
    if path.is_dir():
        raise NasSearchError(f"{flag} {path}: is a folder; give a file name")
    if path.exists() and not os.access(path, os.W_OK):
        raise NasSearchError(f"{flag} {path}: exists and is not writable")
    _check_creatable(path.parent if not path.exists() else path, flag)
    return path
