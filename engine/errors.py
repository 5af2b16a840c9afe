"""Errors that end a run, each with the exit code of docs/architecture.md ("Exit codes").

Stages raise these; only the CLI turns them into an ``error`` event, a one-line message on
stderr and the exit code. Anything else that escapes a stage is an internal error (exit 1).
"""
from __future__ import annotations

import errno
from pathlib import Path

EXIT_OK = 0
EXIT_INTERNAL = 1
EXIT_BAD_INPUT = 2
EXIT_MODEL_MISSING = 3
EXIT_DISK_FULL = 4
EXIT_CANCELLED = 130


class Gen3DError(Exception):
    """Base class: ``code`` is the stable machine-readable reason, ``exit_code`` the process exit."""

    exit_code = EXIT_INTERNAL

    def __init__(self, path: str | Path | None, reason: str, code: str = "error"):
        self.path = None if path is None else str(path)
        self.reason = reason
        self.code = code
        super().__init__(self.message)

    @property
    def message(self) -> str:
        """One line: ``<file>: <reason>`` (or just the reason when no file is involved)."""
        text = f"{self.path}: {self.reason}" if self.path else self.reason
        return " ".join(text.split())


class BadInput(Gen3DError):
    """The user's input or usage is wrong: exit 2."""

    exit_code = EXIT_BAD_INPUT

    def __init__(self, path, reason, code="bad_input"):
        super().__init__(path, reason, code)


class ModelMissing(Gen3DError):
    """A required model file is missing or fails verification: exit 3.

    ``reason`` should say where to get the file.
    """

    exit_code = EXIT_MODEL_MISSING

    def __init__(self, path, reason, code="model_missing"):
        super().__init__(path, reason, code)


class Cancelled(Gen3DError):
    """The user cancelled (SIGTERM, SIGINT or a ``cancel`` line): exit 130."""

    exit_code = EXIT_CANCELLED

    def __init__(self, reason="cancelled"):
        super().__init__(None, reason, "cancelled")


class DiskFull(Gen3DError):
    """The output's file system is full or the user's quota is exhausted (ENOSPC, EDQUOT): exit 4.

    Raised by ``rundir`` after it removed the partial run; ``path`` is the run directory
    (or the parent it could not write), ``os_error`` the error behind it.
    """

    exit_code = EXIT_DISK_FULL

    def __init__(self, path, os_error: OSError | None = None):
        what = "quota exceeded" if getattr(os_error, "errno", None) == errno.EDQUOT else "no space left on device"
        super().__init__(path, f"{what} while writing the run; the partial run was removed", "disk_full")
        self.os_error = os_error
