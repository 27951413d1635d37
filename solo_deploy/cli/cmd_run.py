"""`solo-deploy run`: real-time segmentation of cameras, videos, streams, image folders or the demo."""
from __future__ import annotations

from pathlib import Path
from typing import List, Optional, Tuple

import typer

from .app import (
    ClassesOpt,
    ConfOpt,
    DeviceOpt,
    ImgszOpt,
    LogLevelOpt,
    TritonUrlOpt,
    app,
    imgsz_tuple,
    setup_logging,
)


@app.command("run")
def run_cmd(
    video: List[str] = typer.Option(..., "--video", "--source", help="camN (or N), a video file, an rtsp/http "
                                    "URL, an image folder or glob, or 'demo' (the built-in synthetic video, "
                                    "300 frames at 30 fps). Repeat for several streams batched through one model."),
    model: Optional[str] = typer.Option(None, "--model", "-m", help="Model file (.safetensors, .ckpt, .onnx, "
                                        ".engine); default: the shipped model. A model name with --backend triton."),
    backend: str = typer.Option("auto", "--backend", help="auto, tensorrt, onnxruntime, torch or triton. auto runs "
                                "a PyTorch model file through a cached ONNX export on a CPU."),
    device: str = DeviceOpt,
    output: Optional[Path] = typer.Option(None, "--output", "-o", help="Annotated video (.mp4 or .avi); "
                                          "several streams write NAME_0.mp4, NAME_1.mp4, ..."),
    save_json: Optional[Path] = typer.Option(None, "--save-json", help="JSON lines: one line per processed frame "
                                             "with instances (class, score, box as x y w h, COCO RLE mask)."),
    show: bool = typer.Option(False, "--show", help="Show the annotated frames in a window ('q' stops)."),
    conf: Optional[float] = ConfOpt,
    classes: Optional[List[str]] = ClassesOpt,
    imgsz: Optional[Tuple[int, int]] = ImgszOpt,
    max_frames: Optional[int] = typer.Option(None, "--max-frames", min=1, help="Stop each stream after N frames "
                                             "(counted after --vid-stride).", show_default=False),
    vid_stride: int = typer.Option(1, "--vid-stride", min=1, help="Use every K-th frame of each source."),
    reconnect_timeout: float = typer.Option(30.0, "--reconnect-timeout", help="Seconds a dropped network stream "
                                            "may take to come back before the run gives up on it."),
    threads: Optional[int] = typer.Option(None, "--threads", min=1, help="CPU threads for the backend.",
                                          show_default=False),
    triton_url: str = TritonUrlOpt,
    summary_json: Optional[Path] = typer.Option(None, "--summary-json", help="Also write the run summary as JSON."),
    progress: bool = typer.Option(True, "--progress/--no-progress", help="Progress bar for files (on a terminal)."),
    realtime: bool = typer.Option(False, "--realtime", help="Play video files, image folders and the demo like a "
                                  "live camera at their frame rate (folders and the demo: 30 fps): a model slower "
                                  "than that drops frames (the newest wins). Default: every frame, as fast as the "
                                  "model goes. Cameras and streams are always live."),
    track: bool = typer.Option(False, "--track", help="Give instances track ids that persist across frames "
                               "(ByteTrack's two passes on mask IoU); --conf then starts tracks, and instances "
                               "down to 0.1 continue them. The outputs hold the tracked instances."),
    track_match: str = typer.Option("mask", "--track-match", help="What --track compares: mask or box IoU."),
    track_buffer: int = typer.Option(30, "--track-buffer", min=0, help="Frames a track survives unseen "
                                     "(--track)."),
    log_level: str = LogLevelOpt,
) -> None:
    """Segment live or recorded video: capture, inference, post-processing and output overlap in a
    pipeline. Ctrl-C (or SIGTERM) stops cleanly with finalised outputs; a second Ctrl-C quits at once.
    Exit codes: 0 ok (also after a clean stop), 1 failure (e.g. a stream lost for good), 2 bad input."""
    setup_logging(log_level)
    from .._atomic import write_json
    from ..app.run import check_conf, run, track_config
    from ..errors import BadInputError, RuntimeFailure
    from ..runtime.pipeline import format_summary
    from ..runtime.sources import quiet_opencv

    quiet_opencv(verbose=log_level.lower() == "debug")
    if backend == "triton" and not model:
        raise BadInputError("--backend triton needs --model NAME (the model's name on the Triton server)")
    kwargs = {"url": triton_url, "retry_s": reconnect_timeout} if backend == "triton" else {}
    summary = run(video, model, backend=backend, device=device, output=output, save_json=save_json, show=show,
                  conf=conf, classes=classes, imgsz=imgsz_tuple(imgsz), max_frames=max_frames, vid_stride=vid_stride,
                  reconnect_timeout=reconnect_timeout, threads=threads, progress=progress, realtime=realtime,
                  track=track_config(check_conf(conf), track_match, track_buffer) if track else None,
                  also_writes=[("--summary-json", summary_json)], **kwargs)
    typer.echo(format_summary(summary))
    if summary_json is not None:
        write_json(summary_json, summary)
    lost = [s for s in summary["streams"] if s["status"] in ("lost", "failed")]
    if lost:
        what = "; ".join(s["warnings"][-1] if s["warnings"] else f"stream {s['stream']} {s['status']}" for s in lost)
        raise RuntimeFailure(f"{what} (outputs finalised)")
