"""TensorRT calibration cache: TensorRT's text format, bit-exact round trip, key sidecar."""
from __future__ import annotations

import struct

import numpy as np
import pytest

from solo_deploy.calibration import trt_cache
from solo_deploy.errors import BadInputError


def test_round_trip_is_bit_exact(tmp_path) -> None:
    rng = np.random.default_rng(0)
    # float32 scales across many magnitudes, plus the awkward ones (tiny, denormal, zero).
    values = np.concatenate([rng.uniform(1e-6, 10, 200), 10.0 ** rng.uniform(-30, 3, 50),
                             [np.finfo(np.float32).tiny, 1e-42, 0.0, 1 / 127]]).astype(np.float32)
    scales = {f"/net/layer{i}/Conv_output_0": float(v) for i, v in enumerate(values)}
    scales["name: with colon"] = 0.5  # tensor names may contain ': '
    path = trt_cache.write_cache(tmp_path / "calibration.cache", scales, "minmax", trt_version="10.3.0")
    head, back = trt_cache.read_cache(path)
    assert head == "TRT-100300-MinMaxCalibration"
    assert list(back) == list(scales)  # order kept
    for name, v in scales.items():
        assert struct.pack(">f", back[name]) == struct.pack(">f", v), name


def test_text_format_matches_tensorrt(tmp_path) -> None:
    path = trt_cache.write_cache(tmp_path / "c.cache", {"input": 1.0, "conv": 0.0078125, "zero": 0.0}, "entropy",
                                 trt_version="8.6.1")
    lines = path.read_text().splitlines()
    # 1.0 = 0x3f800000, 2^-7 = 0x3c000000; std::hex prints no leading zeros (0 -> "0").
    assert lines == ["TRT-8601-EntropyCalibration2", "input: 3f800000", "conv: 3c000000", "zero: 0"]
    assert trt_cache.header("percentile", "10.x").endswith("-MinMaxCalibration")
    assert trt_cache.trt_version_int("10.1.0") == 100100 and trt_cache.trt_version_int("100300") == 100300


def test_scales_are_absmax_over_127() -> None:
    scales = trt_cache.scales_from_ranges({"a": (-2.54, 1.0), "b": (0.0, 12.7), "dead": (0.0, 0.0)})
    assert scales["a"] == float(np.float32(2.54 / 127))
    assert scales["b"] == float(np.float32(0.1))
    assert scales["dead"] == float(np.float32(1 / 127))  # never a zero scale
    with pytest.raises(BadInputError, match="not finite"):
        trt_cache.scales_from_ranges({"nan": (float("nan"), 1.0)})


def test_retarget_keeps_scales(tmp_path) -> None:
    path = trt_cache.write_cache(tmp_path / "c.cache", {"t": 0.25}, "minmax", "10.0.0")
    trt_cache.retarget(path, "10.7.0")
    assert trt_cache.read_cache(path) == ("TRT-100700-MinMaxCalibration", {"t": 0.25})


def test_bad_caches_are_one_line_errors(tmp_path) -> None:
    with pytest.raises(BadInputError, match="not found"):
        trt_cache.read_cache(tmp_path / "missing.cache")
    bad = tmp_path / "bad.cache"
    bad.write_text("hello\n")
    with pytest.raises(BadInputError, match="not a TensorRT calibration cache"):
        trt_cache.read_cache(bad)
    bad.write_text("TRT-100300-MinMaxCalibration\nconv 3f800000\n")
    with pytest.raises(BadInputError, match=":2:"):
        trt_cache.read_cache(bad)
    with pytest.raises(BadInputError, match="unknown calibration algorithm"):
        trt_cache.write_cache(tmp_path / "x.cache", {"t": 1.0}, "kl")
    with pytest.raises(BadInputError, match="non-negative"):
        trt_cache.write_cache(tmp_path / "x.cache", {"t": -1.0}, "minmax")
    assert not (tmp_path / "x.cache").exists()


def test_key_sidecar(tmp_path) -> None:
    cache = tmp_path / "calibration.cache"
    assert trt_cache.read_key(cache) is None
    key = {"model_sha256": "ab", "data_sha256": "cd", "method": "minmax", "images": 64}
    side = trt_cache.write_key(cache, key)
    assert side.name == "calibration.cache.key.json"
    assert trt_cache.read_key(cache) == key
    side.write_text("{not json")
    assert trt_cache.read_key(cache) is None
