"""A cache of ONNX exports, keyed by the model file's content, for the runtime's ``auto`` backend.

``cached_onnx(model)`` returns ``<cache>/onnx/<sha256(model)[:16]>.onnx``, exporting it first
(float32, static batch 1, the model's own input size, parity-checked; keep-ratio models:
dynamic, as their inputs vary) when it is missing,
unreadable, or was written for another model or solo-deploy version. The cache root is
``$SOLO_DEPLOY_CACHE`` when set, else ``~/.cache/solo-deploy``; exports are written atomically,
so concurrent processes at worst export twice and never read a partial file.

Static batch 1 on purpose: ``OnnxRunner`` runs larger batches image by image on such graphs,
and the CPU provider gains little from batching, while a static graph lets ORT fold every shape.
"""
from __future__ import annotations

import json
import logging
import os
from pathlib import Path

from ..errors import BadInputError

log = logging.getLogger("solo_deploy.export")

__all__ = ["cache_root", "cached_onnx", "onnx_cache_path"]

CACHE_ENV = "SOLO_DEPLOY_CACHE"
KEY_CHARS = 16


def cache_root() -> Path:
    """``$SOLO_DEPLOY_CACHE`` or ``~/.cache/solo-deploy`` (ONNX exports live in ``onnx/`` below it)."""
    env = os.environ.get(CACHE_ENV, "").strip()
    return Path(env).expanduser() if env else Path.home() / ".cache" / "solo-deploy"


def onnx_cache_path(sha256: str) -> Path:
    return cache_root() / "onnx" / f"{sha256[:KEY_CHARS]}.onnx"


def _reusable(path: Path, sha256: str) -> bool:
    """True when ``path`` is a valid export of exactly this model by this solo-deploy version."""
    from .._version import __version__
    from .onnx_checks import load_onnx_checked

    if not path.is_file():
        return False
    try:
        model = load_onnx_checked(path, load_external=False)
        props = {p.key: p.value for p in model.metadata_props}
        info = json.loads(props["solo_deploy"])["export"]
    except (BadInputError, KeyError, ValueError, TypeError) as exc:
        log.info("cached export %s is unusable (%s); exporting again", path, exc)
        return False
    same = (info.get("source_sha256") == sha256 and info.get("precision") == "fp32"
            and info.get("versions", {}).get("solo_deploy") == __version__)
    if not same:
        log.info("cached export %s belongs to another model or solo-deploy version; exporting again", path)
    return same


def cached_onnx(model_path: str | os.PathLike[str]) -> Path:
    """The cached float32 ONNX export of a ``.ckpt``/``.safetensors`` model (exported on first use)."""
    from ..core.meta import file_sha256
    from .onnx_export import export_onnx

    model_path = Path(model_path)
    if not model_path.is_file():
        raise BadInputError(f"model file not found: {model_path}")
    sha = file_sha256(model_path)
    target = onnx_cache_path(sha)
    if _reusable(target, sha):
        log.debug("using cached ONNX export %s", target)
        return target
    log.info("exporting %s to the ONNX cache (%s)", model_path.name, target)
    export_onnx(model_path, target, batch=1, dynamic=False, half=False, check_parity=True)
    return target
