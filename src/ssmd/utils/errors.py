"""Exceptions for bad user input: every message names the file, the field and the value."""

from __future__ import annotations

from pathlib import Path
from typing import Any

__all__ = ["DataError", "describe"]


def describe(value: Any, limit: int = 80) -> str:
    """A short ``repr`` of ``value`` for error messages."""
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


class DataError(ValueError):
    """Bad input data, with the file, the field and the offending value in the message.

    Args:
        path: the file (or folder) that holds the bad input.
        field: the field, key or part that is wrong (e.g. ``annotations[3].bbox``).
        value: the offending value.
        reason: what is wrong with it.
    """

    def __init__(self, path: str | Path, field: str, value: Any, reason: str) -> None:
        self.path = str(path)
        self.field = field
        self.value = value
        self.reason = reason
        super().__init__(f"{self.path}: field {field!r} = {describe(value)}: {reason}")
