"""Test support shared by the test suite and the benchmark scripts (not used at run time).

``serve_mpegts`` makes ffmpeg an HTTP MPEG-TS server on loopback, the stand-in for a network
camera that the stream tests and ``benchmarks/reconnect_timeline.py`` stop and start again.
``png_claiming`` and ``deflate_bomb`` write the small files that ask for a lot (issue #17's
tests and ``benchmarks/hostile_inputs.py``).
"""
from __future__ import annotations

import io
import socket
import struct
import subprocess
import zipfile
import zlib
from pathlib import Path

__all__ = ["deflate_bomb", "free_port", "png_claiming", "serve_mpegts"]


def png_claiming(path: Path, width: int, height: int) -> Path:
    """A PNG whose header claims width x height 8-bit RGB pixels; its data is a few bytes."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0))
                     + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b""))
    return path


def deflate_bomb(path: Path, inflated: int) -> Path:
    """A torch zip checkpoint ``{'state_dict': {'w': float32 (inflated // 4,)}}`` whose data record
    is deflated zeros (torch writes records stored; its reader inflates deflated ones too): about
    a thousandth of ``inflated`` on disk. Written in 16 MiB pieces, so it costs no memory."""
    import torch

    buf = io.BytesIO()
    torch.save({"state_dict": {"w": torch.zeros(7)}}, buf)
    src = zipfile.ZipFile(io.BytesIO(buf.getvalue()))
    with zipfile.ZipFile(path, "w") as dst:
        for info in src.infolist():
            data = src.read(info)
            if info.filename.endswith("data.pkl"):  # protocol 2: numel 7 is BININT1 7, twice
                if data.count(b"K\x07") != 2:
                    raise RuntimeError("unexpected torch.save pickle layout")
                dst.writestr(info.filename, data.replace(b"K\x07", b"J" + struct.pack("<i", inflated // 4)))
            elif info.filename.endswith("/data/0"):
                zi = zipfile.ZipInfo(info.filename)
                zi.compress_type = zipfile.ZIP_DEFLATED
                with dst.open(zi, "w", force_zip64=True) as fh:
                    piece = bytes(min(inflated, 16 << 20))
                    for start in range(0, inflated, len(piece)):
                        fh.write(piece[: min(len(piece), inflated - start)])
            else:
                dst.writestr(info, data)
    return path


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
