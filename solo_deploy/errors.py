"""User-facing errors and exit codes shared by every command.

Exit codes (fixed for every command): 0 ok, 1 failure, 2 bad input.
"""
from __future__ import annotations

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_BAD_INPUT = 2


class SoloDeployError(Exception):
    """An error the CLI reports as one line, without a traceback.

    ``exit_code`` is 2 (bad input) unless the failure is ours (1).
    """

    exit_code = EXIT_BAD_INPUT

    def __init__(self, message: str, exit_code: int | None = None) -> None:
        super().__init__(message)
        if exit_code is not None:
            self.exit_code = exit_code


class BadInputError(SoloDeployError):
    """The user gave us something we cannot use: a missing file, a corrupt model, an odd image."""

    exit_code = EXIT_BAD_INPUT


class RuntimeFailure(SoloDeployError):
    """Something went wrong on our side or in a backend while the input looked valid."""

    exit_code = EXIT_FAILURE


class ServiceLost(RuntimeFailure):
    """A remote service (a Triton server) went away for longer than the run waits: what was
    processed before is sound, so a run finalises its outputs rather than discarding them."""


def one_line(exc: BaseException | str, limit: int = 300) -> str:
    """The first line of a library's message (or the exception's type name), at most ``limit`` chars."""
    text = str(exc).strip()
    if not text:
        return type(exc).__name__ if isinstance(exc, BaseException) else ""
    return text.splitlines()[0][:limit]


def single_line(text: str) -> str:
    """Our own messages may quote what the user typed (a path with a newline in it): show line
    breaks as ``\\n`` so that the error stays one line and the path stays recognisable."""
    return text.replace("\r", "\\r").replace("\n", "\\n")
