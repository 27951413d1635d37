"""Triton Inference Server model repositories for solo-deploy ONNX exports and TensorRT engines.

Layout written by :func:`write_triton_repo`::

    <repo>/<name>/config.pbtxt
    <repo>/<name>/1/model.onnx   (platform onnxruntime_onnx)   or   1/model.plan (tensorrt_plan)
    <repo>/<name>/1/model.onnx + 1/model.py   (backend python: ONNX Runtime inside Triton's
                                                Python backend, for CPU serving)

``config.pbtxt`` is generated from the real model: input/output names, data types and dims are
read from the ONNX graph (or from an engine's sidecar, since an engine cannot be opened without
TensorRT). A graph whose batch dimension is dynamic gets ``max_batch_size`` > 0, dims without
the batch and ``dynamic_batching``; a static-batch graph gets ``max_batch_size: 0`` and full dims.
Dynamic batching waits up to ``QUEUE_DELAY_US`` for requests to join a batch. The solo-deploy
metadata (ModelMeta + export info, JSON) travels in ``parameters`` under the key ``solo_deploy``,
so clients can post-process without the original files.

The model folder is assembled beside the target and renamed into place.
"""
from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..core.pbtxt import parse_pbtxt
from ..errors import BadInputError

__all__ = ["BACKENDS", "PYTHON_MODEL", "TensorSpec", "TritonModelSpec", "config_pbtxt", "model_spec", "parse_pbtxt",
           "write_triton_repo"]

DEFAULT_MAX_BATCH = 8
# How long Triton's dynamic batcher holds a request for others to join its batch: 2 ms, small
# next to a CPU inference of 50-100 ms, enough for the frames of several streams sent together.
QUEUE_DELAY_US = 2000
BACKENDS = ("onnxruntime", "tensorrt", "python")
# Environment variable the Python-backend model reads: extra sys.path entries (os.pathsep-separated)
# holding numpy and onnxruntime. Triton's Python stub runs an isolated interpreter (it ignores
# PYTHONPATH, measured with tritonserver 2.51), so a virtual environment is named this way.
PYTHONPATH_ENV = "SOLO_DEPLOY_TRITON_PYTHONPATH"

# The Python-backend model: ONNX Runtime on the CPU over the model.onnx beside it. Requests that
# Triton's dynamic batcher groups run as one batch (concatenated on the batch axis, split back).
PYTHON_MODEL = """\
\"\"\"solo-deploy: {name} through ONNX Runtime in Triton's Python backend (written by solo-deploy export).\"\"\"
import os
import sys

for _p in reversed([p for p in os.environ.get("{env}", "").split(os.pathsep) if p]):
    if _p not in sys.path:
        sys.path.insert(0, _p)

import numpy as np  # noqa: E402
import onnxruntime as ort  # noqa: E402
import triton_python_backend_utils as pb_utils  # noqa: E402


class TritonPythonModel:
    def initialize(self, args):
        here = os.path.join(args["model_repository"], args["model_version"])
        opts = ort.SessionOptions()
        threads = os.environ.get("SOLO_DEPLOY_TRITON_THREADS")
        if threads:
            opts.intra_op_num_threads = int(threads)
        self.session = ort.InferenceSession(os.path.join(here, "model.onnx"), opts, providers=["CPUExecutionProvider"])
        self.input_name = self.session.get_inputs()[0].name
        self.output_names = [o.name for o in self.session.get_outputs()]
        self.batched = {batched}

    def execute(self, requests):
        arrays = [pb_utils.get_input_tensor_by_name(r, self.input_name).as_numpy() for r in requests]
        if self.batched and len(arrays) > 1 and len({{a.shape[1:] for a in arrays}}) == 1:
            sizes = [a.shape[0] for a in arrays]
            outs = self.session.run(self.output_names, {{self.input_name: np.concatenate(arrays)}})
            bounds = np.cumsum(sizes)[:-1]
            parts = [np.split(o, bounds) for o in outs]
            per_request = [[p[i] for p in parts] for i in range(len(arrays))]
        else:
            per_request = [self.session.run(self.output_names, {{self.input_name: a}}) for a in arrays]
        return [pb_utils.InferenceResponse([pb_utils.Tensor(n, np.ascontiguousarray(o))
                                            for n, o in zip(self.output_names, outs)])
                for outs in per_request]
"""
_NAME_RE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]*$")

