"""Static TensorRT compatibility check of an ONNX graph, runnable on any CPU machine.

It cannot replace a real engine build, but it catches the usual surprises before one:

1. **Operators**: every node must be in the default ONNX domain and marked supported in
   TensorRT's ONNX operator support list, one per supported TensorRT major version, each naming
   its source and date in its header: ``trt10_onnx_ops.txt`` (onnx-tensorrt's
   ``docs/operators.md`` for TensorRT 10.15, opsets 9..24) and ``trt11_onnx_ops.txt`` (TensorRT
   11.1, derived from the 10.15 list and the 11.0/11.1 release notes; see its header). By
   default a graph is checked against every list; custom domains need plugins.
2. **Opset** of the default domain inside each list's range.
3. **Data-dependent output shapes**: ``NonZero``, ``NonMaxSuppression``, ``Unique``,
   ``Compress`` and ``TopK`` with a non-constant K. TensorRT 10 can run some of these, but only
   through output allocators and slow paths; our deploy graphs must have fixed output shapes.
   ``TopK`` with K >= 3840 is refused (TensorRT's limit; SOLO has 3872 cells).
4. **Data types**, per tensor (after ONNX shape inference):
   - float64 anywhere: TensorRT casts DOUBLE down to FLOAT with clamping, silently;
   - string, complex, int16, uint16/32/64: no TensorRT type;
   - uint8: only as a network input/output, and a uint8 input may only feed ``Cast`` nodes
     (e.g. a ``Transpose`` on the uint8 image is refused);
   - int8/int4/fp8/fp4 only as quantized types: produced by ``QuantizeLinear`` or stored as
     initializers, consumed by ``DequantizeLinear``;
   - int64 is accepted: TensorRT 10 has native INT64 (shape tensors, indices);
   - each node's first input type against the operator's type column of the list.
5. **Resize** attributes: modes ``nearest``/``linear``, the supported coordinate modes,
   no antialiasing, aspect policy ``stretch``; when ``scales`` is a tensor computed in the graph
   (not a constant), an ``axes`` attribute must be the iota vector 0..rank-1.
6. **Q/DQ** (``QuantizeLinear``/``DequantizeLinear``, operators.md: the zero point must be 0;
   TensorRT's quantize layer takes build-time constant scales): the scale must be a constant
   (an initializer or a Constant, possibly through Cast/Identity/Reshape/(Un)Squeeze), the zero
   point, when given, a constant whose values are all 0.

``check_tensorrt_compat(model) -> list[str]``: one readable line per problem, empty when clean.
"""
from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from functools import cache
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # pragma: no cover
    import onnx

__all__ = ["DATA_DEPENDENT_OPS", "SUPPORTED_MAJORS", "OpSupport", "SupportList", "check_tensorrt_compat",
           "load_support_list", "load_support_lists"]

DATA_DEPENDENT_OPS = frozenset({"NonZero", "NonMaxSuppression", "Unique", "Compress"})
TOPK_MAX_K = 3840  # TensorRT's TopK limit (operators.md: K below 3840)
RESIZE_COORD_MODES = frozenset({"half_pixel", "pytorch_half_pixel", "tf_half_pixel_for_nn", "asymmetric",
                                "align_corners"})
RESIZE_MODES = frozenset({"nearest", "linear"})
_QUANTIZED = frozenset({"INT8", "INT4", "FP8", "FP4"})
# One operator list per supported TensorRT major version (package data, "export/*.txt").
_DATA_FILES = {10: "trt10_onnx_ops.txt", 11: "trt11_onnx_ops.txt"}
SUPPORTED_MAJORS = tuple(sorted(_DATA_FILES))
# Ops whose output is a constant when every input is: enough to see a scale through an export's casts.
_CONST_PASSTHROUGH = frozenset({"Cast", "CastLike", "Identity", "Reshape", "Squeeze", "Unsqueeze", "Flatten"})


@dataclass(frozen=True)
class OpSupport:
    name: str
    supported: bool
    types: frozenset[str]
    note: str


@dataclass(frozen=True)
class SupportList:
    """The parsed operator list and its header (source, date, TensorRT version, opset range)."""

    ops: dict[str, OpSupport]
    tensorrt: str
    opset_min: int
    opset_max: int
    source: str
    date: str = "unknown"
    url: str = ""

    @property
    def major(self) -> int:
        return int(self.tensorrt.split(".")[0]) if self.tensorrt.split(".")[0].isdigit() else 0


