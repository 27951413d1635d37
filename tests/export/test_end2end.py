"""End-to-end graphs (issue #18): `export --end2end` appends SOLOv2's post-processing, the graph's
instances equal the Python post-processing of the same raw outputs (ONNX Runtime FP32, FP16 and
an INT8 Q/DQ graph from `calibrate`), and every command recognises an end-to-end model from its
metadata while a raw model is never taken for one, nor the reverse."""
from __future__ import annotations

import dataclasses
import json

import numpy as np
import onnx
import pytest
from cli_helpers import assert_one_line_error, run_cli
from export_helpers import save_tiny

from solo_deploy.core.inspect import onnx_meta
from solo_deploy.core.meta import END2END_OUTPUTS, End2EndSpec
from solo_deploy.errors import BadInputError
from solo_deploy.export.end2end import append_postprocess, end2end_parity, with_raw_outputs


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """A lively tiny SOLOv2 (R18, 64x64): raw FP32 (dynamic batch) and its end-to-end graphs."""
    root = tmp_path_factory.mktemp("e2e")
    model = save_tiny(root / "tiny.safetensors", "solov2-light-r18")
    proc = run_cli("export", model, "--dynamic", "-o", root / "raw.onnx")
    assert proc.returncode == 0, proc.stderr
    proc = run_cli("export", root / "raw.onnx", "--end2end", "-o", root / "e2e.onnx")
    assert proc.returncode == 0, proc.stderr
    assert "parity: end-to-end vs Python post-processing" in proc.stdout and ": ok" in proc.stdout, proc.stdout
    assert "TensorRT check: no problems found" in proc.stdout, proc.stdout
    return root, model


def _photo(folder):
    import cv2

    from solo_deploy.data.synthetic import SyntheticDataset

    path = folder / "photo.jpg"
    cv2.imwrite(str(path), SyntheticDataset("val", count=1)[0].image_bgr)
    return path


def _val_batch(meta, n: int, offset: int = 0):
    from solo_deploy.data.synthetic import SyntheticDataset

    ds = SyntheticDataset("val", count=offset + n)
    return meta.preprocess.batch([ds[offset + i].image_bgr for i in range(n)])


@pytest.mark.parametrize("mask_format", ["uint8", "prob"])
@pytest.mark.parametrize("batch", [1, 4])
def test_graph_instances_equal_python_postprocessing(exported, mask_format, batch):
    root, _ = exported
    raw = onnx.load(str(root / "raw.onnx"))
    meta = onnx_meta(root / "raw.onnx")
    spec = End2EndSpec(max_per_img=meta.postprocess.max_per_img, mask_format=mask_format)
    joined = append_postprocess(raw, meta, spec)
    images, _ = _val_batch(meta, batch)
    rep = end2end_parity(with_raw_outputs(joined, list(raw.graph.output)), dataclasses.replace(meta, end2end=spec),
                         images)
    assert rep.instances >= 10 * batch  # a lively model: the comparison has something to compare
    assert rep.max_candidates_seen <= rep.k0
    assert rep.same_instances and rep.max_score_diff <= 1e-4 and rep.min_mask_iou >= 0.999, rep.summary()


def test_candidate_cap_and_matrix_nms_against_brute_force(exported):
    """K0 below the candidates: the graph keeps the K0 best by category score; the result equals
    the Python post-processing with max_candidates = K0 (its own brute-force-tested Matrix NMS)."""
    from solo_deploy.core.meta import split_outputs
    from solo_deploy.runtime.inference import postprocess_outputs

    root, _ = exported
    raw = onnx.load(str(root / "raw.onnx"))
    meta = onnx_meta(root / "raw.onnx")
    images, _ = _val_batch(meta, 2, offset=3)
    spec = End2EndSpec(max_per_img=20, mask_format="prob", max_candidates=40)
    joined = append_postprocess(raw, meta, spec)
    import onnxruntime as ort

    sess = ort.InferenceSession(with_raw_outputs(joined, list(raw.graph.output)).SerializeToString(),
                                providers=["CPUExecutionProvider"])
    outs = dict(zip([o.name for o in sess.get_outputs()], sess.run(None, {"images": images})))
    assert (outs["raw/scores"] > meta.postprocess.score_thr).reshape(2, -1).sum(1).min() > 40  # the cap bites
    capped = dataclasses.replace(meta, postprocess=dataclasses.replace(meta.postprocess, max_candidates=40,
                                                                        max_per_img=20))
    py = postprocess_outputs(capped, *split_outputs(capped, [outs[f"raw/{n}"] for n in meta.output_names]))
    e2e_meta = dataclasses.replace(meta, end2end=spec)
    got = postprocess_outputs(e2e_meta, *split_outputs(e2e_meta, [outs[n] for n in END2END_OUTPUTS]))
    for i, (a, b) in enumerate(zip(py, got)):
        assert len(a) == len(b) == int(outs["num_detections"][i]) and 0 < len(a) <= 20
        np.testing.assert_array_equal(a.labels, b.labels)
        np.testing.assert_allclose(a.scores, b.scores, atol=1e-5)
        np.testing.assert_array_equal(a.soft_masks > 0.5, b.soft_masks > 0.5)
    # Padding slots: score 0, label -1, empty mask, zero box.
    n0 = int(outs["num_detections"][0])
    assert (outs["scores"][0, n0:] == 0).all() and (outs["labels"][0, n0:] == -1).all()
    assert outs["masks"].dtype == np.float32 and (outs["masks"][0, n0:] == 0).all()
    assert (outs["boxes"][0, n0:] == 0).all()
    # Boxes: the extent of each mask above mask_thr at stride 4, x 4 (x0, y0, x1, y1).
    for m, box in zip(outs["masks"][0, :n0] > meta.postprocess.mask_thr, outs["boxes"][0, :n0]):
        ys, xs = np.nonzero(m)
        np.testing.assert_array_equal(box, 4 * np.array([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1]))