# ONNX TensorProto element types -> Triton data types.
_ONNX_TO_TRITON = {1: "TYPE_FP32", 2: "TYPE_UINT8", 3: "TYPE_INT8", 4: "TYPE_UINT16", 5: "TYPE_INT16",
                   6: "TYPE_INT32", 7: "TYPE_INT64", 8: "TYPE_STRING", 9: "TYPE_BOOL", 10: "TYPE_FP16",
                   11: "TYPE_FP64", 12: "TYPE_UINT32", 13: "TYPE_UINT64", 16: "TYPE_BF16"}
# numpy dtype names (engine sidecars) -> Triton data types.
_NUMPY_TO_TRITON = {"float32": "TYPE_FP32", "float16": "TYPE_FP16", "uint8": "TYPE_UINT8", "int8": "TYPE_INT8",
                    "int32": "TYPE_INT32", "int64": "TYPE_INT64", "bool": "TYPE_BOOL", "bfloat16": "TYPE_BF16",
                    "bf16": "TYPE_BF16"}  # "bf16": sidecars written before BF16 was named bfloat16


@dataclass(frozen=True)
class TensorSpec:
    name: str
    data_type: str  # Triton TYPE_*
    shape: tuple[int, ...]  # full shape, -1 for dynamic dims (batch included)


@dataclass(frozen=True)
class TritonModelSpec:
    platform: str  # onnxruntime_onnx | tensorrt_plan
    filename: str  # model.onnx | model.plan
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]
    batch_dynamic: bool
    max_batch_profile: int | None  # engines: the profile's max batch
    metadata: dict[str, Any] | None


def _onnx_spec(path: Path) -> TritonModelSpec:
    from .onnx_checks import load_onnx_checked

    model = load_onnx_checked(path, load_external=False)
    if any(t.data_location == 1 for t in model.graph.initializer):
        raise BadInputError(f"{path} stores weights as external data; Triton repositories here take single-file "
                            f"ONNX models (re-export without external data)")
    inits = {i.name for i in model.graph.initializer}

    def spec(vi: Any) -> TensorSpec:
        tt = vi.type.tensor_type
        dims = tuple(d.dim_value if d.HasField("dim_value") else -1 for d in tt.shape.dim)
        if tt.elem_type not in _ONNX_TO_TRITON:
            raise BadInputError(f"{path}: tensor {vi.name!r} has an element type Triton does not support")
        return TensorSpec(vi.name, _ONNX_TO_TRITON[tt.elem_type], dims)

    inputs = tuple(spec(vi) for vi in model.graph.input if vi.name not in inits)
    outputs = tuple(spec(vi) for vi in model.graph.output)
    props = {p.key: p.value for p in model.metadata_props}
    meta = json.loads(props["solo_deploy"]) if "solo_deploy" in props else None
    dynamic = all(t.shape and t.shape[0] == -1 for t in inputs + outputs)
    return TritonModelSpec("onnxruntime_onnx", "model.onnx", inputs, outputs, dynamic, None, meta)


