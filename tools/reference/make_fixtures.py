"""Build the mmdetection reference fixtures for tests/reference (run by hand; NOT run in CI).

Five small mmdetection 3.3.0 models (SOLO, SOLOv2, SOLOv2-light, Decoupled SOLO, Decoupled SOLO
light; ResNet-18, FPN of 64 channels, grids 40/36/24/16/12,
strides 8/8/16/32/32, 3 classes, mmdetection's SOLO/SOLOv2 test_cfg) get deterministic weights
from ``solo_deploy.model.seeded.seeded_state_dict`` (seed and category-bias offset recorded)
and run mmdetection's own test pipeline on three synthetic BGR images: LoadImageFromNDArray,
Resize(scale=(224, 160), keep_ratio=True), PackDetInputs, DetDataPreprocessor (ImageNet
mean/std, BGR->RGB, pad to 32 with 0 after normalising), one image per batch. Written to
tests/reference/fixtures/:

- ``manifest.json``: versions, preprocessing, test_cfg, subsampling rule, images and, per
  architecture, the mmdetection state dict's key names and shapes in order, seed, offsets,
  the mmdetection model config, the matching solo-deploy ``ModelConfig`` and a summary.
- ``<arch>.npz`` per architecture (``solo``, ``solov2``, ``solov2_light``, ``decoupled_solo``,
  ``decoupled_solo_light``), for image ``i``:
  ``img{i}.image`` (uint8 BGR), ``img{i}.input`` (float32 (1, 3, H, W) network input),
  ``img{i}.img_shape`` (resized size before padding); raw head outputs captured by forward
  hooks: ``cate{l}`` (category logits), SOLOv2 ``kernel{l}`` and ``mask_feat``, SOLO
  ``mask_logits{l}`` (``conv_mask_list`` outputs: before the sigmoid and the upsampling that
  SOLOHead.forward applies at test time), decoupled ``mask_x{l}`` / ``mask_y{l}``
  (``conv_mask_list_x`` / ``_y`` outputs, likewise before the sigmoid). Each output ``name`` has ``name.shape`` and
  ``name.maxabs`` (the full tensor's largest magnitude) and either the full tensor ``name``
  (at most SUBSAMPLE_ABOVE elements) or ``name.idx`` (sorted flat indices, a seeded subsample)
  and ``name.val``. Then ``candidates`` (scores > score_thr after point NMS), ``nms_in`` (the
  candidates whose mask passes the area rule, i.e. what enters mask_matrix_nms before nms_pre)
  and the final instances of ``model.predict``: ``labels``, ``scores`` (float32), ``masks``
  (bool (K, h, w) at the original size, np.packbits of the flat array) and ``masks_shape``.

Run from the repository root (mmdetection, mmengine and mmcv-lite installed without their
dependencies under /tmp/mmref, their pure-Python dependencies under /tmp/mmdeps: addict, yapf,
termcolor, terminaltables, platformdirs, shapely, scipy, six)::

    PYTHONPATH=/tmp/mmref:/tmp/mmdeps /work/venv/bin/python tools/reference/make_fixtures.py [--archs ...]

``--archs`` rebuilds only those architectures and keeps the manifest's other entries as they are
(the decoupled fixtures were added this way, leaving the first three byte for byte).

mmcv's compiled ops (``mmcv._ext``) are not needed by these models: a stand-in ``mmcv.ops``
package is installed before mmdetection is imported and fails only if an op is constructed.
"""
from __future__ import annotations

import argparse
import importlib.abc
import importlib.machinery
import json
import sys
import types
from pathlib import Path

import cv2
import numpy as np
import torch
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from solo_deploy.core.config import ModelConfig  # noqa: E402
from solo_deploy.model.seeded import seeded_state_dict  # noqa: E402

OUT = ROOT / "tests" / "reference" / "fixtures"

