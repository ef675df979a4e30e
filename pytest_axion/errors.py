"""Errors a user can cause. Each message is one line: what was wrong, where, and the fix."""

from __future__ import annotations


class AxionError(Exception):
    """Base of every user-facing error; rendered without a traceback."""


class ModelFileError(AxionError):
    """The model file is missing, unreadable, not GGUF, or truncated."""


class HardwareIdError(AxionError):
    """A hardware id is not filesystem-safe or is unknown."""


class SettingsError(AxionError):
    """An option, ini value or marker argument is invalid."""


class MeasurementError(AxionError):
    """A measurement cannot be taken as asked (for example it does not fit the context)."""


class BaselineError(AxionError):
    """A stored baseline is corrupt, schema-violating, or cannot be written."""


class AxionWarning(UserWarning):
    """A verdict that needs a person's attention but does not fail the run (an inconclusive one)."""
