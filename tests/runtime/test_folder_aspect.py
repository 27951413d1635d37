"""A folder of mixed-size images makes one video whose frames keep each image's aspect: a frame
of another size than the first is letterboxed (scaled to fit, black bars), never stretched."""
from __future__ import annotations

import json
import threading
import time

import cv2
import numpy as np
from cli_helpers import run_cli

from solo_deploy.core.instances import Instances
from solo_deploy.runtime.sinks import FrameResult, VideoSink, letterbox_into
from solo_deploy.runtime.sources import Frame, make_source

NAMES = ("circle", "rectangle", "triangle", "ring")


def _frames(path) -> list[np.ndarray]:
    cap = cv2.VideoCapture(str(path))
    out = []
    while True:
        ok, img = cap.read()
        if not ok:
            break
        out.append(img)
    cap.release()
    return out


def _lit_box(img: np.ndarray, threshold: float = 60) -> tuple[int, int, int, int]:
    """(x0, y0, width, height) of the pixels brighter than ``threshold``."""
    ys, xs = np.nonzero(img.mean(axis=2) > threshold)
    return int(xs.min()), int(ys.min()), int(xs.max() - xs.min() + 1), int(ys.max() - ys.min() + 1)


def test_letterbox_keeps_the_aspect() -> None:
    portrait = np.full((64, 48, 3), 255, np.uint8)
    out = letterbox_into(portrait, (64, 48))
    assert out.shape == (48, 64, 3)
    assert _lit_box(out) == (14, 0, 36, 48)  # 48x64 scaled by 0.75 to 36x48, centred between black bars
    small = np.full((24, 32, 3), 255, np.uint8)
    assert _lit_box(letterbox_into(small, (64, 48))) == (0, 0, 64, 48)  # same aspect: fills the frame
    same = np.zeros((48, 64, 3), np.uint8)
    assert letterbox_into(same, (64, 48)) is same  # the common case costs nothing


def test_video_sink_letterboxes_a_portrait_frame(tmp_path) -> None:
    path = tmp_path / "out.avi"  # Motion JPEG: the same geometry whatever the .mp4 codec here
    sink = VideoSink(path, fps=5.0)
    for i, (h, w) in enumerate([(48, 64), (64, 48)]):
        empty = Instances.from_masks(np.zeros((0, h, w), bool), np.zeros(0, np.int64), np.zeros(0, np.float32), NAMES)
        img = np.full((h, w, 3), 220, np.uint8)
        sink.write(FrameResult(Frame(img, i, time.perf_counter(), time.time()), empty))
    sink.close()
    first, second = _frames(path)
    assert _lit_box(first) == (0, 0, 64, 48)
    x0, y0, w, h = _lit_box(second)
    assert (w, h) == (36, 48) and abs(x0 - 14) <= 1 and y0 == 0


def test_folder_of_mixed_sizes_through_the_cli(tmp_path, tiny_model_file) -> None:
    """A landscape and a portrait photo with a round disc each: in the video, both discs are
    round and the portrait one sits between black bars."""
    folder = tmp_path / "photos"
    folder.mkdir()
    land = np.zeros((48, 64, 3), np.uint8)
    land[:] = (90, 90, 90)
    cv2.circle(land, (32, 24), 16, (255, 255, 255), -1)
    cv2.imwrite(str(folder / "a_landscape.png"), land)
    port = np.zeros((64, 48, 3), np.uint8)
    port[:] = (90, 90, 90)
    cv2.circle(port, (24, 32), 16, (255, 255, 255), -1)
    cv2.imwrite(str(folder / "b_portrait.png"), port)
    src = make_source(str(folder)).open()  # the model sees each image at its own size
    assert [f.image.shape[:2] for f in src.frames(threading.Event())] == [(48, 64), (64, 48)]

    out, js = tmp_path / "out.avi", tmp_path / "out.jsonl"
    # --conf 1: no instance is drawn over the discs.
    proc = run_cli("run", "--video", folder, "--model", tiny_model_file, "--backend", "torch", "--conf", "1",
                   "-o", out, "--save-json", js, "--no-progress")
    assert proc.returncode == 0, proc.stderr
    assert [(r["width"], r["height"]) for r in map(json.loads, js.read_text().splitlines())] == [(64, 48), (48, 64)]
    first, second = _frames(out)
    assert first.shape == second.shape == (48, 64, 3)
    # The grey background: the whole frame for the landscape, a 36-wide band for the portrait.
    assert _lit_box(first, 45) == (0, 0, 64, 48)
    x0, _, w, h = _lit_box(second, 45)
    assert abs(w - 36) <= 1 and h == 48 and abs(x0 - 14) <= 1
    # The disc (radius 16, scaled by 0.75 in the portrait) stays round: as wide as it is tall.
    _, _, dw, dh = _lit_box(second, 180)
    assert abs(dw - dh) <= 2 and abs(dh - 25) <= 3, (dw, dh)
    _, _, dw, dh = _lit_box(first, 180)
    assert abs(dw - dh) <= 2 and abs(dh - 33) <= 3, (dw, dh)