def test_predict_eval_and_run_read_an_end_to_end_model(exported, tmp_path):
    """The installed script, a folder of photos: the end-to-end model gives the raw model's
    instances (same classes and order, scores within 1e-4, masks that overlap >= 0.98 on the
    photo: uint8 probabilities move a contour by a fraction of a pixel), and eval's AP is close."""
    import cv2
    from pycocotools import mask as mask_utils

    root, _ = exported
    photos = tmp_path / "photos"
    photos.mkdir()
    from solo_deploy.data.synthetic import SyntheticDataset

    ds = SyntheticDataset("val", count=3)
    for i in range(3):
        cv2.imwrite(str(photos / f"img{i}.jpg"), cv2.resize(ds[i].image_bgr, (150, 110)))
    outs = {}
    for name in ("raw", "e2e"):
        proc = run_cli("predict", root / f"{name}.onnx", "-s", photos, "-o", tmp_path / name)
        assert proc.returncode == 0, proc.stderr
        outs[name] = json.loads((tmp_path / name / "predictions.json").read_text())["annotations"]
    a, b = outs["raw"], outs["e2e"]
    assert len(a) == len(b) > 10
    assert [x["category_id"] for x in a] == [x["category_id"] for x in b]
    assert max(abs(x["score"] - y["score"]) for x, y in zip(a, b)) <= 1e-4
    ious = [mask_utils.iou([x["segmentation"]], [y["segmentation"]], [0])[0, 0] for x, y in zip(a, b)]
    assert min(ious) >= 0.98 and np.mean(ious) >= 0.995, (min(ious), np.mean(ious))

    aps = {}
    for name in ("raw", "e2e"):
        proc = run_cli("eval", root / f"{name}.onnx", "--data", "synthetic", "--images", "6", "--json",
                       tmp_path / f"{name}-metrics.json")
        assert proc.returncode == 0, proc.stderr
        aps[name] = json.loads((tmp_path / f"{name}-metrics.json").read_text())
    key = next(k for k in ("AP", "mask_AP", "segm_AP") if k in aps["raw"])
    assert abs(aps["raw"][key] - aps["e2e"][key]) <= 1.0, aps

    proc = run_cli("run", "--model", root / "e2e.onnx", "--video", "demo", "--max-frames", "4", "--save-json",
                   tmp_path / "out.jsonl", "--no-progress")
    assert proc.returncode == 0, proc.stderr
    lines = (tmp_path / "out.jsonl").read_text().splitlines()
    assert lines and all("instances" in json.loads(line) for line in lines)


def test_precisions_keep_the_post_processing_in_float32(exported, tmp_path):
    """FP16 network: parity at export; the appended nodes hold no float16 and no Q/DQ."""
    _, model = exported
    proc = run_cli("export", model, "--half", "--end2end", "-o", tmp_path / "e2e16.onnx")
    assert proc.returncode == 0, proc.stderr
    assert "exported the network" in proc.stdout and "fp16" in proc.stdout and ": ok" in proc.stdout
    graph = onnx.load(str(tmp_path / "e2e16.onnx")).graph
    casts16 = [n for n in graph.node if n.op_type == "Cast" and any(a.name == "to" and a.i == onnx.TensorProto.FLOAT16
                                                                   for a in n.attribute)]
    assert casts16  # the network is FP16
    # Everything downstream of the raw outputs (the appended part) is float32: no cast to FP16.
    consumers: dict[str, list] = {}
    for n in graph.node:
        for i in n.input:
            consumers.setdefault(i, []).append(n)
    seen, frontier, post = set(), ["raw/scores", "raw/kernels", "raw/mask_feat"], []
    while frontier:
        for n in consumers.get(frontier.pop(), []):
            if id(n) not in seen:
                seen.add(id(n))
                post.append(n)
                frontier.extend(n.output)
    assert len(post) > 50 and not any(n in casts16 for n in post)
    floats = {o.name: o.type.tensor_type.elem_type for o in graph.output}
    assert floats["scores"] == floats["boxes"] == onnx.TensorProto.FLOAT
    assert [o.name for o in graph.output] == list(END2END_OUTPUTS)


