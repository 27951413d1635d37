"""The shipped default model: what `solo-deploy run` uses when no ``--model`` is given."""
from __future__ import annotations

import os
from pathlib import Path

from ..errors import BadInputError

# Installed as package data (pyproject: solo_deploy = ["assets/*"]).
DEFAULT_MODEL = Path(__file__).resolve().parent.parent / "assets" / "default.safetensors"
# Points the default at another model file (tests, site installs with their own default).
DEFAULT_MODEL_ENV = "SOLO_DEPLOY_DEFAULT_MODEL"


def default_model_path() -> Path:
    """Path of the default inference model file (``$SOLO_DEPLOY_DEFAULT_MODEL`` if set).

    Raises ``BadInputError`` (exit 2) with what to do when the file is missing.
    """
    override = os.environ.get(DEFAULT_MODEL_ENV)
    path = Path(override) if override else DEFAULT_MODEL
    if not path.is_file():
        where = f"${DEFAULT_MODEL_ENV} points at {path}" if override else f"expected at {path}"
        raise BadInputError(f"the default model is not installed ({where}, file missing): pass --model MODEL "
                            f"(.safetensors, .ckpt, .onnx or .engine) or reinstall solo-deploy")
    return path


__all__ = ["DEFAULT_MODEL", "DEFAULT_MODEL_ENV", "default_model_path"]
