"""TensorRT INT8 calibration caches in TensorRT's own text format, plus the JSON key sidecar.

Format (what TensorRT's calibrators write and read back through ``readCalibrationCache``)::

    TRT-<version>-<Algorithm>
    <tensor name>: <hex>
    ...

``<version>`` is TensorRT's integer version (``NV_TENSORRT_VERSION``): major*10000 + minor*100 +
patch from TensorRT 10 on (10.3.0 -> ``100300``), major*1000 + minor*100 + patch before
(8.6.1 -> ``8601``). ``<Algorithm>`` is ``MinMaxCalibration`` or ``EntropyCalibration2`` (also
``EntropyCalibration``/``LegacyCalibration`` on read). ``<hex>`` is the IEEE-754 float32 bit
pattern of the tensor's *scale*, read as a big-endian 32-bit integer and printed in lower-case hex
without leading zeros (TensorRT prints it with ``std::hex``); the dynamic range is ``scale * 127``.
So ``scale = absmax / 127`` where ``absmax = max(|min|, |max|)`` of the calibrated range.

TensorRT may ignore a cache whose header names another version or another algorithm than the
calibrator replaying it: ``write_cache(..., trt_version="10.x")`` resolves ``10.x`` to the
installed TensorRT 10 when there is one, else to ``10.0.0``. The engine build does not rely on
that: ``solo_deploy.export.tensorrt.retarget_calibration_cache`` rewrites the header in memory
for the installed TensorRT and its MinMax replaying calibrator (scales untouched, file unchanged).
:func:`retarget` rewrites a cache file's header in place, for users who want that on disk.

The sidecar (``<cache>.key.json``) records what the scales were computed from (model hash,
data hash, method, image count); a later calibration run with the same key reuses the cache.
"""
from __future__ import annotations

import json
import logging
import math
import re
import struct
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from .._atomic import write_json, write_text
from ..errors import BadInputError

log = logging.getLogger("solo_deploy.calibration")

__all__ = ["ALGORITHMS", "KEY_SUFFIX", "header", "read_cache", "read_key", "retarget", "scale_hex",
           "scales_from_ranges", "trt_version_int", "write_cache", "write_key"]

# solo-deploy method -> TensorRT calibrator algorithm named in the header. TensorRT has no
# percentile calibrator; percentile ranges are replayed as given, under the MinMax name that the
# read-only cache calibrator of solo_deploy.export.tensorrt uses.
ALGORITHMS: dict[str, str] = {
    "minmax": "MinMaxCalibration",
    "entropy": "EntropyCalibration2",
    "percentile": "MinMaxCalibration",
}
KNOWN_ALGORITHMS = ("MinMaxCalibration", "EntropyCalibration2", "EntropyCalibration", "LegacyCalibration")
KEY_SUFFIX = ".key.json"
DEFAULT_TRT10 = "10.0.0"
_HEADER_RE = re.compile(r"^TRT-(\d+)-([A-Za-z0-9]+)$")
_LINE_RE = re.compile(r"^(.+): ([0-9a-fA-F]{1,8})$")


def trt_version_int(version: str) -> int:
    """``"10.3.0"`` -> 100300, ``"8.6.1"`` -> 8601, ``"100300"`` -> 100300; ``"10.x"`` resolves
    to the installed TensorRT 10 or to 10.0.0."""
    v = str(version).strip()
    if v.isdigit():
        return int(v)
    if v.lower() in ("10.x", "10"):
        v = DEFAULT_TRT10
        try:  # the installed TensorRT, when it is a 10.x, names the header it will accept
            import tensorrt  # type: ignore[import-not-found]

            if str(tensorrt.__version__).startswith("10."):
                v = str(tensorrt.__version__)
        except Exception as exc:  # noqa: BLE001 - TensorRT is optional (absent on CPU machines)
            log.debug("no TensorRT to name the cache header (%s); using %s", type(exc).__name__, v)
    parts = v.split(".")
    try:
        major, minor, patch = (int(p) for p in (parts + ["0", "0"])[:3])
    except ValueError:
        raise BadInputError(f"invalid TensorRT version {version!r}: expected e.g. 10.3.0, 8.6.1 or 10.x") from None
    return major * 10000 + minor * 100 + patch if major >= 10 else major * 1000 + minor * 100 + patch


def _algorithm_name(algorithm: str) -> str:
    if algorithm in KNOWN_ALGORITHMS:
        return algorithm
    if algorithm.lower() in ALGORITHMS:
        return ALGORITHMS[algorithm.lower()]
    raise BadInputError(f"unknown calibration algorithm {algorithm!r}: use minmax, entropy, percentile or one of "
                        f"{', '.join(KNOWN_ALGORITHMS)}")


