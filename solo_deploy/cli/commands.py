"""Registers every command module on the app (each keeps its heavy imports inside functions)."""
from . import (  # noqa: F401 - one module per command, in the order `--help` lists them
    cmd_bench,
    cmd_calibrate,
    cmd_data,
    cmd_eval,
    cmd_export,
    cmd_import,
    cmd_info,
    cmd_predict,
    cmd_run,
    cmd_track,
    cmd_train,
)
