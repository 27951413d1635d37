"""Cost of the output video's encoders on 640x480 demo frames (a script, not a test).

x264 presets through PyAV (the `video` extra) against OpenCV's mp4v: CPU ms per frame and bytes
per frame, one process, interleaved by preset. Chose runtime.sinks.H264_OPTIONS.

    OMP_NUM_THREADS=1 python benchmarks/bench_video_encode.py [--frames 120]
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import av
import cv2

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a source checkout

from solo_deploy.data.synthetic import render_video_frames

HW = (480, 640)


def x264(frames, preset: str, path: Path) -> tuple[float, int]:
    out = av.open(str(path), "w", format="mp4")
    stream = out.add_stream("libx264", rate=30, options={"preset": preset})
    stream.width, stream.height, stream.pix_fmt = HW[1], HW[0], "yuv420p"
    t0 = time.process_time()
    for f in frames:
        out.mux(stream.encode(av.VideoFrame.from_ndarray(f, format="bgr24")))
    out.mux(stream.encode(None))
    out.close()
    return (time.process_time() - t0) / len(frames) * 1000, path.stat().st_size // len(frames)


def mp4v(frames, path: Path) -> tuple[float, int]:
    w = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), 30, (HW[1], HW[0]))
    t0 = time.process_time()
    for f in frames:
        w.write(f)
    w.release()
    return (time.process_time() - t0) / len(frames) * 1000, path.stat().st_size // len(frames)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--frames", type=int, default=120)
    args = ap.parse_args()
    frames = [cv2.resize(f, (HW[1], HW[0])) for f, _, _ in render_video_frames(n_frames=args.frames)]
    with tempfile.TemporaryDirectory() as tmp:
        rows = [(f"x264 {p}", *x264(frames, p, Path(tmp) / f"{p}.mp4")) for p in ("veryfast", "superfast", "ultrafast")]
        rows.append(("OpenCV mp4v", *mp4v(frames, Path(tmp) / "mp4v.mp4")))
    print(f"{'encoder':<16}{'CPU ms/frame':>14}{'bytes/frame':>13}   ({args.frames} frames, 640x480)")
    for name, ms, size in rows:
        print(f"{name:<16}{ms:14.2f}{size:13d}")


if __name__ == "__main__":
    main()
