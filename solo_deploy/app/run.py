"""`solo-deploy run` wiring: sources and sinks around the runtime's pipeline, the model resolved by
the application layer, and the demo's COCO scoring (the one sink that needs evaluation)."""
from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from .._paths import check_model_path, check_outputs
from ..core.instances import encode_masks
from ..errors import BadInputError, ServiceLost
from ..evaluation.coco_eval import evaluate
from ..runtime.defaults import default_model_path
from ..runtime.pipeline import Pipeline
from ..runtime.predictor import check_conf, class_filter
from ..runtime.sinks import (
    FrameResult,
    JsonlSink,
    ProgressSink,
    ShowSink,
    Sink,
    VideoSink,
    check_video_path,
    stream_path,
)
from ..runtime.sources import DemoSource, Source, make_source
from ..runtime.tracking import TrackerConfig
from .models import load

__all__ = ["GroundTruthEval", "build_predictor", "run", "track_config"]


class GroundTruthEval(Sink):
    """COCO mask AP of the processed frames that carry ground truth (the demo source).

    ``class_names`` are the model's; evaluation needs them to equal the ground truth's classes.
    """

    name = "demo_eval"
    needs_all_instances = True  # COCO AP scores every instance, whatever --conf says

    def __init__(self, class_names: Sequence[str]) -> None:
        self.class_names = tuple(class_names)
        self.images: list[dict[str, Any]] = []
        self.gt_anns: list[dict[str, Any]] = []
        self.results: list[dict[str, Any]] = []
        self.metrics: dict[str, Any] | None = None

    def write(self, result: FrameResult) -> None:
        f = result.frame
        if f.gt is None:
            return
        masks, labels = f.gt[0], f.gt[1]
        image_id = f.stream * 1_000_000 + f.index + 1  # unique over streams; COCO ids start at 1
        h, w = f.image.shape[:2]
        self.images.append({"id": image_id, "height": int(h), "width": int(w)})
        for rle, lab in zip(encode_masks(np.asarray(masks, bool)), np.asarray(labels).tolist()):
            self.gt_anns.append({"id": len(self.gt_anns) + 1, "image_id": image_id, "category_id": int(lab) + 1,
                                 "segmentation": rle, "iscrowd": 0})
        # The ground truth above numbers the demo's classes 1..C, whatever ids the model writes.
        self.results += result.instances.to_coco(image_id=image_id, cat_ids=range(1, len(self.class_names) + 1))

    def close(self) -> None:
        if not self.images:
            return
        gt = {"images": self.images, "annotations": self.gt_anns,
              "categories": [{"id": i + 1, "name": n} for i, n in enumerate(self.class_names)]}
        m = evaluate(gt, self.results, self.class_names)
        self.metrics = {"frames": len(self.images), **{k: m[k] for k in ("AP", "AP50", "AP75")}}

    def discard(self) -> None:
        pass

    def summary(self) -> dict[str, Any] | None:
        return {"demo_eval": self.metrics} if self.metrics else None



def track_config(conf: float | None, match: str = "mask", buffer: int = 30) -> TrackerConfig:
    """``run --track``: ByteTrack's thresholds around ``--conf`` -- it starts tracks and makes the
    first pass; instances down to 0.1 (ByteTrack's low threshold) continue tracks."""
    base = TrackerConfig()
    if conf is None:
        return TrackerConfig(match=match, max_misses=buffer)
    return TrackerConfig(match=match, max_misses=buffer, high_thresh=conf, new_thresh=conf,
                         low_thresh=min(base.low_thresh, conf))


def build_predictor(model: str | Path, backend: str = "auto", device: str = "cpu", threads: int | None = None,
                    conf: float | None = None, **kwargs: Any) -> Any:
    """A ``Predictor`` for ``model``; ``auto`` exports a PyTorch model file to a cached ONNX once."""
    kwargs.setdefault("spin", False)  # the pipeline's other stages need the cores ORT would spin on
    return load(model, backend=backend, device=device, threads=threads, conf=conf, **kwargs)


def _run_outputs(videos: Sequence[str], model: str | Path | None, output: str | Path | None,
                 save_json: str | Path | None) -> tuple[list[tuple[str, Any]], list[tuple[str, Any]]]:
    """(outputs, inputs) of a run as (option, path) pairs, for :func:`check_outputs`: the video of
    each stream and the JSON lines; the source files and the model."""
    outs: list[tuple[str, Any]] = [("--output", stream_path(Path(output), i, len(videos)))
                                   for i in range(len(videos))] if output is not None else []
    outs.append(("--save-json", save_json))
    ins: list[tuple[str, Any]] = [("--video", Path(v)) for v in videos if Path(v).is_file()]
    ins.append(("--model", model))
    return outs, ins


