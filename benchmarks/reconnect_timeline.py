"""Reconnect timeline: `solo-deploy run` on an HTTP MPEG-TS stream (ffmpeg on loopback) that drops
and comes back repeatedly, then goes away for good.

Usage: python benchmarks/reconnect_timeline.py [--reconnect-timeout 5] [--out runs/reconnect.json]

Schedule (seconds from the first server start): up 0-4, down 4-6, up 6-10, down 10-14, up 14-18,
then down for good. The run must reconnect after each outage, end by itself about
--reconnect-timeout seconds after the last drop, and leave a playable video and complete JSON lines.
Prints the timeline: server events, the CLI's warnings, frame gaps seen in the JSON lines.
"""
from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a source checkout

from solo_deploy.testing import free_port, serve_mpegts

SCHEDULE = [(0.0, "up"), (4.0, "down"), (6.0, "up"), (10.0, "down"), (14.0, "up"), (18.0, "down")]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--reconnect-timeout", type=float, default=5.0)
    ap.add_argument("--out", default="runs/reconnect.json")
    args = ap.parse_args(argv)
    if shutil.which("ffmpeg") is None:
        print("ffmpeg is not installed: it serves the stream", file=sys.stderr)
        return 2

    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from soak import tiny_model

    from solo_deploy._atomic import write_json
    from solo_deploy.data.synthetic import SyntheticConfig, write_video

    events: list[tuple[float, str, str]] = []
    with tempfile.TemporaryDirectory() as tmp_s:
        tmp = Path(tmp_s)
        video, _ = write_video(tmp / "src.mp4", n_frames=60, cfg=SyntheticConfig(image_hw=(120, 160)))
        model = tiny_model(tmp / "tiny.safetensors", 64)
        port = free_port()
        url = f"http://127.0.0.1:{port}/live.ts"
        servers: list[subprocess.Popen] = []
        t0 = time.perf_counter()

        def event(who: str, what: str) -> None:
            events.append((round(time.perf_counter() - t0, 2), who, what))

        def controller() -> None:
            for at, action in SCHEDULE:
                time.sleep(max(0.0, at - (time.perf_counter() - t0)))
                if action == "up":
                    servers.append(serve_mpegts(video, port))
                else:
                    servers[-1].kill()
                    servers[-1].wait()
                event("server", action)

        ctl = threading.Thread(target=controller, daemon=True)
        ctl.start()
        time.sleep(0.5)  # ffmpeg listening before the client opens
        cmd = [sys.executable, "-m", "solo_deploy", "run", "--video", url, "--model", str(model),
               "--backend", "torch", "--output", str(tmp / "out.mp4"), "--save-json", str(tmp / "out.jsonl"),
               "--reconnect-timeout", str(args.reconnect_timeout), "--log-level", "warning"]
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        assert proc.stdout is not None
        for line in proc.stdout:
            line = line.strip()
            if any(w in line for w in ("dropped", "reconnected", "lost", "gave up", "error")):
                event("run", line)
        rc = proc.wait()
        event("run", f"exited with code {rc}")
        ctl.join(timeout=30)
        for s in servers:
            s.kill()
            s.wait()

        records = (
            [json.loads(x) for x in (tmp / "out.jsonl").read_text().splitlines()]
            if (tmp / "out.jsonl").exists()
            else []
        )
        walls = [r["wall_time"] for r in records]
        gaps = [(round(walls[i - 1] - walls[0], 2), round(walls[i] - walls[i - 1], 2))
                for i in range(1, len(walls)) if walls[i] - walls[i - 1] > 1.0]
        probe = subprocess.run(["ffprobe", "-v", "error", "-count_frames", "-select_streams", "v:0", "-show_entries",
                                "stream=nb_read_frames", "-of", "csv=p=0", str(tmp / "out.mp4")],
                               capture_output=True, text=True, check=False) if (tmp / "out.mp4").exists() else None
        video_frames = int(probe.stdout.strip() or 0) if probe and probe.returncode == 0 else 0

    report = {"command": "python benchmarks/reconnect_timeline.py " + " ".join(argv or sys.argv[1:]),
              "schedule": SCHEDULE, "reconnect_timeout_s": args.reconnect_timeout, "exit_code": rc,
              "events": events, "jsonl_records": len(records), "video_frames_playable": video_frames,
              "frame_gaps_over_1s": [{"at_s_after_first_frame": a, "gap_s": g} for a, g in gaps]}
    write_json(args.out, report)
    for at, who, what in events:
        print(f"{at:7.2f} s  {who:6s}  {what}")
    print(f"JSON lines: {len(records)} complete records; video: {video_frames} decodable frames; "
          f"gaps over 1 s in the frame times: {[g for _, g in gaps]}")
    # The stream finally goes away for good: the run gives up (exit code 1, "lost") with outputs kept.
    gave_up = any("gave up" in e[2] for e in events)
    ok = (rc == 1 and gave_up and len(records) > 0 and video_frames == len(records)
          and sum("reconnected after" in e[2] for e in events) >= 2)
    print(f"reconnected after every outage, gave up after the last, outputs complete: {'yes' if ok else 'NO'}")
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
