"""One test per defect of issue #12, through the installed script where a person would meet it:
COCO folders, --device, outputs that would overwrite inputs, faults, stderr hygiene, EXIF."""
from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
from cli_helpers import assert_one_line_error, run_cli, write_exif_jpeg


def _digest(*paths: Path) -> dict[str, str]:
    files = [q for p in paths for q in ([p] if p.is_file() else sorted(p.rglob("*")))]
    return {str(f): hashlib.sha256(f.read_bytes()).hexdigest() for f in files if f.is_file()}


@pytest.fixture(scope="module")
def scratch(tmp_path_factory):
    """A tiny model, a COCO folder, a video and photos, as a user keeps them."""
    import cv2
    from conftest import tiny_config

    from solo_deploy.model.modelfile import ModelMeta, save_model_file
    from solo_deploy.model.network import SOLONet
    from solo_deploy.preprocess import PreprocessSpec

    root = tmp_path_factory.mktemp("user")
    cfg = tiny_config()
    save_model_file(root / "m.safetensors", SOLONet(cfg).state_dict(), ModelMeta(
        model=cfg, preprocess=PreprocessSpec(input_hw=(64, 64)),
        class_names=("circle", "rectangle", "triangle", "ring"), preset="solov2-light-r18"))
    for args in (["-o", "coco", "--images", "6"], ["-o", "in.mp4", "--images", "6", "--video"]):
        proc = run_cli("data", "synthetic", *args, "--imgsz", "64", "64", cwd=root)
        assert proc.returncode == 0, proc.stderr
    photos = root / "photos"
    photos.mkdir()
    rng = np.random.default_rng(0)
    for i in range(2):
        cv2.imwrite(str(photos / f"p{i}.jpg"), rng.integers(0, 255, (48, 64, 3), dtype=np.uint8))
    return root


# -- defect 2: a user's own COCO folder ----------------------------------------------------------
def test_eval_on_a_coco_folder_with_images_limit(scratch):
    # One folder of 6 images: --split train is its held-out split's training side (5 images).
    proc = run_cli("eval", "m.safetensors", "--data", "coco", "--split", "train", "--images", "4", cwd=scratch)
    assert proc.returncode == 0, proc.stderr
    assert "(4 images" in proc.stdout and "Traceback" not in proc.stderr


def test_train_on_a_coco_folder_with_a_recipe_that_limits_val_images(scratch, tmp_path):
    # Every recipe sets val_images: the COCO path went through the subset that lacked class_names.
    proc = run_cli("train", "--data", str(scratch / "coco"), "-o", str(tmp_path / "run"), "--max-steps", "1",
                   "--epochs", "1", "--imgsz", "64", "64", "--batch", "2", "--val-images", "2", "--train-images", "4",
                   "--no-progress", "--accelerator", "cpu", cwd=tmp_path, timeout=600)
    assert proc.returncode == 0, proc.stderr
    assert (tmp_path / "run" / "model.safetensors").is_file()
    assert proc.stderr.strip() == "", proc.stderr


# -- defect 3: --device ----------------------------------------------------------------------------
@pytest.mark.parametrize("bad", ["gpu", "cuda:x", "-1", "cpu0", "1.5"])
@pytest.mark.parametrize("cmd", [["predict", "m.safetensors", "--source", "photos"], ["eval", "m.safetensors"],
                                 ["run", "--video", "in.mp4", "--model", "m.safetensors"],
                                 ["bench", "m.safetensors", "--devices"], ["export", "m.safetensors", "-o", "x.onnx"],
                                 ["calibrate", "m.safetensors", "-o", "cal"]], ids=lambda c: c[0])
def test_unknown_device_is_a_usage_error(scratch, cmd, bad):
    args = [*cmd, bad] if cmd[-1] == "--devices" else [*cmd, "--device", bad]
    assert_one_line_error(run_cli(*args, cwd=scratch), 2, bad)


