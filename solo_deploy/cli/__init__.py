"""The `solo-deploy` command line (Typer). Command modules import heavy libraries inside the
command functions only, so `solo-deploy --help` answers fast."""
from __future__ import annotations

import signal
import sys
from typing import Any

from .._lazy import lazy_exports
from ..errors import SoloDeployError
from ..limits import check_environment

__all__ = ["app", "main"]


def _terminate(signum: int, _frame: Any) -> None:
    raise SystemExit(128 + signum)


def main() -> None:
    """Console-script entry. A Ctrl-C or SIGTERM that arrives while the CLI is still importing
    its libraries ends it with one line and exit code 130 / 143 (nothing is written that early);
    later ones are handled by the command (the pipeline finalises its outputs)."""
    signal.signal(signal.SIGTERM, _terminate)  # until a command installs its own handler
    try:
        from . import commands  # noqa: F401 - registers the commands
        from .app import main as app_main
    except KeyboardInterrupt:
        sys.stderr.write("interrupted while starting; nothing was written\n")
        raise SystemExit(130) from None
    try:
        check_environment()
    except SoloDeployError as exc:
        sys.stderr.write(f"error: {exc}\n")
        raise SystemExit(exc.exit_code) from None
    app_main()


# `from solo_deploy.cli import app` works without importing Typer with the package.
__getattr__ = lazy_exports(__name__, {"app": ".app"})