def test_int8_calibrated_graph_gets_float_post_processing(exported, tmp_path):
    from solo_deploy.calibration.quantize import calibrate

    root, _ = exported
    res = calibrate(root / "raw.onnx", "synthetic", tmp_path / "cal", images=8, force=True, eval_images=0, threads=1,
                    bench_runs=1, max_ap_drop=100.0)
    int8 = res.files["cpu"]
    proc = run_cli("export", int8, "--end2end", "-o", tmp_path / "e2e8.onnx")
    assert proc.returncode == 0, proc.stderr
    assert ": ok" in proc.stdout, proc.stdout
    src = onnx.load(str(int8)).graph
    got = onnx.load(str(tmp_path / "e2e8.onnx")).graph
    qdq = ("QuantizeLinear", "DequantizeLinear")
    assert sum(n.op_type in qdq for n in got.node) == sum(n.op_type in qdq for n in src.node) > 0
    photo = _photo(tmp_path)
    proc = run_cli("predict", tmp_path / "e2e8.onnx", "-s", photo, "-o", tmp_path / "p")
    assert proc.returncode == 0, proc.stderr
    assert json.loads((tmp_path / "p" / "predictions.json").read_text())["annotations"]


def test_raw_and_end_to_end_are_never_mistaken(exported, tmp_path):
    root, _ = exported
    swapped = {"raw-with-e2e-meta.onnx": ("raw.onnx", "e2e.onnx"), "e2e-with-raw-meta.onnx": ("e2e.onnx", "raw.onnx")}
    for name, (graph_file, meta_file) in swapped.items():
        graph = onnx.load(str(root / graph_file))
        del graph.metadata_props[:]
        graph.metadata_props.extend(onnx.load(str(root / meta_file), load_external_data=False).metadata_props)
        onnx.save(graph, str(tmp_path / name))
        proc = run_cli("predict", tmp_path / name, "-s", _photo(tmp_path), "-o", tmp_path / "o")
        assert_one_line_error(proc, 2, "do not match its solo-deploy metadata")
    # A reader that knows schema 3 only (solo-deploy 0.4.0) refuses the end-to-end file.
    e2e = onnx.load(str(root / "e2e.onnx"), load_external_data=False)
    payload = json.loads({p.key: p.value for p in e2e.metadata_props}["solo_deploy"])
    assert payload["schema_version"] == 4 and payload["end2end"]["mask_format"] == "uint8"
    import solo_deploy.core.meta as meta_mod

    old = meta_mod.SCHEMA_VERSION
    meta_mod.SCHEMA_VERSION = 3
    try:
        with pytest.raises(BadInputError, match="upgrade solo-deploy"):
            meta_mod.ModelMeta.from_dict(payload, source="e2e.onnx")
    finally:
        meta_mod.SCHEMA_VERSION = old


def test_end2end_usage_errors(exported, tmp_path):
    root, model = exported
    cases = [
        (["export", model, "--mask-format", "prob", "-o", tmp_path / "a.onnx"], "add --end2end"),
        (["export", root / "raw.onnx", "--end2end", "--max-candidates", "5000", "-o", tmp_path / "b.onnx"],
         "at most 3840"),
        (["export", root / "raw.onnx", "--end2end", "--mask-format", "png", "-o", tmp_path / "c.onnx"],
         "unknown mask format 'png'"),
        (["export", root / "e2e.onnx", "--end2end", "-o", tmp_path / "d.onnx"], "already an end-to-end model"),
        (["export", root / "e2e.onnx", "--format", "triton", "--raw", "-o", tmp_path / "repo"],
         "--raw needs a raw model"),
        (["export", model, "--format", "triton", "--raw", "--end2end", "-o", tmp_path / "repo"], "contradict"),
        (["export", model, "--raw", "-o", tmp_path / "r.onnx"], "add --format triton"),
        (["export", root / "raw.onnx", "--end2end", "-o", root / "raw.onnx"], "it would be overwritten"),
        (["export", root / "raw.onnx", "--end2end", "--half", "-o", tmp_path / "f.onnx"], "keeps its precision"),
        (["export", root / "e2e.onnx", "--format", "triton", "--triton-backend", "tensorrt", "-o", tmp_path / "repo"],
         "serves a built engine"),
        (["export", root / "e2e.onnx", "--format", "engine", "--precision", "fp16", "-o", tmp_path / "g.engine"],
         "would run the post-processing in FP16"),
        (["export", root / "raw.onnx", "--end2end", "--format", "engine", "--calibration-cache", root / "raw.onnx",
          "-o", tmp_path / "h.engine"], "--calibration-cache does not apply"),
        (["calibrate", root / "e2e.onnx", "-o", tmp_path / "cal"], "is an end-to-end model"),
    ]
    for args, needle in cases:
        assert_one_line_error(run_cli(*args), 2, needle)
    decoupled = save_tiny(tmp_path / "dsolo.safetensors", "decoupled-solo-r50")
    assert_one_line_error(run_cli("export", decoupled, "--end2end", "--no-parity", "-o", tmp_path / "e.onnx"), 2,
                          "--end2end supports SOLOv2 models")
    assert not any((tmp_path / f).exists() for f in ("a.onnx", "b.onnx", "c.onnx", "d.onnx", "e.onnx", "f.onnx",
                                                     "g.engine", "h.engine", "repo", "cal"))


