"""Domain errors: the CLI prints them as one line and exits with ``exit_code``, never a traceback."""

from __future__ import annotations


class LipcliError(Exception):
    """An error the user can fix; the message is complete on its own."""

    exit_code = 1


class ConfigError(LipcliError):
    """A configuration key or value is wrong; the message names the dotted key (and the file)."""

    exit_code = 2


class UnknownNameError(LipcliError):
    """A component name that no plugin registered; the message suggests the closest names."""

    exit_code = 2


class DuplicateNameError(LipcliError):
    """Two plugins registered the same component name; the message names both."""


class DataError(LipcliError):
    """A data set is missing or malformed; the message says where lipcli looked and how to fix it."""


class CheckpointError(LipcliError):
    """A checkpoint cannot be written or is unsafe or malformed to load."""


class LipcliWarning(UserWarning):
    """Something the user asked for is ignored or looks wrong, but the run can go on (shown as one line)."""
