"""The Typer app, shared option types and the error boundary (one line, documented exit codes)."""
from __future__ import annotations

import logging
import os
import sys
from typing import Optional, Tuple

import typer

from ..errors import EXIT_BAD_INPUT, EXIT_FAILURE, SoloDeployError

app = typer.Typer(
    name="solo-deploy",
    help="SOLO / SOLOv2 instance segmentation: train, export, calibrate, run, bench.\n\n"
    "Exit codes: 0 ok, 1 failure, 2 bad input.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)

# Shared options: every command spells these the same way (README, "CLI conventions").
ImgszOpt = typer.Option(None, "--imgsz", help="Network input size as H W (multiples of 32).", show_default=False)
ConfOpt = typer.Option(None, "--conf", help="Keep final instances with score >= CONF (distinct from the internal "
                       "candidate threshold).", show_default=False)
LogLevelOpt = typer.Option("warning", "--log-level", help="debug, info, warning or error.")


def setup_logging(level: str) -> None:
    lvl = getattr(logging, level.upper(), None)
    if not isinstance(lvl, int):
        raise SoloDeployError(f"unknown log level {level!r}: use debug, info, warning or error")
    logging.basicConfig(level=lvl, format="%(levelname)s %(name)s: %(message)s", force=True)
    os.environ["SOLO_DEPLOY_LOG_LEVEL"] = level.lower()
    if lvl > logging.DEBUG:
        # Lightning and friends talk a lot at INFO; keep our own messages.
        for name in ("pytorch_lightning", "lightning", "lightning.pytorch", "lightning_fabric"):
            logging.getLogger(name).setLevel(max(lvl, logging.WARNING))


def imgsz_tuple(value: Optional[Tuple[int, int]]) -> Optional[tuple[int, int]]:
    if value is None or value == (None, None):
        return None
    h, w = int(value[0]), int(value[1])
    if h <= 0 or w <= 0 or h % 32 or w % 32:
        raise SoloDeployError(f"--imgsz {h} {w} is invalid: both sides must be positive multiples of 32")
    return h, w


def main() -> None:
    """Console-script entry: run the app, turning our errors into one line and an exit code."""
    from . import commands  # noqa: F401 - registers the commands

    debug = os.environ.get("SOLO_DEPLOY_DEBUG") == "1" or "--log-level=debug" in sys.argv or (
        "--log-level" in sys.argv and sys.argv[sys.argv.index("--log-level") + 1:][:1] == ["debug"])
    try:
        app(standalone_mode=False)
    except SoloDeployError as exc:
        typer.echo(f"error: {exc}", err=True)
        sys.exit(exc.exit_code)
    except KeyboardInterrupt:
        typer.echo("interrupted", err=True)
        sys.exit(130)
    except SystemExit:
        raise
    except Exception as exc:  # noqa: BLE001 - the last boundary: never a traceback for users
        import click

        if isinstance(exc, click.exceptions.Abort):
            typer.echo("aborted", err=True)
            sys.exit(EXIT_FAILURE)
        if isinstance(exc, click.ClickException):
            exc.show()
            sys.exit(EXIT_BAD_INPUT if isinstance(exc, click.UsageError) else exc.exit_code)
        if debug:
            raise
        first = str(exc).splitlines()[0] if str(exc) else ""
        typer.echo(f"error: {type(exc).__name__}: {first} (run with --log-level debug for details)", err=True)
        sys.exit(EXIT_FAILURE)
    else:
        sys.exit(0)
