"""A tiny end-to-end Lightning run: files, weights_only round trips, resume, fine-tuning."""
from __future__ import annotations

import pytest
import torch

from solo_deploy.errors import BadInputError
from solo_deploy.model.modelfile import build_network, read_model
from solo_deploy.training.train import TrainRequest, train

TINY = (("imgsz", [64, 64]), ("batch_size", 2), ("train_images", 4), ("val_images", 2), ("val_every_steps", 2),
        ("num_workers", 0), ("snapshot_minutes", []))


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("run")
    return train(TrainRequest(preset="solov2-cpu-r18", output=str(out), overrides=TINY + (("max_steps", 2),),
                              progress=False))


def test_run_folder_contents(run_dir):
    for name in ("checkpoints/last.ckpt", "checkpoints/best.ckpt", "model.safetensors", "curves.png",
                 "history.json", "logs/metrics.csv"):
        assert (run_dir / name).is_file(), name
    assert not list(run_dir.rglob("*.tmp*")), "temporary files left behind"


def test_checkpoint_loads_weights_only_and_matches_model_file(run_dir):
    ckpt = torch.load(run_dir / "checkpoints/best.ckpt", map_location="cpu", weights_only=True)
    assert ckpt["hyper_parameters"]["meta"]["preset"] == "solov2-cpu-r18"
    state, meta = read_model(run_dir / "model.safetensors")
    assert meta.class_names == ("circle", "rectangle", "triangle", "ring")
    assert meta.preprocess.input_hw == (64, 64)
    for k, v in ckpt["state_dict"].items():
        if k.startswith("net.") and v.is_floating_point():
            # the model file stores float32 by default: exactly the checkpoint's weights
            torch.testing.assert_close(state[k.removeprefix("net.")], v.float(), rtol=0, atol=0)
    net, _ = build_network(run_dir / "model.safetensors")
    assert not net.training


def test_resume_continues(run_dir, tmp_path):
    import csv
    import shutil

    resumed = tmp_path / "resumed"
    shutil.copytree(run_dir, resumed)
    before = list(csv.DictReader((resumed / "logs" / "metrics.csv").open()))
    assert before  # the first run logged rows (validation at step 2)
    train(TrainRequest(preset="solov2-cpu-r18", output=str(resumed), overrides=TINY + (("max_steps", 4),),
                       resume=str(resumed / "checkpoints/last.ckpt"), progress=False))
    ckpt = torch.load(resumed / "checkpoints/last.ckpt", map_location="cpu", weights_only=True)
    assert ckpt["global_step"] == 4
    # Lightning's CSVLogger would delete the first run's metrics.csv on resume; its rows stay.
    after = list(csv.DictReader((resumed / "logs" / "metrics.csv").open()))
    assert len(after) > len(before)
    assert [{k: v for k, v in r.items() if v} for r in after[:len(before)]] == [
        {k: v for k, v in r.items() if v} for r in before]
    assert max(int(r["step"]) for r in after) > max(int(r["step"]) for r in before)


def test_refuses_to_overwrite_a_run(run_dir):
    with pytest.raises(BadInputError, match="already has a checkpoint"):
        train(TrainRequest(preset="solov2-cpu-r18", output=str(run_dir), overrides=TINY, progress=False))


def test_finetune_from_model_keeps_backbone(run_dir):
    from solo_deploy.core.config import get_preset
    from solo_deploy.model.modelfile import ModelMeta
    from solo_deploy.model.network import SOLONet
    from solo_deploy.preprocess import PreprocessSpec
    from solo_deploy.training.train import _init_from

    loaded = read_model(run_dir / "model.safetensors")
    state = loaded[0]
    cfg = get_preset("solov2-cpu-r18", num_classes=2)
    net = SOLONet(cfg)
    before = net.head.cate_out.weight.clone()
    _init_from(net, str(run_dir / "model.safetensors"),
               ModelMeta(model=cfg, preprocess=PreprocessSpec(input_hw=(64, 64)), class_names=("a", "b"),
                         preset="solov2-cpu-r18"), loaded)
    torch.testing.assert_close(net.backbone.body.conv1.weight, state["backbone.body.conv1.weight"])
    assert torch.equal(net.head.cate_out.weight, before)  # class layer re-initialised, not copied
