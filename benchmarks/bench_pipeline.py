"""Pipeline benchmark (a script, not a test).

1. Throughput: a 640x480 video file through the full pipeline (decode, letterbox, inference,
   post-processing, annotated video + JSON lines) against bare inference (the runner alone on
   pre-letterboxed frames, back to back). Goal: pipeline >= 0.85x bare.
2. Latency stability: a live source faster than the model (newest frame wins) for 1000+
   processed frames: end-to-end latency (capture -> sinks done) p50 / p99 / max overall and
   per window of 250 frames (no drift = the windows agree), and the share of dropped frames.

Prints a table and writes a JSON file::

    OMP_NUM_THREADS=1 python benchmarks/bench_pipeline.py --model MODEL.safetensors --json out.json
"""
from __future__ import annotations

import argparse
import itertools
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a source checkout

from solo_deploy._atomic import write_json
from solo_deploy.app.run import build_predictor
from solo_deploy.runtime.pipeline import Pipeline
from solo_deploy.runtime.sinks import JsonlSink, Sink, VideoSink
from solo_deploy.runtime.sources import IterableSource, open_source

HW = (480, 640)


def render_frames(n: int) -> list[np.ndarray]:
    """``n`` BGR uint8 (480, 640, 3) frames of the synthetic demo scene."""
    from solo_deploy.data.synthetic import SPLITS, SyntheticConfig, render_video_frames

    return [img for img, _, _ in render_video_frames(SPLITS["demo"].seed, n, SyntheticConfig(image_hw=HW))]


def write_file(path: Path, frames: list[np.ndarray], fps: float = 30.0) -> Path:
    import cv2

    w = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), fps, (HW[1], HW[0]))
    for f in frames:
        w.write(f)
    w.release()
    return path


def bare_inference(pred, frames: list[np.ndarray], n: int) -> dict:
    """The runner alone, batch 1, back to back on pre-letterboxed frames."""
    batches = [pred.preprocess([f])[0] for f in frames[:32]]
    for b in batches[:3]:
        pred.runner(b)  # warm-up
    t0 = time.perf_counter()
    for b in itertools.islice(itertools.cycle(batches), n):
        pred.runner(b)
    dt = time.perf_counter() - t0
    return {"frames": n, "seconds": round(dt, 3), "fps": round(n / dt, 2)}