def _parse_support_list(text: str, name: str = "operator list") -> SupportList:
    ops: dict[str, OpSupport] = {}
    header: dict[str, str] = {}
    for raw in text.splitlines():
        line = raw.strip()
        if not line:
            continue
        if line.startswith("#"):
            key, sep, value = line.lstrip("# ").partition(":")
            if sep and key in ("source", "tensorrt", "opset", "url", "date"):
                header[key] = value.strip()
            continue
        parts = [p.strip() for p in line.split("|")]
        if len(parts) < 2:
            raise ValueError(f"bad line in {name}: {raw!r}")
        types = frozenset(t.strip() for t in (parts[2] if len(parts) > 2 else "").split(",") if t.strip())
        ops[parts[0]] = OpSupport(parts[0], parts[1].upper() == "Y", types, parts[3] if len(parts) > 3 else "")
    lo, _, hi = header.get("opset", "9-24").partition("-")
    return SupportList(ops=ops, tensorrt=header.get("tensorrt", "unknown"), opset_min=int(lo), opset_max=int(hi),
                       source=header.get("source", name), date=header.get("date", "unknown"),
                       url=header.get("url", ""))


@cache
def load_support_list(major: int = 10) -> SupportList:
    """The operator list shipped for TensorRT ``major`` (``solo_deploy/export/trt<major>_onnx_ops.txt``)."""
    if major not in _DATA_FILES:
        raise ValueError(f"no ONNX operator list for TensorRT {major}; known: {', '.join(map(str, SUPPORTED_MAJORS))}")
    name = _DATA_FILES[major]
    return _parse_support_list(resources.files(__package__).joinpath(name).read_text(encoding="utf-8"), name)


def load_support_lists() -> tuple[SupportList, ...]:
    """Every shipped list, oldest TensorRT major first."""
    return tuple(load_support_list(m) for m in SUPPORTED_MAJORS)


def _onnx_type_names() -> dict[int, str]:
    """ONNX TensorProto elem types -> TensorRT type names ("" for types TensorRT has not)."""
    import onnx

    T = onnx.TensorProto
    names = {T.FLOAT: "FP32", T.FLOAT16: "FP16", T.BFLOAT16: "BF16", T.INT32: "INT32", T.INT64: "INT64",
             T.INT8: "INT8", T.UINT8: "UINT8", T.BOOL: "BOOL", T.DOUBLE: "DOUBLE"}
    for attr, name in (("INT4", "INT4"), ("FLOAT4E2M1", "FP4"), ("FLOAT8E4M3FN", "FP8"), ("FLOAT8E5M2", "FP8"),
                       ("FLOAT8E4M3FNUZ", "FP8"), ("FLOAT8E5M2FNUZ", "FP8")):
        if hasattr(T, attr):
            names[getattr(T, attr)] = name
    return names


def _walk_graphs(graph: onnx.GraphProto, prefix: str = "") -> Iterator[tuple[str, onnx.GraphProto]]:
    yield prefix, graph
    for node in graph.node:
        for attr in node.attribute:
            if attr.HasField("g"):
                yield from _walk_graphs(attr.g, f"{prefix}{node.name or node.op_type}/")
            for sub in attr.graphs:
                yield from _walk_graphs(sub, f"{prefix}{node.name or node.op_type}/")


def _const_int_values(graph: onnx.GraphProto) -> dict[str, list[int]]:
    """Integer constants (initializers and Constant nodes) by tensor name, for K/axes lookups."""
    import onnx
    from onnx import numpy_helper

    values: dict[str, list[int]] = {}
    for init in graph.initializer:
        if init.data_type in (onnx.TensorProto.INT64, onnx.TensorProto.INT32) and \
                init.data_location != onnx.TensorProto.EXTERNAL:
            values[init.name] = [int(v) for v in numpy_helper.to_array(init).reshape(-1)]
    for node in graph.node:
        if node.op_type == "Constant" and node.output:
            for attr in node.attribute:
                if attr.name == "value" and attr.t.data_type in (onnx.TensorProto.INT64, onnx.TensorProto.INT32):
                    values[node.output[0]] = [int(v) for v in numpy_helper.to_array(attr.t).reshape(-1)]
                elif attr.name in ("value_int",):
                    values[node.output[0]] = [int(attr.i)]
                elif attr.name in ("value_ints",):
                    values[node.output[0]] = [int(v) for v in attr.ints]
    return values