NUM_CLASSES = 3
GRIDS = (40, 36, 24, 16, 12)
STRIDES = (8, 8, 16, 32, 32)
SCALE_RANGES = ((1, 96), (48, 192), (96, 384), (192, 768), (384, 2048))
FPN_CHANNELS = 64
HEAD_CHANNELS = 64
MEAN = (123.675, 116.28, 103.53)
STD = (58.395, 57.12, 57.375)
RESIZE_SCALE = (224, 160)  # (long, short) edge limits, as (1333, 800) for full-size models
TEST_CFG = {  # mmdetection's SOLO / SOLOv2 configs
    "nms_pre": 500, "score_thr": 0.1, "mask_thr": 0.5, "filter_thr": 0.05, "kernel": "gaussian", "sigma": 2.0,
    "max_per_img": 100,
}
SUBSAMPLE_ABOVE = 16_384  # outputs with more elements (2^14) are stored as a subsample
SUBSAMPLE_COUNT = 1024
SUBSAMPLE_SEED = 20240
IMAGES = (  # (height, width, seed): keep-ratio resizing with and without padding, down and up
    (150, 200, 11),
    (200, 150, 12),
    (160, 224, 13),
)

# Per architecture: weight seed, category-bias offset (sets the number of candidates), head.
ARCHS = {
    # ~550 candidates per image: just over nms_pre
    "solo": {"seed": 101, "cls_bias_offset": -3.1, "stacked_convs": 3},
    # ~1200
    "solov2": {"seed": 102, "cls_bias_offset": -3.0, "stacked_convs": 4, "mask_feat_channels": 32,
               "mask_channels": 64},
    # ~2900 (2x2 point NMS keeps at most ~3100 of the 3 x 3872 scores)
    "solov2_light": {"seed": 103, "cls_bias_offset": -1.5, "stacked_convs": 2, "mask_feat_channels": 32,
                     "mask_channels": 32},
    # DecoupledSOLOHead / DecoupledSOLOLightHead
    "decoupled_solo": {"seed": 104, "cls_bias_offset": -3.1, "stacked_convs": 3},
    "decoupled_solo_light": {"seed": 105, "cls_bias_offset": -3.1, "stacked_convs": 2},
}
HEAD_TYPES = {"solo": "SOLOHead", "solov2": "SOLOV2Head", "solov2_light": "SOLOV2Head",
              "decoupled_solo": "DecoupledSOLOHead", "decoupled_solo_light": "DecoupledSOLOLightHead"}
OUR_ARCH = {"solo": "solo", "solov2": "solov2", "solov2_light": "solov2", "decoupled_solo": "decoupled-solo",
            "decoupled_solo_light": "decoupled-solo-light"}
V2 = ("solov2", "solov2_light")
CLS_BIAS_KEY = "mask_head.conv_cls.bias"


# ---------------------------------------------------------------------------------------------
# mmdetection without mmcv's compiled ops


class _Unavailable:
    def __init__(self, *args, **kwargs) -> None:
        raise RuntimeError(f"{type(self).__name__}: mmcv's compiled ops are not installed (stand-in mmcv.ops)")


class _StandInLoader(importlib.abc.Loader):
    def create_module(self, spec):
        module = types.ModuleType(spec.name)
        module.__path__ = []

        def __getattr__(name: str):
            if name.startswith("__"):
                raise AttributeError(name)
            return type(name, (_Unavailable,), {})

        module.__getattr__ = __getattr__
        return module

    def exec_module(self, module) -> None:
        pass


class _StandInFinder(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path, target=None):
        if name == "mmcv.ops" or name.startswith("mmcv.ops."):
            return importlib.machinery.ModuleSpec(name, _StandInLoader(), is_package=True)
        return None


def import_mmdet():
    sys.meta_path.insert(0, _StandInFinder())
    import mmdet
    from mmdet.utils import register_all_modules

    register_all_modules()
    return mmdet


# ---------------------------------------------------------------------------------------------
# configs