class StopAfter(Sink):
    """Stops the pipeline once ``n`` frames went through the sinks."""

    name = "stop_after"

    def __init__(self, n: int) -> None:
        self.n, self.count, self.pipe = n, 0, None

    def write(self, result) -> None:
        self.count += 1
        if self.count == self.n and self.pipe is not None:
            self.pipe.stop(f"{self.n} frames")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", help="model file (default: the shipped model)")
    ap.add_argument("--backend", default="auto")
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--conf", type=float, default=None, help="score threshold of the final instances")
    ap.add_argument("--frames", type=int, default=300, help="frames of the 640x480 file")
    ap.add_argument("--live-frames", type=int, default=1000, help="processed frames of the live run")
    ap.add_argument("--live-fps", type=float, default=None, help="live source rate (default: 2x bare inference)")
    ap.add_argument("--json", default="runs/bench/bench_pipeline.json")
    args = ap.parse_args()

    model = args.model
    if model is None:
        from solo_deploy.runtime.defaults import default_model_path

        model = str(default_model_path())
    pred = build_predictor(model, backend=args.backend, threads=args.threads, conf=args.conf)
    frames = render_frames(min(args.frames, 120))  # the file repeats them; rendering is not benchmarked
    res: dict = {"host": {"cpus": os.cpu_count(), "omp_threads": os.environ.get("OMP_NUM_THREADS")},
                 "model": model, "backend": pred.runner.backend, "input_hw": list(pred.meta.preprocess.input_hw),
                 "frame_hw": list(HW)}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        video = write_file(tmp / "in.mp4", [frames[i % len(frames)] for i in range(args.frames)])

        # 1. Throughput ------------------------------------------------------------------------
        # Bare inference before and after the pipeline, averaged: this VM's speed drifts over
        # minutes, and a single bare run on one side would tilt the ratio.
        bare_before = bare_inference(pred, frames, args.frames)
        src = open_source(str(video))
        sinks = [VideoSink(tmp / "out.mp4", src.output_fps()), JsonlSink(tmp / "out.jsonl")]
        s = Pipeline(pred, [src], sinks).run(handle_signals=False, warmup=True)
        bare_after = bare_inference(pred, frames, args.frames)
        bare = {"fps": round(2.0 / (1.0 / bare_before["fps"] + 1.0 / bare_after["fps"]), 2)}
        res["throughput"] = {"bare_inference_fps": bare["fps"], "bare_before_fps": bare_before["fps"],
                             "bare_after_fps": bare_after["fps"], "pipeline_fps": s["fps"],
                             "ratio": round(s["fps"] / bare["fps"], 3), "goal_ratio": 0.85,
                             "frames": s["frames"], "dropped": s["dropped"], "latency_ms": s["latency_ms"]}

        # 2. Live latency stability ------------------------------------------------------------
        live_fps = args.live_fps or 2.0 * bare["fps"]
        endless = (frames[i % len(frames)] for i in itertools.count())
        live = IterableSource(endless, fps=live_fps, live=True, name="live")
        stopper = StopAfter(args.live_frames)
        pipe = Pipeline(pred, [live], [VideoSink(tmp / "live.mp4", 30.0), JsonlSink(tmp / "live.jsonl"), stopper])
        stopper.pipe = pipe
        s2 = pipe.run(handle_signals=False, warmup=True)
        e2e = np.fromiter(pipe.stats["end_to_end"].samples, np.float64) * 1e3
        windows = [e2e[i:i + 250] for i in range(0, len(e2e) - 249, 250)]
        res["live"] = {"source_fps": round(live_fps, 1), "processed": s2["frames"], "captured": s2["captured"],
                       "dropped": s2["dropped"], "drop_share": round(s2["dropped"] / max(1, s2["captured"]), 3),
                       "pipeline_fps": s2["fps"], "e2e_ms": {k: s2["latency_ms"]["end_to_end"][k]
                                                             for k in ("mean", "p50", "p99", "max")},
                       "window_p50_ms": [round(float(np.percentile(w, 50)), 2) for w in windows],
                       "window_p99_ms": [round(float(np.percentile(w, 99)), 2) for w in windows],
                       "inference_ms_p50": s2["latency_ms"]["inference"]["p50"]}

    t, lv = res["throughput"], res["live"]
    print(f"model {model} [{res['backend']}], input {res['input_hw'][0]}x{res['input_hw'][1]}, "
          f"frames {HW[1]}x{HW[0]}")
    print(f"{'throughput':<44s}{'fps':>10s}")
    print(f"  {'bare inference (runner only)':<42s}{t['bare_inference_fps']:10.1f}"
          f"   (before {t['bare_before_fps']:.1f}, after {t['bare_after_fps']:.1f})")
    print(f"  {'pipeline (file -> video + JSONL)':<42s}{t['pipeline_fps']:10.1f}")
    print(f"  {'ratio (goal >= 0.85)':<42s}{t['ratio']:10.2f}   ({t['frames']} frames, {t['dropped']} dropped)")
    print(f"\nlive source at {lv['source_fps']:.0f} fps, {lv['processed']} frames processed, "
          f"{lv['dropped']} dropped ({100 * lv['drop_share']:.0f} %), {lv['pipeline_fps']:.1f} fps")
    print(f"  {'end-to-end latency ms':<42s}{'p50':>8s}{'p99':>8s}{'max':>8s}")
    print(f"  {'all frames':<42s}{lv['e2e_ms']['p50']:8.1f}{lv['e2e_ms']['p99']:8.1f}{lv['e2e_ms']['max']:8.1f}")
    for i, (p50, p99) in enumerate(zip(lv["window_p50_ms"], lv["window_p99_ms"])):
        print(f"  {'frames ' + str(250 * i) + '-' + str(250 * i + 249):<42s}{p50:8.1f}{p99:8.1f}")
    windows = f"; median window p99 {statistics.median(lv['window_p99_ms']):.1f} ms" if lv["window_p99_ms"] else ""
    print(f"  (inference p50 {lv['inference_ms_p50']:.1f} ms{windows})")
    write_json(args.json, res)
    print(f"\nwrote {args.json}")


if __name__ == "__main__":
    main()
