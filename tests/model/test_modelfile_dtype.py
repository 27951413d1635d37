"""Model files store float32 weights unless asked for float16 (issue #14)."""
from __future__ import annotations

import sys
from dataclasses import replace
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).parents[1]))
from cli_helpers import assert_one_line_error, run_cli

from solo_deploy.core.config import get_preset
from solo_deploy.core.meta import End2EndSpec, ModelMeta
from solo_deploy.errors import BadInputError
from solo_deploy.model.modelfile import read_model, save_model_file
from solo_deploy.preprocess import PreprocessSpec

W, STEPS = "head.cate_out.weight", "backbone.body.bn1.num_batches_tracked"  # a weight, an integer buffer


def _state():
    from conftest import tiny_config

    from solo_deploy.model.network import SOLONet

    torch.manual_seed(0)
    state = dict(SOLONet(tiny_config(num_classes=2)).state_dict())
    state[STEPS] = torch.tensor(3)
    return state


def _meta():
    from conftest import tiny_config

    return ModelMeta(model=tiny_config(num_classes=2), preprocess=PreprocessSpec(input_hw=(64, 64)),
                     class_names=("a", "b"))


def test_float32_by_default_float16_on_request(tmp_path: Path) -> None:
    from safetensors import safe_open

    state = _state()
    f32 = save_model_file(tmp_path / "f32.safetensors", state, _meta())
    f16 = save_model_file(tmp_path / "f16.safetensors", state, _meta(), dtype="float16")
    with safe_open(str(f32), framework="pt") as a, safe_open(str(f16), framework="pt") as b:
        assert a.get_tensor(W).dtype == torch.float32 and b.get_tensor(W).dtype == torch.float16
        assert a.get_tensor(STEPS).dtype == b.get_tensor(STEPS).dtype == torch.int64
    assert torch.equal(read_model(f32)[0][W], state[W])
    assert not torch.equal(read_model(f16)[0][W], state[W])  # rounded to half precision
    assert int(read_model(f16)[0][STEPS]) == 3
    with pytest.raises(BadInputError, match="float64"):
        save_model_file(tmp_path / "x.safetensors", state, _meta(), dtype="float64")


def test_train_refuses_a_bad_weight_dtype_before_training(tmp_path: Path) -> None:
    recipe = tmp_path / "my recipe.yaml"
    recipe.write_text("epochs: 1\nmodel_file_dtype: fp16\n")
    proc = run_cli("train", "--recipe", recipe, "-o", tmp_path / "run", cwd=tmp_path)
    assert_one_line_error(proc, 2, "model_file_dtype", "fp16")
    assert not (tmp_path / "run").exists()


def test_schema_version_is_the_lowest_that_describes_the_file() -> None:
    """Decoupled SOLO needs schema 3; other files stay at 2, which solo-deploy 0.3.0 reads. A
    newer schema than this version reads is one line asking for an upgrade."""
    assert _meta().to_dict()["schema_version"] == 2
    dsolo = ModelMeta(model=get_preset("decoupled-solo-light-r50", 2), preprocess=PreprocessSpec(input_hw=(64, 64)),
                      class_names=("a", "b"))
    d = dsolo.to_dict()
    assert d["schema_version"] == 3 and ModelMeta.from_dict(d) == dsolo
    e2e = replace(dsolo, end2end=End2EndSpec())  # an end-to-end graph's metadata (solo-deploy 0.5.0)
    assert e2e.to_dict()["schema_version"] == 4 and ModelMeta.from_dict(e2e.to_dict()) == e2e
    # COCO's ids (1..90 with gaps) need schema 5 (0.6.0); 1..C is the default and stays at the lower schema.
    coco = replace(dsolo, category_ids=(1, 3))
    assert coco.to_dict()["schema_version"] == 5 and coco.to_dict()["category_ids"] == [1, 3]
    assert ModelMeta.from_dict(coco.to_dict()).cat_ids == (1, 3)
    assert replace(dsolo, category_ids=(1, 2)).to_dict()["schema_version"] == 3 and dsolo.cat_ids == (1, 2)
    for bad in ((1,), (2, 2), (1, -1), (1, True)):
        with pytest.raises(BadInputError, match="category_ids must be 2 distinct non-negative integers"):
            replace(dsolo, category_ids=bad)
    with pytest.raises(BadInputError, match="schema version 6; this solo-deploy reads up to 5: upgrade solo-deploy"):
        ModelMeta.from_dict({**d, "schema_version": 6}, source="m.safetensors")
