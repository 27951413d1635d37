"""Test support shared by the test suite and the benchmark scripts (not used at run time).

``serve_mpegts`` makes ffmpeg an HTTP MPEG-TS server on loopback, the stand-in for a network
camera that the stream tests and ``benchmarks/reconnect_timeline.py`` stop and start again.
"""
from __future__ import annotations

import socket
import subprocess
from pathlib import Path

__all__ = ["free_port", "serve_mpegts"]


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def serve_mpegts(video: Path, port: int) -> subprocess.Popen:
    """Serve ``video`` in a loop at ``http://127.0.0.1:PORT/live.ts`` until the process is killed.

    ``-re``: real-time pace, as a camera; ``-listen 1``: ffmpeg is the HTTP server, on loopback only.
    """
    return subprocess.Popen(["ffmpeg", "-loglevel", "error", "-re", "-stream_loop", "-1", "-i", str(video),
                             "-c:v", "mpeg2video", "-q:v", "5", "-f", "mpegts", "-listen", "1",
                             f"http://127.0.0.1:{port}/live.ts"], stdin=subprocess.DEVNULL,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
