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
import sys
import time
from pathlib import Path

from .._atomic import write_json
from .._progress import elapsed_bar
from ..core.meta import file_sha256
from ..errors import BadInputError
from ..model.modelfile import read_model

log = logging.getLogger("solo_deploy.export")

__all__ = ["cache_root", "cached_onnx", "onnx_cache_path"]

CACHE_ENV = "SOLO_DEPLOY_CACHE"
KEY_CHARS = 16
# Export + checks + parity of one model, measured on a shared 2-core CPU (float32 ONNX, batch 1):
# solov2-cpu-r18 13.0 M parameters at 256x256 6.6 s, solov2-light-r50 31.3 M at 512x512 7.4 s,
# solov2-r101 65.6 M at 512x512 13.9 s. A line through them; a machine's own builds then scale it.
BASE_S, S_PER_MPARAM = 4.0, 0.15
SPEED_FILE = "onnx-build-speed.json"  # in the cache root: measured / predicted seconds of the last build


def cache_root() -> Path:
    """``$SOLO_DEPLOY_CACHE`` or ``~/.cache/solo-deploy`` (ONNX exports live in ``onnx/`` below it)."""
    env = os.environ.get(CACHE_ENV, "").strip()
    return Path(env).expanduser() if env else Path.home() / ".cache" / "solo-deploy"


def onnx_cache_path(sha256: str, imgsz: tuple[int, int] | None = None) -> Path:
    """The cache file of a model (``sha256``) exported at ``imgsz`` (H, W; None: its own size)."""
    size = f"-{int(imgsz[0])}x{int(imgsz[1])}" if imgsz is not None else ""
    return cache_root() / "onnx" / f"{sha256[:KEY_CHARS]}{size}.onnx"


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


def cached_onnx(model_path: str | os.PathLike[str], imgsz: tuple[int, int] | None = None) -> Path:
    """The cached float32 ONNX export of a ``.ckpt``/``.safetensors`` model (exported on first use),
    at input size ``imgsz`` (H, W) or the model's own."""
    from .onnx_export import export_onnx

    model_path = Path(model_path)
    if not model_path.is_file():
        raise BadInputError(f"model file not found: {model_path}")
    sha = file_sha256(model_path)
    target = onnx_cache_path(sha, imgsz)
    if _reusable(target, sha):
        log.debug("using cached ONNX export %s", target)
        return target
    log.info("exporting %s to the ONNX cache (%s)", model_path.name, target)
    # Read (and check) the weights first: a bad file is then its one-line error, not an announcement
    # followed by one. About 0.4 s for a 262 MB ResNet-101 SOLOv2 file, against 14 s of export.
    state, _ = read_model(model_path)
    params = sum(int(t.numel()) for t in state.values())
    del state
    predicted = BASE_S + S_PER_MPARAM * params / 1e6
    factor = _machine_factor()
    where = "on this machine" if factor else f"for its {params / 1e6:.{0 if params >= 1e7 else 1}f} M parameters"
    expected = predicted * (factor or 1.0)
    # On a terminal, one line (and a bar): the first predict/run waits on this, and a silent pause
    # reads as a hang. On a pipe, stderr stays for errors (the one-line promise holds even when a
    # command fails after the build): the line goes to the log (--log-level info).
    line = f"building the ONNX cache for {model_path.name} (once per model; about {_duration(expected)} {where}) ..."
    if sys.stderr.isatty():
        print(line, file=sys.stderr, flush=True)
    else:
        log.info("%s", line)
    t0 = time.perf_counter()
    with elapsed_bar(expected, desc="ONNX cache"):
        export_onnx(model_path, target, imgsz=imgsz, batch=1, dynamic=False, half=False, check_parity=True)
    _record_speed((time.perf_counter() - t0) / predicted)
    return target


def _machine_factor() -> float | None:
    """How much slower (> 1) or faster this machine built its last cache entry than the measured line."""
    try:
        factor = float(json.loads((cache_root() / SPEED_FILE).read_text())["factor"])
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return factor if 0.05 < factor < 50 else None


def _record_speed(factor: float) -> None:
    try:
        write_json(cache_root() / SPEED_FILE, {"factor": round(factor, 3)})
    except OSError as exc:  # a read-only cache root only loses the next estimate's calibration
        log.debug("could not record the ONNX cache build speed: %s", exc)


def _duration(seconds: float) -> str:
    """Rounded for a person: '10 s', '40 s', '1 minute', '3 minutes'."""
    if seconds < 55:
        return f"{max(5, round(seconds / 5) * 5)} s"
    minutes = round(seconds / 60)
    return "1 minute" if minutes <= 1 else f"{minutes} minutes"
