"""runtime.devices: versions/backends report and the silenced, cached ONNX Runtime CUDA probe."""
from __future__ import annotations

import json
import subprocess

import pytest

from solo_deploy.runtime import devices


@pytest.fixture(autouse=True)
def _fresh_cache():
    devices.cuda_provider_works.cache_clear()
    yield
    devices.cuda_provider_works.cache_clear()


def test_describe_is_json_and_complete():
    info = devices.describe()
    json.dumps(info)
    assert {"torch", "onnxruntime", "onnx", "tensorrt", "cupy"} <= set(info["versions"])
    assert info["versions"]["torch"] and info["versions"]["onnx"]
    assert "cpu" in info["backends"]["torch"] and "cpu" in info["backends"]["onnxruntime"]
    assert info["backends"]["tensorrt"] == [] or info["versions"]["tensorrt"]


def test_no_cuda_provider_means_no_probe(monkeypatch):
    import onnxruntime as ort

    monkeypatch.setattr(ort, "get_available_providers", lambda: ["CPUExecutionProvider"])
    monkeypatch.setattr(subprocess, "run", lambda *a, **k: pytest.fail("must not probe"))
    assert devices.cuda_provider_works() is False


@pytest.mark.parametrize("code,expected", [(0, True), (1, False), (3, False)])
def test_probe_result_is_silenced_and_cached(monkeypatch, code, expected):
    import onnxruntime as ort

    calls = []

    def fake_run(cmd, **kwargs):
        calls.append(kwargs)
        return subprocess.CompletedProcess(cmd, code)

    monkeypatch.setattr(ort, "get_available_providers", lambda: ["CUDAExecutionProvider", "CPUExecutionProvider"])
    monkeypatch.setattr(subprocess, "run", fake_run)
    assert devices.cuda_provider_works() is expected
    assert devices.cuda_provider_works() is expected
    assert len(calls) == 1  # cached
    assert calls[0]["stdout"] == subprocess.DEVNULL and calls[0]["stderr"] == subprocess.DEVNULL


def test_real_probe_matches_this_machine():
    """On a CPU-only machine with onnxruntime-gpu the provider is listed but must not be reported working."""
    import torch

    works = devices.cuda_provider_works()
    assert isinstance(works, bool)
    if not torch.cuda.is_available():
        assert works is False
    assert devices.tensorrt_version() is None or isinstance(devices.tensorrt_version(), str)
