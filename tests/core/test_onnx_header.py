"""The runtime's ONNX header reader against the `onnx` package (the reference), on real exports and
on hostile bytes: it agrees where the file is valid and answers every other input with one line."""
from __future__ import annotations

import random

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from solo_deploy.core.onnx_header import read_onnx_header
from solo_deploy.errors import BadInputError


def _model(external_location: str | None = None) -> onnx.ModelProto:
    w = numpy_helper.from_array(np.ones((2, 2), np.float32), "w")
    if external_location is not None:
        w.ClearField("raw_data")
        w.data_location = TensorProto.EXTERNAL
        for k, v in (("location", external_location), ("offset", "0"), ("length", "16")):
            e = w.external_data.add()
            e.key, e.value = k, v
    g = helper.make_graph([helper.make_node("MatMul", ["x", "w"], ["y"], name="mm")], "g",
                          [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 2])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 2])], [w])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("custom.x", 2)])
    helper.set_model_props(m, {"solo_deploy": '{"a": 1}', "other": "ü"})
    return m


def test_agrees_with_onnx_on_a_real_export(tmp_path):
    from conftest import tiny_config

    from solo_deploy.export.onnx_export import export_onnx
    from solo_deploy.model.modelfile import ModelMeta, save_model_file
    from solo_deploy.model.network import SOLONet
    from solo_deploy.preprocess import PreprocessSpec

    cfg = tiny_config("solo")
    save_model_file(tmp_path / "m.safetensors", SOLONet(cfg).state_dict(), ModelMeta(
        model=cfg, preprocess=PreprocessSpec(input_hw=(64, 64)), class_names=("a", "b", "c", "d")))
    path = export_onnx(tmp_path / "m.safetensors", tmp_path / "m.onnx", check_parity=False).path
    ref = onnx.load(str(path), load_external_data=False)
    h = read_onnx_header(path)
    assert h.ir_version == ref.ir_version
    assert h.opsets == {o.domain: o.version for o in ref.opset_import}
    assert h.inputs == tuple(i.name for i in ref.graph.input)
    assert h.outputs == tuple(o.name for o in ref.graph.output)
    assert h.nodes == len(ref.graph.node)
    assert h.metadata == {p.key: p.value for p in ref.metadata_props}
    assert h.external_locations == ()


def test_small_model_fields_and_external_location(tmp_path):
    (tmp_path / "w.bin").write_bytes(np.ones((2, 2), np.float32).tobytes())
    path = tmp_path / "m.onnx"
    path.write_bytes(_model("w.bin").SerializeToString())
    h = read_onnx_header(path)
    assert h.metadata == {"solo_deploy": '{"a": 1}', "other": "ü"}
    assert h.opsets == {"": 17, "custom.x": 2}
    assert h.external_locations == ("w.bin",)


@pytest.mark.parametrize("location", ["../w.bin", "/etc/passwd", "..\\w.bin", "C:\\w.bin", ""])
def test_external_data_outside_the_folder_is_refused(tmp_path, location):
    path = tmp_path / "m.onnx"
    path.write_bytes(_model(location).SerializeToString())
    with pytest.raises(BadInputError, match="external data"):
        read_onnx_header(path)


def test_a_repeated_value_is_read_as_protobuf_reads_it(tmp_path):
    """Protobuf keeps the last of a repeated scalar: ``value`` written twice must be checked as the
    second one, the one ONNX Runtime would open."""
    data = _model("A" * 21).SerializeToString()
    entry = b"\x12\x15" + b"A" * 21  # value: 21 bytes
    twice = b"\x12\x05w.bin" + b"\x12\x0e../secret1.bin"  # same length: the enclosing sizes stay valid
    assert data.count(entry) == 1 and len(twice) == len(entry)
    path = tmp_path / "m.onnx"
    path.write_bytes(data.replace(entry, twice))
    ref = onnx.load(str(path), load_external_data=False)
    assert {e.key: e.value for e in ref.graph.initializer[0].external_data}["location"] == "../secret1.bin"
    with pytest.raises(BadInputError, match="secret1"):
        read_onnx_header(path)


@pytest.mark.parametrize("data", [
    bytes.fromhex("0808720208 05"),  # a metadata entry whose key is a number
    bytes.fromhex("08084208 0a03787878 1003"),  # opset domain as bytes: fine; then garbage
    bytes.fromhex("08ffffffffffffffffff01"),  # ir_version -1
    b"\x08\x08" + b"\x3a\x02\x0a\x00",  # a graph with an empty node list
    b"\x08\x08\x0a" + b"\xff" * 12,  # a length varint past 2**63
], ids=["key-as-number", "garbage-after-opset", "negative-ir", "no-nodes", "huge-length"])
def test_hostile_headers_are_one_line(tmp_path, data):
    path = tmp_path / "m.onnx"
    path.write_bytes(data)
    with pytest.raises(BadInputError):
        read_onnx_header(path)


def test_random_mutations_never_escape_as_another_error(tmp_path):
    good = _model().SerializeToString()
    rng = random.Random(0)
    path = tmp_path / "m.onnx"
    for _ in range(400):
        buf = bytearray(good)
        for _ in range(rng.randint(1, 6)):
            buf[rng.randrange(len(buf))] = rng.randrange(256)
        path.write_bytes(bytes(buf[: rng.randrange(1, len(buf) + 1)]))
        try:
            read_onnx_header(path)
        except BadInputError:
            pass
