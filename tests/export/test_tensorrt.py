"""TensorRT: what runs without it (sidecar checks, precision planning, profiles, error messages) on the CPU,
and real engine builds on a GPU (skipped here)."""
from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest
from export_helpers import CLASS_NAMES, TRT_REASON, cast_only_onnx, save_tiny, tiny_preset
from onnx import TensorProto, helper

from solo_deploy.errors import BadInputError
from solo_deploy.export.tensorrt import build_engine, onnx_precision, plan_precision, resolve_profile
from solo_deploy.runtime.tensorrt import TRT_MISSING, TensorRTRunner, check_engine_sidecar, read_sidecar, sidecar_path


def _have_trt_gpu() -> bool:
    if importlib.util.find_spec("tensorrt") is None:
        return False
    try:
        import torch

        return torch.cuda.is_available()
    except Exception:  # noqa: BLE001
        return False


HAVE_TRT_GPU = _have_trt_gpu()
needs_trt = pytest.mark.skipif(not HAVE_TRT_GPU, reason=TRT_REASON)
no_trt = pytest.mark.skipif(importlib.util.find_spec("tensorrt") is not None, reason="TensorRT is installed")

SIDECAR = {"format": "solo-deploy-engine", "schema_version": 1, "tensorrt": {"version": "10.9.0.34"},
           "gpu": {"name": "NVIDIA H100 80GB HBM3", "compute_capability": [9, 0]}}
GPU = {"name": "NVIDIA H100 80GB HBM3", "compute_capability": [9, 0]}


# ---------------------------------------------------------------------------------------------
# Sidecar checks (CPU)
# ---------------------------------------------------------------------------------------------
def test_matching_sidecar_passes():
    check_engine_sidecar(SIDECAR, "10.9.0.34", GPU)
    check_engine_sidecar(SIDECAR, "10.9.0", GPU)  # no build number to compare
    check_engine_sidecar(SIDECAR, None, None)  # nothing to compare against


@pytest.mark.parametrize("version", ["10.9.1", "10.9.0.35", "10.8.0", "11.0.0", "9.9"])
def test_other_tensorrt_version_is_refused(version):
    """TensorRT: an engine works only with the TensorRT version that built it; a patch release too."""
    with pytest.raises(BadInputError, match=rf"built with TensorRT 10\.9\.0\.34, this machine has TensorRT {version}"):
        check_engine_sidecar(SIDECAR, version, GPU, engine="m.engine")


@pytest.mark.parametrize("built,here,loads", [
    ("10.9.0.34", "10.9.0.34", True),
    ("10.9.0.34", "10.9.1", True),  # later patch, same major
    ("10.9.0", "10.16.1", True),  # later minor, same major
    ("10.9.0", "11.1.0", True),  # TensorRT 10 -> 11 is documented
    ("8.6.1", "10.3.0", True),  # 8 -> 10 is documented
    ("11.0.0", "11.1.0", True),
    ("10.9.0", "10.8.0", False),  # never backwards
    ("11.1.0", "10.16.1", False),
    ("8.6.1", "11.1.0", False),  # no 8 -> 11
    ("8.5.3", "8.6.1", False),  # version compatibility starts at 8.6
])
def test_version_compatible_engines(built, here, loads):
    side = {**SIDECAR, "tensorrt": {"version": built}, "engine": {"version_compatible": True}}
    if loads:
        check_engine_sidecar(side, here, GPU)
    else:
        with pytest.raises(BadInputError, match=rf"built version-compatible with TensorRT {built}"):
            check_engine_sidecar(side, here, GPU)
    # version compatibility is not hardware compatibility: the GPU check stays
    with pytest.raises(BadInputError, match="compute capability 9.0"):
        check_engine_sidecar(side, None, {"name": "NVIDIA A100", "compute_capability": [8, 0]})


def test_other_gpu_is_refused():
    with pytest.raises(BadInputError, match="compute capability 9.0"):
        check_engine_sidecar(SIDECAR, "10.9.0", {"name": "NVIDIA A100-SXM4-80GB", "compute_capability": [8, 0]})
    with pytest.raises(BadInputError, match="built on a NVIDIA H100"):
        check_engine_sidecar(SIDECAR, "10.9.0", {"name": "NVIDIA H200", "compute_capability": [9, 0]})


def test_not_a_sidecar_and_newer_schema():
    with pytest.raises(BadInputError, match="not a solo-deploy engine sidecar"):
        check_engine_sidecar({"format": "x"}, "10.9", GPU)
    with pytest.raises(BadInputError, match="upgrade solo-deploy"):
        check_engine_sidecar({**SIDECAR, "schema_version": 99}, "10.9", GPU)


def test_runner_reads_the_sidecar_first(tmp_path):
    engine = tmp_path / "m.engine"
    engine.write_bytes(b"\x00" * 16)
    with pytest.raises(BadInputError, match="no sidecar"):
        TensorRTRunner(engine, "cuda")
    with pytest.raises(BadInputError, match="CUDA device"):
        TensorRTRunner(engine, "cpu")
    sidecar_path(engine).write_text("{not json")
    with pytest.raises(BadInputError, match="cannot read engine sidecar"):
        read_sidecar(engine)


