"""Mask-IoU vs box-IoU association on the demo video, side by side (issue #20).

Runs ``solo-deploy run --video demo --track --track-match MODE`` for both modes on the same model
(the demo plays every frame, so both see the same detections), scores each with ``solo-deploy
eval-track`` (py-motmetrics; objects matched by mask IoU >= 0.5) and prints one table with the
tracker's cost per frame from each run's summary.

    python benchmarks/bench_tracking.py [--model MODEL] [--frames 300] [--out runs/tracking]
"""
from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
from pathlib import Path


def _cli() -> str:
    here = Path(sys.executable).with_name("solo-deploy")
    return str(here) if here.exists() else (shutil.which("solo-deploy") or "solo-deploy")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default=None, help="model file (default: the shipped one)")
    ap.add_argument("--frames", type=int, default=300)
    ap.add_argument("--conf", type=float, nargs="+", default=[0.25], help="--conf values to run (each both modes)")
    ap.add_argument("--out", type=Path, default=Path("runs/tracking"))
    args = ap.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    rows = []
    for conf, mode in ((c, m) for c in args.conf for m in ("mask", "box")):
        stem = f"{mode}-conf{conf:g}"
        lines, summary, metrics = (args.out / f"{stem}.jsonl", args.out / f"{stem}.summary.json",
                                   args.out / f"{stem}.metrics.json")
        cmd = [_cli(), "run", "--video", "demo", "--max-frames", str(args.frames), "--track", "--track-match", mode,
               "--conf", str(conf), "--save-json", str(lines), "--summary-json", str(summary), "--no-progress"]
        if args.model:
            cmd += ["--model", args.model]
        print("$", " ".join(cmd[1:]), flush=True)
        subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
        subprocess.run([_cli(), "eval-track", str(lines), "--gt", "demo", "--json", str(metrics)], check=True,
                       stdout=subprocess.DEVNULL)
        s, m = json.loads(summary.read_text()), json.loads(metrics.read_text())
        rows.append((f"{mode} IoU, conf {conf}", m, s))
    print(f"\n{'association':<22}{'MOTA':>7}{'IDF1':>7}{'IDsw':>6}{'frag':>6}{'prec':>7}{'recall':>8}{'MT':>5}"
          f"{'tracks':>8}{'track ms':>10}{'share':>8}{'fps':>7}")
    for mode, m, s in rows:
        t = s["tracking"]
        print(f"{mode:<22}{100 * m['mota']:7.1f}{100 * m['idf1']:7.1f}{m['num_switches']:6d}"
              f"{m['num_fragmentations']:6d}{100 * m['precision']:7.1f}{100 * m['recall']:8.1f}"
              f"{m['mostly_tracked']:5d}{sum(t['tracks']):8d}{t['ms_per_frame']:10.2f}"
              f"{100 * t['share_of_frame_time']:7.1f}%{s['fps']:7.1f}")
    print(f"\n{rows[0][1]['frames']} frames, {rows[0][1]['num_unique_objects']} objects, "
          f"{rows[0][1]['num_objects']} object-frames; HOTA not reported (see solo_deploy/evaluation/tracking.py)")


if __name__ == "__main__":
    main()
