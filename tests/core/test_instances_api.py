"""The Python API of results (issue #19, item 4): ``Instances`` index by integer, slice, boolean
mask and integer array, iterate, have a short repr; ``predict`` takes one image or a list of
numpy BGR arrays, paths and PIL images."""
from __future__ import annotations

import numpy as np
import pytest

from solo_deploy.core.instances import Instances
from solo_deploy.errors import BadInputError


def _instances() -> Instances:
    masks = np.zeros((4, 20, 30), bool)
    masks[0, 2:8, 3:9] = True
    masks[1, 10:18, 1:5] = True
    masks[2, 0:20, 20:30] = True  # masks[3] stays empty
    return Instances.from_masks(masks, np.array([0, 1, 0, 2]), np.array([0.9, 0.6, 0.4, 0.2], np.float32),
                                ("cat", "dog", "bird"))


def test_indexing_selects_instances_with_their_crops():
    inst = _instances()
    full = inst.masks
    one = inst[1]
    assert isinstance(one, Instances) and len(one) == 1 and one.labels.tolist() == [1]
    np.testing.assert_array_equal(one.masks[0], full[1])
    assert inst[-1].scores.tolist() == pytest.approx([0.2])
    kept = inst[inst.scores > 0.35]
    assert kept.labels.tolist() == [0, 1, 0]
    np.testing.assert_array_equal(kept.masks, full[:3])
    np.testing.assert_array_equal(inst[1:3].boxes, inst.boxes[1:3])
    picked = inst[[2, 0]]
    assert picked.scores.tolist() == pytest.approx([0.4, 0.9]) and picked.crops[0] is inst.crops[2]
    assert len(inst[inst.scores > 5]) == 0 and inst[inst.scores > 5].masks.shape == (0, 20, 30)
    assert [i.labels[0] for i in inst] == [0, 1, 0, 2] and len(list(iter(inst))) == len(inst)
    assert inst[2].to_coco()[0]["category_id"] == 1
    for bad, err in ((4, IndexError), (-5, IndexError), (np.ones(3, bool), IndexError), ([0, 9], IndexError),
                     ("cat", TypeError), (True, TypeError), (1.5, TypeError)):
        with pytest.raises(err):
            inst[bad]


def test_repr_is_short():
    inst = _instances()
    text = repr(inst)
    assert text == "Instances(4 on 30x20: 2 cat, 1 dog, 1 bird; scores 0.90..0.20)"
    assert repr(inst[inst.scores > 5]) == "Instances(0 on 30x20)"
    big = Instances.from_masks(np.ones((300, 500, 600), bool), np.zeros(300, np.int64), np.ones(300, np.float32),
                               ("cat",))
    assert len(repr(big)) < 100  # never the mask arrays


def test_predict_takes_one_image_or_a_list_of_arrays_paths_and_pil(tiny_model_file, tmp_path):
    import cv2
    from PIL import Image

    import solo_deploy
    from solo_deploy.data.synthetic import SyntheticDataset

    ds = SyntheticDataset("val", count=2)
    a, b = ds[0].image_bgr, ds[1].image_bgr
    path = tmp_path / "b.png"
    cv2.imwrite(str(path), b)
    pil = Image.fromarray(np.ascontiguousarray(a[:, :, ::-1]))  # PIL holds RGB
    model = solo_deploy.load(tiny_model_file, backend="torch")
    single = model.predict(a)
    assert isinstance(single, Instances)
    many = model.predict([a, path, pil])
    assert isinstance(many, list) and len(many) == 3
    for got, want in zip(many, [single, model.predict(str(path)), single]):
        assert got.labels.tolist() == want.labels.tolist()
        np.testing.assert_allclose(got.scores, want.scores, atol=1e-5)
    assert model.predict([]) == []
    with pytest.raises(BadInputError, match="cannot predict on a dict"):
        model.predict({"image": a})