@no_trt
def test_runner_and_builder_without_tensorrt(tmp_path):
    from solo_deploy.model.modelfile import ModelMeta
    from solo_deploy.preprocess import PreprocessSpec

    meta = ModelMeta(model=tiny_preset("solov2-light-r18"), preprocess=PreprocessSpec(input_hw=(64, 64)),
                     class_names=CLASS_NAMES).to_dict()
    engine = tmp_path / "m.engine"
    engine.write_bytes(b"\x00" * 16)
    sidecar_path(engine).write_text(json.dumps({**SIDECAR, "solo_deploy": meta}))
    with pytest.raises(BadInputError) as info:
        TensorRTRunner(engine, "cuda")
    assert str(info.value) == TRT_MISSING
    # build_engine: reads and checks the ONNX, then needs TensorRT
    cast_only_onnx(tmp_path / "m.onnx", meta)
    with pytest.raises(BadInputError) as info:
        build_engine(tmp_path / "m.onnx", tmp_path / "out.engine")
    assert "pip install 'solo-deploy[tensorrt]'" in str(info.value)
    assert not (tmp_path / "out.engine").exists()


# ---------------------------------------------------------------------------------------------
# Precision planning and profiles (CPU)
# ---------------------------------------------------------------------------------------------
def test_precision_plans():
    # TensorRT 11: strongly typed only, the ONNX decides
    assert plan_precision("fp16", "fp16", 11, None).strongly_typed
    with pytest.raises(BadInputError, match="--half"):
        plan_precision("fp16", "fp32", 11, None)
    with pytest.raises(BadInputError, match="Q/DQ"):
        plan_precision("int8", "fp32", 11, None)
    # TensorRT 10: weak typing for FP32 ONNX, strongly typed when the ONNX carries precision
    assert plan_precision("fp16", "fp32", 10, None).flags == ("FP16",)
    assert not plan_precision("fp16", "fp32", 10, None).strongly_typed
    assert plan_precision("fp16", "fp16", 10, None).strongly_typed
    assert plan_precision("int8", "int8", 10, None).strongly_typed
    with pytest.raises(BadInputError, match="calibration cache"):
        plan_precision("int8", "fp32", 10, None)
    plan = plan_precision("int8", "fp32", 10, Path("calib.cache"))
    assert plan.flags == ("INT8", "FP16") and plan.needs_calibration_cache
    with pytest.raises(BadInputError, match="unknown precision"):
        plan_precision("int4", "fp32", 10, None)


def test_onnx_precision_detection():
    def model(nodes, inits=()):
        g = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])], initializer=list(inits))
        return helper.make_model(g)

    assert onnx_precision(model([helper.make_node("Relu", ["x"], ["y"])])) == "fp32"
    assert onnx_precision(model([helper.make_node("Cast", ["x"], ["y"], to=TensorProto.FLOAT16)])) == "fp16"
    assert onnx_precision(model([helper.make_node("QuantizeLinear", ["x", "s"], ["y"])])) == "int8"


def test_profiles():
    static = resolve_profile([1, 64, 96, 3], (64, 96))
    assert static == ((1, 64, 96, 3),) * 3
    lo, opt, hi = resolve_profile(["batch", "height", "width", 3], (64, 96), max_batch=4)
    assert (lo, opt, hi) == ((1, 64, 96, 3), (1, 64, 96, 3), (4, 64, 96, 3))
    lo, opt, hi = resolve_profile(["batch", "height", "width", 3], (64, 96), min_shape=(1, 64, 64, 3),
                                  opt_shape=(2, 128, 128, 3), max_shape=(8, 256, 256, 3))
    assert hi == (8, 256, 256, 3)
    with pytest.raises(BadInputError, match="static dim"):
        resolve_profile([1, 64, 96, 3], (64, 96), max_shape=(2, 64, 96, 3))
    with pytest.raises(BadInputError, match="multiples of 32"):
        resolve_profile(["b", "h", "w", 3], (64, 96), max_shape=(2, 100, 96, 3))
    with pytest.raises(BadInputError, match="min <= opt <= max"):
        resolve_profile(["b", "h", "w", 3], (64, 96), min_shape=(4, 64, 96, 3), opt_shape=(1, 64, 96, 3))


# ---------------------------------------------------------------------------------------------
# Real builds (GPU + TensorRT)
# ---------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def gpu_exports(tmp_path_factory):
    from solo_deploy.export.onnx_export import export_onnx

    folder = tmp_path_factory.mktemp("trt")
    model = save_tiny(folder / "m.safetensors", "solov2-light-r18")
    fp32 = export_onnx(model, folder / "m32.onnx", dynamic=True).path
    fp16 = export_onnx(model, folder / "m16.onnx", half=True).path
    return folder, fp32, fp16


