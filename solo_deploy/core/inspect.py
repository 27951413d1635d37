"""One ``inspect_model(path)`` for every model format: which backend runs it, its metadata, and
the names of its graph's input and outputs, read without loading the model (and without torch,
except for a Lightning ``.ckpt``, which is a pickle that only torch reads).
"""
from __future__ import annotations

import json
import os
import pickle
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .._lazy import lazy_import
from .._paths import check_model_path
from ..errors import BadInputError, one_line
from ..limits import check_checkpoint_size
from .meta import INPUT_NAME, META_KEY, MODEL_SUFFIXES, ModelMeta, output_names
from .onnx_header import read_onnx_header

torch = lazy_import("torch")
safetensors = lazy_import("safetensors")

__all__ = ["SIDECAR_FORMAT", "SIDECAR_SCHEMA", "ModelInfo", "checkpoint_meta", "detect_backend", "inspect_model",
           "load_checkpoint", "onnx_meta", "read_sidecar", "safetensors_meta", "sidecar_path"]

SIDECAR_FORMAT = "solo-deploy-engine"
SIDECAR_SCHEMA = 1


@dataclass(frozen=True)
class ModelInfo:
    """A model file as inspected: ``backend`` that runs it as it is (torch, onnxruntime, tensorrt),
    its ``meta``, the graph's ``input_names`` and ``output_names``, and format ``details`` (ONNX:
    IR version and opsets; engine: the sidecar)."""

    path: Path
    backend: str
    meta: ModelMeta
    input_names: tuple[str, ...]
    output_names: tuple[str, ...]
    details: dict[str, Any] = field(default_factory=dict)


def detect_backend(path: str | os.PathLike[str]) -> str:
    """The backend that runs ``path`` as it is, by its suffix."""
    suffix = Path(path).suffix.lower()
    if suffix in MODEL_SUFFIXES:
        return "torch"
    if suffix == ".onnx":
        return "onnxruntime"
    if suffix in (".engine", ".plan"):
        return "tensorrt"
    raise BadInputError(f"unsupported model file type {suffix or '(none)'!r} for {path}: "
                        f"expected .ckpt, .safetensors, .onnx or .engine")


def sidecar_path(engine: str | os.PathLike[str]) -> Path:
    """``model.engine`` -> ``model.engine.json``."""
    engine = Path(engine)
    return engine.with_name(engine.name + ".json")


def read_sidecar(engine: str | os.PathLike[str]) -> dict[str, Any]:
    path = sidecar_path(engine)
    if not path.is_file():
        raise BadInputError(f"{engine} has no sidecar {path.name}: build engines with "
                            f"'solo-deploy export MODEL --format engine' (the sidecar holds the model metadata)")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise BadInputError(f"cannot read engine sidecar {path}: {exc}") from None
    if not isinstance(data, dict) or data.get("format") != SIDECAR_FORMAT:
        raise BadInputError(f"{path} is not a solo-deploy engine sidecar")
    return data




def checkpoint_meta(ckpt: Any, path: str | os.PathLike[str]) -> ModelMeta:
    """The metadata of a loaded Lightning checkpoint (a dict from ``torch.load``)."""
    if not isinstance(ckpt, dict) or "state_dict" not in ckpt:
        raise BadInputError(f"{path} is not a Lightning checkpoint (no state_dict)")
    hp = ckpt.get("hyper_parameters") or {}
    if "meta" not in hp:
        raise BadInputError(f"{path} is not a solo-deploy checkpoint (no solo-deploy metadata in hyper_parameters)")
    return _network_meta(ModelMeta.from_dict(hp["meta"], source=str(path)), path)


def _network_meta(meta: ModelMeta, path: str | os.PathLike[str]) -> ModelMeta:
    """Model files and checkpoints hold raw networks: end-to-end metadata belongs to ONNX graphs."""
    if meta.end2end is not None:
        raise BadInputError(f"{path} carries end-to-end metadata, which only exported ONNX graphs have: not a "
                            f"solo-deploy model file")
    return meta


