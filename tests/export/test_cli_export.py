"""`solo-deploy export` through Typer: summaries, formats, error types and exit codes."""
from __future__ import annotations

import sys

import pytest
from cli_helpers import assert_one_line_error, run_cli
from export_helpers import save_tiny
from typer.testing import CliRunner

import solo_deploy.cli.commands  # noqa: F401 - registers every command (as main() does), export included
from solo_deploy.cli.app import app
from solo_deploy.errors import BadInputError
from solo_deploy.export.triton import parse_pbtxt


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    return save_tiny(tmp_path_factory.mktemp("cli") / "tiny.safetensors", "solov2-light-r18", lively=False)


def _invoke(args):
    return CliRunner().invoke(app, args)


def test_export_onnx_then_triton(model, tmp_path):
    out = tmp_path / "tiny.onnx"
    res = _invoke(["export", str(model), "-o", str(out), "--imgsz", "64", "64", "--dynamic"])
    assert res.exit_code == 0, res.output
    assert out.is_file()
    assert f"wrote {out}" in res.output and "MiB" in res.output and "parity: onnxruntime fp32" in res.output
    assert "max rel diff" in res.output
    res = _invoke(["export", str(out), "--format", "triton", "-o", str(tmp_path / "repo"), "--max-batch", "2"])
    assert res.exit_code == 0, res.output
    cfg = parse_pbtxt((tmp_path / "repo" / "tiny" / "config.pbtxt").read_text())
    assert cfg["max_batch_size"] == 2 and "dynamic_batching" in cfg


@pytest.mark.parametrize("args,match", [
    (["--format", "zip"], "unknown --format"),
    (["--precision", "int4"], "unknown --precision"),
    (["--opset", "21"], "opset 21 is not supported"),
    (["--precision", "int8"], "calibration"),
    (["--imgsz", "60", "64"], "multiples of 32"),
])
def test_bad_options(model, tmp_path, args, match):
    res = _invoke(["export", str(model), "-o", str(tmp_path / "x.onnx"), *args])
    assert res.exit_code != 0 and res.exception is not None
    assert match in str(res.exception)
    assert not (tmp_path / "x.onnx").exists()


def test_engine_without_tensorrt(model, tmp_path):
    pytest.importorskip("onnx")
    import importlib.util

    if importlib.util.find_spec("tensorrt") is not None:
        pytest.skip("TensorRT is installed")
    res = _invoke(["export", str(model), "--format", "engine", "-o", str(tmp_path / "m.engine")])
    assert isinstance(res.exception, BadInputError)
    assert "TensorRT is not installed" in str(res.exception)


def test_console_entry_exit_code_2(model, tmp_path, monkeypatch, capsys):
    from solo_deploy.cli.app import main

    monkeypatch.setattr(sys, "argv", ["solo-deploy", "export", str(model), "-o", str(tmp_path / "x.onnx"),
                                      "--opset", "99"])
    with pytest.raises(SystemExit) as info:
        main()
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("error: opset 99 is not supported") and err.count("\n") == 1


def test_version_compatible_is_for_engines_only(model, tmp_path):
    """The installed script: one line, exit 2, nothing written."""
    out = tmp_path / "x.onnx"
    proc = run_cli("export", model, "-o", out, "--version-compatible")
    assert_one_line_error(proc, 2, "--version-compatible applies to --format engine")
    assert not out.exists()
    proc = run_cli("export", "--help")
    assert proc.returncode == 0 and "--version-compatible" in proc.stdout


def test_version_compatible_engine_request_without_tensorrt(model, tmp_path):
    import importlib.util

    if importlib.util.find_spec("tensorrt") is not None:
        pytest.skip("TensorRT is installed")
    res = _invoke(["export", str(model), "--format", "engine", "--version-compatible",
                   "-o", str(tmp_path / "m.engine")])
    assert isinstance(res.exception, BadInputError) and "TensorRT is not installed" in str(res.exception)
