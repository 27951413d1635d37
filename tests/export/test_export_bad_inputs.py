"""export_onnx on bad inputs: BadInputError (or ParityError), and never a partial or temporary file."""
from __future__ import annotations

import os

import pytest
import torch
from export_helpers import leftovers, save_tiny

from solo_deploy.errors import BadInputError, RuntimeFailure
from solo_deploy.export.onnx_export import export_onnx, supported_opsets
from solo_deploy.export.parity import ParityError


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    return save_tiny(tmp_path_factory.mktemp("bad") / "m.safetensors", "solov2-light-r18", lively=False)


def _assert_nothing_written(folder, name="out.onnx"):
    assert not (folder / name).exists()
    assert leftovers(folder) == []


def test_missing_model(tmp_path):
    with pytest.raises(BadInputError, match="not found"):
        export_onnx(tmp_path / "nope.safetensors", tmp_path / "out.onnx")
    _assert_nothing_written(tmp_path)


@pytest.mark.parametrize("name,content", [("m.safetensors", b"garbage" * 10), ("m.ckpt", b"PK\x03\x04 broken zip"),
                                          ("m.safetensors", b"")])
def test_corrupt_model(tmp_path, name, content):
    (tmp_path / name).write_bytes(content)
    with pytest.raises(BadInputError):
        export_onnx(tmp_path / name, tmp_path / "out.onnx")
    _assert_nothing_written(tmp_path)


@pytest.mark.parametrize("payload,match", [({"state_dict": {}, "hyper_parameters": {}}, "not a solo-deploy checkpoint"),
                                           ({"weights": {}}, "not a Lightning checkpoint")])
def test_checkpoint_that_is_not_a_solo_deploy_model(tmp_path, payload, match):
    torch.save(payload, tmp_path / "other.ckpt")
    with pytest.raises(BadInputError, match=match):
        export_onnx(tmp_path / "other.ckpt", tmp_path / "out.onnx")
    _assert_nothing_written(tmp_path)


@pytest.mark.parametrize("opset", [7, 12, supported_opsets().stop, 25])
def test_unsupported_opset(model, tmp_path, opset):
    with pytest.raises(BadInputError, match=f"opset {opset} is not supported"):
        export_onnx(model, tmp_path / "out.onnx", opset=opset)
    _assert_nothing_written(tmp_path)


def test_unwritable_output(model, tmp_path):
    (tmp_path / "a_file").write_text("x")
    with pytest.raises(BadInputError, match="not a folder"):
        export_onnx(model, tmp_path / "a_file" / "out.onnx")
    (tmp_path / "dir.onnx").mkdir()
    with pytest.raises(BadInputError, match="is a folder"):
        export_onnx(model, tmp_path / "dir.onnx")
    assert leftovers(tmp_path) == []


@pytest.mark.skipif(os.name != "posix" or os.geteuid() == 0, reason="root ignores folder permissions")
def test_read_only_folder(model, tmp_path):
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o500)
    try:
        with pytest.raises(BadInputError, match="not writable"):
            export_onnx(model, ro / "out.onnx")
    finally:
        ro.chmod(0o700)
    _assert_nothing_written(ro)


@pytest.mark.parametrize("kwargs", [{"imgsz": (63, 64)}, {"batch": 0}, {"tolerance": 0.0}])
def test_bad_arguments(model, tmp_path, kwargs):
    with pytest.raises(BadInputError):
        export_onnx(model, tmp_path / "out.onnx", **kwargs)
    _assert_nothing_written(tmp_path)


def test_parity_failure_writes_nothing_and_keeps_the_old_file(model, tmp_path):
    out = tmp_path / "out.onnx"
    out.write_bytes(b"previous export")
    with pytest.raises(ParityError, match="nothing written") as info:
        export_onnx(model, out, tolerance=1e-15)
    assert isinstance(info.value, RuntimeFailure) and info.value.exit_code == 1
    assert out.read_bytes() == b"previous export"
    assert leftovers(tmp_path) == []
