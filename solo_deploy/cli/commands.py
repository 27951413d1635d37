"""Registers every command module on the app (each keeps its heavy imports inside functions)."""
from . import cmd_eval, cmd_train  # noqa: F401

try:  # modules of later stages register themselves when present
    from . import cmd_export  # noqa: F401
except ImportError:  # pragma: no cover
    pass
