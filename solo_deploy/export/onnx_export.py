"""Export a solo-deploy model file (.ckpt / .safetensors) to ONNX.

Graph: ``images`` uint8 (N, H, W, 3) RGB letterboxed -> :class:`DeployWrapper` (cast, normalise,
NHWC->NCHW, network, decode) -> ``scores`` (N, cells, C), ``kernels`` (N, cells, E) and
``mask_feat`` (N, E, H/4, W/4) for SOLOv2 or ``mask_feat_0..4`` for SOLO; decoupled SOLO:
``scores`` and ``mask_x_0..4``, ``mask_y_0..4`` (N, S_l, h_l, w_l). All float32.

Exporter choice: the TorchScript-based exporter, ``torch.onnx.export(..., dynamo=False)``.
- torch 2.14's default, the dynamo exporter, needs ``onnxscript``, which solo-deploy does not
  depend on (and is not installed here); adding it only to trace a plain CNN is not worth it.
- The TorchScript exporter is deprecated but still ships in 2.14 (opsets up to 20), is fast
  (about a second for our tiny test models), honours ``dynamic_axes`` for batch/H/W, and emits
  the classic operator set that TensorRT's ONNX parser and ORT handle well (GroupNorm becomes
  InstanceNormalization + reshapes, interpolation becomes Resize).
- If a future torch drops it, :func:`export_onnx` fails with a clear ``RuntimeFailure``;
  moving to ``dynamo=True`` then means adding onnxscript and re-checking the TensorRT op list.

Pipeline: trace -> make the uint8 input feed a Cast first (TensorRT accepts uint8 only as a
network input consumed by a Cast) -> name/declare output shapes -> ``onnx.checker`` -> shape
inference -> onnxslim (input/output names kept) -> checker again -> metadata -> static
TensorRT compatibility check (warnings) -> parity against PyTorch (ORT CPU) -> atomic write.
Nothing is written when any step fails.

Dynamic export (``dynamic=True``): batch, H and W are dynamic; H and W must be multiples of 32
and at least 64 (the traced CoordConv keeps its ``w - 1 >= 1`` branch, so 32-pixel sides would
divide by zero at stride 32). Keep-ratio models are always exported dynamic: their graph takes
the resized image at any H, W >= 1 and pads it to a multiple of 32 itself.

FP16 (``half=True``): traced from a half-precision copy of the network, which is what ran on
ORT CPU in our notes (onnxconverter-common's float16 pass produced invalid graphs). The graph's
boundary keeps its declared types: uint8 in, cast/normalise in float32, Cast to float16 before
the first convolution, float16 network, category logits cast to float32 for sigmoid and point
NMS (float16 ties flip point-NMS peaks), Cast to float32 on every output. GroupNorm
stays float32 (Cast in/out): its variance over large maps is the numerically sensitive step.
"""
from __future__ import annotations

import contextlib
import copy
import dataclasses
import json
import logging
import tempfile
import time
import warnings
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .._atomic import atomic_path
from .._paths import check_outputs
from ..errors import BadInputError, RuntimeFailure, one_line

if TYPE_CHECKING:  # pragma: no cover
    import onnx
    import torch

    from ..core.meta import ModelMeta
    from .parity import ParityReport

log = logging.getLogger("solo_deploy.export")

__all__ = [
    "INPUT_DESCRIPTION",
    "MIN_OPSET",
    "ONNX_META_KEY",
    "ExportResult",
    "export_onnx",
    "max_opset",
    "supported_opsets",
]

ONNX_META_KEY = "solo_deploy"  # the key runtime.runners.onnx_meta reads
INPUT_DESCRIPTION = "NHWC uint8 RGB letterboxed"
INPUT_DESCRIPTION_KEEP_RATIO = "NHWC uint8 RGB resized keeping the aspect ratio (the graph pads to a multiple of 32)"
MIN_OPSET = 13  # Resize-13 semantics and Split/Squeeze with tensor inputs; TensorRT 10 parses 9..24
DEFAULT_TOLERANCE = {"fp32": 1e-4, "fp16": 1e-2}
DYNAMIC_MIN_SIDE = 64


