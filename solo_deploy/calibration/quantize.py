"""INT8 post-training quantization of solo-deploy ONNX exports: one calibration pass, two Q/DQ models.

Path: ONNX Runtime's quantization tool (``onnxruntime.quantization``), not NVIDIA ModelOpt.
ORT quantization ships inside the onnxruntime we already depend on, runs on a CPU, writes
standard ONNX QuantizeLinear/DequantizeLinear (Q/DQ) that both ORT and TensorRT's ONNX parser
consume, and exposes the calibrators. ModelOpt would add a large CUDA-oriented dependency for
the same Q/DQ output and cannot be tested on this machine.

One calibration pass: :func:`collect_ranges` runs ``create_calibrator`` + ``collect_data`` +
``compute_data`` once over the calibration images (in chunks, to bound memory) and gets a
``TensorsData`` with a (min, max) range for every float tensor of the FP32 graph. Those ranges
are saved with ``save_tensors_data`` (``calibration.ranges.json``) and handed to
``quantize_static(..., calibration_data_reader=None, calibration_cache_path=...)`` for each model.
Why this API: ``calibration_cache_path`` is the documented ``quantize_static`` parameter (ORT
1.31) that loads precomputed ranges and skips calibration inference, so both Q/DQ models and
every accuracy-guard retry come from the same numbers without re-running the network; a
replaying data reader would repeat the calibration inference for each model, and driving
``QDQQuantizer`` with a ``TensorsData`` directly means using ORT internals. The same JSON
is the reuse cache of a second run, and the TensorRT cache is derived from it
(scale = absmax / 127, :mod:`.trt_cache`).

Two targets from the same ranges:

* ``model.trt.int8.onnx`` (TensorRT, explicit quantization): int8 activations with
  ActivationSymmetric (zero point 0, as TensorRT requires), per-channel symmetric int8 weights,
  float biases (TensorRT has no int32 DequantizeLinear for biases). Q/DQ only on the *inputs*
  of Conv/MatMul/Gemm and of Adds between two activations (residual and FPN merges), the
  placement TensorRT's Q/DQ fusions expect; outputs of those ops are not quantized, so TensorRT
  fuses Q into the producing layer and keeps normalisation/sigmoid/resize out of INT8.
* ``model.cpu.int8.onnx`` (ONNX Runtime CPU): uint8 activations (asymmetric) with per-channel
  int8 weights, Conv/MatMul/Gemm inputs *and* outputs quantized so ORT fuses DQ->Conv->Q into
  QLinearConv. Weights use 7 bits (``reduce_range``) by default: on x86 CPUs without VNNI (this
  AVX2 machine) the u8 x s8 kernels sum pairs of products in saturating int16, and full 8-bit
  weights saturated there: output error of the fused model 3-4x that of the same graph run
  unfused (toy net: 10% vs 2% relative error on one output), gone with 7-bit weights, at no
  speed cost (422 vs 470 ms, same run as below). Layers feeding graph outputs (SOLO's
  ``cate_out``/``kernel_out``/``mask_out``) stay FP32 so the outputs are not rounded to 8 bits.
  Measured on the 2-core AVX2 machine (solov2-cpu-r18 at 256x256, random weights, 1 thread,
  interleaved medians): FP32 657 ms; Conv-only Q/DQ 404 ms (1.63x);
  every ORT-supported op 383 ms (1.72x); the symmetric TensorRT graph on ORT CPU 684 ms (no
  fusion without an output Q). We take the Conv-only placement: 95% of the speed-up while
  GroupNorm, sigmoid, resize and elementwise math stay FP32.

Both keep the graph's uint8 ``images`` input and float32 outputs; the in-graph preprocessing
(Cast/Transpose/BatchNormalization before the first Conv) is excluded by name and stays FP32. The source's
``metadata_props`` are copied, with a ``quantization`` section added to the ``solo_deploy`` JSON,
so ``onnx_meta``/``make_runner`` and ``solo-deploy eval/run/bench`` take the INT8 models as-is.
"""
from __future__ import annotations

import contextlib
import io
import json
import logging
import os
import shutil
import statistics
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from .._progress import progress_bar
from ..errors import BadInputError, RuntimeFailure, one_line
from . import FILES, KEY_FILE, METHODS
from .settings import CalibrationSettings

if TYPE_CHECKING:  # pragma: no cover
    import onnx
    from onnxruntime.quantization import TensorsData

    from ..core.meta import ModelMeta
    from .data import CalibrationImages
    from .guard import GuardResult

log = logging.getLogger("solo_deploy.calibration")

__all__ = [
    "TARGETS",
    "CalibrationResult",
    "CalibrationSettings",
    "calibrate",
    "collect_ranges",
    "load_fp32_onnx",
    "precision_summary",
    "quantize_target",
    "tensor_ranges",
]

# Ops whose inputs (TensorRT) or inputs and outputs (CPU) get Q/DQ. See the module docstring.
COMPUTE_OPS = ("Conv", "ConvTranspose", "MatMul", "Gemm")
TARGETS: dict[str, dict[str, Any]] = {
    "trt": {
        "file": FILES["trt"],
        "op_types": [*COMPUTE_OPS, "Add"],
        "activation": "QInt8",
        "weight": "QInt8",
        "extra_options": {"ActivationSymmetric": True, "WeightSymmetric": True, "QuantizeBias": False,
                          "OpTypesToExcludeOutputQuantization": [*COMPUTE_OPS, "Add"]},
    },
    "cpu": {
        "file": FILES["cpu"],
        "op_types": list(COMPUTE_OPS),
        "activation": "QUInt8",
        "weight": "QInt8",
        "extra_options": {"ActivationSymmetric": False, "WeightSymmetric": True},
    },
}
CHUNK = 8  # images per collect_data call: the histogram calibrators hold every output until then
SENSITIVITY_IMAGES = 4


# ---------------------------------------------------------------------------------------------
# Quieting ORT's quantization tool (root-logger warnings, print() in the histogram collector)
# ---------------------------------------------------------------------------------------------
class _ToDebug(logging.Filter):
    """Re-route the root-logger warnings of onnxruntime.quantization to our debug log."""

    def filter(self, record: logging.LogRecord) -> bool:
        log.debug("onnxruntime.quantization: %s", record.getMessage())
        return False