@pytest.mark.parametrize("spelling", ["0", "cuda", "cuda:0", "1"])
def test_gpu_spellings_are_understood_and_refused_without_a_gpu(scratch, spelling):
    from solo_deploy.runtime.devices import torch_cuda_works

    if torch_cuda_works():
        pytest.skip("this machine has a GPU: the no-GPU message cannot be seen here")
    line = assert_one_line_error(run_cli("predict", "m.safetensors", "--source", "photos", "-o", f"o{spelling}",
                                         "--device", spelling, cwd=scratch), 2)
    assert f"cuda:{spelling[-1] if spelling != 'cuda' else 0}" in line and "CUDA" in line
    assert not (scratch / f"o{spelling}").exists()


def test_summary_names_the_device_used(scratch):
    proc = run_cli("predict", "m.safetensors", "--source", "photos", "-o", "dev-out", "--device", "cpu",
                   cwd=scratch)
    assert proc.returncode == 0, proc.stderr
    assert "[onnxruntime/cpu]" in proc.stdout


# -- defect 4: outputs never overwrite inputs ---------------------------------------------------------
@pytest.mark.parametrize("args,needle", [
    (["run", "--video", "in.mp4", "-o", "in.mp4", "--model", "m.safetensors"], "--video"),
    (["run", "--video", "in.mp4", "--model", "m.safetensors", "--save-json", "in.mp4"], "--video"),
    (["run", "--video", "in.mp4", "--model", "m.safetensors", "-o", "o.mp4", "--save-json", "o.mp4"], "same file"),
    (["run", "--video", "in.mp4", "--model", "m.safetensors", "--save-json", "s.json", "--summary-json", "s.json"],
     "same file"),
    (["run", "--video", "in.mp4", "--model", "m.safetensors", "--save-json", "m.safetensors"], "model"),
    (["predict", "m.safetensors", "--source", "photos", "-o", "photos"], "--source"),
    (["predict", "m.safetensors", "--source", "photos/p0.jpg", "-o", "photos"], "overlay"),
    (["export", "m.safetensors", "-o", "m.safetensors", "--no-parity"], "model"),
    (["export", "m.safetensors", "-o", "./link.safetensors", "--no-parity"], "model"),
    (["eval", "m.safetensors", "--json", "m.safetensors"], "model"),
    (["bench", "m.safetensors", "--json", "m.safetensors"], "model"),
], ids=lambda v: "-".join(v[:1] + v[-2:]) if isinstance(v, list) else None)
def test_an_output_that_is_an_input_is_refused(scratch, args, needle):
    link = scratch / "link.safetensors"
    if not link.exists():
        os.symlink(scratch / "m.safetensors", link)
    before = _digest(scratch / "m.safetensors", scratch / "in.mp4", scratch / "photos")
    assert_one_line_error(run_cli(*args, cwd=scratch), 2, needle)
    assert _digest(scratch / "m.safetensors", scratch / "in.mp4", scratch / "photos") == before


def test_overlays_of_sources_that_share_a_stem_do_not_replace_each_other(scratch, tmp_path):
    import cv2

    src = tmp_path / "mixed"
    src.mkdir()
    cv2.imwrite(str(src / "a.png"), np.zeros((32, 32, 3), np.uint8))
    cv2.imwrite(str(src / "a.jpg"), np.full((32, 32, 3), 255, np.uint8))
    proc = run_cli("predict", str(scratch / "m.safetensors"), "--source", str(src), "-o", str(tmp_path / "o"))
    assert proc.returncode == 0, proc.stderr
    assert sorted(p.name for p in (tmp_path / "o").glob("*.jpg")) == ["a.jpg.jpg", "a.png.jpg"]


# -- defect 5: faults ------------------------------------------------------------------------------
def _tmpfs(path: Path, size: str) -> bool:
    path.mkdir()
    if os.geteuid() != 0 or shutil.which("mount") is None:
        return False
    return subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)],
                          capture_output=True).returncode == 0