def max_opset() -> int:
    """Highest opset the TorchScript exporter of the installed torch can write."""
    try:
        from torch.onnx import _constants

        return int(getattr(_constants, "ONNX_TORCHSCRIPT_EXPORTER_MAX_OPSET", 20))
    except Exception:  # noqa: BLE001 - private module; 20 is torch 2.x's documented ceiling
        return 20


def supported_opsets() -> range:
    return range(MIN_OPSET, max_opset() + 1)


@dataclass(frozen=True)
class ExportResult:
    """What :func:`export_onnx` wrote. ``export_info`` is the metadata's ``export`` section."""

    path: Path
    meta: ModelMeta
    export_info: dict[str, Any]
    size_bytes: int
    parity: ParityReport | None = None
    trt_problems: tuple[str, ...] = ()
    seconds: float = 0.0
    output_names: tuple[str, ...] = field(default_factory=tuple)

    @property
    def precision(self) -> str:
        return str(self.export_info["precision"])

    @property
    def dynamic(self) -> bool:
        return bool(self.export_info["dynamic"])

    @property
    def opset(self) -> int:
        return int(self.export_info["opset"])

    def summary(self) -> str:
        return "\n".join(report_lines(
            f"wrote {self.path} ({self.size_bytes / 2**20:.1f} MiB, {self.precision}, opset {self.opset}, "
            f"input {self.export_info['input']['shape']}, {self.seconds:.1f} s)", self.parity, self.trt_problems))


def report_lines(first: str, parity: Any, trt_problems: tuple[str, ...]) -> list[str]:
    """What an export says: ``first``, the parity summary (when checked), the TensorRT check."""
    lines = [first]
    if parity is not None:
        lines.append(f"parity: {parity.summary()}")
    if trt_problems:
        lines.append(f"TensorRT check: {len(trt_problems)} problem(s), e.g. {trt_problems[0]}")
    else:
        lines.append("TensorRT check: no problems found (static check)")
    return lines


# ---------------------------------------------------------------------------------------------
# Modules traced for export
# ---------------------------------------------------------------------------------------------
def _half_deploy_module(net: torch.nn.Module, spec: Any) -> torch.nn.Module:
    """A float16 deploy module with float32 boundaries (uint8 in, float32 out); ``net`` untouched."""
    from torch import nn

    from ..model.deploy import DeployWrapper

    class FP32GroupNorm(nn.Module):
        """GroupNorm computed in float32 inside a float16 network (Cast in, Cast out)."""

        def __init__(self, gn: nn.GroupNorm) -> None:
            super().__init__()
            self.gn = gn.float()

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.gn(x.float()).to(x.dtype)

    class FloatOutputs(nn.Module):
        def __init__(self, inner: nn.Module) -> None:
            super().__init__()
            self.inner = inner

        def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, ...]:
            return tuple(o.float() for o in self.inner(images))

    half_net = copy.deepcopy(net).half().eval()
    for name, module in list(half_net.named_modules()):
        if isinstance(module, nn.GroupNorm):
            parent_name, _, child = name.rpartition(".")
            parent = half_net.get_submodule(parent_name) if parent_name else half_net
            setattr(parent, child, FP32GroupNorm(module))
    # DeployWrapper keeps its mean/std buffers in float32 (we never call .half() on it), so the
    # input normalisation runs in float32; this hook casts the normalised image to float16.
    half_net.register_forward_pre_hook(lambda _m, args: (args[0].half(), *args[1:]))
    # Category logits go back to float32 before sigmoid and point NMS: in float16, neighbouring
    # peaks tie and point NMS keeps a different cell than float32 does (score parity 2e-1).
    half_net.register_forward_hook(lambda _m, _args, out: out._replace(cate=[c.float() for c in out.cate]))
    return FloatOutputs(DeployWrapper(half_net, spec)).eval()


