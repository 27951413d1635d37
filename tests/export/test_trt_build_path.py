"""The engine build path without TensorRT: calibration-cache header rewrite, timing cache, the
version-compatible flag, through a stand-in for the ``tensorrt`` module (only what build_engine
calls). What TensorRT itself does with them is checked by the ``gpu`` tests of test_tensorrt.py."""
from __future__ import annotations

import types
from pathlib import Path

import pytest
from export_helpers import CLASS_NAMES, cast_only_onnx, tiny_preset

from solo_deploy.calibration import trt_cache
from solo_deploy.errors import BadInputError, RuntimeFailure
from solo_deploy.export import tensorrt as trt_export
from solo_deploy.export.tensorrt import (
    _timing_cache,
    build_engine,
    retarget_calibration_cache,
    trt_version_int,
)
from solo_deploy.runtime.tensorrt import read_sidecar

SCALES = {"images": 1.0, "/backbone/conv1/Conv_output_0": 0.0078125, "name: with colon": 0.5}


# ---------------------------------------------------------------------------------------------
# Header rewrite: a pure function
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("version,number", [("8.6.1", 8601), ("10.0.0", 100000), ("10.15.1.29", 101501),
                                            ("11.1.0.7", 110100)])
def test_version_number_matches_the_calibration_writer(version, number):
    assert trt_version_int(version) == number
    assert trt_cache.trt_version_int(".".join(version.split(".")[:3])) == number  # calibrate writes the same


@pytest.mark.parametrize("method", ["minmax", "entropy"])
@pytest.mark.parametrize("version", ["8.6.1", "10.15.1.29", "11.1.0"])
def test_header_rewrite_keeps_scales_and_the_file(tmp_path, method, version):
    cache = trt_cache.write_cache(tmp_path / "calibration.cache", SCALES, method, trt_version="10.0.0")
    before = cache.read_bytes()
    assert before.startswith(b"TRT-100000-" + trt_cache.ALGORITHMS[method].encode())
    out = retarget_calibration_cache(before, version)
    head, _, rest = out.partition(b"\n")
    assert head == f"TRT-{trt_version_int(version)}-MinMaxCalibration".encode()
    assert rest == before.partition(b"\n")[2]  # scale lines byte for byte
    copy = tmp_path / "copy.cache"
    copy.write_bytes(out)
    assert trt_cache.read_cache(copy)[1] == trt_cache.read_cache(cache)[1]
    assert cache.read_bytes() == before  # a pure function: nothing written


def test_header_rewrite_refuses_what_is_no_cache():
    with pytest.raises(BadInputError, match="does not start with a TensorRT header"):
        retarget_calibration_cache(b"hello\nx: 3f800000\n", "10.9.0")
    with pytest.raises(BadInputError, match="no tensor scales"):
        retarget_calibration_cache(b"TRT-100000-MinMaxCalibration\n", "10.9.0")
    crlf = retarget_calibration_cache(b"TRT-8601-EntropyCalibration2\r\nx: 3f800000\r\n", "10.9.0")
    assert crlf == b"TRT-100900-MinMaxCalibration\r\nx: 3f800000\r\n"


# ---------------------------------------------------------------------------------------------
# A stand-in for the tensorrt module: records what build_engine hands to it
# ---------------------------------------------------------------------------------------------
class _TimingCache:
    def __init__(self, data: bytes) -> None:
        self.data = data

    def serialize(self) -> bytes:
        return b"TIMING:" + self.data


class _Config:
    def __init__(self, rec: dict) -> None:
        self.rec = rec
        self.int8_calibrator = None
        self._cache = None

    def set_memory_pool_limit(self, pool, size) -> None:
        self.rec["workspace"] = size

    def set_flag(self, flag) -> None:
        self.rec.setdefault("flags", []).append(flag)

    def add_optimization_profile(self, profile) -> None:
        pass

    def set_calibration_profile(self, profile) -> None:
        pass

    def create_timing_cache(self, data: bytes):
        self.rec.setdefault("timing_created", []).append(bytes(data))
        return None if data.startswith(b"corrupt") else _TimingCache(bytes(data))

    def set_timing_cache(self, cache, ignore_mismatch):
        if cache is None:  # TensorRT's binding: TypeError for None
            raise TypeError("set_timing_cache(): incompatible function arguments")
        self._cache = cache
        return not cache.data.startswith(b"other-gpu")

    def get_timing_cache(self):
        return self._cache


class _Tensor:
    def __init__(self, name, dtype, shape) -> None:
        self.name, self.dtype, self.shape = name, dtype, shape


class _Network:
    num_inputs, num_outputs = 1, 1

    def get_input(self, i):
        return _Tensor("images", "uint8", (1, 64, 64, 3))

    def get_output(self, i):
        return _Tensor("y", "bf16", (1, 64, 64, 3))


