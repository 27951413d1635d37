"""Static TensorRT compatibility check on hand-made graphs (no export, fast)."""
from __future__ import annotations

import onnx
import pytest
from onnx import TensorProto, helper

from solo_deploy.export.trt_ops import check_tensorrt_compat, load_support_list


def _model(nodes, inputs, outputs, initializers=(), opset=17, domains=()):
    graph = helper.make_graph(nodes, "g", inputs, outputs, initializer=list(initializers))
    imports = [helper.make_opsetid("", opset)] + [helper.make_opsetid(d, 1) for d in domains]
    m = helper.make_model(graph, opset_imports=imports)
    m.ir_version = 8
    return m


def _vi(name, dtype=TensorProto.FLOAT, shape=(1, 3, 8, 8)):
    return helper.make_tensor_value_info(name, dtype, list(shape) if shape is not None else ["d0", "d1"])


def test_support_list_header_and_entries():
    support = load_support_list()
    assert support.tensorrt == "10.15" and (support.opset_min, support.opset_max) == (9, 24)
    assert "onnx-tensorrt" in support.source
    assert support.ops["Conv"].supported and "FP16" in support.ops["Conv"].types
    assert not support.ops["Unique"].supported
    assert support.ops["NonZero"].supported  # supported, but data-dependent: flagged separately
    assert len(support.ops) > 150


def test_clean_graph_has_no_problems():
    m = _model([helper.make_node("Relu", ["x"], ["y"]), helper.make_node("Sigmoid", ["y"], ["z"])],
               [_vi("x")], [_vi("z")])
    assert check_tensorrt_compat(m) == []


def test_nonzero_is_refused():
    m = _model([helper.make_node("NonZero", ["x"], ["idx"], name="nz")],
               [_vi("x")], [_vi("idx", TensorProto.INT64, None)])
    problems = check_tensorrt_compat(m)
    assert any("NonZero" in p and "data-dependent" in p for p in problems), problems


def test_unsupported_and_custom_ops():
    m = _model([helper.make_node("Unique", ["x"], ["u"]), helper.make_node("MyOp", ["x"], ["v"], domain="acme")],
               [_vi("x", shape=(8,))], [_vi("u", shape=None), _vi("v", shape=None)], domains=("acme",))
    problems = check_tensorrt_compat(m)
    assert any("Unique" in p and "not supported" in p for p in problems)
    assert any("acme" in p and "plugin" in p for p in problems)


def test_topk_limits():
    k_big = helper.make_tensor("k", TensorProto.INT64, [1], [4000])
    m = _model([helper.make_node("TopK", ["x", "k"], ["v", "i"])], [_vi("x", shape=(1, 5000))],
               [_vi("v", shape=None), _vi("i", TensorProto.INT64, None)], initializers=[k_big])
    assert any("3840" in p for p in check_tensorrt_compat(m))
    m = _model([helper.make_node("TopK", ["x", "k"], ["v", "i"])], [_vi("x", shape=(1, 50)),
                                                                   _vi("k", TensorProto.INT64, (1,))],
               [_vi("v", shape=None), _vi("i", TensorProto.INT64, None)])
    assert any("non-constant K" in p for p in check_tensorrt_compat(m))


def test_dtypes():
    # float64 anywhere
    m = _model([helper.make_node("Relu", ["x"], ["y"])], [_vi("x", TensorProto.DOUBLE)], [_vi("y", TensorProto.DOUBLE)])
    assert any("float64" in p for p in check_tensorrt_compat(m))
    # uint8 image transposed before the cast: refused; cast first: fine
    bad = _model([helper.make_node("Transpose", ["img"], ["t"], perm=[0, 3, 1, 2]),
                  helper.make_node("Cast", ["t"], ["y"], to=TensorProto.FLOAT)],
                 [_vi("img", TensorProto.UINT8, (1, 8, 8, 3))], [_vi("y", shape=(1, 3, 8, 8))])
    assert any("uint8" in p and "Transpose" in p for p in check_tensorrt_compat(bad))
    good = _model([helper.make_node("Cast", ["img"], ["c"], to=TensorProto.FLOAT),
                   helper.make_node("Transpose", ["c"], ["y"], perm=[0, 3, 1, 2])],
                  [_vi("img", TensorProto.UINT8, (1, 8, 8, 3))], [_vi("y", shape=(1, 3, 8, 8))])
    assert check_tensorrt_compat(good) == []
    # int8 outside Q/DQ
    m = _model([helper.make_node("Relu", ["x"], ["y"])], [_vi("x", TensorProto.INT8)], [_vi("y", TensorProto.INT8)])
    assert any("Q/DQ" in p for p in check_tensorrt_compat(m))


def test_qdq_pair_is_fine():
    scale = helper.make_tensor("s", TensorProto.FLOAT, [], [0.1])
    zp = helper.make_tensor("z", TensorProto.INT8, [], [0])
    m = _model([helper.make_node("QuantizeLinear", ["x", "s", "z"], ["q"]),
                helper.make_node("DequantizeLinear", ["q", "s", "z"], ["y"])],
               [_vi("x")], [_vi("y")], initializers=[scale, zp])
    assert check_tensorrt_compat(m) == []


def test_resize_modes_and_opset():
    roi = helper.make_tensor("roi", TensorProto.FLOAT, [0], [])
    scales = helper.make_tensor("sc", TensorProto.FLOAT, [4], [1, 1, 2, 2])
    m = _model([helper.make_node("Resize", ["x", "roi", "sc"], ["y"], mode="cubic")], [_vi("x")],
               [_vi("y", shape=None)], initializers=[roi, scales])
    assert any("cubic" in p for p in check_tensorrt_compat(m))
    m = _model([helper.make_node("Relu", ["x"], ["y"])], [_vi("x")], [_vi("y")], opset=8)
    assert any("opset 8" in p for p in check_tensorrt_compat(m))


def test_accepts_a_path(tmp_path):
    m = _model([helper.make_node("NonZero", ["x"], ["idx"])], [_vi("x")], [_vi("idx", TensorProto.INT64, None)])
    path = tmp_path / "nz.onnx"
    onnx.save(m, str(path))
    assert check_tensorrt_compat(path)


@pytest.mark.parametrize("op", ["NonMaxSuppression", "Compress"])
def test_more_data_dependent_ops_listed(op):
    from solo_deploy.export.trt_ops import DATA_DEPENDENT_OPS

    assert op in DATA_DEPENDENT_OPS