@pytest.mark.parametrize("args,target", [
    (["run", "--video", "in.mp4", "--model", "m.safetensors", "--no-progress", "-o", "{full}/o.avi"], "o.avi"),
    (["run", "--video", "in.mp4", "--model", "m.safetensors", "--no-progress", "-o", "{full}/o.mp4"], "o.mp4"),
    (["export", "m.safetensors", "--no-parity", "-o", "{full}/m.onnx"], "m.onnx"),
], ids=["run-avi", "run-mp4", "export"])
def test_a_real_full_disk_gives_one_line_and_no_partial_file(scratch, tmp_path, args, target):
    full = tmp_path / "full"
    if not _tmpfs(full, "16k"):
        pytest.skip("cannot mount a small tmpfs here (needs root); the injected ENOSPC tests cover the code")
    try:
        proc = run_cli(*[a.format(full=full) for a in args], cwd=scratch)
        assert_one_line_error(proc, 1, "no space left on device", target)
        assert list(full.iterdir()) == []  # neither the output nor a hidden temporary
    finally:
        subprocess.run(["umount", str(full)], check=False)


def test_atomic_writer_maps_enospc_and_removes_the_temporary(tmp_path):
    import errno

    from solo_deploy._atomic import DiskFullError, atomic_open

    with pytest.raises(DiskFullError, match="no space left on device writing .*out.json"):
        with atomic_open(tmp_path / "out.json", "w") as fh:
            fh.write("{")
            raise OSError(errno.ENOSPC, "No space left on device")
    assert list(tmp_path.iterdir()) == []


def test_atomic_writer_maps_a_silent_writer_failure_on_a_nearly_full_disk(tmp_path, monkeypatch):
    """torch.save and OpenCV hide the errno: a failure while the disk has no room left is a full disk."""
    from solo_deploy import _atomic

    monkeypatch.setattr(_atomic, "free_bytes", lambda path: 0)
    with pytest.raises(_atomic.DiskFullError):
        with _atomic.atomic_path(tmp_path / "m.ckpt"):
            raise RuntimeError("PytorchStreamWriter failed writing file data/0: file write failed")
    monkeypatch.setattr(_atomic, "free_bytes", lambda path: 1 << 40)
    with pytest.raises(RuntimeError, match="PytorchStreamWriter"):
        with _atomic.atomic_path(tmp_path / "m.ckpt"):
            raise RuntimeError("PytorchStreamWriter failed writing file data/0: file write failed")
    assert list(tmp_path.iterdir()) == []


def test_video_sink_stops_before_the_disk_fills_and_the_run_removes_its_outputs(scratch, tmp_path, monkeypatch):
    """Injected: the file system reports no room. OpenCV would abort the process or leave a
    truncated file; the sink stops first and the pipeline removes the partial outputs."""
    from solo_deploy import _atomic
    from solo_deploy.app.run import run

    calls = {"n": 0}

    def shrinking(path):
        calls["n"] += 1
        return 1 << 40 if calls["n"] <= 3 else 0  # room for three frames, then full

    monkeypatch.setattr(_atomic, "free_bytes", shrinking)
    with pytest.raises(_atomic.DiskFullError, match="no space left on device writing .*o.mp4"):
        run([str(scratch / "in.mp4")], scratch / "m.safetensors", output=tmp_path / "o.mp4",
            save_json=tmp_path / "o.jsonl", progress=False, handle_signals=False)
    assert list(tmp_path.iterdir()) == []


def test_jsonl_sink_maps_enospc(tmp_path, monkeypatch):
    import errno

    from solo_deploy._atomic import DiskFullError
    from solo_deploy.runtime.sinks import JsonlSink

    sink = JsonlSink(tmp_path / "o.jsonl")

    class Full:  # the real file, whose writes fail as on a full disk
        def __init__(self, fh):
            self.fh = fh

        def write(self, text):
            raise OSError(errno.ENOSPC, "No space left on device")

        def __getattr__(self, name):
            return getattr(self.fh, name)

    sink._fh = Full(sink._fh)
    with pytest.raises(DiskFullError, match="o.jsonl"):
        sink.write(_fake_result())
    sink.discard()
    assert list(tmp_path.iterdir()) == []


