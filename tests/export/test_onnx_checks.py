"""load_onnx_checked: one-line errors for bad files, external data confined to the model's folder."""
from __future__ import annotations

import os

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from solo_deploy.errors import BadInputError
from solo_deploy.export.onnx_checks import load_onnx_checked, restore_weights, strip_weights


def _weighted_model() -> onnx.ModelProto:
    w = numpy_helper.from_array(np.arange(4096, dtype=np.float32).reshape(64, 64), name="w")
    graph = helper.make_graph([helper.make_node("MatMul", ["x", "w"], ["y"])], "g",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 64])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 64])], initializer=[w])
    m = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    m.ir_version = 8
    return m


def _save_external(folder, location: str = "weights.bin"):
    m = _weighted_model()
    onnx.save(m, str(folder / "m.onnx"), save_as_external_data=True, all_tensors_to_one_file=True,
              location=location, size_threshold=0)
    return folder / "m.onnx"


def _set_location(path, location: str) -> None:
    m = onnx.load(str(path), load_external_data=False)
    for t in m.graph.initializer:
        for e in t.external_data:
            if e.key == "location":
                e.value = location
    onnx.save(m, str(path))


@pytest.mark.parametrize("content", [None, b"", b"\x00\xffnot an onnx file at all\x13" * 7])
def test_bad_files_are_one_line_bad_input(tmp_path, content):
    path = tmp_path / "bad.onnx"
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(BadInputError) as info:
        load_onnx_checked(path)
    assert "\n" not in str(info.value) and str(path) in str(info.value)


def test_folder_is_not_a_model(tmp_path):
    with pytest.raises(BadInputError, match="not a file"):
        load_onnx_checked(tmp_path)


def test_checker_failure_is_bad_input(tmp_path):
    graph = helper.make_graph([helper.make_node("NoSuchOp", ["x"], ["y"])], "g",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])])
    m = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    onnx.save(m, str(tmp_path / "m.onnx"))
    with pytest.raises(BadInputError, match="fails ONNX validation"):
        load_onnx_checked(tmp_path / "m.onnx")


def test_external_data_inside_folder_loads(tmp_path):
    path = _save_external(tmp_path)
    m = load_onnx_checked(path)
    assert numpy_helper.to_array(m.graph.initializer[0]).sum() == np.arange(4096).sum()
    lazy = load_onnx_checked(path, load_external=False)
    assert lazy.graph.initializer[0].data_location == TensorProto.EXTERNAL


@pytest.mark.parametrize("location", ["../outside.bin", "sub/../../outside.bin", "/etc/passwd", "..\\outside.bin"])
def test_external_data_outside_folder_is_refused(tmp_path, location):
    folder = tmp_path / "model"
    folder.mkdir()
    path = _save_external(folder)
    (tmp_path / "outside.bin").write_bytes((folder / "weights.bin").read_bytes())
    _set_location(path, location)
    with pytest.raises(BadInputError, match="refusing external data location"):
        load_onnx_checked(path)
    with pytest.raises(BadInputError, match="refusing"):
        load_onnx_checked(path, load_external=False)  # refused even when not reading the data


def test_external_symlink_escaping_the_folder_is_refused(tmp_path):
    folder = tmp_path / "model"
    folder.mkdir()
    path = _save_external(folder)
    os.replace(folder / "weights.bin", tmp_path / "real.bin")
    os.symlink(tmp_path / "real.bin", folder / "weights.bin")
    with pytest.raises(BadInputError, match="outside the model's folder"):
        load_onnx_checked(path)


def test_missing_external_file(tmp_path):
    path = _save_external(tmp_path)
    (tmp_path / "weights.bin").unlink()
    with pytest.raises(BadInputError, match="external data file not found"):
        load_onnx_checked(path)


def test_strip_and_restore_weights_round_trip():
    import onnxruntime as ort

    m = _weighted_model()
    skeleton, weights = strip_weights(m)
    assert list(weights) == ["w"] and len(skeleton.graph.initializer) == 0
    assert skeleton.ByteSize() < m.ByteSize() // 10
    onnx.checker.check_model(skeleton)  # valid on its own: weights became typed graph inputs
    restored = restore_weights(skeleton, weights)
    assert [i.name for i in restored.graph.input] == ["x"]
    x = np.ones((1, 64), np.float32)

    def run(model):
        sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
        return sess.run(None, {"x": x})[0]

    np.testing.assert_array_equal(run(restored), run(_weighted_model()))


def test_score_peak_flips_are_counted_not_measured() -> None:
    """A point-NMS peak that moves to a tied neighbour is a flip (judged by instance agreement);
    a changed value at a peak both sides keep is a numeric difference."""
    import numpy as np

    from solo_deploy.export.parity import compare_outputs

    ref = np.zeros((1, 6, 2), np.float32)
    ref[0, 1, 0], ref[0, 4, 1] = 0.8, 0.5
    got = ref.copy()
    got[0, 1, 0], got[0, 2, 0] = 0.0, 0.8  # the peak moved one cell
    (d,) = compare_outputs(["scores"], [ref], [got])
    assert d.peak_flips == 2 and d.rel == 0.0
    got[0, 4, 1] = 0.4  # a kept peak changed by 0.1
    (d,) = compare_outputs(["scores"], [ref], [got])
    assert d.peak_flips == 2 and abs(d.rel - 0.1 / 0.8) < 1e-6
    (k,) = compare_outputs(["kernels"], [ref], [got])  # other outputs: every element counts
    assert k.peak_flips == 0 and abs(k.rel - 1.0) < 1e-6