def mmdet_config(arch: str) -> dict:
    a = ARCHS[arch]
    gn = {"type": "GN", "num_groups": 32, "requires_grad": True}
    head = {
        "type": HEAD_TYPES[arch],
        "num_classes": NUM_CLASSES,
        "in_channels": FPN_CHANNELS,
        "feat_channels": HEAD_CHANNELS,
        "stacked_convs": a["stacked_convs"],
        "strides": list(STRIDES),
        "scale_ranges": [list(r) for r in SCALE_RANGES],
        "pos_scale": 0.2,
        "num_grids": list(GRIDS),
        "cls_down_index": 0,
        "loss_mask": {"type": "DiceLoss", "use_sigmoid": True, "loss_weight": 3.0},
        "loss_cls": {"type": "FocalLoss", "use_sigmoid": True, "gamma": 2.0, "alpha": 0.25, "loss_weight": 1.0},
        "norm_cfg": gn,
    }
    if arch in V2:
        head["mask_feature_head"] = {"feat_channels": a["mask_feat_channels"], "start_level": 0, "end_level": 3,
                                     "out_channels": a["mask_channels"], "mask_stride": 4, "norm_cfg": gn}
    return {
        "type": "SOLOv2" if arch in V2 else "SOLO",
        "data_preprocessor": {"type": "DetDataPreprocessor", "mean": list(MEAN), "std": list(STD), "bgr_to_rgb": True,
                              "pad_size_divisor": 32, "pad_value": 0},
        "backbone": {"type": "ResNet", "depth": 18, "num_stages": 4, "out_indices": [0, 1, 2, 3], "frozen_stages": 1,
                     "norm_cfg": {"type": "BN", "requires_grad": True}, "norm_eval": True, "style": "pytorch",
                     "init_cfg": None},
        "neck": {"type": "FPN", "in_channels": [64, 128, 256, 512], "out_channels": FPN_CHANNELS, "start_level": 0,
                 "num_outs": 5},
        "mask_head": head,
        "test_cfg": dict(TEST_CFG),
    }


def model_config(arch: str) -> ModelConfig:
    a = ARCHS[arch]
    extra = {} if arch not in V2 else {"mask_feat_channels": a["mask_feat_channels"],
                                           "mask_channels": a["mask_channels"]}
    return ModelConfig(arch=OUR_ARCH[arch], num_classes=NUM_CLASSES, backbone="resnet18",
                       fpn_channels=FPN_CHANNELS, head_channels=HEAD_CHANNELS, stacked_convs=a["stacked_convs"],
                       grids=GRIDS, strides=STRIDES, scale_ranges=SCALE_RANGES, norm_groups=32, **extra)


# ---------------------------------------------------------------------------------------------
# images


