"""Network output contract: shapes of every preset at two input sizes, decode, model files."""
from __future__ import annotations

import pytest
import torch

from solo_deploy.core.config import PRESETS, ModelConfig, get_preset
from solo_deploy.errors import BadInputError
from solo_deploy.model.decode import Decode, point_nms
from solo_deploy.model.network import SOLONet


@pytest.mark.parametrize("preset", sorted(PRESETS))
@pytest.mark.parametrize("hw", [(64, 96), (128, 128)])
def test_output_shapes_every_preset(preset, hw):
    cfg = get_preset(preset, num_classes=3)
    with torch.device("meta"):  # shapes only: the full heads cost tens of GFLOPs
        out = SOLONet(cfg)(torch.empty(2, 3, *hw))
        scores, kernels, maps = Decode()(out)
    h, w = hw
    sizes = [(h // 4, w // 4), (h // 4, w // 4), (h // 8, w // 8), (h // 16, w // 16), (h // 16, w // 16)]
    assert [tuple(c.shape) for c in out.cate] == [(2, 3, s, s) for s in cfg.grids]
    assert tuple(scores.shape) == (2, cfg.num_cells, 3)
    if cfg.decoupled:
        assert kernels is None and not out.kernel and not out.mask_feat
        assert [tuple(f.shape) for f in out.mask_x] == [(2, s, *hw4) for s, hw4 in zip(cfg.grids, sizes)]
        assert [tuple(f.shape) for f in out.mask_y] == [(2, s, *hw4) for s, hw4 in zip(cfg.grids, sizes)]
        assert [tuple(m.shape) for m in maps] == [tuple(f.shape) for f in (*out.mask_x, *out.mask_y)]
        return
    assert [tuple(k.shape) for k in out.kernel] == [(2, cfg.kernel_channels, s, s) for s in cfg.grids]
    assert tuple(kernels.shape) == (2, cfg.num_cells, cfg.kernel_channels)
    assert not out.mask_x and not out.mask_y and len(maps) == len(out.mask_feat)
    if cfg.arch == "solov2":
        assert [tuple(f.shape) for f in out.mask_feat] == [(2, cfg.mask_channels, h // 4, w // 4)]
    else:
        assert [tuple(f.shape) for f in out.mask_feat] == [(2, cfg.kernel_channels, *s) for s in sizes]


def test_decoupled_heads_follow_mmdetection():
    """Decoupled SOLO: an x tower fed the x coordinate and a y tower fed the y coordinate (input
    channels + 1); light: one tower with both (+ 2). Mask and category biases start at the 0.01
    prior (mmdetection's bias_prob=0.01)."""
    full = SOLONet(get_preset("decoupled-solo-r50"))
    light = SOLONet(get_preset("decoupled-solo-light-r50"))
    assert full.head.mask_convs_x[0][0].in_channels == full.head.mask_convs_y[0][0].in_channels == 257
    assert len(full.head.mask_convs_x) == 7 and not hasattr(full.head, "mask_convs")
    assert light.head.mask_convs[0][0].in_channels == 258 and len(light.head.mask_convs) == 4
    assert not hasattr(light.head, "mask_convs_x")
    for head in (full.head, light.head):
        assert [c.out_channels for c in head.mask_x_out] == [40, 36, 24, 16, 12]
        for conv in (head.cate_out, *head.mask_x_out, *head.mask_y_out):
            assert torch.allclose(torch.sigmoid(conv.bias), torch.full_like(conv.bias, 0.01), atol=1e-6)


def test_solo_reference_sizes():
    cfg = get_preset("solo-r50")
    assert cfg.num_cells == 3872 and cfg.stacked_convs == 7 and cfg.grids == (40, 36, 24, 16, 12)
    assert cfg.strides == (8, 8, 16, 32, 32)
    assert cfg.scale_ranges == ((1, 96), (48, 192), (96, 384), (192, 768), (384, 2048))


def test_prior_bias_and_point_nms():
    net = SOLONet(get_preset("solov2-light-r18"))
    bias = net.head.cate_out.bias
    assert torch.allclose(torch.sigmoid(bias), torch.full_like(bias, 0.01), atol=1e-6)
    heat = torch.tensor([[[[0.1, 0.9, 0.2], [0.3, 0.5, 0.8], [0.7, 0.2, 0.1]]]])
    kept = point_nms(heat)
    # SOLOv2's points_nms compares each cell with its 2x2 window reaching up and left:
    # 0.9 is kept; 0.5 and 0.8 are dominated by 0.9; 0.7 has no larger up-left neighbour.
    assert kept[0, 0, 0, 1] == 0.9 and kept[0, 0, 1, 1] == 0 and kept[0, 0, 1, 2] == 0
    assert kept[0, 0, 2, 0] == 0.7


def test_solo_kernel_rows_equal_full_conv():
    """SOLO's kernel contract: kernel row x features == the S^2-channel 1x1 convolution."""
    from tests_helpers import tiny
    cfg = tiny("solo")
    net = SOLONet(cfg).eval()
    with torch.no_grad():
        out = net(torch.randn(1, 3, 64, 64))
        level = 2
        s = cfg.grids[level]
        w = net.head.mask_weight[level]
        b = net.head.mask_bias[level]
        feat = out.mask_feat[level][:, :-1]
        full = torch.einsum("ke,nehw->nkhw", w, feat) + b.view(1, -1, 1, 1)
        kern = out.kernel[level].permute(0, 2, 3, 1).reshape(1, s * s, -1)
        rows = torch.einsum("nke,nehw->nkhw", kern, out.mask_feat[level])
    assert torch.allclose(full, rows, atol=1e-5)


def test_bad_configs():
    with pytest.raises(BadInputError, match="unknown preset"):
        get_preset("solo-r999")
    with pytest.raises(BadInputError, match="backbone"):
        ModelConfig(backbone="vgg16")
    with pytest.raises(BadInputError, match="one entry per level"):
        ModelConfig(grids=(40, 36))
