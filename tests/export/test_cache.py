"""cached_onnx: exported once per model content, reused, re-exported when unusable."""
from __future__ import annotations

import pytest
from export_helpers import leftovers, save_tiny

from solo_deploy.core.meta import file_sha256
from solo_deploy.errors import BadInputError
from solo_deploy.export import cache as cache_mod
from solo_deploy.runtime.runners import OnnxRunner, onnx_meta


def test_export_once_then_reuse_then_repair(tmp_path, cache_dir, monkeypatch):
    model = save_tiny(tmp_path / "m.safetensors", "solov2-light-r18", lively=False)
    path = cache_mod.cached_onnx(model)
    assert path == cache_dir / "onnx" / f"{file_sha256(model)[:16]}.onnx"
    assert onnx_meta(path).preset == "solov2-light-r18"
    stamp = path.stat().st_mtime_ns

    def no_export(*args, **kwargs):
        raise AssertionError("the cached export should have been reused")

    monkeypatch.setattr("solo_deploy.export.onnx_export.export_onnx", no_export)
    assert cache_mod.cached_onnx(model) == path and path.stat().st_mtime_ns == stamp
    assert isinstance(OnnxRunner(path), OnnxRunner)  # what the runtime's auto backend builds from it
    monkeypatch.undo()
    monkeypatch.setenv("SOLO_DEPLOY_CACHE", str(cache_dir))

    path.write_bytes(b"truncated")  # a damaged cache entry is exported again
    assert cache_mod.cached_onnx(model) == path
    assert onnx_meta(path).preset == "solov2-light-r18"
    assert leftovers(path.parent) == []


def test_default_root_and_missing_model(tmp_path, monkeypatch):
    monkeypatch.delenv("SOLO_DEPLOY_CACHE", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    assert cache_mod.onnx_cache_path("ab" * 32) == tmp_path / ".cache" / "solo-deploy" / "onnx" / ("ab" * 8 + ".onnx")
    with pytest.raises(BadInputError, match="not found"):
        cache_mod.cached_onnx(tmp_path / "missing.safetensors")
