"""Static TensorRT compatibility check on hand-made graphs (no export, fast)."""
from __future__ import annotations

import onnx
import pytest
from onnx import TensorProto, helper

from solo_deploy.export.trt_ops import SUPPORTED_MAJORS, check_tensorrt_compat, load_support_list, load_support_lists


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
    assert "onnx-tensorrt" in support.source and support.date.startswith("20")
    assert support.url.startswith("https://github.com/onnx/onnx-tensorrt")
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


def test_one_list_per_major_with_source_and_date():
    lists = load_support_lists()
    assert SUPPORTED_MAJORS == (10, 11) and [s.major for s in lists] == [10, 11]
    for sup in lists:
        assert sup.source and sup.url.startswith("https://") and sup.date != "unknown"
    trt11 = load_support_list(11)
    assert trt11.tensorrt == "11.1" and "DERIVED" in trt11.source  # says it is not a transcription
    assert trt11.ops["Swish"].supported and "Swish" not in load_support_list(10).ops
    with pytest.raises(ValueError, match="no ONNX operator list for TensorRT 9"):
        load_support_list(9)


def test_lists_are_checked_per_major():
    m = _model([helper.make_node("Swish", ["x"], ["y"])], [_vi("x")], [_vi("y")], opset=24)
    assert check_tensorrt_compat(m, load_support_list(11)) == []
    problems = check_tensorrt_compat(m)  # default: every list
    assert problems == ["Swish node (unnamed): operator Swish is not in TensorRT 10.15's ONNX operator list"]


def _qdq(scale_src, zero_src, zero=0):
    """x -> Q -> DQ -> y with the scale / zero point as an initializer ('init') or a graph input ('input')."""
    inits, inputs = [], [_vi("x")]
    for name, src, dtype, value in (("s", scale_src, TensorProto.FLOAT, 0.1), ("z", zero_src, TensorProto.INT8, zero)):
        if src == "init":
            inits.append(helper.make_tensor(name, dtype, [], [value]))
        else:
            inputs.append(_vi(name, dtype, ()))
    return _model([helper.make_node("QuantizeLinear", ["x", "s", "z"], ["q"], name="q"),
                   helper.make_node("DequantizeLinear", ["q", "s", "z"], ["y"], name="dq")],
                  inputs, [_vi("y")], initializers=inits)


def test_qdq_zero_point_must_be_zero():
    problems = check_tensorrt_compat(_qdq("init", "init", zero=3))
    assert any("QuantizeLinear node q" in p and "zero point 'z' is not 0" in p for p in problems), problems
    assert any("DequantizeLinear node dq" in p and "is not 0" in p for p in problems)


def test_qdq_scale_and_zero_point_must_be_constant():
    problems = check_tensorrt_compat(_qdq("input", "init"))
    assert any("scale 's' is computed in the graph" in p for p in problems), problems
    problems = check_tensorrt_compat(_qdq("init", "input"))
    assert any("zero point 'z' is computed in the graph" in p for p in problems), problems


def test_qdq_scale_through_a_cast_is_constant():
    s16 = helper.make_tensor("s16", TensorProto.FLOAT16, [], [0.1])
    zp = helper.make_tensor("z", TensorProto.INT8, [], [0])
    m = _model([helper.make_node("Cast", ["s16"], ["s"], to=TensorProto.FLOAT),
                helper.make_node("QuantizeLinear", ["x", "s", "z"], ["q"]),
                helper.make_node("DequantizeLinear", ["q", "s", "z"], ["y"])],
               [_vi("x")], [_vi("y")], initializers=[s16, zp])
    assert check_tensorrt_compat(m) == []


def _resize(axes, scales_const):
    """Resize of a 4-D input with an ``axes`` attribute; scales constant or computed (Mul of a constant)."""
    roi = helper.make_tensor("roi", TensorProto.FLOAT, [0], [])
    base = helper.make_tensor("base", TensorProto.FLOAT, [len(axes)], [1.0] * (len(axes) - 2) + [2.0, 2.0])
    nodes = [] if scales_const else [helper.make_node("Mul", ["base", "k"], ["sc"])]
    scales = "base" if scales_const else "sc"
    nodes.append(helper.make_node("Resize", ["x", "roi", scales], ["y"], mode="nearest", axes=axes, name="rs"))
    inputs = [_vi("x")] + ([] if scales_const else [_vi("k", shape=(len(axes),))])
    return _model(nodes, inputs, [_vi("y", shape=None)], initializers=[roi, base], opset=18)


def test_resize_axes_must_be_iota_when_scales_is_a_tensor():
    problems = check_tensorrt_compat(_resize([2, 3], scales_const=False))
    assert any("Resize node rs" in p and "iota" in p and "[2, 3]" in p for p in problems), problems
    assert check_tensorrt_compat(_resize([0, 1, 2, 3], scales_const=False)) == []
    assert check_tensorrt_compat(_resize([0, 1, -2, -1], scales_const=False)) == []  # negative axes normalised
    assert check_tensorrt_compat(_resize([2, 3], scales_const=True)) == []  # constant scales: the parser folds them