def test_torch_benchmark_script_runs_the_same_module_on_a_cpu(exported, tmp_path):
    """benchmarks/bench_end2end_torch.py (the GPU script of item 3) on the CPU: the exported
    module, eager in PyTorch, gives the Python post-processing's instances at batch 1 and 2."""
    import subprocess
    import sys
    from pathlib import Path

    _, model = exported
    script = Path(__file__).resolve().parents[2] / "benchmarks" / "bench_end2end_torch.py"
    proc = subprocess.run([sys.executable, str(script), str(model), "--device", "cpu", "--batches", "1", "2",
                           "--iters", "2", "--out", str(tmp_path / "t.json")], capture_output=True, text=True,
                          timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    res = json.loads((tmp_path / "t.json").read_text())
    assert res["cuda_graphs"] is False and set(res["batches"]) == {"1", "2"}
    for b in res["batches"].values():
        assert b["same_instances"] and b["max_score_diff"] <= 1e-4, b
        assert b["median_ms"]["network"] > 0 and b["median_ms"]["e2e_post"] > 0


def test_keep_ratio_model_end_to_end_takes_each_image_at_its_size(tmp_path):
    """Dynamic height and width, K fixed: two photos of different shapes give the raw model's
    instances (the graph pads each to a multiple of 32 itself)."""
    import cv2

    from solo_deploy.preprocess import PreprocessSpec

    model = save_tiny(tmp_path / "kr.safetensors", "solov2-light-r18", spec=PreprocessSpec.keep_ratio(scale=(96, 64)))
    proc = run_cli("export", model, "--end2end", "-o", tmp_path / "kr.e2e.onnx")
    assert proc.returncode == 0 and ": ok" in proc.stdout, proc.stderr + proc.stdout
    photos = tmp_path / "photos"
    photos.mkdir()
    rng = np.random.default_rng(0)
    for name, hw in (("wide.jpg", (150, 200)), ("tall.jpg", (200, 120))):
        cv2.imwrite(str(photos / name), rng.integers(0, 255, (*hw, 3), dtype=np.uint8))
    got = {}
    for name in ("kr.safetensors", "kr.e2e.onnx"):
        proc = run_cli("predict", tmp_path / name, "-s", photos, "-o", tmp_path / f"out-{name}")
        assert proc.returncode == 0, proc.stderr
        got[name] = json.loads((tmp_path / f"out-{name}" / "predictions.json").read_text())
    a, b = got["kr.safetensors"]["annotations"], got["kr.e2e.onnx"]["annotations"]
    assert len(a) == len(b) > 20
    assert [(x["image_id"], x["category_id"]) for x in a] == [(y["image_id"], y["category_id"]) for y in b]
    assert max(abs(x["score"] - y["score"]) for x, y in zip(a, b)) <= 1e-4
    from pycocotools import mask as mask_utils

    ious = [mask_utils.iou([x["segmentation"]], [y["segmentation"]], [0])[0, 0] for x, y in zip(a, b)
            if mask_utils.area(x["segmentation"]) or mask_utils.area(y["segmentation"])]
    assert np.mean(ious) >= 0.99, np.mean(ious)


def test_model_files_never_carry_end_to_end_metadata(tmp_path):
    """End-to-end metadata belongs to exported graphs: a model file that claims it is refused."""
    from solo_deploy.model.modelfile import read_model, save_model_file

    src = save_tiny(tmp_path / "tiny.safetensors", "solov2-light-r18")
    state, meta = read_model(src)
    bad = save_model_file(tmp_path / "bad.safetensors", state,
                          dataclasses.replace(meta, end2end=End2EndSpec()))
    with pytest.raises(BadInputError, match="carries end-to-end metadata"):
        read_model(bad)
    assert_one_line_error(run_cli("info", bad), 2, "carries end-to-end metadata")