@contextlib.contextmanager
def _quiet_ort_quantization() -> Iterator[None]:
    root = logging.getLogger()
    flt = _ToDebug()
    root.addFilter(flt)
    out = io.StringIO()
    try:
        with contextlib.redirect_stdout(out):
            yield
    finally:
        root.removeFilter(flt)
        for line in out.getvalue().splitlines():
            log.debug("onnxruntime.quantization: %s", line)




# ---------------------------------------------------------------------------------------------
# The source model
# ---------------------------------------------------------------------------------------------
def load_fp32_onnx(path: str | Path) -> tuple[ModelMeta, onnx.ModelProto]:
    """Validate a solo-deploy FP32 ONNX export; -> (metadata, graph without external weights loaded).

    BadInputError for a file that is not ONNX, not a solo-deploy export, already quantized, or FP16.
    """
    from ..core.meta import ModelMeta
    from ..export.onnx_checks import external_data_locations, load_onnx_checked

    path = Path(path)
    model = load_onnx_checked(path, load_external=False)  # one-line errors for missing/corrupt files
    props = {p.key: p.value for p in model.metadata_props}
    if "solo_deploy" not in props:  # the same checks as runtime.runners.onnx_meta, on the loaded graph
        raise BadInputError(f"{path} is an ONNX model but not a solo-deploy export (no solo_deploy metadata)")
    try:
        payload = json.loads(props["solo_deploy"])
    except json.JSONDecodeError:
        raise BadInputError(f"{path}: solo_deploy metadata is not valid JSON") from None
    if not isinstance(payload, dict):
        raise BadInputError(f"{path}: solo_deploy metadata is not a JSON object")
    meta = ModelMeta.from_dict(payload, source=str(path))
    if meta.end2end is not None:
        raise BadInputError(f"{path} is an end-to-end model: calibrate its raw export, then append the "
                            f"post-processing (solo-deploy export OUT/model.cpu.int8.onnx --end2end)")
    if external_data_locations(model):  # the cache's FP32 graph is shipped as one self-contained file
        raise BadInputError(f"{path} keeps its weights in external data files; calibrate needs a single-file ONNX")
    ops = {n.op_type for n in model.graph.node}
    if ops & {"QuantizeLinear", "DequantizeLinear", "QLinearConv", "ConvInteger"}:
        raise BadInputError(f"{path} is already quantized (it has Q/DQ nodes): calibrate the FP32 export")
    precision = str((payload.get("export") or {}).get("precision", "fp32"))
    if precision != "fp32" or any(i.data_type == 10 for i in model.graph.initializer):  # 10 = FLOAT16
        raise BadInputError(f"{path} is an {precision.upper() if precision != 'fp32' else 'FP16'} export: INT8 "
                            f"calibration needs the FP32 export (solo-deploy export MODEL -o model.onnx)")
    inp = model.graph.input[0]
    if inp.type.tensor_type.elem_type != 2:  # 2 = UINT8
        raise BadInputError(f"{path}: input {inp.name!r} is not uint8; re-export it with this solo-deploy")
    return meta, model


def resolve_model(model: str | Path, progress: Callable[[str], None] | None = None) -> Path:
    """An FP32 solo-deploy ONNX for ``model``: the file itself, or the cached FP32 export of a
    ``.safetensors``/``.ckpt`` (``export_onnx``, float32, batch 1, parity-checked)."""
    from ..core.meta import MODEL_SUFFIXES

    p = Path(model)
    if not p.exists():
        raise BadInputError(f"model file not found: {p}")
    if p.suffix.lower() == ".onnx":
        return p
    if p.suffix.lower() in MODEL_SUFFIXES:
        from ..export.cache import cached_onnx

        # cached_onnx announces a build itself (one line, once per model); a cache hit needs no word.
        return cached_onnx(p)
    raise BadInputError(f"unsupported model file type {p.suffix or '(none)'!r} for {p}: expected an .onnx export or "
                        f"a .safetensors/.ckpt model file")


def _input_batch(model: onnx.ModelProto) -> tuple[str, int]:
    """Graph input name and the batch to feed (its static batch, or 1 when dynamic)."""
    inp = model.graph.input[0]
    dim0 = inp.type.tensor_type.shape.dim[0]
    return inp.name, int(dim0.dim_value) if dim0.HasField("dim_value") and dim0.dim_value > 0 else 1


def _batches(images: np.ndarray, batch: int) -> list[np.ndarray]:
    n = (images.shape[0] // batch) * batch
    if n < images.shape[0]:
        log.warning("static batch %d: the last %d calibration image(s) are not used", batch, images.shape[0] - n)
    return [images[i:i + batch] for i in range(0, n, batch)]


def default_exclusions(model: onnx.ModelProto) -> tuple[list[str], list[str]]:
    """-> (preprocessing nodes before the first Conv, elementwise nodes with a constant input).

    Preprocessing (Cast/Transpose/BatchNormalization on the uint8 image) must stay FP32 by design; Add/Mul
    with a constant operand (GroupNorm affine, CoordConv, decode) are not the residual merges
    that the TensorRT placement quantizes.
    """
    consumers: dict[str, list[Any]] = {}
    for node in model.graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node)
    pre: list[str] = []
    seen: set[str] = set()
    frontier = [model.graph.input[0].name]
    while frontier:
        tensor = frontier.pop()
        for node in consumers.get(tensor, []):
            if node.op_type in COMPUTE_OPS or node.name in seen:
                continue
            seen.add(node.name)
            pre.append(node.name)
            frontier.extend(node.output)
    constants = {i.name for i in model.graph.initializer}
    constants |= {o for n in model.graph.node if n.op_type == "Constant" for o in n.output}
    const_elementwise = [n.name for n in model.graph.node if n.op_type in ("Add", "Sub", "Mul", "Div")
                         and n.name not in seen and any(i in constants for i in n.input)]
    return pre, const_elementwise


