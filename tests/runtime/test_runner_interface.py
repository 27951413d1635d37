"""The one runner interface: life cycle, timed stages, outputs by name, static-batch chunks, and the
Triton runner through a stand-in client that serves the same ONNX model (no server here)."""
from __future__ import annotations

import json
import types

import numpy as np
import pytest

from solo_deploy.errors import BadInputError
from solo_deploy.runtime.runners import STAGES, OnnxRunner, make_runner


@pytest.fixture(scope="module")
def onnx_files(tmp_path_factory):
    """The tiny model exported with a dynamic batch and with a static batch of 2."""
    from conftest import tiny_config

    from solo_deploy.export.onnx_export import export_onnx
    from solo_deploy.model.modelfile import ModelMeta, save_model_file
    from solo_deploy.model.network import SOLONet
    from solo_deploy.preprocess import PreprocessSpec

    d = tmp_path_factory.mktemp("runners")
    cfg = tiny_config()
    save_model_file(d / "m.safetensors", SOLONet(cfg).state_dict(), ModelMeta(
        model=cfg, preprocess=PreprocessSpec(input_hw=(64, 64)), class_names=("a", "b", "c", "d")))
    dynamic = export_onnx(d / "m.safetensors", d / "dyn.onnx", dynamic=True, check_parity=False).path
    static2 = export_onnx(d / "m.safetensors", d / "b2.onnx", batch=2, check_parity=False).path
    return d / "m.safetensors", dynamic, static2


def _batch(n: int) -> np.ndarray:
    return np.random.default_rng(n).integers(0, 255, (n, 64, 64, 3), dtype=np.uint8)


def test_building_reads_metadata_and_start_loads(onnx_files):
    _, dynamic, _ = onnx_files
    runner = OnnxRunner(dynamic)
    assert not runner.started and runner.session is None
    assert runner.meta.class_names == ("a", "b", "c", "d")
    with runner:
        assert runner.started and runner.session is not None
    assert not runner.started and runner.session is None
    out = runner.run(_batch(1))  # a call starts a stopped runner again
    assert list(out) == ["scores", "kernels", "mask_feat"] and runner.started


def test_stages_before_start_start_the_runner(onnx_files):
    runner = OnnxRunner(onnx_files[1])
    arrays = runner.to_host(runner.infer(runner.to_device(_batch(2))))
    assert len(arrays) == 3 and arrays[0].shape[0] == 2


def test_staged_and_plain_calls_agree_and_are_timed(onnx_files):
    runner = make_runner(onnx_files[1])
    x = _batch(3)
    plain = runner.outputs(x)
    staged = runner.staged_outputs(x)
    for a, b in zip(plain, staged):
        np.testing.assert_array_equal(a, b)
    t = runner.timings.as_dict()
    assert t["calls"] == 2 and set(t["mean_ms"]) == set(STAGES) and t["last_ms"]["infer"] > 0


@pytest.mark.parametrize("n", [1, 2, 3, 5])
def test_static_batch_graph_runs_any_batch_in_padded_chunks(onnx_files, n):
    _, dynamic, static2 = onnx_files
    ref = make_runner(dynamic).outputs(_batch(n))
    runner = make_runner(static2)
    assert runner.fixed_batch == 2
    for got in (runner.outputs(_batch(n)), runner.staged_outputs(_batch(n))):
        assert [a.shape[0] for a in got] == [n] * 3
        for a, b in zip(got, ref):
            np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)


def test_torch_runner_has_the_same_interface(onnx_files):
    model, dynamic, _ = onnx_files
    torch_runner = make_runner(model, backend="torch")
    out = torch_runner.run(_batch(2))
    ref = make_runner(dynamic).run(_batch(2))
    assert list(out) == list(ref)
    np.testing.assert_allclose(out["scores"].numpy(), ref["scores"], rtol=1e-3, atol=1e-4)
    torch_runner.stop()
    assert torch_runner.model is None


def test_a_bad_batch_is_one_line(onnx_files):
    runner = make_runner(onnx_files[1])
    with pytest.raises(BadInputError, match="uint8 \\(N, H, W, 3\\)"):
        runner(np.zeros((1, 64, 64, 3), np.float32))


def _fake_triton(onnx_path, max_batch: int):
    """A tritonclient.grpc stand-in whose server runs ``onnx_path`` with ONNX Runtime."""
    import onnxruntime as ort

    from solo_deploy.core.inspect import inspect_model

    meta = inspect_model(onnx_path).meta
    session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    requests = []

    class InferInput:
        def __init__(self, name, shape, dtype):
            self.name, self.shape, self.dtype = name, shape, dtype

        def set_data_from_numpy(self, a):
            self.data = a

    class InferRequestedOutput:
        def __init__(self, name):
            self.name = name

    class Result:
        def __init__(self, outs):
            self.outs = outs

        def as_numpy(self, name):
            return self.outs[name]

    class Client:
        def __init__(self, url, ssl=False):  # tritonclient takes the address and a TLS flag apart
            self.url, self.ssl = url, ssl

        def is_server_live(self):
            return True

        def is_model_ready(self, name):
            return name == "solo"

        def get_model_config(self, name, as_json=False):
            return {"config": {"name": name, "max_batch_size": max_batch,
                               "parameters": {"solo_deploy": {"string_value": json.dumps(meta.to_dict())}}}}

        def infer(self, name, inputs, outputs, client_timeout=None):
            requests.append(inputs[0].data.shape[0])
            names = [o.name for o in outputs]
            return Result(dict(zip(names, session.run(names, {inputs[0].name: inputs[0].data}))))

    return types.SimpleNamespace(InferenceServerClient=Client, InferInput=InferInput,
                                 InferRequestedOutput=InferRequestedOutput), requests


def test_triton_runner_through_a_stand_in_server(onnx_files, monkeypatch):
    from solo_deploy.runtime import triton_client

    _, dynamic, _ = onnx_files
    fake, requests = _fake_triton(dynamic, max_batch=2)
    monkeypatch.setattr(triton_client, "_import_client", lambda http: fake)
    runner = make_runner("solo", backend="triton")
    out = runner.run(_batch(5))
    ref = make_runner(dynamic).run(_batch(5))
    assert requests == [2, 2, 1]  # the server's max batch
    for name in ref:
        np.testing.assert_allclose(out[name], ref[name], rtol=1e-5, atol=1e-6)
    assert runner.device == "triton:localhost:8001" and runner.timings.calls == 1
