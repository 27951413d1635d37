"""Bad input at the command line: one line naming the problem, exit code 2, no traceback."""
from __future__ import annotations

import json
import sys

import pytest

from solo_deploy.cli import main


def run_cli(args, capsys, monkeypatch):
    monkeypatch.setattr(sys, "argv", ["solo-deploy", *args])
    with pytest.raises(SystemExit) as exc:
        main()
    err = capsys.readouterr().err
    return exc.value.code, err


def assert_one_line(err: str, *needles: str) -> None:
    lines = [ln for ln in err.strip().splitlines() if ln.strip()]
    assert len(lines) == 1, err
    assert "Traceback" not in err
    for n in needles:
        assert n in lines[0], lines[0]


CATS = tuple({"id": i + 1, "name": n} for i, n in enumerate(("circle", "rectangle", "triangle", "ring")))


def _coco(tmp_path, anns, cats=CATS, write_image=True):
    import cv2
    import numpy as np

    (tmp_path / "images").mkdir(exist_ok=True)
    if write_image:
        cv2.imwrite(str(tmp_path / "images" / "0.png"), np.zeros((32, 32, 3), np.uint8))
    gt = {"images": [{"id": 1, "file_name": "0.png", "height": 32, "width": 32}], "annotations": anns,
          "categories": list(cats)}
    (tmp_path / "annotations.json").write_text(json.dumps(gt))
    return tmp_path


POLY = [[2, 2, 20, 2, 20, 20, 2, 20]]


def test_missing_data_folder(capsys, monkeypatch, tmp_path):
    code, err = run_cli(["train", "--data", str(tmp_path / "nope"), "-o", str(tmp_path / "r")], capsys, monkeypatch)
    assert code == 2
    assert_one_line(err, "data folder not found", "nope")


def test_unknown_preset(capsys, monkeypatch, tmp_path):
    code, err = run_cli(["train", "--preset", "solo-r999", "-o", str(tmp_path / "r")], capsys, monkeypatch)
    assert code == 2
    assert_one_line(err, "unknown preset", "solo-r999")


@pytest.mark.parametrize("case,needle", [
    ("missing_keys", "annotations"),
    ("unknown_category", "category"),
    ("degenerate_polygon", "polygon"),
    ("unreadable_image", "0.png"),
])
def test_bad_coco_data(case, needle, capsys, monkeypatch, tmp_path, tiny_model_file):
    if case == "missing_keys":
        (tmp_path / "annotations.json").write_text(json.dumps({"images": []}))
    elif case == "unknown_category":
        _coco(tmp_path, [{"id": 7, "image_id": 1, "category_id": 9, "segmentation": POLY, "iscrowd": 0}])
    elif case == "degenerate_polygon":
        _coco(tmp_path, [{"id": 7, "image_id": 1, "category_id": 1, "segmentation": [[1, 1, 5, 5]], "iscrowd": 0}])
    else:
        _coco(tmp_path, [{"id": 7, "image_id": 1, "category_id": 1, "segmentation": POLY, "iscrowd": 0}],
              write_image=False)
        (tmp_path / "images" / "0.png").write_bytes(b"not a png at all")
    code, err = run_cli(["eval", str(tiny_model_file), "--data", str(tmp_path), "--backend", "torch"], capsys,
                        monkeypatch)
    assert code == 2
    assert_one_line(err, needle)


@pytest.mark.parametrize("content", [b"", b"\x00garbage\xff" * 100, b"PK\x03\x04 truncated zip"])
def test_corrupt_model_file(content, capsys, monkeypatch, tmp_path):
    for suffix in (".ckpt", ".safetensors"):
        bad = tmp_path / f"model{suffix}"
        bad.write_bytes(content)
        code, err = run_cli(["eval", str(bad), "--images", "1", "--backend", "torch"], capsys, monkeypatch)
        assert code == 2
        assert_one_line(err, "model")


def test_pickle_that_runs_code_is_refused(capsys, monkeypatch, tmp_path):
    import torch

    class Evil:
        def __reduce__(self):
            return (print, ("pwned",))

    path = tmp_path / "evil.ckpt"
    torch.save({"state_dict": {}, "hyper_parameters": {"meta": Evil()}}, path)
    code, err = run_cli(["info", str(path)], capsys, monkeypatch)
    assert code == 2
    assert_one_line(err, "refusing to load")


def test_unknown_model_type(capsys, monkeypatch, tmp_path):
    bad = tmp_path / "model.bin"
    bad.write_bytes(b"123")
    code, err = run_cli(["predict", str(bad), "--source", str(bad)], capsys, monkeypatch)
    assert code == 2
    assert_one_line(err, "unsupported model file type")


def test_bad_imgsz_is_a_usage_error(capsys, monkeypatch, tiny_model_file):
    code, err = run_cli(["eval", str(tiny_model_file), "--imgsz", "100", "64"], capsys, monkeypatch)
    assert code == 2
    assert_one_line(err, "multiples of 32")


def test_help_is_fast_and_light():
    import subprocess
    import time

    t0 = time.perf_counter()
    out = subprocess.run([sys.executable, "-c", "import sys, solo_deploy.cli.app, solo_deploy.cli.commands;"
                          "print(any(m in sys.modules for m in ('torch', 'onnxruntime', 'pytorch_lightning')))"],
                         capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"  # no heavy import behind the command table
    assert time.perf_counter() - t0 < 10
