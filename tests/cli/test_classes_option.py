"""`--classes` on predict and run (issue #19, item 1): class names or the category ids the JSON
outputs use, comma-separated or repeated; a name the model does not have is one line that lists
the ones it has."""
from __future__ import annotations

import json

import numpy as np
import pytest
from cli_helpers import assert_one_line_error, run_cli

from solo_deploy.errors import BadInputError
from solo_deploy.runtime.predictor import class_filter

NAMES = ("circle", "rectangle", "triangle", "ring")


def test_class_filter_reads_names_and_category_ids():
    assert class_filter(None, NAMES) is None and class_filter([], NAMES) is None
    assert class_filter(["circle"], NAMES) == {0}
    assert class_filter(["2,ring", "1"], NAMES) == {0, 1, 3}
    assert class_filter([" triangle , "], NAMES) == {2}
    for bad in ("dog", "0", "5", "-1"):
        with pytest.raises(BadInputError, match=r"this model has no class .* \(its classes: circle, rectangle, "
                                                r"triangle, ring; or category ids 1..4\)"):
            class_filter([bad], NAMES)


def test_predict_keeps_only_the_named_classes(lively_model, photos, tmp_path):
    every = run_cli("predict", lively_model, "-s", photos, "-o", tmp_path / "all")
    assert every.returncode == 0, every.stderr
    all_ids = {a["category_id"] for a in json.loads((tmp_path / "all" / "predictions.json").read_text())["annotations"]}
    assert len(all_ids) >= 2  # the filter below has something to remove
    keep = sorted(all_ids)[:1]
    name = NAMES[keep[0] - 1]
    for spelled, out in ((name, "by-name"), (str(keep[0]), "by-id")):
        proc = run_cli("predict", lively_model, "-s", photos, "-o", tmp_path / out, "--classes", spelled)
        assert proc.returncode == 0, proc.stderr
        anns = json.loads((tmp_path / out / "predictions.json").read_text())["annotations"]
        assert anns and {a["category_id"] for a in anns} == set(keep)
    assert_one_line_error(run_cli("predict", lively_model, "-s", photos, "-o", tmp_path / "x", "--classes", "dog"),
                          2, "--classes: this model has no class 'dog'", "circle, rectangle, triangle, ring")
    assert not (tmp_path / "x").exists()


def test_run_keeps_only_the_named_classes(lively_model, tmp_path):
    found = {}
    for name, extra in (("all", []), ("some", ["--classes", "rectangle,ring"])):
        proc = run_cli("run", "--model", lively_model, "--video", "demo", "--max-frames", "3", *extra,
                       "--save-json", tmp_path / f"{name}.jsonl", "--no-progress")
        assert proc.returncode == 0, proc.stderr
        lines = [json.loads(line) for line in (tmp_path / f"{name}.jsonl").read_text().splitlines()]
        found[name] = [ins["category_name"] for line in lines for ins in line["instances"]]
    assert set(found["all"]) - {"rectangle", "ring"}  # unfiltered, other classes appear
    # (The demo is paced like a camera, so the two runs need not process the same frames.)
    assert found["some"] and set(found["some"]) <= {"rectangle", "ring"}


def test_conf_defaults_to_a_quarter_for_outputs(lively_model, photos, tmp_path):
    """predict and run write instances with score >= 0.25 unless told otherwise (--conf 0 keeps
    all); the demo's AP and eval score every instance."""
    scores = {}
    for name, extra in (("default", []), ("all", ["--conf", "0"])):
        proc = run_cli("predict", lively_model, "-s", photos, "-o", tmp_path / name, *extra)
        assert proc.returncode == 0, proc.stderr
        anns = json.loads((tmp_path / name / "predictions.json").read_text())["annotations"]
        scores[name] = sorted(a["score"] for a in anns)
    assert scores["default"] and min(scores["default"]) >= 0.25
    assert min(scores["all"]) < 0.25 and [s for s in scores["all"] if s >= 0.25] == scores["default"]
    assert_one_line_error(run_cli("predict", lively_model, "-s", photos, "-o", tmp_path / "x", "--conf", "2"), 2,
                          "--conf must be within [0, 1]")


def test_frame_results_show_what_conf_keeps_and_score_everything():
    from solo_deploy.core.instances import Instances
    from solo_deploy.runtime.sinks import FrameResult, JsonlSink
    from solo_deploy.runtime.sources import Frame

    masks = np.zeros((3, 8, 8), bool)
    masks[:, 2:5, 2:5] = True
    inst = Instances.from_masks(masks, np.array([0, 1, 2]), np.array([0.9, 0.3, 0.1], np.float32), NAMES[:3])
    result = FrameResult(Frame(image=np.zeros((8, 8, 3), np.uint8), index=0, t_capture=0.0, wall_time=0.0), inst,
                         "x", conf=0.25)
    assert len(result.instances) == 3 and result.shown.scores.tolist() == pytest.approx([0.9, 0.3])
    assert [i["category_name"] for i in JsonlSink.record(result)["instances"]] == ["circle", "rectangle"]
