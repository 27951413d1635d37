"""What an ONNX file says about itself (metadata, graph input and output names, IR version, opsets),
read from its protobuf wire format without the `onnx` package and without building a session.

The runtime needs these to describe and check a model before loading it; the `onnx` package (a
large import) is export's and calibration's business. Only the top-level ``ModelProto`` fields and
the graph's input/output entries are decoded; nodes and weights are skipped by their length.
It also lists every tensor's external-data location (initializers, sparse initializers, tensor
attributes, in subgraphs and functions too), so that a file pointing outside its folder is refused
before ONNX Runtime opens anything. Field numbers are those of onnx.proto (ModelProto: ir_version 1,
graph 7, opset_import 8, metadata_props 14, functions 25; GraphProto: node 1, initializer 5, input
11, output 12, sparse_initializer 15; NodeProto: attribute 5; FunctionProto: node 7;
AttributeProto: t 5, g 6, tensors 10, graphs 11, sparse_tensor 22, sparse_tensors 23;
SparseTensorProto: values 1, indices 2; TensorProto: external_data 13, data_location 14;
ValueInfoProto: name 1; StringStringEntryProto: key 1, value 2; OperatorSetIdProto: domain 1,
version 2).
"""
from __future__ import annotations

import mmap
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath, PureWindowsPath

from ..errors import BadInputError

__all__ = ["OnnxHeader", "check_external_locations", "check_onnx_file", "read_onnx_header"]


@dataclass(frozen=True)
class OnnxHeader:
    """The parts of an ONNX ``ModelProto`` that describe it."""

    ir_version: int
    opsets: dict[str, int]
    inputs: tuple[str, ...]
    outputs: tuple[str, ...]
    nodes: int
    metadata: dict[str, str] = field(default_factory=dict)
    external_locations: tuple[str, ...] = ()  # "" for an external tensor without a location


class _Malformed(Exception):
    pass