def _engine_spec(path: Path) -> TritonModelSpec:
    from .tensorrt import read_sidecar

    sidecar = read_sidecar(path)
    io = sidecar.get("engine", {}).get("io", [])
    if not io:
        raise BadInputError(f"{path}: the engine sidecar lists no input/output tensors")

    def spec(entry: dict[str, Any]) -> TensorSpec:
        dtype = _NUMPY_TO_TRITON.get(str(entry["dtype"]))
        if dtype is None:
            raise BadInputError(f"{path}: tensor {entry['name']!r} has type {entry['dtype']} unknown to Triton")
        return TensorSpec(str(entry["name"]), dtype, tuple(int(v) for v in entry["shape"]))

    inputs = tuple(spec(e) for e in io if e["mode"] == "input")
    outputs = tuple(spec(e) for e in io if e["mode"] == "output")
    dynamic = all(t.shape and t.shape[0] == -1 for t in inputs + outputs)
    max_b = sidecar.get("engine", {}).get("profile", {}).get("max", [None])[0]
    return TritonModelSpec("tensorrt_plan", "model.plan", inputs, outputs, dynamic,
                           int(max_b) if max_b else None, sidecar.get("solo_deploy"))


def model_spec(path: str | os.PathLike[str]) -> TritonModelSpec:
    """I/O and platform of an ``.onnx`` model or an ``.engine``/``.plan`` with its sidecar."""
    path = Path(path)
    if not path.is_file():
        raise BadInputError(f"model not found: {path}")
    suffix = path.suffix.lower()
    if suffix == ".onnx":
        return _onnx_spec(path)
    if suffix in (".engine", ".plan"):
        return _engine_spec(path)
    raise BadInputError(f"Triton repositories take an .onnx or .engine file, got {path.name}")


# ---------------------------------------------------------------------------------------------
# Text format
# ---------------------------------------------------------------------------------------------
def _quote(text: str) -> str:
    escaped = text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n").replace("\r", "\\r") \
        .replace("\t", "\\t")
    return f'"{escaped}"'


def effective_max_batch(spec: TritonModelSpec, max_batch_size: int | None = None) -> int:
    """Triton's ``max_batch_size`` for ``spec``: the request (or the engine profile's, or 8) for a
    dynamic batch; 0 for a fixed batch (Triton then passes full shapes, no server-side batching)."""
    if not spec.batch_dynamic:
        return 0
    mbs = int(max_batch_size or spec.max_batch_profile or DEFAULT_MAX_BATCH)
    if spec.max_batch_profile is not None and mbs > spec.max_batch_profile:
        raise BadInputError(f"max_batch_size {mbs} exceeds the engine profile's max batch {spec.max_batch_profile}")
    if mbs < 1:
        raise BadInputError(f"max_batch_size must be at least 1, got {mbs}")
    return mbs


