"""The Python-backend Triton model `export --format triton --triton-backend python` writes (#21),
without a server: its config, and its model.py run against a stand-in of Triton's
``triton_python_backend_utils`` -- requests the dynamic batcher groups give what each gives alone."""
from __future__ import annotations

import importlib.util
import sys
import types

import numpy as np
import pytest
from cli_helpers import assert_one_line_error, run_cli

from solo_deploy.core.pbtxt import parse_pbtxt


def _stand_in_pb_utils() -> types.ModuleType:
    mod = types.ModuleType("triton_python_backend_utils")

    class Tensor:
        def __init__(self, name, array):
            self.name, self.array = name, array

        def as_numpy(self):
            return self.array

    class InferenceResponse:
        def __init__(self, tensors):
            self.tensors = {t.name: t.array for t in tensors}

    class Request:
        def __init__(self, inputs):
            self.inputs = inputs

    mod.Tensor, mod.InferenceResponse, mod.Request = Tensor, InferenceResponse, Request
    mod.get_input_tensor_by_name = lambda request, name: Tensor(name, request.inputs[name])
    return mod


@pytest.fixture(scope="module")
def repo(tmp_path_factory):
    root = tmp_path_factory.mktemp("triton_py")
    import sys as _sys
    from pathlib import Path

    _sys.path.insert(0, str(Path(__file__).resolve().parent))
    from export_helpers import save_tiny

    model = save_tiny(root / "lively.safetensors", "solov2-light-r18")
    proc = run_cli("export", model, "--format", "triton", "--triton-backend", "python", "-o", root / "repo",
                   "--name", "lively", timeout=600)
    assert proc.returncode == 0, proc.stderr
    assert "end-to-end, Python backend (ONNX Runtime), max_batch_size 8, dynamic batching" in proc.stdout
    return root / "repo" / "lively"


def test_config_serves_the_end_to_end_graph_through_the_python_backend(repo):
    cfg = parse_pbtxt((repo / "config.pbtxt").read_text())
    assert cfg["backend"] == "python" and "platform" not in cfg and cfg["max_batch_size"] == 8
    assert cfg["dynamic_batching"] == {"max_queue_delay_microseconds": 2000}
    group = cfg["instance_group"]
    assert (group[0] if isinstance(group, list) else group)["kind"] == "KIND_CPU"
    outputs = {o["name"]: o for o in cfg["output"]}
    assert list(outputs) == ["masks", "boxes", "labels", "scores", "num_detections"]
    # One value per image: Triton needs dims, so [1] reshaped to a scalar per batch item.
    assert outputs["num_detections"]["dims"] == [1] and outputs["num_detections"]["reshape"] == {"shape": []}
    assert sorted(p.name for p in (repo / "1").iterdir()) == ["model.onnx", "model.py"]


def test_model_py_batches_requests_as_each_alone(repo, monkeypatch):
    monkeypatch.setitem(sys.modules, "triton_python_backend_utils", _stand_in_pb_utils())
    spec = importlib.util.spec_from_file_location("lively_triton_model", repo / "1" / "model.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    model = mod.TritonPythonModel()
    model.initialize({"model_repository": str(repo), "model_version": "1"})
    rng = np.random.default_rng(0)
    pb = sys.modules["triton_python_backend_utils"]
    requests = [pb.Request({"images": rng.integers(0, 255, (n, 64, 64, 3), dtype=np.uint8)}) for n in (1, 2, 1)]
    together = model.execute(requests)  # one session run over the 4 images
    alone = [model.execute([r])[0] for r in requests]
    assert len(together) == 3
    for t, a, r in zip(together, alone, requests):
        assert t.tensors["masks"].shape[0] == r.inputs["images"].shape[0]
        for name in ("masks", "boxes", "labels", "scores", "num_detections"):
            np.testing.assert_allclose(t.tensors[name], a.tensors[name], atol=1e-5)
    assert sum(int(t.tensors["num_detections"].sum()) for t in together) > 0  # the lively model finds instances


def test_triton_backend_choices_are_checked(repo, tmp_path):
    model = repo.parents[1] / "lively.safetensors"
    assert_one_line_error(run_cli("export", model, "--format", "triton", "--triton-backend", "tensorflow", "-o",
                                  tmp_path / "r"), 2, "unknown --triton-backend")
    assert_one_line_error(run_cli("export", model, "--format", "triton", "--triton-backend", "tensorrt", "-o",
                                  tmp_path / "r"), 2, "export --format engine first")