def run(videos: Sequence[str], model: str | Path | None = None, *, backend: str = "auto", device: str = "cpu",
        output: str | Path | None = None, save_json: str | Path | None = None, show: bool = False,
        conf: float | None = None, classes: Sequence[str] | None = None, imgsz: tuple[int, int] | None = None,
        max_frames: int | None = None,
        vid_stride: int = 1, reconnect_timeout: float = 30.0, threads: int | None = None, progress: bool = True,
        realtime: bool = False, track: TrackerConfig | None = None, handle_signals: bool = True,
        also_writes: Sequence[tuple[str, str | Path | None]] = (),
        **runner_kwargs: Any) -> dict[str, Any]:
    """Open the sources, load the model (the shipped default when ``model`` is None), run the
    pipeline into the requested sinks and return its summary (see ``Pipeline.summary``).

    ``also_writes``: (option, path) of what the caller writes after the run (the CLI's summary
    JSON), checked with the run's own outputs against its inputs before anything starts.
    ``track``: give instances track ids (``runtime.tracking``; see :func:`track_config`).
    ``realtime``: play the demo, video files and images live at their frame rate, dropping the
    frames a slower model misses (cameras and streams are always live)."""

    if not videos:
        raise BadInputError("give at least one --video SOURCE (camN, a file, a URL, a folder/glob or demo)")
    check_conf(conf)
    if vid_stride < 1:
        raise BadInputError(f"--vid-stride must be at least 1, got {vid_stride}")
    if max_frames is not None and max_frames < 1:
        raise BadInputError(f"--max-frames must be at least 1, got {max_frames}")
    if reconnect_timeout < 0:
        raise BadInputError(f"--reconnect-timeout must be non-negative, got {reconnect_timeout}")
    if threads is not None and threads < 1:
        raise BadInputError(f"--threads must be at least 1, got {threads}")
    if output is not None:
        check_video_path(Path(output))
    model_path = Path(model) if model is not None else default_model_path()
    if backend != "triton":
        check_model_path(model_path)
    outputs, inputs = _run_outputs(videos, None if backend == "triton" else model_path, output, save_json)
    check_outputs([*outputs, *also_writes], inputs)

    # Sources first: a missing camera or file fails in a second, before a model export.
    demo_frames = max_frames * vid_stride if max_frames else None
    sources: list[Source] = []
    sinks: list[Sink] = []
    try:
        for spec in videos:
            sources.append(make_source(spec, reconnect_timeout=reconnect_timeout, demo_frames=demo_frames,
                                       realtime=realtime).open())
        predictor = build_predictor(model_path if backend != "triton" else str(model), backend=backend,
                                    device=device, threads=threads, imgsz=imgsz, **runner_kwargs)
        predictor.classes = class_filter(classes, predictor.class_names, predictor.meta.category_ids)
        pipe_holder: list[Pipeline] = []
        if output is not None:
            for i, src in enumerate(sources):
                sinks.append(VideoSink(stream_path(Path(output), i, len(sources)), src.output_fps(vid_stride), i))
        if save_json is not None:
            sinks.append(JsonlSink(save_json))
        if show:
            sinks.append(ShowSink(on_quit=lambda: pipe_holder[0].stop("quit key") if pipe_holder else None))
        demo_classes = [s.class_names for s in sources if isinstance(s, DemoSource)]
        if demo_classes and tuple(predictor.class_names) == demo_classes[0]:
            sinks.append(GroundTruthEval(predictor.class_names))
        totals = [s.expected_frames(vid_stride, max_frames) for s in sources]
        if progress and all(t is not None for t in totals):
            sinks.append(ProgressSink(int(sum(t for t in totals if t is not None))))
        pipe = Pipeline(predictor, sources, sinks, conf=conf, vid_stride=vid_stride, max_frames=max_frames,
                        track=track)
        pipe_holder.append(pipe)
    except BaseException:
        for sink in sinks:
            sink.discard()
        for src in sources:
            src.close()
        raise
    try:
        summary = pipe.run(handle_signals=handle_signals, warmup=True)
    except ServiceLost as exc:
        raise ServiceLost(f"{exc} (outputs finalised)") from None
    summary["model"] = str(model_path if backend != "triton" else model)
    return summary