def _fake_result():
    from solo_deploy.core.instances import Instances
    from solo_deploy.runtime.sinks import FrameResult
    from solo_deploy.runtime.sources import Frame

    img = np.zeros((8, 8, 3), np.uint8)
    inst = Instances.from_masks(np.zeros((0, 8, 8), bool), np.zeros(0, np.int64), np.zeros(0, np.float32), ("a",))
    return FrameResult(Frame(image=img, index=0, t_capture=0.0, wall_time=0.0), inst, "x")


def test_a_failed_run_waits_for_its_stages_before_returning(scratch, tmp_path):
    """A sink that fails on the first frame used to leave the inference thread inside ONNX
    Runtime while the interpreter exited: SIGABRT ("terminate called without an active exception")."""
    import threading

    from solo_deploy.runtime import pipeline as pl
    from solo_deploy.runtime.sinks import Sink

    class Broken(Sink):
        name = "broken"

        def write(self, result):
            raise RuntimeError("sink broke")

    from solo_deploy.app.run import build_predictor

    predictor = build_predictor(scratch / "m.safetensors")
    from solo_deploy.runtime.sources import make_source

    src = make_source(str(scratch / "in.mp4")).open()
    pipe = pl.Pipeline(predictor, [src], [Broken()])
    with pytest.raises(RuntimeError, match="sink broke"):
        pipe.run(handle_signals=False)
    alive = [t.name for t in threading.enumerate() if t.name.startswith("solo-") and "capture" not in t.name]
    assert alive == []


def test_stale_temporaries_of_dead_writers_are_removed_on_the_next_write(scratch, tmp_path):
    proc = subprocess.Popen(["true"])  # a writer that has exited: its pid is free
    proc.wait()
    stale = tmp_path / f".out.onnx.tmp-{proc.pid}-abc123.onnx"
    stale.write_bytes(b"x" * 100)
    live = tmp_path / f".out.onnx.tmp-{os.getpid()}-def456.onnx"  # a writer that is still running
    live.write_bytes(b"y")
    other = tmp_path / f".other.onnx.tmp-{proc.pid}-abc123.onnx"  # another target's temporary
    other.write_bytes(b"z")
    result = run_cli("export", str(scratch / "m.safetensors"), "-o", str(tmp_path / "out.onnx"), "--no-parity")
    assert result.returncode == 0, result.stderr
    assert not stale.exists() and live.exists() and other.exists()
    assert (tmp_path / "out.onnx").is_file()