def load_checkpoint(path: str | os.PathLike[str]) -> dict[str, Any]:
    """``torch.load(weights_only=True)`` of a Lightning checkpoint; a pickle that would run code,
    or a corrupt file, is one ``BadInputError`` line; so is one that would inflate past
    ``SOLO_DEPLOY_MAX_CHECKPOINT_BYTES``."""
    check_checkpoint_size(path)
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        first = str(exc).splitlines()[0] if str(exc) else "unpickling refused"
        raise BadInputError(f"refusing to load {path}: it needs code execution to unpickle ({first[:160]})") from None
    except Exception as exc:  # noqa: BLE001 - zip/pickle errors of every kind mean a corrupt file
        raise BadInputError(f"cannot read checkpoint {path}: {one_line(exc)}") from None


def _safetensors_meta(path: Path) -> ModelMeta:
    try:
        with safetensors.safe_open(str(path), framework="numpy") as fh:  # the header only: no tensors, no torch
            header = fh.metadata() or {}
    except Exception as exc:  # noqa: BLE001 - the Rust parser raises its own error types
        raise BadInputError(f"cannot read model file {path}: {one_line(exc)}") from None
    return safetensors_meta(header, path)


def safetensors_meta(header: dict[str, str], path: str | os.PathLike[str]) -> ModelMeta:
    """The metadata in a solo-deploy ``.safetensors`` file's header (``safe_open(...).metadata()``)."""
    if META_KEY not in header:
        raise BadInputError(f"{path} is a safetensors file but not a solo-deploy model file (no metadata)")
    try:
        meta = json.loads(header[META_KEY])
    except json.JSONDecodeError as exc:
        raise BadInputError(f"cannot read model file {path}: {one_line(exc)}") from None
    return _network_meta(ModelMeta.from_dict(meta, source=str(path)), path)


def onnx_meta(path: str | os.PathLike[str], metadata: dict[str, str] | None = None) -> ModelMeta:
    """Metadata stored in an ONNX file's metadata_props by `solo-deploy export` (read from the
    file's header, or from ``metadata`` when the caller has it)."""
    if metadata is None:
        metadata = read_onnx_header(path).metadata
    if META_KEY not in metadata:
        raise BadInputError(f"{path} is an ONNX model but not a solo-deploy export (no solo_deploy metadata)")
    try:
        return ModelMeta.from_dict(json.loads(metadata[META_KEY]), source=str(path))
    except json.JSONDecodeError:
        raise BadInputError(f"{path}: solo_deploy metadata is not valid JSON") from None


def inspect_model(path: str | os.PathLike[str]) -> ModelInfo:
    """Describe the model file at ``path`` without loading its weights into a backend."""
    p = check_model_path(path)
    backend = detect_backend(p)
    if p.stat().st_size == 0:
        raise BadInputError(f"{'ONNX model' if backend == 'onnxruntime' else 'model'} file is empty: {p}")
    if backend == "torch":
        meta = _safetensors_meta(p) if p.suffix.lower() == ".safetensors" else checkpoint_meta(load_checkpoint(p), p)
        return ModelInfo(p, backend, meta, (INPUT_NAME,), tuple(output_names(meta.model)))
    if backend == "onnxruntime":
        header = read_onnx_header(p)
        meta = onnx_meta(p, header.metadata)
        return ModelInfo(p, backend, meta, header.inputs, header.outputs,
                         {"ir_version": header.ir_version, "opsets": header.opsets})
    sidecar = read_sidecar(p)
    meta = ModelMeta.from_dict(sidecar.get("solo_deploy", {}), source=str(p))
    io = sidecar.get("engine", {}).get("io", [])
    return ModelInfo(p, backend, meta, tuple(t["name"] for t in io if t.get("mode") == "input") or (INPUT_NAME,),
                     tuple(t["name"] for t in io if t.get("mode") == "output") or tuple(meta.output_names),
                     {"sidecar": sidecar})