def config_pbtxt(name: str, spec: TritonModelSpec, max_batch_size: int | None = None,
                 dynamic_batching: bool = True, backend: str | None = None) -> str:
    """The ``config.pbtxt`` text for ``spec`` (protobuf text format of Triton's ModelConfig);
    ``backend="python"`` serves the ONNX file through ONNX Runtime in Triton's Python backend."""
    mbs = effective_max_batch(spec, max_batch_size)
    python = backend == "python"

    def tensors(kind: str, items: tuple[TensorSpec, ...]) -> list[str]:
        lines = [f"{kind} ["]
        for i, t in enumerate(items):
            dims = t.shape[1:] if mbs > 0 else t.shape
            sep = "," if i < len(items) - 1 else ""
            entry = ["  {", f"    name: {_quote(t.name)}", f"    data_type: {t.data_type}"]
            if dims:
                entry.append(f"    dims: [ {', '.join(str(d) for d in dims)} ]")
            else:
                # One value per batch item (num_detections): Triton needs dims; [1] reshaped to a scalar.
                entry += ["    dims: [ 1 ]", "    reshape: { shape: [ ] }"]
            lines += [*entry, "  }" + sep]
        lines.append("]")
        return lines

    head = f"backend: {_quote('python')}" if python else f"platform: {_quote(spec.platform)}"
    lines = [f"name: {_quote(name)}", head, f"max_batch_size: {mbs}"]
    if not python:
        lines.append(f"default_model_filename: {_quote(spec.filename)}")
    lines += tensors("input", spec.inputs)
    lines += tensors("output", spec.outputs)
    if mbs > 0 and dynamic_batching:
        lines.append(f"dynamic_batching {{ max_queue_delay_microseconds: {QUEUE_DELAY_US} }}")
    if spec.platform == "tensorrt_plan":
        lines.append("instance_group [ { kind: KIND_GPU count: 1 } ]")
    elif python:
        lines.append("instance_group [ { kind: KIND_CPU count: 1 } ]")
    if spec.metadata is not None:
        payload = json.dumps(spec.metadata, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
        lines.append(f"parameters {{ key: \"solo_deploy\" value {{ string_value: {_quote(payload)} }} }}")
    return "\n".join(lines) + "\n"


def model_name(name: str | None, src: str | os.PathLike[str]) -> str:
    """The Triton model name: ``name``, checked, or one made from the file name."""
    name = name or re.sub(r"[^A-Za-z0-9_.-]", "_", Path(src).stem)
    if not _NAME_RE.fullmatch(name):
        raise BadInputError(f"invalid Triton model name {name!r}: use letters, digits, '_', '.', '-'")
    return name


def write_triton_repo(onnx_or_engine: str | os.PathLike[str], repo_dir: str | os.PathLike[str],
                      name: str | None = None, *, max_batch_size: int | None = None,
                      dynamic_batching: bool = True, version: int = 1, spec: TritonModelSpec | None = None,
                      backend: str | None = None) -> Path:
    """Write ``<repo>/<name>/config.pbtxt`` and ``<repo>/<name>/<version>/model.{onnx,plan}``
    (``backend="python"``: also ``model.py``, ONNX Runtime in Triton's Python backend).

    Returns the model folder. An existing model folder of that name is replaced as a whole.
    ``spec``: the file's ``model_spec`` when the caller has read it already.
    """
    from .._atomic import _check_parent

    src = Path(onnx_or_engine)
    spec = spec or model_spec(src)
    name = model_name(name, src)
    if version < 1:
        raise BadInputError(f"model version must be >= 1, got {version}")
    repo = Path(repo_dir)
    if repo.exists() and not repo.is_dir():
        raise BadInputError(f"Triton repository {repo} exists and is not a folder")
    _check_parent(repo / name)
    if backend == "python" and spec.platform != "onnxruntime_onnx":
        raise BadInputError("the Python backend serves an ONNX model through ONNX Runtime: give an .onnx (or a model "
                            "file), not an engine")
    text = config_pbtxt(name, spec, max_batch_size=max_batch_size, dynamic_batching=dynamic_batching,
                        backend=backend)
    target = repo / name
    staging = Path(tempfile.mkdtemp(prefix=f".{name}.tmp-", dir=repo))
    try:
        (staging / str(version)).mkdir()
        shutil.copyfile(src, staging / str(version) / spec.filename)
        (staging / "config.pbtxt").write_text(text, encoding="utf-8")
        written = [staging / str(version) / spec.filename, staging / "config.pbtxt"]
        if backend == "python":
            batched = effective_max_batch(spec, max_batch_size) > 0
            code = PYTHON_MODEL.format(name=name, env=PYTHONPATH_ENV, batched=batched)
            (staging / str(version) / "model.py").write_text(code, encoding="utf-8")
            written.append(staging / str(version) / "model.py")
        for f in written:
            with open(f, "rb+") as fh:
                os.fsync(fh.fileno())
        if target.exists():
            old = Path(tempfile.mkdtemp(prefix=f".{name}.old-", dir=repo))
            os.replace(target, old / name)
            os.replace(staging, target)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(staging, target)
    except OSError as exc:
        shutil.rmtree(staging, ignore_errors=True)
        raise BadInputError(f"cannot write Triton repository {target}: {exc.strerror or exc}") from None
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return target
