"""Static TensorRT compatibility of every ResNet-50 preset's tiny variant (dynamic export, the superset graph).

The sweep checks the unsimplified graph (a superset of the shipped one's operators; onnxslim's
default fusions only emit standard ops), which keeps each preset under a few seconds; the
simplified graphs are checked in test_onnx_export/test_onnx_dynamic/test_onnx_half.
"""
from __future__ import annotations

import pytest
from export_helpers import save_tiny

from solo_deploy.export.onnx_export import export_onnx

PRESETS = ["solo-r50", "solov2-r50", "solov2-light-r50", "decoupled-solo-r50", "decoupled-solo-light-r50"]


@pytest.mark.parametrize("preset", PRESETS)
def test_preset_passes_trt_check(preset, tmp_path):
    model = save_tiny(tmp_path / "m.safetensors", preset, lively=False)
    result = export_onnx(model, tmp_path / "m.onnx", dynamic=True, check_parity=False, simplify=False)
    assert result.trt_problems == (), result.trt_problems
