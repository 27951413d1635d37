"""The Typer app, shared option types and the error boundary (one line, documented exit codes)."""
from __future__ import annotations

import logging
import os
import sys
from typing import Optional, Tuple

import typer

from ..errors import EXIT_BAD_INPUT, EXIT_FAILURE, SoloDeployError, one_line, single_line

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
# 0.25 as Ultralytics' predict: the outputs a person looks at. `eval` and the demo's AP score every
# instance (COCO scoring needs the low-score tail), whatever --conf says.
CONF_DEFAULT = 0.25
ConfOpt = typer.Option(CONF_DEFAULT, "--conf", help="Keep final instances with score >= CONF in the outputs (0 keeps "
                       "all; distinct from the internal candidate threshold).")
ClassesOpt = typer.Option(None, "--classes", help="Keep only these classes: names or category ids (as in the JSON "
                          "outputs), comma-separated or repeated.", show_default=False)
LogLevelOpt = typer.Option("warning", "--log-level", help="debug, info, warning or error.")
BackendOpt = typer.Option("auto", "--backend", help="auto, torch, onnxruntime, tensorrt or triton.")
TritonUrlOpt = typer.Option("localhost:8001", "--triton-url", help="Triton address (--backend triton; MODEL is then "
                            "the model's name): host:port or grpc:// for gRPC, http:// for HTTP; https://, grpcs:// "
                            "over TLS.")


def _as_usage_error(fn):
    """Option callback from a validator that raises our errors: a usage error names the option."""

    def callback(value):
        if value is None:
            return value
        try:
            return fn(value)
        except SoloDeployError as exc:
            raise typer.BadParameter(str(exc)) from None

    return callback


def _device(value: str) -> str:
    from ..runtime.devices import parse_device

    return parse_device(value)


def positive_finite(value: float) -> float:
    """--fps and friends: a finite number above zero (NaN and inf pass a plain `min=`)."""
    import math

    if not (math.isfinite(value) and value > 0):
        raise SoloDeployError(f"{value} is not a positive number")
    return value


DeviceOpt = typer.Option("cpu", "--device", help="cpu, cuda, cuda:N or N (the GPU index, as in PyTorch).",
                         callback=_as_usage_error(_device))
PositiveFinite = _as_usage_error(positive_finite)


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
    from ..preprocess import check_input_size  # numpy: not at --help's start-up

    return check_input_size(value)


def _is_cli_exception(exc: BaseException) -> bool:
    """Click's exceptions, whichever click it is: typer >= 0.20 vendors its own copy (`click` may
    not be installed at all), older typer releases use the `click` package. Both carry an integer
    ``exit_code`` and ``format_message()``."""
    return isinstance(getattr(exc, "exit_code", None), int) and callable(getattr(exc, "format_message", None))


def _command_names(ctx) -> list[str]:
    """Sub-command names of the group that ``ctx`` belongs to (for "did you mean")."""
    cmd = getattr(ctx, "command", None)
    names = getattr(cmd, "commands", None)
    return sorted(names) if isinstance(names, dict) else []


def usage_error_line(exc: BaseException) -> str:
    """One line for a usage mistake: the command, what was wrong, a suggestion when a command is
    misspelled, and where to read more."""
    import difflib
    import re

    ctx = getattr(exc, "ctx", None)
    path = getattr(ctx, "command_path", None) or "solo-deploy"
    msg = " ".join(str(exc.format_message()).split())  # click may wrap long messages
    unknown = re.match(r"No such command '(.+?)'\.?$", msg)
    if unknown:
        close = difflib.get_close_matches(unknown.group(1), _command_names(ctx), n=1)
        if close:
            msg = f"{msg.rstrip('.')}; did you mean '{close[0]}'?"
    return f"error: {path}: {msg} (see '{path} --help')"


def opencv_log_env(verbose: bool = False) -> dict[str, str]:
    """OpenCV's and FFmpeg's log levels as environment variables (read once, when cv2 loads):
    silent, or INFO / AV_LOG_INFO at --log-level debug."""
    return ({"OPENCV_LOG_LEVEL": "INFO", "OPENCV_FFMPEG_LOGLEVEL": "24"} if verbose
            else {"OPENCV_LOG_LEVEL": "OFF", "OPENCV_FFMPEG_LOGLEVEL": "-8"})  # -8: AV_LOG_QUIET


def main() -> None:
    """Console-script entry: run the app, turning our errors into one line and an exit code."""
    from . import commands  # noqa: F401 - registers the commands

    debug = os.environ.get("SOLO_DEPLOY_DEBUG") == "1" or "--log-level=debug" in sys.argv or (
        "--log-level" in sys.argv and sys.argv[sys.argv.index("--log-level") + 1:][:1] == ["debug"])
    # The console owns the process: native libraries' own log lines (OpenCV, FFmpeg) stay out of
    # the user's terminal unless asked for. Read once, when cv2 loads: set before any import.
    for key, value in opencv_log_env(debug).items():
        os.environ.setdefault(key, value)
    try:
        code = app(standalone_mode=False)
    except SoloDeployError as exc:
        typer.echo(f"error: {single_line(str(exc))}", err=True)
        sys.exit(exc.exit_code)
    except KeyboardInterrupt:
        typer.echo("interrupted", err=True)
        # Outputs are finalised by now. Pipeline stages may still be inside native code (a
        # second Ctrl-C does not wait for them): leave without the interpreter's teardown, which
        # would destroy native thread pools under them and abort the process.
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(130)
    except SystemExit:
        raise
    except Exception as exc:
        name = type(exc).__name__
        if name == "NoArgsIsHelpError":  # `solo-deploy` or `solo-deploy data` alone: the help was shown
            sys.exit(0)
        if name == "Abort":
            typer.echo("aborted", err=True)
            sys.exit(EXIT_FAILURE)
        if _is_cli_exception(exc):
            if hasattr(exc, "ctx") or exc.exit_code == EXIT_BAD_INPUT:
                typer.echo(usage_error_line(exc), err=True)
                sys.exit(EXIT_BAD_INPUT)
            typer.echo(f"error: {single_line(str(exc.format_message()))}", err=True)
            sys.exit(exc.exit_code or EXIT_FAILURE)
        if debug:
            raise
        typer.echo(f"error: {name}: {one_line(exc)} (run with --log-level debug for details)", err=True)
        sys.exit(EXIT_FAILURE)
    sys.exit(code if isinstance(code, int) else 0)