@pytest.mark.gpu
@needs_trt
def test_build_and_run_fp32_engine(gpu_exports):
    import torch

    from solo_deploy.export.parity import ort_outputs, random_images

    folder, fp32, _ = gpu_exports
    built = build_engine(fp32, folder / "m32.engine", max_batch=4, timing_cache=folder / "timing.cache")
    assert built.path.is_file() and (folder / "timing.cache").is_file()
    side = read_sidecar(built.path)
    assert side["tensorrt"]["version"] and side["gpu"]["compute_capability"]
    runner = TensorRTRunner(built.path, "cuda")
    images = random_images(3, (64, 64))
    scores, kernels, feats = runner(images)
    assert isinstance(scores, torch.Tensor) and scores.is_cuda
    want = ort_outputs(fp32, images)
    for a, b in zip(want, [scores, kernels, *feats]):
        b = b.float().cpu().numpy()
        assert np.abs(a - b).max() <= 1e-3 * np.abs(a).max()


@pytest.mark.gpu
@needs_trt
def test_build_fp16_engine_from_fp16_onnx(gpu_exports):
    from solo_deploy.export.parity import ort_outputs, random_images

    folder, _, fp16 = gpu_exports
    built = build_engine(fp16, folder / "m16.engine", precision="fp16")
    assert built.strongly_typed or built.tensorrt_version.startswith("10.")
    runner = TensorRTRunner(built.path, "cuda")
    images = random_images(1, (64, 64))
    got = runner(images)
    want = ort_outputs(fp16, images)
    assert np.abs(want[0] - got[0].float().cpu().numpy()).max() <= 2e-2 * np.abs(want[0]).max()


@pytest.mark.gpu
@needs_trt
def test_int8_engine_from_a_cache_whose_header_names_10_0_0(gpu_exports, tmp_path):
    """Settles issue #22 items 1-2 on the first machine with TensorRT: calibrate (no TensorRT needed)
    writes TRT-100000-EntropyCalibration2; the build replays it, retargeted, with a MinMax calibrator."""
    from solo_deploy.calibration.quantize import calibrate
    from solo_deploy.export.parity import ort_outputs, random_images

    folder, fp32, _ = gpu_exports
    res = calibrate(fp32, "synthetic", tmp_path / "calib", eval_images=0, method="entropy", trt_version="10.0.0",
                    images=8, threads=1, bench_runs=1)
    cache = tmp_path / "calib" / "calibration.cache"
    before = cache.read_bytes()
    assert before.startswith(b"TRT-100000-EntropyCalibration2\n"), res
    built = build_engine(fp32, folder / "m8.engine", precision="int8", calibration_cache=cache, max_batch=2)
    assert cache.read_bytes() == before  # the original cache is untouched
    assert read_sidecar(built.path)["engine"]["builder_flags"][:1] == ["INT8"]
    runner = TensorRTRunner(built.path, "cuda")
    images = random_images(2, (64, 64))
    got = runner(images)
    want = ort_outputs(fp32, images)
    assert got[0].shape == want[0].shape and np.isfinite(got[0].float().cpu().numpy()).all()


@pytest.mark.gpu
@needs_trt
def test_version_compatible_engine_builds_and_loads(gpu_exports):
    from solo_deploy.export.parity import random_images

    folder, fp32, _ = gpu_exports
    built = build_engine(fp32, folder / "vc.engine", version_compatible=True, max_batch=2)
    assert read_sidecar(built.path)["engine"]["version_compatible"] is True
    scores = TensorRTRunner(built.path, "cuda")(random_images(1, (64, 64)))[0]
    assert scores.is_cuda


@pytest.mark.gpu
@needs_trt
def test_keep_ratio_engine_runs_portrait_and_landscape(tmp_path):
    """A keep-ratio model: dynamic H and W, the graph pads; one engine serves both orientations."""
    from solo_deploy.export.onnx_export import export_onnx
    from solo_deploy.export.parity import ort_outputs
    from solo_deploy.preprocess import PreprocessSpec

    model = save_tiny(tmp_path / "kr.safetensors", "solov2-light-r18", spec=PreprocessSpec.keep_ratio(scale=(96, 64)))
    onnx_path = export_onnx(model, tmp_path / "kr.onnx").path
    built = build_engine(onnx_path, tmp_path / "kr.engine", max_batch=2)
    assert built.profile[0][1:3] == (1, 1) and built.profile[2][1:3] == (96, 96)
    runner = TensorRTRunner(built.path, "cuda")
    rng = np.random.default_rng(0)
    for hw in [(64, 85), (85, 64), (96, 96), (40, 33), (1, 96)]:
        images = rng.integers(0, 256, (2, *hw, 3), dtype=np.uint8)
        got = runner(images)
        want = ort_outputs(onnx_path, images)
        for a, b in zip(want, [got[0], got[1], *got[2]]):
            b = b.float().cpu().numpy()
            assert a.shape == b.shape and np.abs(a - b).max() <= 1e-3 * max(1.0, np.abs(a).max())
