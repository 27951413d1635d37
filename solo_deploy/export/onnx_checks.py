"""Loading ONNX files safely: one-line errors for missing/empty/corrupt files, no external data
outside the model's folder, and ``onnx.checker`` validation.

Why the external-data rule: an ONNX file names its external weight files by relative path; a
crafted ``location`` such as ``../../etc/shadow`` or ``/dev/zero`` would make the loader read
(or a runtime map) files the user never meant to hand over. We accept only plain relative
locations that resolve (symlinks included) inside the model's own folder.
"""
from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

from ..core.onnx_header import check_external_locations as check_locations
from ..core.onnx_header import check_onnx_file
from ..errors import BadInputError, one_line

if TYPE_CHECKING:  # pragma: no cover
    import onnx

__all__ = [
    "check_external_locations",
    "external_data_locations",
    "iter_tensors",
    "load_onnx_checked",
    "restore_weights",
    "strip_weights",
]




def iter_tensors(model: onnx.ModelProto) -> Iterator[onnx.TensorProto]:
    """Every TensorProto of a model: initializers, sparse initializers and tensor attributes,
    in the main graph and in every subgraph (If/Loop/Scan bodies)."""

    def graph_tensors(graph: onnx.GraphProto) -> Iterator[onnx.TensorProto]:
        yield from graph.initializer
        for sparse in graph.sparse_initializer:
            yield sparse.values
            yield sparse.indices
        for node in graph.node:
            for attr in node.attribute:
                if attr.HasField("t"):
                    yield attr.t
                yield from attr.tensors
                if attr.HasField("g"):
                    yield from graph_tensors(attr.g)
                for sub in attr.graphs:
                    yield from graph_tensors(sub)

    yield from graph_tensors(model.graph)
    for fn in model.functions:
        for node in fn.node:
            for attr in node.attribute:
                if attr.HasField("t"):
                    yield attr.t


def external_data_locations(model: onnx.ModelProto) -> list[str]:
    """The ``location`` of every tensor stored as external data (duplicates removed, in order)."""
    import onnx

    seen: dict[str, None] = {}
    for tensor in iter_tensors(model):
        if tensor.data_location != onnx.TensorProto.EXTERNAL:
            continue
        entries = {e.key: e.value for e in tensor.external_data}
        seen.setdefault(entries.get("location", ""), None)
    return list(seen)


def check_external_locations(model: onnx.ModelProto, base_dir: Path, source: str) -> list[Path]:
    """Refuse external-data locations that are empty, absolute, use ``..`` or resolve outside
    ``base_dir``; return the resolved files (the rule the runtime applies to a file's header)."""
    return check_locations(external_data_locations(model), base_dir, source)


def load_onnx_checked(path: str | os.PathLike[str], load_external: bool = True) -> onnx.ModelProto:
    """Read and validate an ONNX file; every problem is one ``BadInputError`` line.

    ``load_external``: also read external weight files (after the location checks). With
    ``False`` the returned proto keeps its external references (enough for metadata and
    graph inspection, and much cheaper for large models).
    """
    import onnx
    from google.protobuf.message import DecodeError

    path = check_onnx_file(path)
    try:
        model = onnx.load(str(path), load_external_data=False)
    except (DecodeError, ValueError, RuntimeError, OSError) as exc:
        raise BadInputError(f"{path} is not a valid ONNX file ({one_line(exc)})") from None
    except Exception as exc:  # noqa: BLE001 - protobuf backends raise their own types on garbage
        raise BadInputError(f"{path} is not a valid ONNX file ({type(exc).__name__}: {one_line(exc)})") from None
    # Protobuf parsing is lenient: many byte strings decode to a near-empty message.
    if model.ir_version <= 0 or not model.opset_import or len(model.graph.node) == 0:
        raise BadInputError(f"{path} is not a valid ONNX model (no IR version, opset or graph nodes)")
    external = check_external_locations(model, path.parent, str(path))
    missing = [f for f in external if not f.is_file()]
    if missing:
        raise BadInputError(f"{path}: external data file not found: {missing[0]}")
    try:
        if external:
            # The path form validates external references too (and works for models over 2 GiB).
            onnx.checker.check_model(str(path))
        else:
            onnx.checker.check_model(model)
    except Exception as exc:  # noqa: BLE001 - ValidationError and C++ errors alike
        raise BadInputError(f"{path} fails ONNX validation: {one_line(exc)}") from None
    if load_external and external:
        try:
            onnx.load_external_data_for_model(model, str(path.parent))
        except Exception as exc:  # noqa: BLE001
            raise BadInputError(f"{path}: cannot read external data ({one_line(exc)})") from None
    return model


def _tensor_nbytes(t: onnx.TensorProto) -> int:
    if t.raw_data:
        return len(t.raw_data)
    return 4 * max(len(t.float_data), len(t.int32_data)) + 8 * max(len(t.int64_data), len(t.double_data))


def strip_weights(model: onnx.ModelProto, min_bytes: int = 1024) -> tuple[onnx.ModelProto, dict[str, onnx.TensorProto]]:
    """A weight-free copy of ``model`` for checking, shape inference and simplification.

    Floating-point initializers of at least ``min_bytes`` become graph inputs of the same type
    and shape (valid ONNX; type/shape inference sees the same thing), so the copy serialises in
    microseconds instead of a full model's seconds. Integer initializers (shapes, axes, K) stay,
    so constant folding of shape subgraphs still works. Returns (skeleton, weights by name); the
    weights are the original protos, not copies. Undo with :func:`restore_weights`.
    """
    import onnx

    floats = {onnx.TensorProto.FLOAT, onnx.TensorProto.FLOAT16, onnx.TensorProto.BFLOAT16, onnx.TensorProto.DOUBLE}
    weights = {t.name: t for t in model.graph.initializer
               if t.data_type in floats and t.data_location != onnx.TensorProto.EXTERNAL
               and _tensor_nbytes(t) >= min_bytes}
    skeleton = onnx.ModelProto()
    for fld in ("ir_version", "producer_name", "producer_version", "domain", "model_version", "doc_string"):
        setattr(skeleton, fld, getattr(model, fld))
    skeleton.opset_import.extend(model.opset_import)
    skeleton.metadata_props.extend(model.metadata_props)
    skeleton.functions.extend(model.functions)
    g, src = skeleton.graph, model.graph
    g.name, g.doc_string = src.name, src.doc_string
    g.node.extend(src.node)
    g.input.extend(src.input)
    g.input.extend(onnx.helper.make_tensor_value_info(name, t.data_type, list(t.dims)) for name, t in weights.items())
    g.output.extend(src.output)
    g.value_info.extend(src.value_info)
    g.initializer.extend(t for t in src.initializer if t.name not in weights)
    g.sparse_initializer.extend(src.sparse_initializer)
    return skeleton, weights


def restore_weights(skeleton: onnx.ModelProto, weights: dict[str, onnx.TensorProto]) -> onnx.ModelProto:
    """Put stripped weights back (in place) as initializers; ones no node uses any more are dropped."""
    g = skeleton.graph
    used = {name for node in g.node for name in node.input}
    inputs = [i for i in g.input if i.name not in weights]
    del g.input[:]
    g.input.extend(inputs)
    present = {t.name for t in g.initializer}
    g.initializer.extend(t for name, t in weights.items() if name in used and name not in present)
    return skeleton
