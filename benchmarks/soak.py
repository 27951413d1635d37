"""Soak: a long run from a paced synthetic live source through the real pipeline, with a tiny model.

Usage: python benchmarks/soak.py [--frames 10000] [--fps 60] [--imgsz 64] [--out runs/soak.json]

The source is the seeded demo video, rendered frame by frame and played live (latest frame wins),
faster or slower than the model as --fps says. The sinks are the JSON-lines writer and a probe that
records, per processed frame, the end-to-end latency (capture to sinks) and every 250 frames the
process's resident memory. It reports RSS growth after warm-up (goal < 5%) and latency
percentiles of the first and the last thousand frames (goal: stable). Not a CI test: minutes long.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

WARMUP_FRAMES = 1000  # RSS growth is measured from here: allocator pools and caches fill first
WINDOW = 1000  # latency windows compared: the first and the last WINDOW frames


def rss_mb() -> float:
    """Resident set size of this process in MiB (Linux /proc)."""
    with open("/proc/self/statm") as f:
        pages = int(f.read().split()[1])
    return pages * os.sysconf("SC_PAGE_SIZE") / 2**20


def tiny_model(path: Path, imgsz: int) -> Path:
    """A random-weight SOLOv2 R18 with a thin head (the tests' tiny model), saved as a model file."""
    from solo_deploy.core.config import get_preset
    from solo_deploy.model.modelfile import ModelMeta, save_model_file
    from solo_deploy.model.network import SOLONet
    from solo_deploy.preprocess import PreprocessSpec

    cfg = replace(get_preset("solov2-light-r18", num_classes=4), fpn_channels=32, head_channels=32, mask_channels=16,
                  mask_feat_channels=16, norm_groups=8, stacked_convs=1, grids=(8, 6, 4, 3, 2))
    meta = ModelMeta(model=cfg, preprocess=PreprocessSpec(input_hw=(imgsz, imgsz)),
                     class_names=("circle", "rectangle", "triangle", "ring"), preset="solov2-light-r18")
    save_model_file(path, SOLONet(cfg).state_dict(), meta)
    return path


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--frames", type=int, default=10_000)
    ap.add_argument("--fps", type=float, default=60.0, help="pace of the live source")
    ap.add_argument("--imgsz", type=int, default=64)
    ap.add_argument("--backend", default="auto")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", default="runs/soak.json")
    args = ap.parse_args(argv)
    if args.frames < WARMUP_FRAMES + 2 * WINDOW:
        ap.error(f"--frames must be at least {WARMUP_FRAMES + 2 * WINDOW}")

    from solo_deploy._atomic import write_json
    from solo_deploy.app.run import build_predictor
    from solo_deploy.runtime.pipeline import Pipeline
    from solo_deploy.runtime.sinks import JsonlSink, Sink
    from solo_deploy.runtime.sources import DemoSource

    class Probe(Sink):
        name = "probe"

        def __init__(self) -> None:
            self.latency_ms: list[float] = []
            self.frame_index: list[int] = []
            self.rss: list[tuple[int, float, float]] = []  # (processed, seconds, MiB)
            self.t0 = time.perf_counter()

        def write(self, result) -> None:
            now = time.perf_counter()
            self.latency_ms.append((now - result.frame.t_capture) * 1e3)
            self.frame_index.append(result.frame.index)
            if len(self.latency_ms) % 250 == 1:
                self.rss.append((len(self.latency_ms), round(now - self.t0, 2), round(rss_mb(), 2)))

    with tempfile.TemporaryDirectory() as tmp:
        model = tiny_model(Path(tmp) / "tiny.safetensors", args.imgsz)
        predictor = build_predictor(model, backend=args.backend, threads=args.threads)
        source = DemoSource(n_frames=args.frames, fps=args.fps).open()
        probe = Probe()
        sinks = [JsonlSink(Path(tmp) / "soak.jsonl"), probe]
        pipe = Pipeline(predictor, [source], sinks)
        t0 = time.perf_counter()
        summary = pipe.run(handle_signals=True, warmup=True)
        wall = time.perf_counter() - t0
        with open(Path(tmp) / "soak.jsonl") as fh:
            jsonl_lines = sum(1 for _ in fh)

    lat = np.asarray(probe.latency_ms)
    n = len(lat)
    if n < WARMUP_FRAMES + 2 * WINDOW:
        print(f"only {n} frames were processed (source paced too fast for this machine?)", file=sys.stderr)
        return 1
    rss = [r for r in probe.rss if r[0] >= WARMUP_FRAMES]
    base, last, peak = rss[0][2], rss[-1][2], max(r[2] for r in rss)

    def pct(a: np.ndarray) -> dict[str, float]:
        return {k: round(float(np.percentile(a, q)), 2) for k, q in (("p50", 50), ("p90", 90), ("p99", 99))} | {
            "max": round(float(a.max()), 2)}

    first, final = pct(lat[:WINDOW]), pct(lat[-WINDOW:])
    report = {
        "command": "python benchmarks/soak.py " + " ".join(argv if argv is not None else sys.argv[1:]),
        "frames_offered": args.frames, "frames_processed": n, "dropped": summary.get("dropped"),
        "jsonl_lines": jsonl_lines, "source_fps": args.fps, "wall_s": round(wall, 1),
        "fps": round(n / wall, 1), "backend": predictor.runner.backend, "imgsz": args.imgsz,
        "rss_mb": {"after_warmup": base, "final": last, "peak": peak,
                   "growth_pct_after_warmup": round(100 * (last - base) / base, 2),
                   "peak_growth_pct": round(100 * (peak - base) / base, 2)},
        "latency_ms": {"first_1000": first, "last_1000": final,
                       "p50_ratio_last_vs_first": round(final["p50"] / first["p50"], 3),
                       "p99_ratio_last_vs_first": round(final["p99"] / first["p99"], 3)},
        "rss_trace": probe.rss,
    }
    write_json(args.out, report)
    print(json.dumps({k: v for k, v in report.items() if k != "rss_trace"}, indent=1))
    ok = report["rss_mb"]["growth_pct_after_warmup"] < 5.0 and jsonl_lines == n
    print(f"memory flat (<5% after warm-up): {'yes' if ok else 'NO'}; wrote {args.out}")
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