def output_layers(model: onnx.ModelProto) -> list[str]:
    """Compute nodes whose output reaches a graph output through non-compute ops only.

    In SOLO/SOLOv2 these are ``cate_out`` (logits -> sigmoid -> scores), ``kernel_out`` (the
    dynamic kernels) and ``mask_out`` (mask features): quantizing their outputs would round the
    network's outputs themselves to 8 bits per tensor. The CPU model keeps them FP32 (about 5%
    of the FLOPs of the CPU preset); the TensorRT placement never quantizes outputs, so there
    they stay INT8 with float outputs.
    """
    consumers: dict[str, list[Any]] = {}
    for node in model.graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node)
    outputs = {o.name for o in model.graph.output}
    found = []
    for node in model.graph.node:
        if node.op_type not in COMPUTE_OPS:
            continue
        stack, seen = list(node.output), set()
        reaches = False
        while stack and not reaches:
            t = stack.pop()
            if t in seen:
                continue
            seen.add(t)
            if t in outputs:
                reaches = True
                break
            for c in consumers.get(t, []):
                if c.op_type not in COMPUTE_OPS:
                    stack.extend(c.output)
        if reaches:
            found.append(node.name)
    return found


def compute_nodes(model: onnx.ModelProto, exclude: Sequence[str] = ()) -> list[str]:
    """Names of the Conv/MatMul/Gemm nodes (the guard's candidate layers), in graph order."""
    skip = set(exclude)
    return [n.name for n in model.graph.node if n.op_type in COMPUTE_OPS and n.name not in skip]


def _named(model: onnx.ModelProto) -> bool:
    names = [n.name for n in model.graph.node]
    return all(names) and len(set(names)) == len(names)


# ---------------------------------------------------------------------------------------------
# The one calibration pass
# ---------------------------------------------------------------------------------------------
class _ArrayReader:
    """A CalibrationDataReader over in-memory batches: ``{input_name: uint8 (B, H, W, 3)}``."""

    def __init__(self, input_name: str, batches: Sequence[np.ndarray]) -> None:
        self.input_name, self.batches, self.i = input_name, list(batches), 0

    def get_next(self) -> dict[str, np.ndarray] | None:
        if self.i >= len(self.batches):
            return None
        self.i += 1
        return {self.input_name: self.batches[self.i - 1]}


def _method_enum(method: str):
    from onnxruntime.quantization import CalibrationMethod

    return {"minmax": CalibrationMethod.MinMax, "entropy": CalibrationMethod.Entropy,
            "percentile": CalibrationMethod.Percentile}[method]


def _calibrator_options(method: str) -> dict[str, Any]:
    # Ranges stay asymmetric (the CPU model's uint8 activations need the real min); the TensorRT
    # model and cache symmetrise them at quantization time (absmax).
    if method == "entropy":
        # ORT's defaults (128 bins, 128 quantized bins) leave the KL search a single candidate
        # (= MinMax). 512 bins give 193 candidate thresholds; TensorRT itself uses 2048. The
        # search is pure Python per tensor: ~0.8 s per tensor here (tiny test model, 238
        # tensors: 194 s vs 11 s for MinMax), so minutes on a real model.
        return {"symmetric": False, "num_bins": 512, "num_quantized_bins": 128}
    if method == "percentile":
        return {"symmetric": False, "num_bins": 2048, "percentile": 99.999}
    return {"symmetric": False}


def _session_options(threads: int | None):
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    if threads:
        opts.intra_op_num_threads = int(threads)
        opts.inter_op_num_threads = 1
    return opts