@contextlib.contextmanager
def _coord_features_export_safe(active: bool) -> Iterator[None]:
    """During a float16 trace, compute CoordConv grids in float32 and cast.

    The TorchScript exporter cannot export ``torch.arange(..., dtype=float16)`` (its shape
    inference fails with "tensor does not have a device"). ``heads.coord_features`` only reads
    the shape/dtype/device of its input, so we hand it a one-channel float32 view and cast the
    result: same values, exportable. Restored on exit.
    """
    if not active:
        yield
        return
    import torch

    from ..model import heads

    original = heads.coord_features

    def coord_features(x: torch.Tensor) -> torch.Tensor:
        if x.dtype == torch.float32:
            return original(x)
        return original(x[:, :1].float()).to(x.dtype)

    heads.coord_features = coord_features
    try:
        yield
    finally:
        heads.coord_features = original


# ---------------------------------------------------------------------------------------------
# Graph edits
# ---------------------------------------------------------------------------------------------
def _cast_input_first(model: onnx.ModelProto, input_name: str) -> bool:
    """Rewrite ``images -> Transpose -> Cast`` as ``images -> Cast -> Transpose`` (same values).

    TensorRT supports uint8 only as a network input that feeds a Cast; the wrapper permutes
    before casting. Returns True when the graph was changed.
    """
    import onnx

    graph = model.graph
    consumers: dict[str, list[onnx.NodeProto]] = {}
    for node in graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node)
    changed = False
    for tnode in list(consumers.get(input_name, [])):
        if tnode.op_type != "Transpose":
            continue
        after = consumers.get(tnode.output[0], [])
        if len(after) != 1 or after[0].op_type != "Cast" or tnode.output[0] in {o.name for o in graph.output}:
            continue
        cast = after[0]
        cast_out = f"{input_name}_cast"
        new_cast = onnx.helper.make_node("Cast", [input_name], [cast_out], name=f"{cast.name or 'Cast'}_input_first",
                                         to=next(a for a in cast.attribute if a.name == "to").i)
        final_out = cast.output[0]
        tnode.input[0] = cast_out
        tnode.output[0] = final_out
        nodes = [n for n in graph.node if n is not cast]
        idx = next(i for i, n in enumerate(nodes) if n is tnode)
        nodes.insert(idx, new_cast)
        del graph.node[:]
        graph.node.extend(nodes)
        changed = True
    return changed


def _set_io_shapes(model: onnx.ModelProto, input_name: str, names: list[str], sample_in: tuple[int, ...],
                   sample_out: list[tuple[int, ...]], dynamic: bool, padded: bool = False) -> dict[str, list[Any]]:
    """Declare readable input/output shapes: static numbers, or ``batch``/``height``/``width``
    and ``height_div{s}`` for the mask features when dynamic (``padded_height_div{s}`` when the
    graph pads its input to a multiple of 32). Returns them by name."""
    pre = "padded_" if padded else ""
    shapes: dict[str, list[Any]] = {}
    n, h, w, c = sample_in
    shapes[input_name] = ["batch", "height", "width", c] if dynamic else [n, h, w, c]
    for name, shp in zip(names, sample_out):
        if not dynamic:
            shapes[name] = list(shp)
        elif len(shp) == 4:  # mask features (N, E, H/s, W/s)
            s = h // shp[2]
            shapes[name] = ["batch", shp[1], f"{pre}height_div{s}", f"{pre}width_div{s}"]
        else:
            shapes[name] = ["batch", *shp[1:]]
    for vi in list(model.graph.input) + list(model.graph.output):
        if vi.name not in shapes:
            continue
        dims = vi.type.tensor_type.shape.dim
        del dims[:]
        for d in shapes[vi.name]:
            dim = dims.add()
            if isinstance(d, str):
                dim.dim_param = d
            else:
                dim.dim_value = int(d)
    return shapes




