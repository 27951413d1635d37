"""Triton repositories: config.pbtxt parsed back and checked against the real model's inputs/outputs."""
from __future__ import annotations

import importlib.util
import json
import sys
from typing import ClassVar

import onnx
import pytest
from export_helpers import CLASS_NAMES, leftovers, save_tiny

from solo_deploy.errors import BadInputError
from solo_deploy.export.onnx_export import export_onnx
from solo_deploy.export.triton import parse_pbtxt, write_triton_repo
from solo_deploy.model.modelfile import ModelMeta
from solo_deploy.runtime.tensorrt import sidecar_path

_TRITON_TYPES = {onnx.TensorProto.FLOAT: "TYPE_FP32", onnx.TensorProto.UINT8: "TYPE_UINT8"}


@pytest.fixture(scope="module")
def onnx_model(tmp_path_factory):
    """Exported from a Lightning-style .ckpt (the other tests use .safetensors model files)."""
    import torch

    from solo_deploy.model.modelfile import read_model

    folder = tmp_path_factory.mktemp("triton")
    state, meta = read_model(save_tiny(folder / "m.safetensors", "solov2-light-r18", lively=False))
    torch.save({"state_dict": {f"net.{k}": v for k, v in state.items()}, "hyper_parameters": {"meta": meta.to_dict()}},
               folder / "m.ckpt")
    return export_onnx(folder / "m.ckpt", folder / "solo.onnx").path


def _real_io(path):
    m = onnx.load(str(path))

    def spec(vi):
        dims = [d.dim_value if d.HasField("dim_value") else -1 for d in vi.type.tensor_type.shape.dim]
        return vi.name, _TRITON_TYPES[vi.type.tensor_type.elem_type], dims

    return [spec(v) for v in m.graph.input], [spec(v) for v in m.graph.output]


def _config_io(cfg, batched: bool):
    def rows(items):
        return [(t["name"], t["data_type"], ([-1] if batched else []) + [int(d) for d in t["dims"]]) for t in items]

    return rows(cfg["input"]), rows(cfg["output"])


def test_static_onnx_repository(onnx_model, tmp_path):
    folder = write_triton_repo(onnx_model, tmp_path / "repo", "solo")
    assert folder == tmp_path / "repo" / "solo"
    assert (folder / "1" / "model.onnx").read_bytes() == onnx_model.read_bytes()
    cfg = parse_pbtxt((folder / "config.pbtxt").read_text())
    assert cfg["name"] == "solo" and cfg["platform"] == "onnxruntime_onnx" and cfg["max_batch_size"] == 0
    assert "dynamic_batching" not in cfg  # static batch 1: Triton must not batch requests
    real_in, real_out = _real_io(onnx_model)
    assert _config_io(cfg, batched=False) == (real_in, real_out)
    assert [t["name"] for t in cfg["output"]] == ["scores", "kernels", "mask_feat"]
    meta = ModelMeta.from_dict(json.loads(cfg["parameters"]["value"]["string_value"]))
    assert meta.class_names == CLASS_NAMES and meta.model.arch == "solov2"
    assert leftovers(tmp_path / "repo") == []


def test_dynamic_batch_repository_and_replace(onnx_model, tmp_path):
    # Make the batch dimension dynamic in the declared shapes (what a --dynamic export declares).
    m = onnx.load(str(onnx_model))
    for vi in list(m.graph.input) + list(m.graph.output):
        vi.type.tensor_type.shape.dim[0].dim_param = "batch"
    dyn = tmp_path / "dyn.onnx"
    onnx.save(m, str(dyn))
    repo = tmp_path / "repo"
    write_triton_repo(onnx_model, repo, "solo")  # replaced below as a whole
    folder = write_triton_repo(dyn, repo, "solo", max_batch_size=4)
    cfg = parse_pbtxt((folder / "config.pbtxt").read_text())
    assert cfg["max_batch_size"] == 4 and cfg["dynamic_batching"] == {"max_queue_delay_microseconds": 2000}
    real_in, real_out = _real_io(dyn)
    assert _config_io(cfg, batched=True) == (real_in, real_out)  # dims exclude the batch
    assert (folder / "1" / "model.onnx").read_bytes() == dyn.read_bytes()
    assert sorted(p.name for p in repo.iterdir()) == ["solo"]


