"""`calibrate` end to end on a hand-built solo-deploy ONNX (fast): the accuracy guard really keeps
layers FP32, a second run reuses the cache, the two Q/DQ formats, metadata, bad inputs leave
no files, and the CLI."""
from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from solo_deploy.calibration import FILES, KEY_FILE
from solo_deploy.calibration import quantize as Q
from solo_deploy.errors import BadInputError

CONVS = ("conv_a", "conv_b", "conv_c", "conv_d", "conv_e")


def _toy_onnx(path: Path, solo_meta: bool = True) -> Path:
    """uint8 (1, 32, 32, 3) -> Cast/Transpose/Sub/Mul -> 5 convs with a residual Add -> three float
    outputs; carries solo-deploy metadata like an export (a tiny SOLOv2 config)."""
    from conftest import tiny_config

    from solo_deploy.model.modelfile import ModelMeta
    from solo_deploy.preprocess import PreprocessSpec

    rng = np.random.default_rng(0)

    def w(name: str, cout: int, cin: int):
        return [numpy_helper.from_array((rng.normal(0, (2 / (9 * cin)) ** 0.5, (cout, cin, 3, 3))).astype(np.float32),
                                        f"{name}_w"),
                numpy_helper.from_array(rng.normal(0, 0.1, cout).astype(np.float32), f"{name}_b")]

    inits = [numpy_helper.from_array(np.array([123.7, 116.3, 103.5], np.float32).reshape(1, 3, 1, 1), "mean"),
             numpy_helper.from_array((1 / np.array([58.4, 57.1, 57.4], np.float32)).reshape(1, 3, 1, 1), "istd"),
             numpy_helper.from_array(np.array([1, -1, 4], np.int64), "shape3"),
             numpy_helper.from_array(np.array([0.5], np.float32), "half")]
    for name, cout, cin in (("conv_a", 8, 3), ("conv_b", 8, 8), ("conv_c", 8, 8), ("conv_d", 16, 8), ("conv_e", 4, 8)):
        inits += w(name, cout, cin)
    def conv(n, x):
        return helper.make_node("Conv", [x, f"{n}_w", f"{n}_b"], [f"{n}_out"], name=n, pads=[1, 1, 1, 1])

    nodes = [
        helper.make_node("Cast", ["images"], ["x_f"], name="/Cast_input_first", to=TensorProto.FLOAT),
        helper.make_node("Transpose", ["x_f"], ["x_t"], name="/Transpose", perm=[0, 3, 1, 2]),
        helper.make_node("Sub", ["x_t", "mean"], ["x_s"], name="/Sub"),
        helper.make_node("Mul", ["x_s", "istd"], ["x_n"], name="/Mul"),
        conv("conv_a", "x_n"), helper.make_node("Relu", ["conv_a_out"], ["ra"], name="relu_a"),
        conv("conv_b", "ra"), helper.make_node("Relu", ["conv_b_out"], ["rb"], name="relu_b"),
        conv("conv_c", "rb"), helper.make_node("Add", ["conv_c_out", "ra"], ["res"], name="residual_add"),
        helper.make_node("Relu", ["res"], ["rc"], name="relu_c"),
        conv("conv_d", "rc"), helper.make_node("Relu", ["conv_d_out"], ["mask_feat"], name="relu_d"),
        conv("conv_e", "rc"), helper.make_node("Mul", ["conv_e_out", "half"], ["logits"], name="scale_logits"),
        helper.make_node("Sigmoid", ["logits"], ["sig"], name="sigmoid"),
        helper.make_node("Reshape", ["sig"], ["scores"], name="scores_reshape"),
        helper.make_node("Reshape", ["conv_e_out"], ["kernels"], name="kernels_reshape"),
    ]
    nodes[-2].input.append("shape3")
    nodes[-1].input.append("shape3")
    graph = helper.make_graph(
        nodes, "toy", [helper.make_tensor_value_info("images", TensorProto.UINT8, [1, 32, 32, 3])],
        [helper.make_tensor_value_info("scores", TensorProto.FLOAT, [1, None, 4]),
         helper.make_tensor_value_info("kernels", TensorProto.FLOAT, [1, None, 4]),
         helper.make_tensor_value_info("mask_feat", TensorProto.FLOAT, [1, 16, 32, 32])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    if solo_meta:
        meta = ModelMeta(model=tiny_config(), preprocess=PreprocessSpec(input_hw=(32, 32)),
                         class_names=("circle", "rectangle", "triangle", "ring"), preset="toy")
        payload = meta.to_dict()
        payload["export"] = {"precision": "fp32", "format": "onnx"}
        for key, value in {"solo_deploy": json.dumps(payload), "preset": "toy"}.items():
            entry = model.metadata_props.add()
            entry.key, entry.value = key, value
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return path


def _quantized_convs(path: Path) -> set[str]:
    """Conv nodes whose weights come through DequantizeLinear (i.e. run INT8)."""
    m = onnx.load(str(path))
    dq = {o for n in m.graph.node if n.op_type == "DequantizeLinear" for o in n.output}
    return {n.name for n in m.graph.node if n.op_type == "Conv" and n.input[1] in dq}


def _files(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir()) if folder.exists() else []


def _ap_from_quantized_convs(calls: list[str]):
    """Fake evaluator: FP32 AP 50; every INT8 conv costs 0.5 AP. Records what it was asked."""

    def evaluate(path: Path) -> float:
        calls.append(Path(path).name)
        return 50.0 - 0.5 * len(_quantized_convs(Path(path)))

    return evaluate


@pytest.fixture(scope="module")
def toy(tmp_path_factory) -> Path:
    return _toy_onnx(tmp_path_factory.mktemp("toy") / "toy.onnx")


KW = {"images": 32, "threads": 1, "bench_runs": 1}
KW_ANY = {"threads": 1, "bench_runs": 1}  # without the image count


def test_guard_moves_layers_back_to_fp32(toy, tmp_path) -> None:
    calls: list[str] = []
    # conv_d and conv_e feed outputs (FP32 in the CPU model by design), conv_a..c are the
    # candidates: 3 INT8 convs cost 1.5 AP; a 0.7 AP budget needs 2 in FP32: tries 0, 1, 2.
    res = Q.calibrate(toy, "synthetic", tmp_path / "out", max_ap_drop=0.7, evaluate_fn=_ap_from_quantized_convs(calls),
                      **KW)
    g = res.guard
    assert g is not None and g.met and g.stopped == "met"
    assert [t["excluded"] for t in g.tries] == [0, 1, 2]
    assert [t["ap_drop"] for t in g.tries] == [1.5, 1.0, 0.5]
    assert len(g.excluded) == 2 and set(g.excluded) <= {"conv_a", "conv_b", "conv_c"}
    assert list(g.excluded) == [s.node for s in g.ranking[:2]]  # the most sensitive first
    assert {s.node for s in g.ranking} == {"conv_a", "conv_b", "conv_c"}
    # Both models keep exactly those layers FP32 (weights and inputs); the rest runs INT8.
    assert _quantized_convs(res.files["cpu"]) == {"conv_a", "conv_b", "conv_c"} - set(g.excluded)
    assert _quantized_convs(res.files["trt"]) == set(CONVS) - set(g.excluded)
    for role in ("cpu", "trt"):
        m = onnx.load(str(res.files[role]))
        by_out = {o: n for n in m.graph.node for o in n.output}
        for n in m.graph.node:
            if n.name in g.excluded:
                assert by_out[n.input[0]].op_type != "DequantizeLinear", (role, n.name)
    rep = json.loads(res.files["report"].read_text())
    assert rep["fp32_kept"]["guard_layers"] == list(g.excluded)
    assert rep["fp32_kept"]["output_layers_cpu"] == ["conv_d", "conv_e"]
    assert rep["accuracy"]["ap_fp32"] == 50.0 and rep["accuracy"]["ap_int8_cpu"] == 49.5
    assert rep["accuracy"]["guard_met"] is True
    assert sorted(rep["precision"]["cpu"]["fp32_compute_nodes"]) == sorted([*g.excluded, "conv_d", "conv_e"])
    assert sorted(rep["precision"]["trt"]["fp32_compute_nodes"]) == sorted(g.excluded)
    assert calls[0] == Path(toy).name  # FP32 first, then 3 tries, then the TensorRT model
    assert len(calls) == 1 + 3 + 1 and calls[-1] == FILES["trt"]
    meta = json.loads({p.key: p.value for p in onnx.load(str(res.files["cpu"])).metadata_props}["solo_deploy"])
    assert meta["quantization"]["excluded_nodes"] == list(g.excluded)


def test_guard_not_met_keeps_best_try(toy, tmp_path) -> None:
    res = Q.calibrate(toy, "synthetic", tmp_path / "out", max_ap_drop=0.1, max_tries=2,
                      evaluate_fn=_ap_from_quantized_convs([]), **KW)
    assert not res.guard.met and res.warnings and "not met" in res.warnings[0]
    assert [t["excluded"] for t in res.guard.tries] == [0, 1]
    assert len(_quantized_convs(res.files["cpu"])) == 2  # the best (smallest-drop) try


def test_formats_metadata_and_outputs(toy, tmp_path) -> None:
    import onnxruntime as ort

    from solo_deploy.runtime.runners import make_runner, onnx_meta

    res = Q.calibrate(toy, "synthetic", tmp_path / "out", eval_images=0, **KW)
    assert res.guard is None and set(_files(tmp_path / "out")) == {*FILES.values(), KEY_FILE}

    def qdq(path: Path) -> tuple[set[str], set[int]]:
        m = onnx.load(str(path))
        inits = {i.name: numpy_helper.to_array(i) for i in m.graph.initializer}
        zp = [inits[n.input[2]] for n in m.graph.node if n.op_type == "QuantizeLinear"]
        return {str(z.dtype) for z in zp}, {int(v) for z in zp for v in np.ravel(z)}

    trt_types, trt_zero = qdq(res.files["trt"])
    assert trt_types == {"int8"} and trt_zero == {0}  # symmetric int8 activations
    cpu_types, _ = qdq(res.files["cpu"])
    assert cpu_types == {"uint8"}
    trt = onnx.load(str(res.files["trt"]))
    by_out = {o: n for n in trt.graph.node for o in n.output}
    nodes = {n.name: n for n in trt.graph.node}
    # TensorRT placement: Q/DQ on conv and residual-Add inputs, float bias, no Q on conv outputs,
    # preprocessing and constant-operand Mul untouched.
    assert by_out[nodes["conv_b"].input[0]].op_type == "DequantizeLinear"
    float_inits = {i.name for i in trt.graph.initializer if i.data_type == TensorProto.FLOAT}
    assert nodes["conv_b"].input[2] in float_inits and nodes["conv_b"].input[2] not in by_out
    assert all(by_out[i].op_type == "DequantizeLinear" for i in nodes["residual_add"].input)
    assert by_out[nodes["scale_logits"].input[0]].op_type == "Conv"
    assert by_out[nodes["/Mul"].input[0]].op_type == "Sub"
    for role in ("trt", "cpu"):
        m = onnx.load(str(res.files[role]))
        assert m.graph.input[0].type.tensor_type.elem_type == TensorProto.UINT8
        assert {o.type.tensor_type.elem_type for o in m.graph.output} == {TensorProto.FLOAT}
        meta = onnx_meta(res.files[role])  # what eval/run/bench read
        assert meta.preset == "toy"
        props = {p.key: p.value for p in m.metadata_props}
        q = json.loads(props["solo_deploy"])["quantization"]
        assert q["method"] == "minmax" and q["images"] == 32 and len(q["data_sha256"]) == 64
        assert q["preprocessing_nodes"] == ["/Cast_input_first", "/Transpose", "/Sub", "/Mul"]
        assert make_runner(res.files[role]).backend == "onnxruntime"
    # Outputs stay close to FP32 on a held-out image (toy net: relative L2 error < 5%).
    from solo_deploy.data.synthetic import SyntheticDataset

    x = onnx_meta(toy).preprocess.letterbox(SyntheticDataset("val", count=1)[0].image_bgr)[0][None]
    ref = ort.InferenceSession(str(toy), providers=["CPUExecutionProvider"]).run(None, {"images": x})
    for role in ("trt", "cpu"):
        out = ort.InferenceSession(str(res.files[role]), providers=["CPUExecutionProvider"]).run(None, {"images": x})
        for a, b in zip(ref, out):
            assert np.linalg.norm(a - b) / np.linalg.norm(a) < 0.05, role
    rep = json.loads(res.files["report"].read_text())
    assert rep["accuracy"] is None and rep["latency"]["fp32_ms"] > 0 and rep["latency"]["threads"] == 1


def test_second_run_reuses_cache(toy, tmp_path, monkeypatch) -> None:
    out = tmp_path / "out"
    first = Q.calibrate(toy, "synthetic", out, eval_images=0, **KW)
    assert not first.reused
    stamps = {n: (out / n).stat().st_mtime_ns for n in (FILES["cache"], KEY_FILE, FILES["ranges"], FILES["fp32"])}
    cache_text = (out / FILES["cache"]).read_text()

    def no_calibration(*_a, **_k):
        raise AssertionError("the calibrator ran again")

    monkeypatch.setattr(Q, "collect_ranges", no_calibration)
    second = Q.calibrate(toy, "synthetic", out, eval_images=0, **KW)
    assert second.reused and second.report["calibration"]["reused"] is True
    assert {n: (out / n).stat().st_mtime_ns for n in stamps} == stamps
    assert (out / FILES["cache"]).read_text() == cache_text
    # Another TensorRT version: same scales, only the header is rewritten (no calibration).
    third = Q.calibrate(toy, "synthetic", out, eval_images=0, trt_version="10.7.0", **KW)
    head, _, rest = (out / FILES["cache"]).read_text().partition("\n")
    assert third.reused and head.startswith("TRT-100700-") and rest == cache_text.partition("\n")[2]
    assert (out / FILES["ranges"]).stat().st_mtime_ns == stamps[FILES["ranges"]]
    cache_text = (out / FILES["cache"]).read_text()
    # Other data (or method) is another key: calibrate again.
    with pytest.raises(AssertionError, match="calibrator ran again"):
        Q.calibrate(toy, "synthetic", out, images=33, eval_images=0, **KW_ANY)
    with pytest.raises(AssertionError, match="calibrator ran again"):
        Q.calibrate(toy, "synthetic", out, method="percentile", eval_images=0, **KW)
    assert (out / FILES["cache"]).read_text() == cache_text  # failed runs changed nothing
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]


def test_bad_inputs_leave_no_files(toy, tmp_path) -> None:
    out = tmp_path / "out"
    (tmp_path / "empty").mkdir()
    few = tmp_path / "few"
    few.mkdir()
    import cv2

    for i in range(5):
        cv2.imwrite(str(few / f"{i}.png"), np.full((20, 20, 3), 40 * i, np.uint8))
    junk = tmp_path / "junk"
    junk.mkdir()
    for i in range(40):
        (junk / f"{i}.jpg").write_bytes(b"not a jpeg")
    plain = _toy_onnx(tmp_path / "plain.onnx", solo_meta=False)
    (tmp_path / "garbage.onnx").write_bytes(b"\x00garbage")
    cases = [
        ({"model": toy, "data": tmp_path / "empty"}, "no images"),
        ({"model": toy, "data": few}, "only 5 usable calibration images"),
        ({"model": toy, "data": junk}, "cannot decode"),
        ({"model": plain, "data": "synthetic"}, "not a solo-deploy export"),
        ({"model": tmp_path / "garbage.onnx", "data": "synthetic"}, "not a valid ONNX"),
        ({"model": toy, "data": "synthetic", "method": "kl"}, "unknown --method"),
    ]
    for kwargs, words in cases:
        with pytest.raises(BadInputError, match=words) as exc:
            Q.calibrate(out_dir=out, eval_images=0, **kwargs, **KW_ANY)
        assert "\n" not in str(exc.value)
        assert not out.exists(), words
        assert not [p.name for p in tmp_path.iterdir() if p.name.startswith(".")], words
    # An existing result stays untouched by a failing run.
    Q.calibrate(toy, few, out, force=True, eval_images=0, **KW_ANY)
    before = {p.name: p.stat().st_mtime_ns for p in out.iterdir()}
    with pytest.raises(BadInputError):
        Q.calibrate(toy, junk, out, eval_images=0, threads=1)
    assert {p.name: p.stat().st_mtime_ns for p in out.iterdir()} == before


def test_cli(toy, tmp_path) -> None:
    from typer.testing import CliRunner

    import solo_deploy.cli.cmd_calibrate
    import solo_deploy.cli.commands  # noqa: F401 - and the others (a one-command Typer app has no subcommands)
    from solo_deploy.cli.app import app

    out = tmp_path / "out"
    res = CliRunner().invoke(app, ["calibrate", str(toy), "--data", "synthetic", "-o", str(out), "--images", "32",
                                   "--eval-images", "0", "--threads", "1"])
    assert res.exit_code == 0, res.output
    assert "calibration: minmax on 32 images" in res.output and "CPU latency ms" in res.output
    assert (out / FILES["trt"]).is_file() and (out / FILES["cache"]).read_text().startswith("TRT-")
    res = CliRunner().invoke(app, ["calibrate", str(toy), "-o", str(tmp_path / "o2"), "--images", "8"])
    assert res.exit_code != 0 and isinstance(res.exception, BadInputError)
    assert "below the minimum of 32" in str(res.exception) and not (tmp_path / "o2").exists()
    assert os.environ.get("OMP_NUM_THREADS") == "1"
