"""The `solo-deploy` command line (Typer). Command modules import heavy libraries inside the
command functions only, so `solo-deploy --help` answers fast."""
from .app import app, main

__all__ = ["app", "main"]
