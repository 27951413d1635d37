"""Raw-output parity with mmdetection 3.3.0, without mmdetection.

The fixtures (tests/reference/fixtures, made by tools/reference/make_fixtures.py) hold, for
five small SOLO / SOLOv2 / decoupled SOLO models, the mmdetection state dict's key names and shapes, the seed of
its weights, the preprocessed inputs of three images and mmdetection's raw head outputs. Here
the same weights are drawn again (``seeded_state_dict``), renamed (``keymap.from_mmdet``) and
run through ``SOLONet``; every raw output must agree within 1e-4 of its largest magnitude.
"""
from __future__ import annotations

import functools
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from solo_deploy.core.config import ModelConfig
from solo_deploy.errors import BadInputError
from solo_deploy.model.keymap import from_mmdet
from solo_deploy.model.network import SOLONet
from solo_deploy.model.seeded import seeded_state_dict

FIXTURES = Path(__file__).parent / "fixtures"
MANIFEST = json.loads((FIXTURES / "manifest.json").read_text())
ARCHS = sorted(MANIFEST["architectures"])
REL_TOL = 1e-4  # of each output's largest magnitude


@functools.cache
def mmdet_weights(arch: str) -> dict[str, torch.Tensor]:
    entry = MANIFEST["architectures"][arch]
    keys = [(name, tuple(shape)) for name, shape in entry["keys"]]
    return seeded_state_dict(keys, entry["seed"], offsets=entry["offsets"])


def model_config(arch: str) -> ModelConfig:
    return ModelConfig.from_dict(MANIFEST["architectures"][arch]["model_config"])


def compare(ref, name: str, ours: torch.Tensor | None = None, sampled: np.ndarray | None = None) -> float:
    """Largest |ours - reference| over what the fixture stores, relative to the output's max |value|.

    ``ours``: the whole output; ``sampled``: our values at the stored subsample's indices.
    """
    shape = tuple(int(d) for d in ref[f"{name}.shape"])
    if ours is not None:
        assert tuple(ours.shape) == shape, f"{name}: shape {tuple(ours.shape)} vs mmdetection {shape}"
        flat = ours.detach().numpy().reshape(-1)
        if name in ref:
            got, want = flat, ref[name].reshape(-1)
        else:
            got, want = flat[ref[f"{name}.idx"]], ref[f"{name}.val"]
    else:
        got, want = sampled, ref[f"{name}.val"]
    return float(np.abs(got.astype(np.float64) - want).max() / float(ref[f"{name}.maxabs"]))


def solo_mask_logits(kernel: torch.Tensor, feat: torch.Tensor, shape: tuple[int, ...], idx: np.ndarray) -> np.ndarray:
    """Our SOLO mask logits (kernel x mask features) at flat indices of mmdetection's
    ``conv_mask_list`` output (1, S^2, h, w)."""
    _, cells, h, w = shape
    assert tuple(feat.shape[-2:]) == (h, w) and kernel.shape[-1] * kernel.shape[-2] == cells
    _, c, y, x = np.unravel_index(idx, shape)
    k = kernel[0].reshape(kernel.shape[1], cells)  # (E, S^2): cell i * S + j
    c, y, x = (torch.from_numpy(np.asarray(a, np.int64)) for a in (c, y, x))
    return (k[:, c] * feat[0][:, y, x]).sum(0).numpy()


@pytest.mark.parametrize("arch", ARCHS)
def test_raw_outputs_match_mmdetection(arch):
    cfg = model_config(arch)
    net = SOLONet(cfg).eval()
    net.load_state_dict(from_mmdet(mmdet_weights(arch), cfg), strict=True)
    worst: dict[str, float] = {}
    with np.load(FIXTURES / MANIFEST["architectures"][arch]["file"]) as ref:
        for i in range(len(MANIFEST["images"])):
            p = f"img{i}."
            with torch.no_grad():
                out = net(torch.from_numpy(ref[p + "input"]))
            for lvl, t in enumerate(out.cate):
                worst[f"{p}cate{lvl}"] = compare(ref, f"{p}cate{lvl}", t)
            if cfg.arch == "solov2":
                for lvl, t in enumerate(out.kernel):
                    worst[f"{p}kernel{lvl}"] = compare(ref, f"{p}kernel{lvl}", t)
                worst[f"{p}mask_feat"] = compare(ref, f"{p}mask_feat", out.mask_feat[0])
            elif cfg.decoupled:
                for lvl, (tx, ty) in enumerate(zip(out.mask_x, out.mask_y)):
                    worst[f"{p}mask_x{lvl}"] = compare(ref, f"{p}mask_x{lvl}", tx)
                    worst[f"{p}mask_y{lvl}"] = compare(ref, f"{p}mask_y{lvl}", ty)
            else:
                for lvl, (k, f) in enumerate(zip(out.kernel, out.mask_feat)):
                    name = f"{p}mask_logits{lvl}"
                    shape = tuple(int(d) for d in ref[f"{name}.shape"])
                    got = solo_mask_logits(k, f, shape, ref[f"{name}.idx"])
                    worst[name] = compare(ref, name, sampled=got)
    bad = {k: v for k, v in worst.items() if not v <= REL_TOL}
    assert not bad, f"{arch}: outputs off by more than {REL_TOL} of their largest magnitude: {bad}"
    per_image = {"solov2": 11, "solo": 10, "decoupled-solo": 15, "decoupled-solo-light": 15}[cfg.arch]
    assert len(worst) == len(MANIFEST["images"]) * per_image


