"""Model files: what a bench run reads from each one (format, metadata, precision, size, cost).

A ``.ckpt``/``.safetensors`` is a "model"; an ``.onnx`` or ``.engine`` knows the model it was
exported from through the ``source_sha256`` its export recorded (the key of its torch baseline).
"""
from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import BadInputError
from .common import failure_reason

log = logging.getLogger("solo_deploy.bench")


@dataclass
class _ModelFile:
    path: Path
    fmt: str  # "model" (.ckpt/.safetensors) | "onnx" | "engine"
    meta: Any  # ModelMeta
    sha256: str
    source_sha256: str | None  # the .ckpt/.safetensors this file was exported from (baseline key)
    precision: str
    input_hw: tuple[int, int]
    static_hw: tuple[int, int] | None = None
    cost: Any = None  # flops.ModelCost
    cost_error: str | None = None

    @property
    def key(self) -> str | None:
        """Rows with the same key compare with each other (same source network)."""
        return self.sha256 if self.fmt == "model" else self.source_sha256


def _inspect(path: Path, imgsz: tuple[int, int] | None) -> _ModelFile:
    """Read a model file's metadata (BadInputError for a missing/corrupt/unknown file)."""
    from ..core.meta import file_sha256
    from ..model.modelfile import read_model
    from ..runtime.runners import detect_backend

    if not path.exists():
        raise BadInputError(f"model file not found: {path}")
    if not path.is_file():
        raise BadInputError(f"model path is not a file: {path}")
    kind = detect_backend(path)
    sha = file_sha256(path)
    static_hw = None
    if kind == "torch":
        _, meta = read_model(path)
        fmt, precision, source = "model", "fp32", sha
    elif kind == "onnxruntime":
        import json

        from ..export.onnx_checks import load_onnx_checked
        from ..export.tensorrt import onnx_precision
        from ..runtime.runners import onnx_meta

        meta = onnx_meta(path)
        model = load_onnx_checked(path, load_external=False)
        props = {p.key: p.value for p in model.metadata_props}
        export = json.loads(props.get("solo_deploy", "{}")).get("export", {}) or {}
        fmt, precision, source = "onnx", onnx_precision(model), export.get("source_sha256")
        dims = [
            d.dim_value if d.HasField("dim_value") else None for d in model.graph.input[0].type.tensor_type.shape.dim
        ]
        if len(dims) == 4 and dims[1] and dims[2]:
            static_hw = (int(dims[1]), int(dims[2]))
        del model
    else:
        from ..core.inspect import inspect_model

        info = inspect_model(path)
        meta, sidecar = info.meta, info.details["sidecar"]
        fmt = "engine"
        precision = str(sidecar.get("engine", {}).get("precision", "fp32"))
        source = (sidecar["solo_deploy"].get("export") or {}).get("source_sha256")
    if meta.preprocess.pads_in_graph and imgsz is None:
        # keep-ratio models run each frame at its own resized size: the bench frames' size.
        from .common import FRAME_HW

        input_hw = tuple(meta.preprocess.plan(FRAME_HW).input_hw)
    else:
        input_hw = tuple(imgsz) if imgsz is not None else tuple(static_hw or meta.preprocess.input_hw)
    return _ModelFile(path=path, fmt=fmt, meta=meta, sha256=sha, source_sha256=source, precision=precision,
                      input_hw=(int(input_hw[0]), int(input_hw[1])), static_hw=static_hw)


def inspect_models(models: Sequence[str | os.PathLike[str]], imgsz: tuple[int, int] | None) -> list[_ModelFile]:
    """Every model file inspected, with its FLOPs and bytes where they can be counted.

    A missing, unreadable or unknown file, or two files of one name, raise ``BadInputError``.
    """
    from .flops import model_cost

    files = [_inspect(Path(m), imgsz) for m in models]
    names = [mf.path.name for mf in files]
    if len(set(names)) != len(names):
        raise BadInputError(f"model file names must be distinct (rows are named by file): {names}")
    for mf in files:
        try:
            mf.cost = model_cost(mf.meta.model, mf.meta.preprocess, mf.input_hw)
        except Exception as exc:  # noqa: BLE001 - FLOPs are informative: the timings still stand
            mf.cost_error = failure_reason(exc)
            log.warning("cannot count FLOPs of %s: %s", mf.path.name, mf.cost_error)
    return files