def header(algorithm: str, trt_version: str = "10.x") -> str:
    """The first line, e.g. ``TRT-100300-MinMaxCalibration``."""
    return f"TRT-{trt_version_int(trt_version)}-{_algorithm_name(algorithm)}"


def scale_hex(scale: float) -> str:
    """float -> TensorRT's hex: the float32 bit pattern as a big-endian integer, no leading zeros."""
    (bits,) = struct.unpack(">I", struct.pack(">f", float(scale)))
    return format(bits, "x")


def _hex_scale(text: str) -> float:
    return struct.unpack(">f", struct.pack(">I", int(text, 16)))[0]


def scales_from_ranges(ranges: Mapping[str, tuple[float, float]]) -> dict[str, float]:
    """``{tensor: (min, max)}`` -> ``{tensor: absmax / 127}`` as float32 values.

    A range of exactly zero (a tensor that is always 0) gets scale 1/127: any scale represents
    0 exactly, and TensorRT should never divide by a zero scale. Non-finite ranges mean the model
    produced NaN/inf on the calibration data and are refused.
    """
    import numpy as np

    out: dict[str, float] = {}
    for name, (lo, hi) in ranges.items():
        absmax = max(abs(float(lo)), abs(float(hi)))
        if not math.isfinite(absmax):
            raise BadInputError(f"calibration range of tensor {name!r} is not finite ({lo}, {hi}): the model "
                                f"produces NaN/inf on the calibration images")
        out[name] = float(np.float32((absmax if absmax > 0 else 1.0) / 127.0))
    return out


def write_cache(path: str | Path, scales: Mapping[str, float], algorithm: str, trt_version: str = "10.x") -> Path:
    """Write ``scales`` (``{tensor name: scale}``, scale = absmax/127) as a TensorRT calibration
    cache, atomically. ``algorithm``: minmax / entropy / percentile or a TensorRT algorithm name."""
    lines = [header(algorithm, trt_version)]
    for name, scale in scales.items():
        if "\n" in name or not name:
            raise BadInputError(f"tensor name {name!r} cannot be stored in a calibration cache")
        s = float(scale)
        if not (math.isfinite(s) and s >= 0):
            raise BadInputError(f"scale of tensor {name!r} must be finite and non-negative, got {scale}")
        lines.append(f"{name}: {scale_hex(s)}")
    path = Path(path)
    write_text(path, "\n".join(lines) + "\n")
    return path


def read_cache(path: str | Path) -> tuple[str, dict[str, float]]:
    """-> (header line, ``{tensor name: scale}``) with scales exactly as stored (float32 values)."""
    path = Path(path)
    try:
        text = path.read_text(encoding="ascii")
    except FileNotFoundError:
        raise BadInputError(f"calibration cache not found: {path}") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise BadInputError(f"cannot read calibration cache {path}: {exc}") from None
    lines = [ln.rstrip("\r") for ln in text.split("\n")]
    while lines and not lines[-1]:
        lines.pop()
    if not lines or not _HEADER_RE.match(lines[0]):
        raise BadInputError(
            f"{path} is not a TensorRT calibration cache (first line must be TRT-<version>-<Algorithm>)"
        )
    scales: dict[str, float] = {}
    for i, line in enumerate(lines[1:], start=2):
        # rpartition-like match: tensor names may contain ': ' themselves, the hex never does.
        m = _LINE_RE.match(line)
        if not m:
            raise BadInputError(f"{path}:{i}: expected 'tensor_name: <hex>', got {line[:80]!r}")
        scales[m.group(1)] = _hex_scale(m.group(2))
    return lines[0], scales


def retarget(path: str | Path, trt_version: str, algorithm: str | None = None) -> Path:
    """Rewrite the header of a cache for another TensorRT version (and optionally algorithm name)."""
    head, scales = read_cache(path)
    algo = algorithm or _HEADER_RE.match(head).group(2)  # type: ignore[union-attr]
    return write_cache(path, scales, algo, trt_version)


def write_key(cache_path: str | Path, key: Mapping[str, Any]) -> Path:
    """Write the sidecar ``<cache>.key.json`` describing what the cache was computed from."""
    side = Path(str(cache_path) + KEY_SUFFIX)
    write_json(side, dict(key))
    return side


def read_key(cache_path: str | Path) -> dict[str, Any] | None:
    """The sidecar's key, or None when it is missing or unreadable (the cache is then not reused)."""
    side = Path(str(cache_path) + KEY_SUFFIX)
    try:
        data = json.loads(side.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None