def _torch_export(module: torch.nn.Module, sample: torch.Tensor, input_name: str, names: list[str], opset: int,
                  dynamic: bool, half: bool, workdir: Path) -> onnx.ModelProto:
    import onnx
    import torch

    raw = workdir / "raw.onnx"
    dynamic_axes = None
    if dynamic:
        dynamic_axes = {input_name: {0: "batch", 1: "height", 2: "width"}}
        dynamic_axes.update({name: {0: "batch"} for name in names})
    with warnings.catch_warnings(record=True) as caught, _coord_features_export_safe(half), torch.no_grad():
        warnings.simplefilter("always")
        try:
            torch.onnx.export(module, (sample,), str(raw), input_names=[input_name], output_names=names,
                              opset_version=opset, dynamo=False, do_constant_folding=True,
                              dynamic_axes=dynamic_axes)
        except TypeError as exc:
            if "dynamo" in str(exc):
                raise RuntimeFailure("this torch has no TorchScript ONNX exporter (dynamo=False); solo-deploy "
                                     "export needs torch < 2.15 or an update of solo_deploy.export") from None
            raise RuntimeFailure(f"torch.onnx.export failed: {one_line(exc)}") from None
        except Exception as exc:  # noqa: BLE001 - exporter errors of every kind
            raise RuntimeFailure(f"torch.onnx.export failed: {one_line(exc)}") from None
    # TracerWarnings (shape-to-bool conversions in CoordConv) are expected and documented above.
    for w in {str(w.message).splitlines()[0] for w in caught}:
        log.debug("exporter warning: %s", w)
    return onnx.load(str(raw))


def _simplify(model: onnx.ModelProto, keep: list[str]) -> onnx.ModelProto:
    """onnxslim: constant folding, dead-code and pattern clean-up. ``keep``: the graph's real
    input/output names, which must survive unchanged (weight inputs of a stripped graph may go)."""
    import onnxslim

    logging.getLogger("onnxslim").setLevel(logging.WARNING)
    try:
        slim = onnxslim.slim(model)
    except Exception as exc:  # noqa: BLE001 - a failed simplification is ours, not the user's
        raise RuntimeFailure(f"onnxslim failed: {one_line(exc)}") from None
    if slim is None:
        raise RuntimeFailure("onnxslim returned no model")
    names = {i.name for i in slim.graph.input} | {o.name for o in slim.graph.output}
    lost = [n for n in keep if n not in names]
    if lost:
        raise RuntimeFailure(f"onnxslim dropped or renamed graph inputs/outputs {lost}")
    return slim


def _check_and_infer(model: onnx.ModelProto, stage: str) -> onnx.ModelProto:
    import onnx

    try:
        onnx.checker.check_model(model, full_check=False)
        return onnx.shape_inference.infer_shapes(model, check_type=True, strict_mode=True, data_prop=True)
    except Exception as exc:  # noqa: BLE001 - ValidationError / InferenceError
        raise RuntimeFailure(f"the exported graph is invalid ({stage}): {one_line(exc)}") from None


def _versions() -> dict[str, str | None]:
    from .._version import versions

    out = versions("torch", "onnx", "onnxslim")
    out["torch"] = (out["torch"] or "").split("+")[0]  # without the local build tag (+cpu, +cu124)
    out["onnxslim"] = out["onnxslim"] or "unknown"
    return out


def _set_metadata(model: onnx.ModelProto, meta: ModelMeta, export_info: dict[str, Any]) -> None:
    from .._version import __version__

    payload = meta.to_dict()
    payload["export"] = export_info
    props = {
        ONNX_META_KEY: json.dumps(payload, sort_keys=True),
        "preset": meta.preset,
        "class_names": json.dumps(list(meta.class_names)),
    }
    del model.metadata_props[:]
    for key, value in props.items():
        entry = model.metadata_props.add()
        entry.key, entry.value = key, value
    model.producer_name = "solo-deploy"
    model.producer_version = __version__
    model.doc_string = (f"solo-deploy {meta.model.arch} ({meta.preset}) export; input '{export_info['input']['name']}' "
                        f"{INPUT_DESCRIPTION}; metadata key '{ONNX_META_KEY}'")