def _attr(node: onnx.NodeProto, name: str, default: Any = None) -> Any:
    import onnx

    for a in node.attribute:
        if a.name == name:
            return onnx.helper.get_attribute_value(a)
    return default


def _as_model(model: onnx.ModelProto | str | os.PathLike[str]) -> onnx.ModelProto:
    if isinstance(model, (str, os.PathLike)):
        from .onnx_checks import load_onnx_checked

        return load_onnx_checked(Path(model), load_external=False)
    return model


def _infer_types(model: onnx.ModelProto) -> tuple[dict[str, int], dict[str, int]]:
    """Element type and rank of every named tensor we can find (inputs, outputs, value_info,
    initializers); a rank only where shape inference knows it."""
    import onnx

    from .onnx_checks import strip_weights

    try:
        # Types and shapes only: a weight-free copy infers the same in a fraction of the time.
        inferred = onnx.shape_inference.infer_shapes(strip_weights(model)[0], check_type=False, strict_mode=False)
    except Exception:  # noqa: BLE001 - inference is a best effort here; the checker ran before
        inferred = model
    types: dict[str, int] = {}
    ranks: dict[str, int] = {}
    for _, graph in _walk_graphs(inferred.graph):
        for vi in list(graph.input) + list(graph.output) + list(graph.value_info):
            if vi.type.HasField("tensor_type") and vi.type.tensor_type.elem_type:
                types[vi.name] = vi.type.tensor_type.elem_type
            if vi.type.HasField("tensor_type") and vi.type.tensor_type.HasField("shape"):
                ranks[vi.name] = len(vi.type.tensor_type.shape.dim)
        for init in graph.initializer:
            types[init.name] = init.data_type
            ranks[init.name] = len(init.dims)
        for node in graph.node:
            if node.op_type == "Constant" and node.output:
                t = _attr(node, "value")
                if t is not None and hasattr(t, "data_type"):
                    types[node.output[0]] = t.data_type
    return types, ranks


class _Problems:
    """Problems in the order found, each once."""

    def __init__(self) -> None:
        self.items: list[str] = []

    def add(self, msg: str) -> None:
        if msg not in self.items:
            self.items.append(msg)


def _check_opsets(model: onnx.ModelProto, support: SupportList, trt: str, problems: _Problems) -> None:
    used_domains = {n.domain for _, g in _walk_graphs(model.graph) for n in g.node}
    for imp in model.opset_import:
        if imp.domain in ("", "ai.onnx"):
            if not support.opset_min <= imp.version <= support.opset_max:
                problems.add(f"opset {imp.version} is outside {trt}'s supported range "
                             f"{support.opset_min}..{support.opset_max}")
        elif imp.domain in used_domains:
            problems.add(f"operators from domain {imp.domain!r} need TensorRT plugins")


def _check_tensor_types(types: dict[str, int], problems: _Problems) -> None:
    import onnx

    T = onnx.TensorProto
    bad_types = {T.STRING: "string", T.COMPLEX64: "complex64", T.COMPLEX128: "complex128", T.INT16: "int16",
                 T.UINT16: "uint16", T.UINT32: "uint32", T.UINT64: "uint64"}
    for name, et in types.items():
        if et == T.DOUBLE:
            problems.add(f"tensor {name!r} is float64: TensorRT casts DOUBLE down to FLOAT with clamping")
        elif et in bad_types:
            problems.add(f"tensor {name!r} has type {bad_types[et]}, which TensorRT does not support")


def _check_op_attributes(node: onnx.NodeProto, label: str, consts: dict[str, Any], problems: _Problems) -> None:
    """Operator-specific limits: data-dependent shapes, TopK's K, Resize's modes."""
    if node.op_type in DATA_DEPENDENT_OPS:
        problems.add(f"{label}: {node.op_type} has a data-dependent output shape")
    if node.op_type == "TopK":
        k = consts.get(node.input[1]) if len(node.input) > 1 else None
        if k is None:
            problems.add(f"{label}: TopK with a non-constant K has a data-dependent output shape")
        elif k and k[0] >= TOPK_MAX_K:
            problems.add(f"{label}: TopK K={k[0]} exceeds TensorRT's limit (K < {TOPK_MAX_K})")
    if node.op_type == "Resize":
        mode = _attr(node, "mode", b"nearest")
        coord = _attr(node, "coordinate_transformation_mode", b"half_pixel")
        mode, coord = (v.decode() if isinstance(v, bytes) else str(v) for v in (mode, coord))
        if mode not in RESIZE_MODES:
            problems.add(f"{label}: Resize mode {mode!r} is not supported (nearest, linear)")
        if coord not in RESIZE_COORD_MODES:
            problems.add(f"{label}: Resize coordinate_transformation_mode {coord!r} is not supported")
        if int(_attr(node, "antialias", 0) or 0):
            problems.add(f"{label}: Resize antialiasing is not supported")
        policy = _attr(node, "keep_aspect_ratio_policy", b"stretch")
        policy = policy.decode() if isinstance(policy, bytes) else str(policy)
        if policy != "stretch":
            problems.add(f"{label}: Resize keep_aspect_ratio_policy {policy!r} is not supported")


