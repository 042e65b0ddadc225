"""The one base error class of synthface and the exit-code convention of its command lines.

Every error meant for a user (a bad config value, a refused output directory, an unusable input)
derives from :class:`SynthfaceError` and carries ``exit_code``. A command line catches
:class:`SynthfaceError` around its work and calls :func:`report`: one line on stderr, no
traceback, and the exit code it returns:

* ``EXIT_OK`` (0): done;
* ``EXIT_FAILED`` (1): the work failed for a reason outside the input (disk full, I/O error);
  rerunning after fixing it resumes where that applies;
* ``EXIT_BAD_INPUT`` (2): bad input (arguments, config, paths): fix the command;
* ``EXIT_INTERRUPTED`` (130): interrupted (Ctrl-C).
"""
from __future__ import annotations

import sys

__all__ = ["EXIT_OK", "EXIT_FAILED", "EXIT_BAD_INPUT", "EXIT_INTERRUPTED", "SynthfaceError", "ConfigError",
           "EvaluateError", "report"]

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_BAD_INPUT = 2
EXIT_INTERRUPTED = 130


class SynthfaceError(Exception):
    """A user-facing synthface error: its message is one line that says what to fix."""

    exit_code = EXIT_BAD_INPUT


class ConfigError(SynthfaceError, ValueError):
    """An invalid configuration; the message starts with the dotted path of the bad key."""


class EvaluateError(SynthfaceError, ValueError):
    """Inputs an evaluation cannot use (metrics, ``python -m learned.evaluate``)."""


def report(error: BaseException, prefix: str = "error", file=None) -> int:
    """Print ``error`` as one line ``<prefix>: <message>`` on stderr; return its exit code
    (``error.exit_code``, else :data:`EXIT_BAD_INPUT`)."""
    print(f"{prefix}: {error}", file=file or sys.stderr)
    return int(getattr(error, "exit_code", EXIT_BAD_INPUT))