def collect_ranges(model_path: str | Path, images: np.ndarray, method: str = "minmax", *, threads: int | None = None,
                   chunk: int = CHUNK, progress: Callable[[str], None] | None = None) -> TensorsData:
    """Run the FP32 model once over ``images`` (uint8 (N, H, W, 3)) and return the activation
    range of every float tensor (``TensorsData``; MinMax, entropy or percentile thresholds)."""
    import onnx
    import onnxruntime as ort
    from onnxruntime.quantization import TensorsData, create_calibrator

    if method not in METHODS:
        raise BadInputError(f"unknown calibration method {method!r}: choose {', '.join(METHODS)}")
    model = onnx.load(str(model_path), load_external_data=False)
    input_name, batch = _input_batch(model)
    del model
    batches = _batches(images, batch)
    if not batches:
        raise BadInputError(f"{images.shape[0]} calibration image(s) cannot fill the model's static batch of {batch}")
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="solo-deploy-calib-") as tmp, _quiet_ort_quantization():
        try:
            calibrator = create_calibrator(
                Path(model_path),
                None,
                augmented_model_path=str(Path(tmp) / "augmented.onnx"),
                calibrate_method=_method_enum(method),
                extra_options=_calibrator_options(method),
            )
            # Rebuild the session with our thread count (create_calibrator uses ORT's default).
            opts = _session_options(threads)
            opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL  # keep every tensor
            calibrator.infer_session = ort.InferenceSession(calibrator.augmented_model_path, sess_options=opts,
                                                            providers=["CPUExecutionProvider"])
            step = max(1, chunk // batch)
            with progress_bar(len(batches) * batch, desc="calibrating") as bar:
                for start in range(0, len(batches), step):
                    calibrator.collect_data(_ArrayReader(input_name, batches[start:start + step]))
                    bar.update(len(batches[start:start + step]) * batch)
                    if progress and bar.disable:  # a terminal has the bar; a log gets the count as a line
                        progress(f"calibrating: {min(len(batches), start + step) * batch}/{len(batches) * batch} "
                                 f"images")
            ranges = calibrator.compute_data()
        except BadInputError:
            raise
        except Exception as exc:  # noqa: BLE001 - ORT raises its own types (Fail, InvalidArgument, ...)
            raise RuntimeFailure(f"calibration failed in onnxruntime: {one_line(exc)}") from None
    if not isinstance(ranges, TensorsData) or not len(ranges.data):
        raise RuntimeFailure("calibration produced no tensor ranges")
    log.info("calibrated %d tensors on %d images (%s) in %.1f s", len(ranges.data), len(batches) * batch, method,
             time.perf_counter() - t0)
    return ranges


def tensor_ranges(ranges: TensorsData) -> dict[str, tuple[float, float]]:
    """``TensorsData`` -> ``{tensor: (min, max)}`` as Python floats."""
    out: dict[str, tuple[float, float]] = {}
    for name, td in ranges.items():
        lo, hi = td.range_value
        out[name] = (float(np.min(lo)), float(np.max(hi)))
    return out


# ---------------------------------------------------------------------------------------------
# Quantizing one target
# ---------------------------------------------------------------------------------------------
def quantize_target(fp32_path: str | Path, ranges_path: str | Path, output: str | Path, target: str, method: str,
                    nodes_to_exclude: Sequence[str] = (), reduce_range: bool = False) -> Path:
    """Write the Q/DQ model for ``target`` (``trt`` or ``cpu``) from saved ranges (no inference)."""
    from onnxruntime.quantization import QuantFormat, QuantType, quantize_static

    cfg = TARGETS[target]
    t0 = time.perf_counter()
    with _quiet_ort_quantization():
        try:
            quantize_static(str(fp32_path), str(output), None, quant_format=QuantFormat.QDQ,
                            op_types_to_quantize=list(cfg["op_types"]), per_channel=True,
                            reduce_range=reduce_range and target == "cpu",
                            activation_type=getattr(QuantType, cfg["activation"]),
                            weight_type=getattr(QuantType, cfg["weight"]),
                            nodes_to_exclude=list(nodes_to_exclude), calibrate_method=_method_enum(method),
                            extra_options=dict(cfg["extra_options"]), calibration_cache_path=str(ranges_path))
        except Exception as exc:  # noqa: BLE001
            raise RuntimeFailure(f"quantize_static ({target}) failed: {one_line(exc)}") from None
    excluded_compute = set(nodes_to_exclude) & set(_compute_node_names(fp32_path))
    if excluded_compute:
        _float_inputs_for(Path(output), excluded_compute)
    log.debug("quantized %s model in %.1f s", target, time.perf_counter() - t0)
    return Path(output)


def _compute_node_names(path: str | Path) -> list[str]:
    import onnx

    return compute_nodes(onnx.load(str(path), load_external_data=False))


def _float_inputs_for(path: Path, nodes: set[str]) -> int:
    """Make the excluded ``nodes`` read float activations again; -> inputs rewired.

    ORT's QDQ quantizer rewires *every* consumer of a quantized activation to its
    DequantizeLinear output, excluded nodes included, whenever only one consumer asked for the
    quantization (``DedicatedQDQPair`` only helps with several). A layer the guard keeps FP32
    would then still read an int8-rounded input; here its input goes back to the tensor before
    the Q/DQ pair, and Q/DQ pairs left without consumers are removed.
    """
    import onnx

    model = onnx.load(str(path))
    producer = {o: n for n in model.graph.node for o in n.output}
    rewired = 0
    for node in model.graph.node:
        if node.name not in nodes:
            continue
        for idx, name in enumerate(node.input):
            dq = producer.get(name)
            if dq is None or dq.op_type != "DequantizeLinear":
                continue
            q = producer.get(dq.input[0])
            if q is None or q.op_type != "QuantizeLinear":  # weights: int8 initializer -> DQ (not ours)
                continue
            node.input[idx] = q.input[0]
            rewired += 1
    if not rewired:
        return 0
    graph_outputs = {o.name for o in model.graph.output}
    while True:  # drop Q/DQ nodes nobody reads any more (DQ first, then its Q)
        used = {i for n in model.graph.node for i in n.input} | graph_outputs
        dead = [n for n in model.graph.node if n.op_type in ("QuantizeLinear", "DequantizeLinear")
                and not any(o in used for o in n.output)]
        if not dead:
            break
        for n in dead:
            model.graph.node.remove(n)
    used = {i for n in model.graph.node for i in n.input}
    keep = [init for init in model.graph.initializer if init.name in used or init.name in graph_outputs]
    del model.graph.initializer[:]
    model.graph.initializer.extend(keep)
    onnx.save_model(model, str(path))
    return rewired


def _finalize(path: Path, source_props: dict[str, str], quantization: dict[str, Any]) -> None:
    """Copy the source's metadata_props (plus ``quantization``) into a quantized model, check its
    boundary (uint8 in, float32 out) and validate it."""
    import onnx

    from .._version import __version__

    model = onnx.load(str(path))
    extra = {p.key: p.value for p in model.metadata_props if p.key not in source_props}
    payload = json.loads(source_props["solo_deploy"])
    payload["quantization"] = quantization
    props = {**source_props, "solo_deploy": json.dumps(payload, sort_keys=True), **extra}
    del model.metadata_props[:]
    for key, value in props.items():
        entry = model.metadata_props.add()
        entry.key, entry.value = key, value
    model.producer_name, model.producer_version = "solo-deploy", __version__
    model.doc_string = (model.doc_string or "") + f" INT8 Q/DQ ({quantization['target']}) by solo-deploy calibrate."
    bad_in = [i.name for i in model.graph.input if i.type.tensor_type.elem_type != 2]
    bad_out = [o.name for o in model.graph.output if o.type.tensor_type.elem_type != 1]
    if bad_in or bad_out:
        raise RuntimeFailure(f"quantized graph changed its boundary types (inputs {bad_in}, outputs {bad_out})")
    try:
        onnx.checker.check_model(model)
    except Exception as exc:  # noqa: BLE001
        raise RuntimeFailure(f"the quantized {quantization['target']} graph is invalid: {one_line(exc)}") from None
    onnx.save_model(model, str(path))


def precision_summary(path: str | Path) -> dict[str, Any]:
    """Which compute nodes run INT8 (fed by DequantizeLinear) and which stayed FP32.

    -> ``{"int8_ops": {op: n}, "fp32_ops": {op: n}, "fp32_compute_nodes": [names]}`` (Q/DQ,
    Constant and shape-only ops not counted).
    """
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    dq_out = {o for n in model.graph.node if n.op_type == "DequantizeLinear" for o in n.output}
    skip = {"QuantizeLinear", "DequantizeLinear", "Constant", "Shape", "Gather", "Unsqueeze", "Squeeze",
            "Reshape", "Slice", "Concat", "Transpose", "Equal", "Where", "Cast"}
    int8: dict[str, int] = {}
    fp32: dict[str, int] = {}
    fp32_compute: list[str] = []
    for node in model.graph.node:
        quantized = any(i in dq_out for i in node.input)
        if node.op_type in COMPUTE_OPS and not quantized:
            fp32_compute.append(node.name)
        if node.op_type in skip and node.op_type not in COMPUTE_OPS:
            continue
        bucket = int8 if quantized else fp32
        bucket[node.op_type] = bucket.get(node.op_type, 0) + 1
    return {"int8_ops": dict(sorted(int8.items())), "fp32_ops": dict(sorted(fp32.items())),
            "fp32_compute_nodes": fp32_compute}


# ---------------------------------------------------------------------------------------------
# Latency (CPU, ORT), interleaved medians
# ---------------------------------------------------------------------------------------------
def cpu_latency(models: dict[str, Path], batch: np.ndarray, threads: int, runs: int = 20,
                warmup: int = 2) -> dict[str, float]:
    """Median wall time in ms of each model on the same input, same thread count, runs interleaved
    (A, B, A, B, ...) so that load from other processes hits both alike."""
    import onnxruntime as ort

    sessions = {}
    for name, path in models.items():
        opts = _session_options(threads)
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        # Interleaved sessions: a spinning worker pool of the model just run would take cores
        # from the next one (and more, in proportion, from the faster model).
        opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
        sessions[name] = ort.InferenceSession(str(path), sess_options=opts, providers=["CPUExecutionProvider"])
    feeds = {name: {s.get_inputs()[0].name: batch} for name, s in sessions.items()}
    for _ in range(warmup):
        for name, s in sessions.items():
            s.run(None, feeds[name])
    times: dict[str, list[float]] = {name: [] for name in sessions}
    for _ in range(max(1, runs)):
        for name, s in sessions.items():
            t0 = time.perf_counter()
            s.run(None, feeds[name])
            times[name].append((time.perf_counter() - t0) * 1000.0)
    return {name: round(statistics.median(v), 2) for name, v in times.items()}


# ---------------------------------------------------------------------------------------------
# The whole command
# ---------------------------------------------------------------------------------------------
@dataclass
class CalibrationResult:
    """What :func:`calibrate` wrote: ``files`` by role (absolute paths), the report dict."""

    out_dir: Path
    files: dict[str, Path]
    report: dict[str, Any]
    reused: bool
    guard: GuardResult | None = None
    seconds: float = 0.0
    warnings: list[str] = field(default_factory=list)


def make_evaluator(data: str, split: str, images: int | None, threads: int | None,
                   device: str = "cpu", ann: str | None = None,
                   images_dir: str | None = None) -> Callable[[Path], float]:
    """Mask AP (points) of an ONNX model through ONNX Runtime on ``device`` on ``data``/``split``
    or the annotation file ``ann`` with ``images_dir`` (first ``images``)."""

    def evaluate(path: Path) -> float:
        from ..app.evaluate import evaluate_model
        from ..runtime.runners import OnnxRunner

        m = evaluate_model(path, data=data, split=split, images=images, ann=ann, images_dir=images_dir,
                           runner=OnnxRunner(path, device=device, threads=threads))
        return float(m["AP"])

    return evaluate


def _reusable(out_dir: Path, key: dict[str, Any]) -> TensorsData | None:
    """The saved ranges when ``out_dir`` holds a cache computed from exactly ``key``."""
    from onnxruntime.quantization import load_tensors_data

    from .trt_cache import read_cache, read_key

    cache, ranges = out_dir / FILES["cache"], out_dir / FILES["ranges"]
    if read_key(cache) != key or not ranges.is_file():
        return None
    try:
        read_cache(cache)
        td = load_tensors_data(ranges)
    except (BadInputError, OSError, ValueError, KeyError, TypeError) as exc:
        log.info("calibration cache in %s is unusable (%s); calibrating again", out_dir, exc)
        return None
    if td.calibration_method != _method_enum(key["method"]):
        return None
    return td


@contextlib.contextmanager
def _staging(out_dir: Path) -> Iterator[Path]:
    """A hidden folder beside ``out_dir`` (same file system: renames are atomic); removed on exit."""
    from .._atomic import _check_parent

    _check_parent(out_dir)
    stage = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.calibrate-", dir=out_dir.parent))
    try:
        yield stage
    finally:
        shutil.rmtree(stage, ignore_errors=True)


def _commit(stage: Path, out_dir: Path, names: Sequence[str]) -> None:
    """Move the staged files into ``out_dir``: the folder in one rename when it is new, else file by
    file (each rename atomic), the report last so that its presence means a complete run."""
    if not out_dir.exists():
        final = stage.parent / f".{out_dir.name}.commit-{os.getpid()}"
        final.mkdir()
        for name in names:
            os.replace(stage / name, final / name)
        os.replace(final, out_dir)
        return
    order = sorted(names, key=lambda n: n == FILES["report"])
    for name in order:
        os.replace(stage / name, out_dir / name)


def calibrate(model: str | Path, data: str | Path = "synthetic", out_dir: str | Path = "calibration",
              settings: CalibrationSettings | None = None, **overrides: Any) -> CalibrationResult:
    """Calibrate ``model`` on ``data`` and write the INT8 models, cache and report into ``out_dir``.

    ``model``: a solo-deploy FP32 ONNX or a ``.safetensors``/``.ckpt`` (exported first).
    ``data``: image folder, video, COCO data set or ``synthetic`` (the calib split).
    ``settings``: every other option (:class:`CalibrationSettings`, default: all defaults);
    ``overrides``: keyword arguments naming its fields (``max_ap_drop=0.5``, ``threads=1``, ...),
    applied on top with ``dataclasses.replace``. ``max_ap_drop``: accuracy guard in mask-AP points,
    checked on ``eval_data``/``eval_split`` (first ``eval_images``; 0 disables the AP check and the
    guard). ``evaluate_fn(path) -> AP`` replaces the built-in evaluation (tests, custom metrics);
    ``device`` is where ONNX Runtime runs it (``cpu`` or ``cuda:N``). Nothing is written on failure.
    """
    t_start = time.perf_counter()
    s = _merge_settings(settings, overrides)
    say = s.progress or (lambda msg: log.info("%s", msg))
    out_dir = _output_folder(out_dir)
    src = _load_source(model, say)
    _check_eval_data(src.meta, s)
    calib = _load_images(data, src.meta, s, say)
    evaluate = s.evaluate_fn or make_evaluator(s.eval_data, s.eval_split, s.eval_images or None, s.threads, s.device,
                                               s.eval_ann, s.eval_images_dir)
    with _staging(out_dir) as stage, tempfile.TemporaryDirectory(prefix="solo-deploy-quant-") as work_dir:
        ranges = _calibration_ranges(src, calib, s, out_dir, stage, say)
        quant = _quantize_models(src, calib, ranges, s, evaluate, Path(work_dir), stage, say)
        accuracy = _final_accuracy(quant, s, evaluate, say)
        latency = _time_models(src, quant.cpu_path, calib, s, say)
        report = _write_report(str(model), src, calib, ranges, quant, accuracy, latency, s, stage, t_start)
        _commit(stage, out_dir, [*ranges.staged, *quant.staged, FILES["report"]])
    return _result(out_dir, report, ranges.reused, quant.guard, s.max_ap_drop, t_start)


# ---------------------------------------------------------------------------------------------
# The phases of calibrate, in order
# ---------------------------------------------------------------------------------------------
@dataclass
class _Source:
    """The FP32 model being calibrated and what the phases take from its graph."""

    path: Path  # the FP32 ONNX: the model itself, or the cached export of a .safetensors/.ckpt
    meta: ModelMeta
    props: dict[str, str]  # its metadata_props, copied into the INT8 models
    sha256: str
    batch: int  # the batch fed to the model: its static batch, or 1 when dynamic
    pre_nodes: list[str]  # preprocessing before the first Conv: FP32 in both models
    const_elementwise: list[str]  # Add/Sub/Mul/Div with a constant operand: FP32 in the TensorRT model
    output_layers: list[str]  # compute layers feeding graph outputs: FP32 in the CPU model
    candidates: list[str]  # compute layers the accuracy guard may keep FP32


@dataclass
class _Ranges:
    """The calibration ranges a run quantizes from, computed now or reused from ``out_dir``."""

    path: Path  # calibration.ranges.json: in out_dir when reused, else staged
    key: dict[str, Any]  # what they were computed from (the cache key)
    reused: bool
    n_tensors: int
    seconds: float  # calibration (or reuse) time
    staged: list[str]  # the files this phase put into the staging folder, in commit order


@dataclass
class _Quantized:
    """The two staged Q/DQ models, the layers kept FP32 and the guard's outcome."""

    cpu_path: Path
    trt_path: Path
    excluded: tuple[str, ...]  # layers the guard kept FP32 (both models)
    guard: GuardResult | None  # None without an AP check
    ap_fp32: float | None
    staged: list[str] = field(default_factory=lambda: [FILES["cpu"], FILES["trt"]])


def _merge_settings(settings: CalibrationSettings | None, overrides: dict[str, Any]) -> CalibrationSettings:
    """``settings`` (default: all defaults) with the keyword ``overrides`` of :func:`calibrate` applied.

    TypeError for a keyword that names no setting, as for an unknown parameter; BadInputError
    (from :meth:`CalibrationSettings.validate`) for an invalid value.
    """
    if settings is not None and not isinstance(settings, CalibrationSettings):
        raise TypeError(f"calibrate() settings must be a CalibrationSettings, got {type(settings).__name__}")
    known = {f.name for f in fields(CalibrationSettings)}
    for name in overrides:
        if name not in known:
            raise TypeError(f"calibrate() got an unexpected keyword argument {name!r}")
    if settings is None:  # validated once, as the parameters were
        return CalibrationSettings(**overrides)
    return replace(settings, **overrides) if overrides else settings


def _output_folder(out_dir: str | Path) -> Path:
    """``out_dir`` as a Path; BadInputError when it exists and is not a folder."""
    out_dir = Path(out_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise BadInputError(f"output {out_dir} exists and is not a folder")
    return out_dir


def _load_source(model: str | Path, say: Callable[[str], None]) -> _Source:
    """Phase 1: resolve ``model`` to its FP32 ONNX (exporting a .safetensors/.ckpt), validate and
    analyse it; -> :class:`_Source` (path, metadata, hash, batch, FP32-kept and candidate layers)."""
    from ..core.meta import file_sha256

    fp32_path = resolve_model(model, progress=say)
    meta, graph = load_fp32_onnx(fp32_path)
    if not _named(graph):
        raise BadInputError(f"{fp32_path}: graph nodes must have unique names (solo-deploy exports do); re-export it")
    pre_nodes, const_elementwise = default_exclusions(graph)
    cpu_fp32_outputs = output_layers(graph)
    return _Source(path=fp32_path, meta=meta, props={p.key: p.value for p in graph.metadata_props},
                   sha256=file_sha256(fp32_path), batch=_input_batch(graph)[1], pre_nodes=pre_nodes,
                   const_elementwise=const_elementwise, output_layers=cpu_fp32_outputs,
                   candidates=compute_nodes(graph, [*pre_nodes, *cpu_fp32_outputs]))


def _check_eval_data(meta: ModelMeta, s: CalibrationSettings) -> None:
    """Fail before the (slow) calibration when the evaluation set cannot score this model; -> None.

    Only for the built-in evaluation (no ``evaluate_fn``) with ``eval_images`` > 0.
    """
    if s.evaluate_fn is not None or s.eval_images <= 0:
        return
    from ..data.splits import open_split

    data, split = s.eval_data, s.eval_split
    _, _, class_names, _ = open_split(data, split, 1, ann=s.eval_ann, images_dir=s.eval_images_dir)
    if s.eval_ann is not None:
        data, split = s.eval_ann, "-"
    if len(class_names) != len(meta.class_names):
        raise BadInputError(f"the model knows {len(meta.class_names)} classes ({', '.join(meta.class_names)}) but the "
                            f"evaluation data {data}:{split} has {len(class_names)}: pass --eval-data with the model's "
                            f"own validation set, or --eval-images 0 to skip the accuracy check")


def _load_images(data: str | Path, meta: ModelMeta, s: CalibrationSettings,
                 say: Callable[[str], None]) -> CalibrationImages:
    """Phase 2: the calibration images of ``data``, preprocessed like the model's input
    (``images``/``min_images``/``force``/``video_stride``); -> CalibrationImages."""
    from .data import DEFAULT_IMAGES, MIN_IMAGES, load_calibration_images

    return load_calibration_images(data, meta.preprocess, DEFAULT_IMAGES if s.images is None else s.images,
                                   force=s.force, minimum=MIN_IMAGES if s.min_images is None else s.min_images,
                                   video_stride=s.video_stride, progress=say)


def _calibration_ranges(src: _Source, calib: CalibrationImages, s: CalibrationSettings, out_dir: Path, stage: Path,
                        say: Callable[[str], None]) -> _Ranges:
    """Phase 3: reuse the ranges in ``out_dir`` when their key (model, data, method, images) matches,
    else run the one calibration pass; stage the ranges, TensorRT cache (+ key) and the FP32 graph
    as needed. -> :class:`_Ranges` (ranges file, key, reused, tensors, seconds, staged names)."""
    from ..core.meta import file_sha256
    from .trt_cache import header, read_cache, scales_from_ranges, write_cache, write_key

    key = {"format": "solo-deploy-calibration-key/1", "model_sha256": src.sha256, "data_sha256": calib.sha256,
           "method": s.method, "images": calib.count, "input_hw": list(src.meta.preprocess.input_hw)}
    staged: list[str] = []
    t0 = time.perf_counter()
    td = _reusable(out_dir, key)
    reused = td is not None
    if reused:
        say(f"reusing the calibration cache in {out_dir} (same model, data and method)")
        ranges_path = out_dir / FILES["ranges"]
        head, scales = read_cache(out_dir / FILES["cache"])
        if head != header(s.method, s.trt_version):  # another TensorRT target: same scales, new header
            write_cache(stage / FILES["cache"], scales, s.method, s.trt_version)
            staged.append(FILES["cache"])
    else:
        from onnxruntime.quantization import save_tensors_data

        say(f"calibrating ({s.method}) on {calib.count} images")
        td = collect_ranges(src.path, calib.images, s.method, threads=s.threads, progress=say)
        ranges_path = stage / FILES["ranges"]
        save_tensors_data(td, ranges_path)
        scales = scales_from_ranges(tensor_ranges(td))
        write_cache(stage / FILES["cache"], scales, s.method, s.trt_version)
        write_key(stage / FILES["cache"], key)
        staged += [FILES["ranges"], FILES["cache"], KEY_FILE]
    calib_seconds = time.perf_counter() - t0

    # The TensorRT cache names tensors of this exact FP32 graph: ship the graph beside it.
    fp32_out = out_dir / FILES["fp32"]
    if not (fp32_out.is_file() and file_sha256(fp32_out) == src.sha256):
        shutil.copyfile(src.path, stage / FILES["fp32"])
        staged.append(FILES["fp32"])
    return _Ranges(path=ranges_path, key=key, reused=reused, n_tensors=len(td.data), seconds=calib_seconds,
                   staged=staged)


def _quantize_models(src: _Source, calib: CalibrationImages, ranges: _Ranges, s: CalibrationSettings,
                     evaluate: Callable[[Path], float], work: Path, stage: Path,
                     say: Callable[[str], None]) -> _Quantized:
    """Phase 4: the CPU model under the accuracy guard (when evaluating), then the TensorRT model
    with the same layers kept FP32, both stamped with their metadata and staged.
    -> :class:`_Quantized` (staged paths, excluded layers, guard result, FP32 AP)."""
    from .guard import exclusion_schedule, rank_sensitivity, run_guard

    tries: dict[tuple[str, ...], Path] = {}

    def quantize_cpu(excluded: tuple[str, ...]) -> Path:
        path = work / f"cpu-{len(tries)}.onnx"
        quantize_target(src.path, ranges.path, path, "cpu", s.method,
                        [*src.pre_nodes, *src.output_layers, *excluded], s.reduce_range)
        tries[excluded] = path
        return path

    guard: GuardResult | None = None
    ap_fp32 = None
    if s.evaluating:
        say("evaluating FP32 mask AP")
        ap_fp32 = float(evaluate(src.path))

        def try_exclusion(excluded: tuple[str, ...]) -> float:
            say(f"quantizing (CPU) with {len(excluded)} layer(s) kept FP32 and evaluating")
            return float(evaluate(quantize_cpu(excluded)))

        def rank():
            say("ranking layer sensitivity")
            sens_idx = np.linspace(0, calib.count - 1, min(SENSITIVITY_IMAGES, calib.count)).round().astype(int)
            return rank_sensitivity(src.path, tries[()], calib.images[np.unique(sens_idx)], src.candidates,
                                    threads=s.threads)

        guard = run_guard(try_exclusion, rank, ap_fp32, s.max_ap_drop,
                          schedule=exclusion_schedule(len(src.candidates), s.max_tries), budget_s=s.guard_budget_s)
        excluded = guard.excluded
        if not guard.met:
            log.warning("accuracy guard not met: best INT8 drop %.2f AP > %.2f with %d layer(s) in FP32",
                        guard.drop, s.max_ap_drop, len(excluded))
    else:
        excluded = ()
        quantize_cpu(())
    cpu_path = stage / FILES["cpu"]
    shutil.move(str(tries[excluded]), cpu_path)

    say("quantizing (TensorRT)")
    trt_path = stage / FILES["trt"]
    quantize_target(
        src.path, ranges.path, trt_path, "trt", s.method, [*src.pre_nodes, *src.const_elementwise, *excluded]
    )
    quant = _Quantized(cpu_path=cpu_path, trt_path=trt_path, excluded=excluded, guard=guard, ap_fp32=ap_fp32)
    _stamp_models(quant, src, calib, s)
    return quant


def _stamp_models(quant: _Quantized, src: _Source, calib: CalibrationImages, s: CalibrationSettings) -> None:
    """Part of phase 4: copy the source's metadata, plus the ``quantization`` section, into both
    staged models and validate them (:func:`_finalize`); -> None."""
    import onnxruntime

    from .._version import __version__

    quant_common = {"method": s.method, "images": calib.count, "data_sha256": calib.sha256,
                    "data_source": str(calib.source), "source_sha256": src.sha256,
                    "excluded_nodes": list(quant.excluded), "preprocessing_nodes": src.pre_nodes,
                    "calibration_cache": FILES["cache"], "per_channel": True, "tool": "onnxruntime.quantization",
                    "onnxruntime": onnxruntime.__version__, "solo_deploy": __version__}
    per_target = {
        "cpu": {"target": "onnxruntime-cpu", "activations": "uint8 asymmetric",
                "output_layers_fp32": src.output_layers, "reduce_range": bool(s.reduce_range)},
        "trt": {"target": "tensorrt", "activations": "int8 symmetric", "output_layers_fp32": [],
                "reduce_range": False},
    }
    for target, path in (("cpu", quant.cpu_path), ("trt", quant.trt_path)):
        _finalize(path, src.props, {**quant_common, **per_target[target], "weights": "int8 symmetric per-channel",
                                    "op_types": TARGETS[target]["op_types"]})


def _final_accuracy(quant: _Quantized, s: CalibrationSettings, evaluate: Callable[[Path], float],
                    say: Callable[[str], None]) -> tuple[float | None, float | None]:
    """Phase 5a: AP of the final models; -> (CPU model's AP from the guard, TensorRT model's AP
    evaluated on ORT CPU), both None without an AP check."""
    if not s.evaluating:
        return None, None
    ap_cpu = quant.guard.ap if quant.guard is not None else None
    say("evaluating the TensorRT Q/DQ model on ORT CPU (simulation)")
    return ap_cpu, float(evaluate(quant.trt_path))


def _time_models(src: _Source, cpu_path: Path, calib: CalibrationImages, s: CalibrationSettings,
                 say: Callable[[str], None]) -> dict[str, Any] | None:
    """Phase 5b: median latency of the FP32 model vs the INT8 CPU model on one batch of calibration
    images (``threads`` or all cores, and 1 thread when that is more), ``bench_runs`` interleaved
    runs; -> the report's latency section, or None when ``bench_runs`` is 0."""
    if s.bench_runs <= 0:
        return None
    threads_used = int(s.threads) if s.threads else (os.cpu_count() or 1)
    models, batch = {"fp32": src.path, "int8": cpu_path}, calib.images[:src.batch]
    say(f"timing FP32 vs INT8 on the CPU ({threads_used} threads)")
    lat = cpu_latency(models, batch, threads_used, s.bench_runs)
    latency = {"fp32_ms": lat["fp32"], "int8_ms": lat["int8"], "speedup": round(lat["fp32"] / lat["int8"], 3),
               "threads": threads_used, "runs": s.bench_runs, "batch": src.batch,
               "backend": "onnxruntime CPUExecutionProvider", "statistic": "median, interleaved"}
    if threads_used > 1:
        # One thread per model is how several streams share a CPU; INT8 gains more there
        # (no parallel-section overhead in its shorter operators).
        say("timing FP32 vs INT8 on the CPU (1 thread)")
        one = cpu_latency(models, batch, 1, s.bench_runs)
        latency["single_thread"] = {"fp32_ms": one["fp32"], "int8_ms": one["int8"],
                                    "speedup": round(one["fp32"] / one["int8"], 3)}
    return latency


def _write_report(model: str, src: _Source, calib: CalibrationImages, ranges: _Ranges, quant: _Quantized,
                  accuracy: tuple[float | None, float | None], latency: dict[str, Any] | None,
                  s: CalibrationSettings, stage: Path, t_start: float) -> dict[str, Any]:
    """Phase 6a: build the report (:func:`.report.build_report`) and stage it as
    ``calibration_report.json``; -> the report dict."""
    from .report import build_report

    ap_cpu, ap_trt = accuracy
    report = build_report(
        model=model, fp32_path=src.path, model_sha=src.sha256, meta=src.meta, calib=calib, method=s.method,
        key=ranges.key, reused=ranges.reused, n_tensors=ranges.n_tensors, calib_seconds=ranges.seconds,
        eval_info={"data": (s.eval_ann or s.eval_data) if s.evaluate_fn is None else "custom", "split": s.eval_split,
                   "images": s.eval_images, "device": s.device} if s.evaluating else None,
        ap_fp32=quant.ap_fp32, ap_cpu=ap_cpu, ap_trt=ap_trt, max_ap_drop=s.max_ap_drop, guard=quant.guard,
        latency=latency, precision={"cpu": precision_summary(quant.cpu_path), "trt": precision_summary(quant.trt_path)},
        pre_nodes=src.pre_nodes, const_elementwise=src.const_elementwise, output_layers=src.output_layers,
        candidates=len(src.candidates),
        targets=TARGETS, files={role: FILES[role] for role in ("fp32", "trt", "cpu", "cache", "ranges", "report")}
        | {"cache_key": KEY_FILE}, reduce_range=s.reduce_range, seconds=time.perf_counter() - t_start)
    from .._atomic import write_json

    write_json(stage / FILES["report"], report)
    return report


def _result(out_dir: Path, report: dict[str, Any], reused: bool, guard: GuardResult | None, max_ap_drop: float,
            t_start: float) -> CalibrationResult:
    """Phase 6b (after the commit): -> the CalibrationResult (final paths by role, warnings)."""
    files = {role: out_dir / FILES[role] for role in ("fp32", "trt", "cpu", "cache", "ranges", "report")}
    files["cache_key"] = out_dir / KEY_FILE
    warnings = []
    if guard is not None and not guard.met:
        warnings.append(f"accuracy guard not met: INT8 (CPU) loses {guard.drop:.2f} AP > --max-ap-drop {max_ap_drop} "
                        f"with {len(guard.excluded)} layer(s) kept FP32")
    return CalibrationResult(out_dir=out_dir, files=files, report=report, reused=reused, guard=guard,
                             seconds=time.perf_counter() - t_start, warnings=warnings)