def test_fixture_covers_nms_pre_and_topk_limit():
    """Each architecture has an image with more candidates than nms_pre and none over 3840."""
    nms_pre = MANIFEST["test_cfg"]["nms_pre"]
    for arch, entry in MANIFEST["architectures"].items():
        counts = entry["summary"]["candidates"]
        assert max(counts) > nms_pre and max(counts) <= 3840, (arch, counts)


# --- keymap errors -----------------------------------------------------------------------------

def _one_line_error(state, cfg) -> str:
    with pytest.raises(BadInputError) as info:
        from_mmdet(state, cfg)
    message = str(info.value)
    assert "\n" not in message and message
    return message


def test_keymap_accepts_checkpoint_and_module_prefix():
    cfg = model_config("solov2_light")
    plain = from_mmdet(mmdet_weights("solov2_light"), cfg)
    wrapped = {"meta": {}, "state_dict": {f"module.{k}": v for k, v in mmdet_weights("solov2_light").items()}}
    again = from_mmdet(wrapped, cfg)
    assert list(again) == list(plain) and all(torch.equal(again[k], plain[k]) for k in plain)


def test_keymap_missing_key():
    cfg = model_config("solov2")
    state = dict(mmdet_weights("solov2"))
    del state["mask_head.kernel_convs.2.gn.weight"]
    message = _one_line_error(state, cfg)
    assert "missing key 'mask_head.kernel_convs.2.gn.weight'" in message and "head.kernel_convs.2.1.weight" in message


def test_keymap_unexpected_key():
    cfg = model_config("solov2_light")  # 2 stacked convs: a third one has nowhere to go
    state = dict(mmdet_weights("solov2_light"))
    state["mask_head.kernel_convs.2.conv.weight"] = torch.zeros(64, 64, 3, 3)
    message = _one_line_error(state, cfg)
    assert "unexpected key 'mask_head.kernel_convs.2.conv.weight'" in message and "stacked_convs" in message
    state = dict(mmdet_weights("solov2_light"))
    state["mask_head.loss_cls.weight"] = torch.zeros(1)
    assert "no SOLONet counterpart" in _one_line_error(state, cfg)


def test_keymap_wrong_shape():
    cfg = model_config("solo")
    state = dict(mmdet_weights("solo"))
    state["mask_head.conv_cls.weight"] = torch.zeros(5, 64, 3, 3)
    message = _one_line_error(state, cfg)
    assert "mask_head.conv_cls.weight" in message and "(5, 64, 3, 3)" in message
    assert "(3, 64, 3, 3)" in message and "num_classes" in message
    state = dict(mmdet_weights("solo"))
    state["mask_head.conv_mask_list.1.weight"] = torch.zeros(24 * 24, 64, 1, 1)
    message = _one_line_error(state, cfg)
    assert "(576, 64, 1, 1)" in message and "(1296, 64, 1, 1)" in message and "grids" in message


def test_keymap_wrong_architecture():
    message = _one_line_error(mmdet_weights("solo"), model_config("solov2"))
    assert "SOLO model" in message and "arch='solov2'" in message
    message = _one_line_error(mmdet_weights("decoupled_solo_light"), model_config("decoupled_solo"))
    assert "decoupled SOLO light model" in message and "arch='decoupled-solo'" in message


def test_keymap_decoupled_wrong_grid():
    cfg = model_config("decoupled_solo")
    state = dict(mmdet_weights("decoupled_solo"))
    state["mask_head.conv_mask_list_y.2.weight"] = torch.zeros(20, 64, 3, 3)
    message = _one_line_error(state, cfg)
    assert "mask_head.conv_mask_list_y.2.weight" in message and "(20, 64, 3, 3)" in message
    assert "(24, 64, 3, 3)" in message and "grids" in message