def test_engine_repository_from_sidecar(onnx_model, tmp_path):
    engine = tmp_path / "solo.engine"
    engine.write_bytes(b"not really an engine")
    meta = json.loads({p.key: p.value for p in onnx.load(str(onnx_model)).metadata_props}["solo_deploy"])
    io = [{"name": "images", "mode": "input", "dtype": "uint8", "shape": [-1, 64, 64, 3]},
          {"name": "scores", "mode": "output", "dtype": "float32", "shape": [-1, 129, 4]},
          {"name": "kernels", "mode": "output", "dtype": "float32", "shape": [-1, 129, 16]},
          {"name": "mask_feat", "mode": "output", "dtype": "float32", "shape": [-1, 16, 16, 16]}]
    sidecar = {"format": "solo-deploy-engine", "schema_version": 1, "solo_deploy": meta,
               "engine": {"io": io, "profile": {"max": [4, 64, 64, 3]}},
               "tensorrt": {"version": "10.9.0"}, "gpu": {"name": "X"}}
    sidecar_path(engine).write_text(json.dumps(sidecar))
    folder = write_triton_repo(engine, tmp_path / "repo")
    cfg = parse_pbtxt((folder / "config.pbtxt").read_text())
    assert cfg["name"] == "solo" and cfg["platform"] == "tensorrt_plan" and cfg["max_batch_size"] == 4
    assert (folder / "1" / "model.plan").read_bytes() == b"not really an engine"
    assert [(t["name"], t["data_type"], t["dims"]) for t in cfg["input"]] == [("images", "TYPE_UINT8", [64, 64, 3])]
    assert cfg["instance_group"][0]["kind"] == "KIND_GPU"
    with pytest.raises(BadInputError, match="exceeds the engine profile"):
        write_triton_repo(engine, tmp_path / "repo", max_batch_size=16)


def test_bad_inputs(onnx_model, tmp_path):
    with pytest.raises(BadInputError, match="invalid Triton model name"):
        write_triton_repo(onnx_model, tmp_path / "repo", "bad/name")
    with pytest.raises(BadInputError, match="not found"):
        write_triton_repo(tmp_path / "missing.onnx", tmp_path / "repo")
    with pytest.raises(BadInputError, match="no sidecar"):
        (tmp_path / "x.engine").write_bytes(b"x")
        write_triton_repo(tmp_path / "x.engine", tmp_path / "repo")


def test_pbtxt_string_escapes_round_trip():
    from solo_deploy.export.triton import _quote

    text = 'say "hi" \\ back\tslash\nnew — ünïcödé'
    assert parse_pbtxt(f"name: {_quote(text)}  # comment\n")["name"] == text


@pytest.mark.skipif(importlib.util.find_spec("tritonclient") is not None, reason="tritonclient is installed")
def test_triton_runner_without_client_says_how_to_install(monkeypatch):
    from solo_deploy.runtime.triton_client import TritonRunner

    monkeypatch.setitem(sys.modules, "tritonclient.grpc", None)  # as if tritonclient were not installed
    with pytest.raises(BadInputError, match=r"pip install tritonclient\[grpc\]"):
        TritonRunner("solo", url="localhost:8001")


# ---------------------------------------------------------------------------------------------
# TritonRunner on a local repository and its client wiring. tritonclient is not needed: the
# runner's client module is replaced by a recorder with the constructor and calls it uses
# (tritonclient.http/grpc.InferenceServerClient(url, ..., ssl=...)).
# ---------------------------------------------------------------------------------------------
class _Recorder:
    calls: ClassVar[list[dict]] = []

    class InferenceServerClient:
        def __init__(self, url, **kwargs):
            _Recorder.calls.append({"url": url, **kwargs})

        def is_server_live(self):
            return True

        def is_model_ready(self, name):
            return True

        def get_model_config(self, name, **kwargs):
            raise AssertionError("a local repository needs no server config")