# -- defect 6: stderr hygiene ------------------------------------------------------------------------
def test_truncated_png_and_junk_files_give_our_lines_only(scratch, tmp_path):
    import cv2

    good = cv2.imencode(".png", np.random.default_rng(1).integers(0, 255, (40, 40, 3), np.uint8))[1].tobytes()
    junk = tmp_path / "junk"
    junk.mkdir()
    (junk / "good.png").write_bytes(good)
    (junk / "cut.png").write_bytes(good[: len(good) // 2])
    (junk / "fake.jpg").write_bytes(b"hello")
    (junk / "notes.txt").write_text("hi")
    proc = run_cli("predict", str(scratch / "m.safetensors"), "--source", str(junk / "cut.png"), "-o",
                   str(tmp_path / "o1"))
    assert_one_line_error(proc, 2, "cannot decode image", "cut.png")
    proc = run_cli("predict", str(scratch / "m.safetensors"), "--source", str(junk), "-o", str(tmp_path / "o2"))
    assert proc.returncode == 0
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("warning: skipped 2 of 3"), proc.stderr
    assert "libpng" not in proc.stderr and "WARN" not in proc.stderr


@pytest.mark.parametrize("fps", ["nan", "0", "-5", "inf"])
def test_bad_fps_is_a_usage_error(tmp_path, fps):
    proc = run_cli("data", "synthetic", "--video", "-o", "v.mp4", "--images", "3", "--imgsz", "64", "64", "--fps",
                   fps, cwd=tmp_path)
    assert_one_line_error(proc, 2, "--fps")
    assert not (tmp_path / "v.mp4").exists()


@pytest.mark.parametrize("args", [["run", "--video", "in.mp4", "--model", "m.safetensors", "--threads", "-1"],
                                  ["run", "--video", "in.mp4", "--model", "m.safetensors", "--threads", "0"],
                                  ["calibrate", "m.safetensors", "-o", "c", "--threads", "0"],
                                  ["eval", "m.safetensors", "--images", "0"],
                                  ["run", "--video", "in.mp4", "--vid-stride", "0"]],
                         ids=lambda a: " ".join(a[-2:]))
def test_non_positive_counts_are_usage_errors(scratch, args):
    assert_one_line_error(run_cli(*args, cwd=scratch), 2, args[-2])


def test_model_path_with_a_newline_stays_one_line(scratch):
    line = assert_one_line_error(run_cli("eval", "no\nsuch.safetensors", cwd=scratch), 2, "not found")
    assert "no\\nsuch.safetensors" in line


def test_a_folder_given_as_the_model_is_named_as_such(scratch, tmp_path):
    (tmp_path / "model.onnx").mkdir()
    for cmd in (["eval"], ["info"], ["export", "-o", str(tmp_path / "x.onnx")], ["bench"]):
        proc = run_cli(cmd[0], str(tmp_path / "model.onnx"), *cmd[1:], cwd=scratch)
        assert_one_line_error(proc, 2, "is a folder, not a model file")


def test_triton_name_with_a_trailing_newline_is_refused_before_export(scratch, tmp_path):
    proc = run_cli("export", "m.safetensors", "--format", "triton", "-o", str(tmp_path / "repo"), "--name", "m\n",
                   cwd=scratch)
    line = assert_one_line_error(proc, 2, "invalid Triton model name")
    assert "'m\\n'" in line
    assert not (tmp_path / "repo").exists()


# -- defect 7: EXIF orientation ----------------------------------------------------------------------
@pytest.mark.parametrize("orientation,shape", [(1, (40, 80)), (3, (40, 80)), (6, (80, 40)), (8, (80, 40))])
def test_exif_orientation_is_applied_like_photo_viewers(tmp_path, orientation, shape):
    from solo_deploy.runtime.predictor import read_image

    img = np.zeros((40, 80, 3), np.uint8)
    img[:10, :20] = 255  # a white block in the stored top-left corner
    write_exif_jpeg(tmp_path / "p.jpg", img, orientation)
    out = read_image(tmp_path / "p.jpg")
    assert out.shape[:2] == shape
    # Where viewers show the block (orientation 6 = rotate 90 clockwise to display: top-left -> top-right).
    corner = {1: out[:10, :20], 3: out[-10:, -20:], 6: out[:20, -10:], 8: out[-20:, :10]}[orientation]
    assert corner.mean() > 200


def test_predict_overlay_is_upright_for_a_rotated_phone_photo(scratch, tmp_path):
    import cv2

    write_exif_jpeg(tmp_path / "phone.jpg", np.zeros((40, 80, 3), np.uint8), orientation=6)
    proc = run_cli("predict", str(scratch / "m.safetensors"), "--source", str(tmp_path / "phone.jpg"), "-o",
                   str(tmp_path / "o"))
    assert proc.returncode == 0, proc.stderr
    assert cv2.imread(str(tmp_path / "o" / "phone.jpg")).shape[:2] == (80, 40)
    import json

    im = json.loads((tmp_path / "o" / "predictions.json").read_text())["images"][0]
    assert (im["height"], im["width"]) == (80, 40)