def _varint(buf: memoryview | bytes, pos: int, end: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        if pos >= end or shift > 63:
            raise _Malformed("truncated varint")
        b = buf[pos]
        pos += 1
        result |= (b & 0x7F) << shift
        if not b & 0x80:
            return result, pos
        shift += 7


def _fields(buf: memoryview | bytes, pos: int, end: int):
    """(field number, wire type, value or (start, stop) of a length-delimited field) until ``end``."""
    while pos < end:
        key, pos = _varint(buf, pos, end)
        num, wire = key >> 3, key & 7
        if num == 0:
            raise _Malformed("field number 0")
        if wire == 0:
            value, pos = _varint(buf, pos, end)
            yield num, wire, value
        elif wire == 2:
            length, pos = _varint(buf, pos, end)
            if pos + length > end:
                raise _Malformed("length past the end")
            yield num, wire, (pos, pos + length)
            pos += length
        elif wire == 1:
            pos += 8
        elif wire == 5:
            pos += 4
        else:  # groups (3, 4) are not used by onnx.proto
            raise _Malformed(f"wire type {wire}")
        if pos > end:
            raise _Malformed("field past the end")


def _text(buf: memoryview | bytes, span: tuple[int, int]) -> str:
    return bytes(buf[span[0]:span[1]]).decode("utf-8")


class _Msg:
    """The scalar fields of the message at ``span``, read as protobuf parsers read them: the last
    value of a field wins, and a field sent with another wire type than its own is ignored
    (protobuf keeps it as an unknown field)."""

    def __init__(self, buf: memoryview | bytes, span: tuple[int, int]) -> None:
        self.buf = buf
        self.fields: dict[tuple[int, int], object] = {}
        for num, wire, value in _fields(buf, *span):
            self.fields[(num, wire)] = value

    def text(self, num: int, default: str = "") -> str:
        span = self.fields.get((num, 2))
        return default if span is None else _text(self.buf, span)  # type: ignore[arg-type]

    def int(self, num: int, default: int = 0) -> int:
        value = self.fields.get((num, 0))
        return default if value is None else int(value)  # type: ignore[arg-type]


_GRAPH, _NODE, _ATTR, _TENSOR, _SPARSE, _FUNCTION = range(6)
# message kind -> {field number: kind of the sub-message}
_CHILDREN = {
    _GRAPH: {1: _NODE, 5: _TENSOR, 15: _SPARSE},
    _NODE: {5: _ATTR},
    _FUNCTION: {7: _NODE},
    _ATTR: {5: _TENSOR, 6: _GRAPH, 10: _TENSOR, 11: _GRAPH, 22: _SPARSE, 23: _SPARSE},
    _SPARSE: {1: _TENSOR, 2: _TENSOR},
}


def _external(buf: memoryview | bytes, kind: int, span: tuple[int, int], out: list[str], depth: int = 0) -> None:
    """Append the external-data location of every tensor inside the message at ``span``."""
    if depth > 64:
        raise _Malformed("nesting too deep")
    if kind == _TENSOR:
        external, location = False, None
        for num, wire, value in _fields(buf, *span):
            if num == 14 and wire == 0 and value == 1:  # data_location: EXTERNAL
                external = True
            elif num == 13 and wire == 2:
                entry = _Msg(buf, value)  # type: ignore[arg-type]
                if entry.text(1) == "location":  # the last "location" entry wins, as in onnx's loader
                    location = entry.text(2)
        if external or location is not None:
            out.append(location or "")
        return
    children = _CHILDREN[kind]
    for num, wire, value in _fields(buf, *span):
        if wire == 2 and num in children:
            _external(buf, children[num], value, out, depth + 1)  # type: ignore[arg-type]


def check_external_locations(locations: tuple[str, ...] | list[str], base_dir: Path, source: str) -> list[Path]:
    """Refuse external-data locations that are empty, absolute, use ``..`` or resolve outside
    ``base_dir``; return the resolved files."""
    base = base_dir.resolve()
    files: list[Path] = []
    for loc in locations:
        if not loc:
            raise BadInputError(f"{source}: a tensor is stored as external data without a location")
        posix, win = PurePosixPath(loc), PureWindowsPath(loc)
        # Check both path flavours: a model written on Windows may say "..\\w.bin" or "C:\\w.bin".
        if posix.is_absolute() or win.is_absolute() or win.drive or ".." in posix.parts or ".." in win.parts:
            raise BadInputError(f"{source}: refusing external data location {loc!r}: it must be a relative path "
                                f"inside the model's folder {base_dir}")
        target = (base / loc).resolve()
        if target != base and base not in target.parents:
            raise BadInputError(f"{source}: refusing external data location {loc!r}: it resolves to {target}, "
                                f"outside the model's folder {base_dir}")
        files.append(target)
    return files


def _parse(buf: memoryview | bytes) -> OnnxHeader:
    ir_version, opsets, metadata = 0, {}, {}
    inputs: list[str] = []
    outputs: list[str] = []
    external: list[str] = []
    nodes = 0
    for num, wire, value in _fields(buf, 0, len(buf)):
        if num == 1 and wire == 0:
            # int64: a negative value is a 10-byte varint of 2**63 or more
            ir_version = int(value) if int(value) < 1 << 63 else -1  # type: ignore[arg-type]
        elif num == 8 and wire == 2:
            opset = _Msg(buf, value)  # type: ignore[arg-type]
            opsets[opset.text(1)] = opset.int(2)
        elif num == 14 and wire == 2:
            entry = _Msg(buf, value)  # type: ignore[arg-type]
            if (1, 2) in entry.fields:
                metadata[entry.text(1)] = entry.text(2)
        elif num == 25 and wire == 2:
            _external(buf, _FUNCTION, value, external)  # type: ignore[arg-type]
        elif num == 7 and wire == 2:
            _external(buf, _GRAPH, value, external)  # type: ignore[arg-type]
            for gnum, gwire, gvalue in _fields(buf, *value):  # type: ignore[misc]
                if gwire != 2:
                    continue
                if gnum == 1:
                    nodes += 1
                elif gnum in (11, 12):
                    (inputs if gnum == 11 else outputs).append(_Msg(buf, gvalue).text(1))  # type: ignore[arg-type]
    return OnnxHeader(ir_version, opsets, tuple(inputs), tuple(outputs), nodes, metadata, tuple(external))


def _parse_mapped(mm: mmap.mmap) -> tuple[OnnxHeader | None, str]:
    """Parse a mapped file; the error as text, so that no traceback keeps a view of the mapping
    alive when it closes."""
    view = memoryview(mm)
    try:
        return _parse(view), ""
    except (_Malformed, UnicodeDecodeError, KeyError, IndexError, TypeError, ValueError) as exc:
        return None, str(exc) or type(exc).__name__
    finally:
        view.release()


def check_onnx_file(path: str | Path) -> Path:
    """``path`` if it is a non-empty file; otherwise the one-line error that names the problem."""
    path = Path(path)
    if not path.exists():
        raise BadInputError(f"ONNX model not found: {path}")
    if not path.is_file():
        raise BadInputError(f"ONNX model path is not a file: {path}")
    if path.stat().st_size == 0:
        raise BadInputError(f"ONNX model file is empty: {path}")
    return path


def read_onnx_header(path: str | Path) -> OnnxHeader:
    """The header of the ONNX file at ``path``; anything that is not an ONNX model is one
    ``BadInputError`` line (the same words as export's full check)."""
    path = check_onnx_file(path)
    try:
        with open(path, "rb") as fh, mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ) as mm:
            header, problem = _parse_mapped(mm)
    except OSError as exc:
        raise BadInputError(f"cannot read {path}: {exc.strerror or exc}") from None
    if header is None:
        raise BadInputError(f"{path} is not a valid ONNX file ({problem})")
    # Protobuf parsing is lenient: many byte strings decode to a near-empty message.
    if header.ir_version <= 0 or not header.opsets or header.nodes == 0:
        raise BadInputError(f"{path} is not a valid ONNX model (no IR version, opset or graph nodes)")
    files = check_external_locations(header.external_locations, path.parent, str(path))
    missing = [f for f in files if not f.is_file()]
    if missing:
        raise BadInputError(f"{path}: external data file not found: {missing[0]}")
    return header