def fake_tensorrt(rec: dict, version: str = "10.15.1.29") -> types.SimpleNamespace:
    class MinMaxCalibrator:  # trt.IInt8MinMaxCalibrator
        def __init__(self) -> None:
            pass

    class Builder:
        def __init__(self, logger) -> None:
            pass

        def create_network(self, flags):
            rec["network_flags"] = flags
            return _Network()

        def create_builder_config(self):
            return _Config(rec)

        def create_optimization_profile(self):
            return types.SimpleNamespace(set_shape=lambda *a: rec.setdefault("profile", a))

        def build_serialized_network(self, network, config):
            rec["calibrator"] = config.int8_calibrator
            return b"ENGINE"

    class OnnxParser:
        def __init__(self, network, logger) -> None:
            pass

        def parse_from_file(self, path) -> bool:
            return True

    class DataType:
        BF16 = "bf16"

    def nptype(dtype):
        if dtype == "bf16":
            raise TypeError("no numpy type")
        return dtype

    names = ("FP16", "INT8", "VERSION_COMPATIBLE")
    return types.SimpleNamespace(
        __version__=version, Builder=Builder, OnnxParser=OnnxParser, IInt8MinMaxCalibrator=MinMaxCalibrator,
        NetworkDefinitionCreationFlag=types.SimpleNamespace(STRONGLY_TYPED=0),
        MemoryPoolType=types.SimpleNamespace(WORKSPACE="workspace"),
        BuilderFlag=types.SimpleNamespace(**{n: n for n in names}),
        Logger=type("Logger", (), {"VERBOSE": 0, "INFO": 1, "WARNING": 2, "ERROR": 3, "__init__": lambda s, v: None}),
        DataType=DataType, nptype=nptype)


@pytest.fixture
def fp32_onnx(tmp_path) -> Path:
    from solo_deploy.model.modelfile import ModelMeta
    from solo_deploy.preprocess import PreprocessSpec

    meta = ModelMeta(model=tiny_preset("solov2-light-r18"), preprocess=PreprocessSpec(input_hw=(64, 64)),
                     class_names=CLASS_NAMES).to_dict()
    cast_only_onnx(tmp_path / "m.onnx", meta)
    return tmp_path / "m.onnx"


@pytest.fixture
def fake_build(monkeypatch):
    import torch

    rec: dict = {}
    monkeypatch.setattr(trt_export, "import_tensorrt", lambda: fake_tensorrt(rec))
    monkeypatch.setattr(trt_export, "gpu_info", lambda device=0: {"name": "GPU", "compute_capability": [9, 0]})
    monkeypatch.setattr(torch.cuda, "set_device", lambda device: None)
    return rec


def test_int8_build_replays_a_retargeted_copy_of_the_cache(tmp_path, fp32_onnx, fake_build):
    cache = trt_cache.write_cache(tmp_path / "calibration.cache", SCALES, "entropy", trt_version="10.0.0")
    before = cache.read_bytes()
    built = build_engine(fp32_onnx, tmp_path / "m.engine", precision="int8", calibration_cache=cache)
    replayed = fake_build["calibrator"].read_calibration_cache()
    assert replayed.startswith(b"TRT-101501-MinMaxCalibration\n")  # installed 10.15.1, the MinMax calibrator
    assert replayed.partition(b"\n")[2] == before.partition(b"\n")[2]
    assert fake_build["calibrator"].get_batch(["images"]) is None  # replay only: no data
    assert cache.read_bytes() == before  # the input is never modified
    assert fake_build["flags"] == ["INT8", "FP16"] and built.path.read_bytes() == b"ENGINE"
    side = read_sidecar(built.path)
    assert side["engine"]["version_compatible"] is False
    assert side["engine"]["io"][1]["dtype"] == "bfloat16"  # BF16 I/O gets the name the Triton writer maps


def test_version_compatible_build_sets_the_flag_and_the_sidecar(tmp_path, fp32_onnx, fake_build):
    built = build_engine(fp32_onnx, tmp_path / "m.engine", precision="fp16", version_compatible=True)
    assert fake_build["flags"] == ["FP16", "VERSION_COMPATIBLE"]
    engine = read_sidecar(built.path)["engine"]
    assert engine["version_compatible"] is True and "VERSION_COMPATIBLE" in engine["builder_flags"]


def test_corrupt_timing_cache_is_ignored_and_rebuilt(tmp_path, fp32_onnx, fake_build, caplog):
    timing = tmp_path / "timing.cache"
    timing.write_bytes(b"corrupt bytes")
    with caplog.at_level("WARNING", logger="solo_deploy.export"):
        build_engine(fp32_onnx, tmp_path / "m.engine", timing_cache=timing)
    assert fake_build["timing_created"] == [b"corrupt bytes", b""]
    assert "unreadable" in caplog.text
    assert timing.read_bytes() == b"TIMING:"  # replaced by the fresh cache after the build


def test_timing_cache_cases():
    rec: dict = {}
    config = _Config(rec)
    assert _timing_cache(config, None).data == b""
    mismatch = _Config(rec)
    path = Path("/nonexistent/timing.cache")
    assert _timing_cache(mismatch, path).data == b""

    class Broken(_Config):
        def create_timing_cache(self, data):
            return None

    with pytest.raises(RuntimeFailure, match="empty timing cache"):
        _timing_cache(Broken({}), None)


def test_timing_cache_from_another_gpu_is_replaced(tmp_path):
    rec: dict = {}
    path = tmp_path / "t.cache"
    path.write_bytes(b"other-gpu tactics")
    cache = _timing_cache(_Config(rec), path)
    assert rec["timing_created"] == [b"other-gpu tactics", b""] and cache.data == b""