def _check_input_types(node: onnx.NodeProto, label: str, op: Any, trt: str, types: dict[str, int],
                       type_names: dict[int, str], producers: dict[str, onnx.NodeProto], initializers: set[str],
                       problems: _Problems) -> None:
    """The types of a node's inputs: uint8 only into a Cast, quantized types only in Q/DQ pairs,
    and the operator's type column for its data input."""
    for idx, name in enumerate(node.input):
        if not name or name not in types:
            continue
        tname = type_names.get(types[name], "")
        if tname == "UINT8":
            # TensorRT: UINT8 only for network I/O, converted by a Cast right away.
            if node.op_type not in ("Cast", "CastLike"):
                problems.add(f"{label}: uint8 tensor {name!r} feeds {node.op_type}; TensorRT takes uint8 only "
                             f"as a network input/output consumed by a Cast")
            continue
        if tname in _QUANTIZED:
            producer = producers.get(name)
            is_const = name in initializers or (producer is not None and producer.op_type == "Constant")
            from_q = producer is not None and producer.op_type == "QuantizeLinear"
            if node.op_type == "DequantizeLinear" and (from_q or is_const):
                continue
            if node.op_type == "QuantizeLinear" and idx == 2 and is_const:  # the zero point
                continue
            problems.add(f"{label}: {tname.lower()} tensor {name!r} is used outside a Q/DQ pair "
                         f"(TensorRT uses {tname} only as a quantized type)")
            continue
        # Operator type column: checked for the data input (input 0) only; other inputs are
        # often shapes/indices with their own rules.
        if idx == 0 and op.types and tname and tname != "DOUBLE" and tname not in op.types:
            problems.add(f"{label}: {node.op_type} on {tname} is not supported by {trt} "
                         f"(supported: {', '.join(sorted(op.types))})")


class _Constants:
    """Which tensors are build-time constants (initializers, Constant nodes, and pass-through ops
    of constants) and, for initializers and Constants, their values."""

    def __init__(self, model: onnx.ModelProto, producers: dict[str, onnx.NodeProto]) -> None:
        self.producers = producers
        self.tensors: dict[str, Any] = {}
        for _, graph in _walk_graphs(model.graph):
            for init in graph.initializer:
                self.tensors[init.name] = init
            for node in graph.node:
                if node.op_type == "Constant" and node.output:
                    self.tensors[node.output[0]] = node
        self._memo: dict[str, bool] = {}

    def is_const(self, name: str, depth: int = 0) -> bool:
        if name in self.tensors:
            return True
        if name in self._memo:
            return self._memo[name]
        node = self.producers.get(name)
        ok = (node is not None and depth < 16 and node.op_type in _CONST_PASSTHROUGH
              and all(self.is_const(i, depth + 1) for i in node.input if i))
        self._memo[name] = ok
        return ok

    def values(self, name: str) -> list[float] | None:
        """The values of an initializer or Constant (None: not one, or external data)."""
        import onnx
        from onnx import numpy_helper

        src = self.tensors.get(name)
        if src is None:
            return None
        if isinstance(src, onnx.TensorProto):
            if src.data_location == onnx.TensorProto.EXTERNAL:
                return None
            return [float(v) for v in numpy_helper.to_array(src).reshape(-1)]
        for attr in src.attribute:
            value = onnx.helper.get_attribute_value(attr)
            if attr.name == "value":
                return [float(v) for v in numpy_helper.to_array(value).reshape(-1)]
            if attr.name in ("value_int", "value_float"):
                return [float(value)]
            if attr.name in ("value_ints", "value_floats"):
                return [float(v) for v in value]
        return None