# ---------------------------------------------------------------------------------------------
# Public entry point
# ---------------------------------------------------------------------------------------------
def _validate_args(opset: int, batch: int, output: Path, imgsz: tuple[int, int] | None, dynamic: bool) -> None:
    from .._atomic import _check_parent

    ops = supported_opsets()
    if not isinstance(opset, int) or opset not in ops:
        raise BadInputError(f"opset {opset} is not supported: choose {ops.start}..{ops.stop - 1} (the TorchScript "
                            f"exporter of torch stops at {ops.stop - 1}; TensorRT 10 parses 9..24)")
    if not isinstance(batch, int) or batch < 1:
        raise BadInputError(f"batch must be a positive integer, got {batch!r}")
    if output.exists() and output.is_dir():
        raise BadInputError(f"cannot write {output}: it is a folder")
    if imgsz is not None and (len(tuple(imgsz)) != 2):
        raise BadInputError(f"imgsz must be (H, W), got {imgsz!r}")
    _check_parent(output)  # fail before the (slow) export when the folder is not writable


def export_onnx(model_path: str | Path, output: str | Path, imgsz: tuple[int, int] | None = None, batch: int = 1,
                dynamic: bool = False, opset: int = 17, half: bool = False, check_parity: bool = True,
                tolerance: float | None = None, *, simplify: bool = True, min_iou: float = 0.5) -> ExportResult:
    """Export a ``.ckpt`` / ``.safetensors`` model to ONNX at ``output`` (atomically).

    ``imgsz`` (H, W): input size (multiples of 32; default: the model's ``preprocess.input_hw``).
    ``batch``: static batch size (the traced batch when ``dynamic``). ``dynamic``: batch, H, W
    dynamic. ``half``: float16 graph with float32/uint8 boundaries. ``tolerance``: maximum
    relative output difference against PyTorch float32 (default 1e-4, or 1e-2 with ``half``);
    beyond it a :class:`~solo_deploy.export.parity.ParityError` is raised and nothing is written.
    Bad inputs (missing/corrupt model, unsupported opset, unwritable output) raise BadInputError.
    """
    import onnx
    import torch

    from ..core.meta import file_sha256
    from ..model.deploy import INPUT_NAME, DeployWrapper, output_names
    from ..model.modelfile import build_network
    from .onnx_checks import restore_weights, strip_weights
    from .parity import ParityError
    from .parity import check_parity as run_parity
    from .trt_ops import check_tensorrt_compat

    t0 = time.perf_counter()
    model_path, output = Path(model_path), Path(output)
    check_outputs([("output", output)], [("model", model_path)])
    _validate_args(opset, batch, output, imgsz, dynamic)
    precision = "fp16" if half else "fp32"
    tol = float(DEFAULT_TOLERANCE[precision] if tolerance is None else tolerance)
    if not tol > 0:
        raise BadInputError(f"tolerance must be positive, got {tolerance!r}")

    net, meta = build_network(model_path)
    spec = meta.preprocess.with_size(tuple(imgsz) if imgsz is not None else None)
    meta = dataclasses.replace(meta, preprocess=spec)
    h, w = spec.input_hw
    if spec.pads_in_graph and not dynamic:
        # keep-ratio models take each image at its own resized size: height and width must vary.
        log.info("keep-ratio preprocessing: exporting with dynamic batch, height and width")
        dynamic = True
    if dynamic and min(h, w) < DYNAMIC_MIN_SIDE:
        raise BadInputError(f"dynamic export needs an input size of at least {DYNAMIC_MIN_SIDE}x{DYNAMIC_MIN_SIDE}, "
                            f"got {h}x{w}")
    names = output_names(meta.model)
    reference = DeployWrapper(net, spec).eval()
    module = _half_deploy_module(net, spec) if half else reference

    sample = torch.zeros((batch, h, w, 3), dtype=torch.uint8)
    with torch.inference_mode(), _coord_features_export_safe(half):
        sample_out = [tuple(int(d) for d in o.shape) for o in module(sample)]

    with tempfile.TemporaryDirectory(prefix="solo-deploy-export-") as tmp:
        full = _torch_export(module, sample, INPUT_NAME, names, opset, dynamic, half, Path(tmp))
    if _cast_input_first(full, INPUT_NAME):
        log.debug("moved the uint8 input's Cast before its Transpose (TensorRT takes uint8 only into a Cast)")
    io_shapes = _set_io_shapes(full, INPUT_NAME, names, tuple(sample.shape), sample_out, dynamic,
                               padded=spec.pads_in_graph)
    # Check, infer and simplify a weight-free skeleton: serialising the weights for every
    # checker/inference/onnxslim pass costs seconds per pass on ResNet-50 models.
    model, weights = strip_weights(full)
    del full
    model = _check_and_infer(model, "after torch.onnx.export")
    if simplify:
        model = _check_and_infer(_simplify(model, [INPUT_NAME, *names]), "after onnxslim")

    strides = {name: h // shp[2] for name, shp in zip(names, sample_out) if len(shp) == 4}
    export_info: dict[str, Any] = {
        "format": "onnx",
        "input": {"name": INPUT_NAME,
                  "description": INPUT_DESCRIPTION_KEEP_RATIO if spec.pads_in_graph else INPUT_DESCRIPTION,
                  "layout": "NHWC", "dtype": "uint8", "channel_order": "RGB", "letterboxed": not spec.pads_in_graph,
                  "padded_in_graph": spec.pads_in_graph, "size_hw": [h, w], "shape": io_shapes[INPUT_NAME]},
        "outputs": {name: io_shapes[name] for name in names},
        "mask_feat_strides": strides,
        "batch": None if dynamic else batch,
        "dynamic": dynamic,
        "dynamic_min_side": DYNAMIC_MIN_SIDE if dynamic else None,
        "opset": opset,
        "precision": precision,
        "grids": list(meta.model.grids),
        "strides": list(meta.model.strides),
        "num_cells": meta.model.num_cells,
        "source_model": model_path.name,
        "source_sha256": file_sha256(model_path),
        "exporter": "torch.onnx.export(dynamo=False)",
        "simplified": bool(simplify),
        "versions": _versions(),
    }
    _set_metadata(model, meta, export_info)

    problems = tuple(check_tensorrt_compat(model))
    for p in problems:
        log.warning("TensorRT compatibility: %s", p)

    data = restore_weights(model, weights).SerializeToString()
    del model, weights
    if len(data) >= 2**31:
        raise BadInputError(f"the exported model is {len(data) / 2**30:.1f} GiB, over ONNX's 2 GiB single-file limit")
    try:
        onnx.checker.check_model(data)
    except Exception as exc:  # noqa: BLE001
        raise RuntimeFailure(f"the exported graph is invalid (with weights): {one_line(exc)}") from None

    report = None
    if check_parity:
        parity_batch = 2 if dynamic else batch  # a dynamic graph is checked at another batch than traced
        report = run_parity(data, reference, meta, output_names=names, batch=parity_batch, tolerance=tol,
                            min_iou=min_iou, test_label=f"onnxruntime {precision}")
        log.info("parity: %s", report.summary())
        if not report.ok:
            raise ParityError(f"export of {model_path.name} rejected, nothing written: {report.summary()}")

    with atomic_path(output) as tmp_path:
        tmp_path.write_bytes(data)
    return ExportResult(path=output, meta=meta, export_info=export_info, size_bytes=len(data), parity=report,
                        trt_problems=problems, seconds=time.perf_counter() - t0, output_names=tuple(names))
