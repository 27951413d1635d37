"""Shared test set-up: small thread counts (CI has 2 cores), deterministic seeds, tiny models."""
from __future__ import annotations

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")
# As the console entry does for users (solo_deploy.cli.app.main): OpenCV's and FFmpeg's own log
# lines stay off stderr in tests that run sources in-process.
os.environ.setdefault("OPENCV_LOG_LEVEL", "OFF")
os.environ.setdefault("OPENCV_FFMPEG_LOGLEVEL", "-8")
os.environ.setdefault("SOLO_DEPLOY_CACHE", os.path.join(os.environ.get("TMPDIR", "/tmp"), "solo-deploy-test-cache"))

import pytest


@pytest.fixture(autouse=True, scope="session")
def _torch_threads():
    try:
        import torch
    except ImportError:  # pragma: no cover
        yield
        return
    torch.set_num_threads(1)
    torch.manual_seed(0)
    yield


def tiny_config(arch: str = "solov2", backbone: str = "resnet18", num_classes: int = 4):
    """A few-thousand-FLOP stand-in of a preset: same arch and backbone, thin head, small grids."""
    from dataclasses import replace

    from solo_deploy.core.config import get_preset

    preset = {"solo": "solo-r50", "decoupled-solo": "decoupled-solo-r50",
              "decoupled-solo-light": "decoupled-solo-light-r50"}.get(arch, "solov2-light-r18")
    base = get_preset(preset, num_classes=num_classes)
    return replace(base, backbone=backbone, fpn_channels=32, head_channels=32, mask_channels=16,
                   mask_feat_channels=16, norm_groups=8, stacked_convs=1, grids=(8, 6, 4, 3, 2))


@pytest.fixture
def tiny_model_file(tmp_path):
    """A saved SOLOv2 (R18) inference model file with random weights, input 64x64."""
    from solo_deploy.model.modelfile import ModelMeta, save_model_file
    from solo_deploy.model.network import SOLONet
    from solo_deploy.preprocess import PreprocessSpec

    cfg = tiny_config()
    path = tmp_path / "tiny.safetensors"
    save_model_file(path, SOLONet(cfg).state_dict(), ModelMeta(model=cfg, preprocess=PreprocessSpec(input_hw=(64, 64)),
                                                              class_names=("circle", "rectangle", "triangle", "ring"),
                                                              preset="solov2-light-r18"))
    return path


@pytest.fixture
def lively_model(tmp_path):
    """A tiny SOLOv2 (64 x 64 input) whose random head finds instances of several classes
    (tests/export/export_helpers.py's save_tiny)."""
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parent / "export"))
    from export_helpers import save_tiny

    return save_tiny(tmp_path / "lively.safetensors", "solov2-light-r18")


@pytest.fixture
def photos(tmp_path):
    """Three synthetic 256 x 256 photos in a folder, as JPEG files (p0.jpg, p1.jpg, p2.jpg)."""
    import cv2

    from solo_deploy.data.synthetic import SyntheticDataset

    folder = tmp_path / "photos"
    folder.mkdir()
    ds = SyntheticDataset("val", count=3)
    for i in range(3):
        cv2.imwrite(str(folder / f"p{i}.jpg"), ds[i].image_bgr)
    return folder


@pytest.fixture()
def cache_dir(tmp_path, monkeypatch):
    """A fresh ONNX cache (``$SOLO_DEPLOY_CACHE``) for this test."""
    monkeypatch.setenv("SOLO_DEPLOY_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"