def synthetic_image(h: int, w: int, seed: int) -> np.ndarray:
    """uint8 BGR (h, w, 3): a noisy colour gradient with 4 to 6 filled shapes."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float64)
    c0, c1 = rng.uniform(40, 215, size=3), rng.uniform(40, 215, size=3)
    t = (xx / max(w - 1, 1) + yy / max(h - 1, 1))[..., None] / 2
    img = c0 * (1 - t) + c1 * t + rng.normal(0, 4, size=(h, w, 3))
    img = np.clip(np.rint(img), 0, 255).astype(np.uint8)
    for _ in range(int(rng.integers(4, 7))):
        colour = tuple(int(v) for v in rng.integers(0, 256, size=3))
        kind = int(rng.integers(0, 3))
        cx, cy = int(rng.integers(0, w)), int(rng.integers(0, h))
        size = int(rng.integers(min(h, w) // 8, min(h, w) // 3))
        if kind == 0:
            cv2.rectangle(img, (cx - size, cy - size // 2), (cx + size, cy + size // 2), colour, -1, cv2.LINE_8)
        elif kind == 1:
            cv2.circle(img, (cx, cy), size, colour, -1, cv2.LINE_8)
        else:
            pts = np.array([[cx, cy - size], [cx - size, cy + size], [cx + size, cy + size]], np.int32)
            cv2.fillPoly(img, [pts], colour, cv2.LINE_8)
    return img


# ---------------------------------------------------------------------------------------------
# capture


def store(out: dict, name: str, t: torch.Tensor) -> None:
    a = t.detach().cpu().numpy().astype(np.float32)
    out[f"{name}.shape"] = np.asarray(a.shape, np.int64)
    out[f"{name}.maxabs"] = np.float32(np.abs(a).max())
    if a.size <= SUBSAMPLE_ABOVE:
        out[name] = a
        return
    rng = np.random.default_rng([SUBSAMPLE_SEED, a.size])
    idx = np.sort(rng.choice(a.size, size=SUBSAMPLE_COUNT, replace=False)).astype(np.int32)
    out[f"{name}.idx"] = idx
    out[f"{name}.val"] = a.reshape(-1)[idx]


def count_candidates(cate_logits: list[torch.Tensor], score_thr: float) -> int:
    """mmdetection's test-time scores: sigmoid, 2x2 point NMS, then > score_thr."""
    n = 0
    for c in cate_logits:
        s = c.sigmoid()
        local_max = F.max_pool2d(s, 2, stride=1, padding=1)
        s = s * (local_max[:, :, :-1, :-1] == s)
        n += int((s > score_thr).sum())
    return n


