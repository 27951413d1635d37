"""Our post-processing against mmdetection's, fed the SAME raw outputs (not run in CI).

For each fixture model (tests/reference/fixtures) and image: our network's raw head outputs
go through mmdetection 3.3.0's ``predict_by_feat`` and through ``solo_deploy``'s
``Predictor.predict``; the script prints the label agreement, the largest score difference
and the smallest mask IoU between the two, and, for comparison, the largest score difference
between mmdetection on our raw outputs and mmdetection on its own (the fixture)::

    PYTHONPATH=/tmp/mmref:/tmp/mmdeps python tools/reference/postprocess_same_inputs.py

(setup as in make_fixtures.py). Measured 2026-11-30: scores within 5e-7, labels identical,
masks IoU >= 0.99994; mmdetection itself moves scores by up to 2.2e-4 between the two raw inputs.
"""
from __future__ import annotations

import json
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[2]
sys.path[:0] = [str(ROOT), str(ROOT / "tools" / "reference"), str(ROOT / "tests" / "reference")]

import make_fixtures as mf  # noqa: E402
from test_instance_parity import ARCHS, iou, reference_instances, save_reference_model  # noqa: E402


def main() -> None:
    mf.import_mmdet()
    import torch.nn.functional as F
    from mmdet.registry import MODELS
    from mmengine.config import ConfigDict

    import solo_deploy
    from solo_deploy.model.decode import point_nms
    from solo_deploy.model.deploy import DeployWrapper
    from solo_deploy.model.modelfile import build_network

    tmp = Path(tempfile.mkdtemp(prefix="pp-same-inputs-"))
    for arch in ARCHS:
        path = save_reference_model(arch, tmp / f"{arch}.safetensors")
        net, meta = build_network(path)
        wrapper = DeployWrapper(net, meta.preprocess).eval()
        head = MODELS.build(ConfigDict(json.loads(json.dumps(mf.mmdet_config(arch))))).eval().mask_head
        pred = solo_deploy.load(path, backend="torch")
        for i, ref in enumerate(reference_instances(arch)):
            graph_in, lb = meta.preprocess.letterbox(ref["image"])
            seen: dict = {}
            hook = net.head.register_forward_hook(lambda _m, _a, o, seen=seen: seen.update(o=o))
            with torch.no_grad():
                wrapper(torch.from_numpy(graph_in)[None])
            hook.remove()
            o = seen["o"]
            metas = [{"img_shape": lb.resized_hw, "ori_shape": lb.orig_hw, "batch_input_shape": lb.input_hw,
                      "pad_shape": lb.input_hw}]
            with torch.no_grad():
                if arch == "solo":
                    # mmdetection's SOLO forward at test time: sigmoid at each level, upsample the
                    # probabilities to stride 4; category scores sigmoid + point NMS.
                    size = (lb.input_hw[0] // 4, lb.input_hw[1] // 4)
                    masks = []
                    for kern, feat in zip(o.kernel, o.mask_feat):
                        k = kern[0].reshape(kern.shape[1], -1).t()
                        logits = torch.einsum("ke,ehw->khw", k, feat[0])[None]
                        masks.append(F.interpolate(logits.sigmoid(), size=size, mode="bilinear"))
                    scores = [point_nms(c.sigmoid()) for c in o.cate]
                    res = head.predict_by_feat(masks, scores, batch_img_metas=metas)[0]
                else:
                    res = head.predict_by_feat(o.kernel, o.cate, o.mask_feat[0], metas)[0]
            ours = pred.predict(ref["image"])
            n = min(len(ours), len(res.labels))
            print(f"{arch} image {i}: {len(ours)} vs {len(res.labels)} instances, labels equal "
                  f"{np.array_equal(ours.labels, res.labels.numpy())}, scores within "
                  f"{np.abs(ours.scores[:n] - res.scores.numpy()[:n]).max():.1e}, mask IoU >= "
                  f"{iou(ours.masks[:n], res.masks.numpy()[:n]).min():.5f} | mmdetection on its own raw outputs "
                  f"vs ours: scores within {np.abs(res.scores.numpy()[:n] - ref['scores'][:n]).max():.1e}")


if __name__ == "__main__":
    main()