@pytest.fixture
def recorder(monkeypatch):
    from solo_deploy.runtime import triton_client

    _Recorder.calls = []
    modules = []
    monkeypatch.setattr(triton_client, "_import_client", lambda http: modules.append(http) or _Recorder)
    return modules


def test_runner_reads_a_repository_written_by_export(onnx_model, tmp_path, recorder):
    from solo_deploy.export.orchestrate import ExportRequest, export_model
    from solo_deploy.runtime.triton_client import TritonRunner

    export_model(ExportRequest(model=onnx_model, output=tmp_path / "e2e", fmt="triton", name="solo"),
                 say=lambda m: None)
    # By default a SOLOv2 model is served end to end: the server returns instances.
    assert TritonRunner(str(tmp_path / "e2e" / "solo"), url="localhost:8001").output_names == [
        "masks", "boxes", "labels", "scores", "num_detections"]
    export_model(ExportRequest(model=onnx_model, output=tmp_path / "repo", fmt="triton", name="solo", raw=True),
                 say=lambda m: None)
    folder = tmp_path / "repo" / "solo"
    want = ModelMeta.from_dict(json.loads(parse_pbtxt((folder / "config.pbtxt").read_text())
                                          ["parameters"]["value"]["string_value"]))
    for model in (folder, folder / "config.pbtxt"):
        runner = TritonRunner(str(model), url="localhost:8001")
        assert runner.model_name == "solo"
        assert runner.meta.class_names == CLASS_NAMES == want.class_names
        assert runner.input_name == "images"
        assert runner.output_names == ["scores", "kernels", "mask_feat"]
        assert runner._fixed_batch == 1  # static-batch export: max_batch_size 0, dims carry the batch
    assert recorder == [False, False, False] and all(c["ssl"] is False for c in _Recorder.calls)


@pytest.mark.parametrize("url,http,address,ssl", [
    ("localhost:8001", False, "localhost:8001", False),
    ("grpc://triton:8001", False, "triton:8001", False),
    ("grpcs://triton:443", False, "triton:443", True),
    ("http://triton:8000", True, "triton:8000", False),
    ("https://triton.example.com:443/base", True, "triton.example.com:443/base", True),
])
def test_url_scheme_picks_client_and_tls(onnx_model, tmp_path, recorder, url, http, address, ssl):
    from solo_deploy.runtime.triton_client import TritonRunner

    folder = write_triton_repo(onnx_model, tmp_path / "repo", "solo")
    TritonRunner(str(folder), url=url)
    assert recorder == [http]
    assert _Recorder.calls[0]["url"] == address and _Recorder.calls[0]["ssl"] is ssl


def test_unknown_url_scheme_is_one_line(recorder):
    from solo_deploy.runtime.triton_client import TritonRunner

    with pytest.raises(BadInputError, match="unknown Triton URL scheme 'ftp'"):
        TritonRunner("solo", url="ftp://triton:21")


def test_server_and_file_configs_give_the_same_metadata(onnx_model, tmp_path):
    """The server's JSON has parameters as a map; a parsed config.pbtxt has key/value entries."""
    from solo_deploy.runtime.triton_client import _meta_from_config

    cfg = parse_pbtxt((write_triton_repo(onnx_model, tmp_path / "repo", "solo") / "config.pbtxt").read_text())
    raw = cfg["parameters"]["value"]["string_value"]
    from_file = _meta_from_config(cfg, "file")
    from_server = _meta_from_config({"parameters": {"solo_deploy": {"string_value": raw}}}, "server")
    several = _meta_from_config({"parameters": [{"key": "other", "value": {"string_value": "x"}},
                                                {"key": "solo_deploy", "value": {"string_value": raw}}]}, "list")
    assert from_file.to_dict() == from_server.to_dict() == several.to_dict()
    with pytest.raises(BadInputError, match="no solo_deploy parameter"):
        _meta_from_config({"parameters": {"key": "other", "value": {"string_value": "x"}}}, "x")


def test_bf16_engine_io_maps_to_triton(onnx_model, tmp_path):
    from solo_deploy.export.triton import _NUMPY_TO_TRITON

    assert _NUMPY_TO_TRITON["bfloat16"] == _NUMPY_TO_TRITON["bf16"] == "TYPE_BF16"