def run_arch(arch: str, images: list[np.ndarray]) -> tuple[dict, dict]:
    import mmdet.models.dense_heads.solo_head as solo_head_mod
    import mmdet.models.dense_heads.solov2_head as solov2_head_mod
    from mmcv.transforms import Compose
    from mmdet.registry import MODELS
    from mmengine.config import ConfigDict
    from mmengine.dataset import pseudo_collate

    cfg_dict = mmdet_config(arch)
    model = MODELS.build(ConfigDict(json.loads(json.dumps(cfg_dict)))).eval()  # attribute access for test_cfg
    manifest_keys = [(k, tuple(v.shape)) for k, v in model.state_dict().items()]
    offsets = {CLS_BIAS_KEY: ARCHS[arch]["cls_bias_offset"]}
    seed = ARCHS[arch]["seed"]
    weights = seeded_state_dict(manifest_keys, seed, offsets=offsets)
    model.load_state_dict(weights, strict=True)
    loaded = model.state_dict()
    assert list(loaded) == list(weights), "state dict order changed"
    for k, v in loaded.items():
        assert v.dtype == weights[k].dtype and torch.equal(v, weights[k]), f"{k} differs after loading"

    head = model.mask_head
    captured: dict[str, list[torch.Tensor]] = {"cate": [], "kernel": [], "mask_feat": [], "mask_logits": [],
                                               "mask_x": [], "mask_y": []}

    def hook(name):
        return lambda _m, _i, o: captured[name].append(o.detach().clone())

    head.conv_cls.register_forward_hook(hook("cate"))
    if arch == "solo":
        for conv in head.conv_mask_list:
            conv.register_forward_hook(hook("mask_logits"))
    elif arch.startswith("decoupled"):
        for conv_x, conv_y in zip(head.conv_mask_list_x, head.conv_mask_list_y):
            conv_x.register_forward_hook(hook("mask_x"))
            conv_y.register_forward_hook(hook("mask_y"))
    else:
        head.conv_kernel.register_forward_hook(hook("kernel"))
        head.mask_feature_head.register_forward_hook(hook("mask_feat"))

    nms_calls: list[dict] = []
    original_nms = solo_head_mod.mask_matrix_nms

    def recording_nms(masks, labels, scores, **kw):
        s = torch.sort(scores, descending=True).values
        ties = int((s[1:] == s[:-1]).sum()) if len(s) > 1 else 0
        survivors = len(original_nms(masks, labels, scores, **{**kw, "max_num": -1})[0])
        nms_calls.append({"n": len(labels), "ties": ties, "survivors": survivors})
        return original_nms(masks, labels, scores, **kw)

    solo_head_mod.mask_matrix_nms = recording_nms
    solov2_head_mod.mask_matrix_nms = recording_nms

    pipeline = Compose([
        {"type": "mmdet.LoadImageFromNDArray"},
        {"type": "mmdet.Resize", "scale": RESIZE_SCALE, "keep_ratio": True},
        {"type": "mmdet.PackDetInputs", "meta_keys": ("img_id", "img_path", "ori_shape", "img_shape", "scale_factor")},
    ])
    out: dict[str, np.ndarray] = {}
    summary: dict[str, list] = {k: [] for k in ("candidates", "nms_in", "ties_in_nms_scores", "over_filter_thr",
                                                "instances", "img_shape", "input_shape")}
    try:
        for i, img in enumerate(images):
            for v in captured.values():
                v.clear()
            nms_calls.clear()
            data = pseudo_collate([pipeline({"img": img.copy(), "img_id": i})])
            with torch.no_grad():
                data = model.data_preprocessor(data, False)
                inputs, samples = data["inputs"], data["data_samples"]
                result = model.predict(inputs, samples, rescale=True)[0]
            p = f"img{i}."
            img_shape = tuple(int(v) for v in samples[0].metainfo["img_shape"])
            out[p + "image"] = img
            out[p + "input"] = inputs.detach().cpu().numpy().astype(np.float32)
            out[p + "img_shape"] = np.asarray(img_shape, np.int64)
            assert len(captured["cate"]) == len(GRIDS)
            for lvl, t in enumerate(captured["cate"]):
                store(out, f"{p}cate{lvl}", t)
            if arch == "solo":
                assert len(captured["mask_logits"]) == len(GRIDS)
                for lvl, t in enumerate(captured["mask_logits"]):
                    store(out, f"{p}mask_logits{lvl}", t)
            elif arch.startswith("decoupled"):
                assert len(captured["mask_x"]) == len(captured["mask_y"]) == len(GRIDS)
                for lvl, (tx, ty) in enumerate(zip(captured["mask_x"], captured["mask_y"])):
                    store(out, f"{p}mask_x{lvl}", tx)
                    store(out, f"{p}mask_y{lvl}", ty)
            else:
                assert len(captured["kernel"]) == len(GRIDS) and len(captured["mask_feat"]) == 1
                for lvl, t in enumerate(captured["kernel"]):
                    store(out, f"{p}kernel{lvl}", t)
                store(out, f"{p}mask_feat", captured["mask_feat"][0])
            cand = count_candidates(captured["cate"], TEST_CFG["score_thr"])
            inst = result.pred_instances
            masks = inst.masks.detach().cpu().numpy().astype(bool)
            assert masks.shape[1:] == img.shape[:2]
            out[p + "candidates"] = np.int64(cand)
            out[p + "nms_in"] = np.int64(nms_calls[0]["n"] if nms_calls else 0)
            out[p + "labels"] = inst.labels.detach().cpu().numpy().astype(np.int64)
            out[p + "scores"] = inst.scores.detach().cpu().numpy().astype(np.float32)
            out[p + "masks"] = np.packbits(masks.reshape(-1))
            out[p + "masks_shape"] = np.asarray(masks.shape, np.int64)
            summary["candidates"].append(cand)
            summary["nms_in"].append(int(out[p + "nms_in"]))
            summary["ties_in_nms_scores"].append(nms_calls[0]["ties"] if nms_calls else 0)
            summary["over_filter_thr"].append(nms_calls[0]["survivors"] if nms_calls else 0)
            summary["instances"].append(len(masks))
            summary["img_shape"].append(list(img_shape))
            summary["input_shape"].append(list(inputs.shape))
    finally:
        solo_head_mod.mask_matrix_nms = original_nms
        solov2_head_mod.mask_matrix_nms = original_nms

    over = [i for i, n in enumerate(summary["candidates"]) if n > TEST_CFG["nms_pre"]]
    assert over, f"{arch}: no image has more than nms_pre={TEST_CFG['nms_pre']} candidates; tune cls_bias_offset"
    assert max(summary["candidates"]) <= 3840, f"{arch}: more than 3840 candidates; tune cls_bias_offset"
    entry = {
        "file": f"{arch}.npz",
        "seed": seed,
        "offsets": offsets,
        "mmdet_config": cfg_dict,
        "model_config": model_config(arch).to_dict(),
        "images_over_nms_pre": over,
        "summary": summary,
        "keys": [[k, list(s)] for k, s in manifest_keys],
    }
    return entry, out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=OUT)
    parser.add_argument("--archs", nargs="+", choices=sorted(ARCHS), default=sorted(ARCHS),
                        help="rebuild only these; the manifest keeps the other architectures' entries")
    args = parser.parse_args()
    torch.manual_seed(0)  # nothing here should draw from it; set anyway
    mmdet = import_mmdet()
    import mmcv
    import mmengine

    versions = {"mmdet": mmdet.__version__, "mmengine": mmengine.__version__, "mmcv": mmcv.__version__,
                "torch": torch.__version__, "numpy": np.__version__, "opencv": cv2.__version__}
    images = [synthetic_image(h, w, s) for h, w, s in IMAGES]
    manifest = {
        "about": "mmdetection reference fixtures for tests/reference; regenerate with tools/reference/make_fixtures.py",
        "versions": versions,
        "weights_rule": "solo_deploy.model.seeded.seeded_state_dict(keys, seed, offsets=offsets)",
        "preprocess": {
            "pipeline": ["LoadImageFromNDArray", f"Resize(scale={RESIZE_SCALE}, keep_ratio=True)", "PackDetInputs",
                         "DetDataPreprocessor"],
            "mean": list(MEAN), "std": list(STD), "bgr_to_rgb": True, "pad_size_divisor": 32, "pad_value": 0,
            "note": "mmdetection normalises, then pads with 0 (the mean colour)",
        },
        "test_cfg": TEST_CFG,
        "subsample": {
            "above": SUBSAMPLE_ABOVE, "count": SUBSAMPLE_COUNT,
            "rule": f"np.sort(np.random.default_rng([{SUBSAMPLE_SEED}, size]).choice(size, {SUBSAMPLE_COUNT}, "
                    "replace=False))",
        },
        "images": [{"height": h, "width": w, "seed": s} for h, w, s in IMAGES],
        "architectures": {},
    }
    args.out.mkdir(parents=True, exist_ok=True)
    previous = args.out / "manifest.json"
    if previous.exists():
        old = json.loads(previous.read_text())
        if old.get("versions") != versions:
            print(f"note: versions differ from the manifest's {old.get('versions')}")
        manifest["architectures"] = {k: v for k, v in old.get("architectures", {}).items() if k not in args.archs}
    for arch in args.archs:
        entry, arrays = run_arch(arch, images)
        manifest["architectures"][arch] = entry
        np.savez_compressed(args.out / entry["file"], **arrays)
        s = entry["summary"]
        print(f"{arch:13s} candidates {s['candidates']}  into matrix NMS {s['nms_in']}  "
              f"over filter_thr {s['over_filter_thr']}  instances {s['instances']}  "
              f"over nms_pre: images {entry['images_over_nms_pre']}  score ties {s['ties_in_nms_scores']}")
    (args.out / "manifest.json").write_text(json.dumps(manifest, indent=1) + "\n")
    total = sum(p.stat().st_size for p in args.out.iterdir() if p.is_file())
    for p in sorted(args.out.iterdir()):
        print(f"  {p.name:20s} {p.stat().st_size / 1e3:8.1f} kB")
    print(f"  total {total / 1e6:.2f} MB")


if __name__ == "__main__":
    main()