def _check_qdq(node: onnx.NodeProto, label: str, consts: _Constants, problems: _Problems) -> None:
    """QuantizeLinear/DequantizeLinear: constant scale; zero point, when given, constant and all 0
    (TensorRT quantizes symmetrically: operators.md requires y_zero_point / x_zero_point = 0)."""
    if node.op_type not in ("QuantizeLinear", "DequantizeLinear"):
        return
    scale = node.input[1] if len(node.input) > 1 else ""
    if scale and not consts.is_const(scale):
        problems.add(f"{label}: {node.op_type} scale {scale!r} is computed in the graph; TensorRT needs a "
                     f"build-time constant scale (an initializer or Constant)")
    zero = node.input[2] if len(node.input) > 2 else ""
    if not zero:
        return
    if not consts.is_const(zero):
        problems.add(f"{label}: {node.op_type} zero point {zero!r} is computed in the graph; TensorRT needs a "
                     f"constant zero point of 0")
        return
    values = consts.values(zero)
    if values is not None and any(v != 0 for v in values):
        problems.add(f"{label}: {node.op_type} zero point {zero!r} is not 0; TensorRT supports only symmetric "
                     f"quantization (zero point 0)")


def _check_resize_axes(node: onnx.NodeProto, label: str, consts: _Constants, ranks: dict[str, int],
                       problems: _Problems) -> None:
    """operators.md (TensorRT 10.x): when Resize's ``scales`` is a tensor input, ``axes`` must be an iota
    vector of length rank(input). A constant ``scales`` is folded by the parser and exempt."""
    if node.op_type != "Resize":
        return
    scales = node.input[2] if len(node.input) > 2 else ""
    axes = _attr(node, "axes")
    if not scales or axes is None or consts.is_const(scales):
        return
    rank = ranks.get(node.input[0]) if node.input else None
    axes = [int(a) for a in axes]
    if rank is not None:
        axes = [a + rank if a < 0 else a for a in axes]
    want = list(range(rank if rank is not None else len(axes)))
    if axes != want:
        problems.add(f"{label}: Resize with scales computed in the graph needs axes = {want or '0..rank-1'} "
                     f"(an iota vector of length rank(input)), got {axes}")


def check_tensorrt_compat(model: onnx.ModelProto | str | os.PathLike[str],
                          support: SupportList | Sequence[SupportList] | None = None) -> list[str]:
    """Problems that would stop (or silently degrade) a TensorRT build of ``model``; [] if none.

    ``model``: an ``onnx.ModelProto`` or a path (loaded with :func:`load_onnx_checked`).
    ``support``: the operator list(s) to check against; None: every shipped list (TensorRT 10 and
    11), so a graph is clean only when both majors can parse it. Problems that depend on a list
    name its TensorRT version.
    """
    model = _as_model(model)
    lists = load_support_lists() if support is None else \
        ((support,) if isinstance(support, SupportList) else tuple(support))
    problems = _Problems()
    types, ranks = _infer_types(model)
    _check_tensor_types(types, problems)
    type_names = _onnx_type_names()
    producers = {out: node for _, graph in _walk_graphs(model.graph) for node in graph.node for out in node.output}
    constants = _Constants(model, producers)
    for sup in lists:
        _check_opsets(model, sup, f"TensorRT {sup.tensorrt}", problems)
    for prefix, graph in _walk_graphs(model.graph):
        consts = _const_int_values(graph)
        initializers = {i.name for i in graph.initializer}
        for node in graph.node:
            label = f"{node.op_type} node {prefix}{node.name or '(unnamed)'}"
            if node.domain not in ("", "ai.onnx"):
                problems.add(f"{label}: custom domain {node.domain!r} needs a TensorRT plugin")
                continue
            checked_attributes = False
            for sup in lists:
                trt = f"TensorRT {sup.tensorrt}"
                op = sup.ops.get(node.op_type)
                if op is None:
                    problems.add(f"{label}: operator {node.op_type} is not in {trt}'s ONNX operator list")
                    continue
                if not op.supported:
                    problems.add(f"{label}: operator {node.op_type} is not supported by {trt}'s ONNX parser")
                    continue
                if not checked_attributes:  # the rules below hold for every list
                    _check_op_attributes(node, label, consts, problems)
                    _check_qdq(node, label, constants, problems)
                    _check_resize_axes(node, label, constants, ranks, problems)
                    checked_attributes = True
                _check_input_types(node, label, op, trt, types, type_names, producers, initializers, problems)
    return problems.items
