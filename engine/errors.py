"""The engine's user-facing errors: one line for the user, and the exit code of ``python -m engine.render``."""
from __future__ import annotations

from common.errors import EXIT_BAD_INPUT, EXIT_FAILED, SynthfaceError


class RenderError(SynthfaceError):
    """A user-facing error (bad arguments/config, refused output dir, ...): one-line message."""

    exit_code = EXIT_BAD_INPUT


class DiskFullError(RenderError):
    """No space left on device; the journal is consistent and a rerun resumes."""

    exit_code = EXIT_FAILED


class WorkerError(RenderError):
    """A worker process died or could not set up its source; the journal is consistent."""

    exit_code = EXIT_FAILED
