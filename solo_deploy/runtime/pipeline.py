"""The real-time pipeline: capture -> preprocess -> inference -> post-process -> sinks.

Each stage is a thread; bounded queues connect them, so decoding, letterboxing,
post-processing and drawing/encoding overlap inference (OpenCV, numpy, ONNX Runtime and
torch release the GIL in their heavy calls).

::

    capture[i] --(per-stream buffer)--> preprocess --q--> inference --q--> postprocess --q--> sinks

* One capture thread per stream. Live sources (camera, URL, --realtime) put into a one-slot buffer
  where the newest frame replaces an unconsumed one (counted as dropped), so latency stays
  bounded when the model is slower than the source. File-like sources block instead: no frame
  is ever dropped.
* A batch is the oldest (files) / newest (live) waiting frame of every stream that has one.
* Stop (Ctrl-C, SIGTERM, 'q' in the window, ``Pipeline.stop()``): captures stop, frames in
  flight finish, sinks are finalised. A second signal aborts at once (sinks still finalised
  when that takes no time). A failing stage aborts and its error is raised; file outputs are
  then discarded (never renamed into place).

``Pipeline.run()`` returns a summary dict (frames, dropped, per-stage latency mean/p50/p99 in
ms, end-to-end latency from capture to sinks, FPS); ``format_summary`` prints it.
"""
from __future__ import annotations

import collections
import contextlib
import itertools
import logging
import queue
import signal
import threading
import time
from collections.abc import Sequence
from typing import Any

import numpy as np

from .._lazy import lazy_import
from ..errors import BadInputError, ServiceLost, SoloDeployError
from .sinks import FrameResult, Sink
from .sources import Frame, Source
from .tracking import Tracker, TrackerConfig

cv2 = lazy_import("cv2")
threadpoolctl = lazy_import("threadpoolctl")

log = logging.getLogger("solo_deploy.runtime.pipeline")

STAGES = ("capture", "preprocess", "inference", "postprocess", "sinks", "end_to_end")
_END = object()  # end-of-stream marker passed down the stage queues
# How long run() waits, after an abort, for a stage to finish its current call (an inference on a
# large model and a slow CPU takes seconds; a stage never blocks longer than one call).
STAGE_EXIT_TIMEOUT_S = 30.0


class LatencyStats:
    """Durations of one stage: exact count and mean, percentiles over the last ``keep`` samples."""

    def __init__(self, keep: int = 100_000) -> None:
        self.count = 0
        self.total = 0.0
        self.samples: collections.deque[float] = collections.deque(maxlen=keep)

    def add(self, seconds: float) -> None:
        self.count += 1
        self.total += seconds
        self.samples.append(seconds)

    def summary(self) -> dict[str, float | int]:
        """{"count", "mean", "p50", "p99", "max"}; times in milliseconds."""
        if not self.count:
            return {"count": 0, "mean": 0.0, "p50": 0.0, "p99": 0.0, "max": 0.0}
        a = np.fromiter(self.samples, np.float64, len(self.samples)) * 1e3
        p50, p99 = np.percentile(a, [50, 99])
        return {"count": self.count, "mean": round(self.total / self.count * 1e3, 3), "p50": round(float(p50), 3),
                "p99": round(float(p99), 3), "max": round(float(a.max()), 3)}


class _StreamBuffer:
    """Frames of one stream waiting for preprocessing. Live: one slot, newest wins. Files: FIFO,
    ``put`` blocks while full. Shares the pipeline's condition so the batcher can wait on all."""

    def __init__(self, live: bool, maxsize: int, cond: threading.Condition) -> None:
        self.live = live
        self.maxsize = 1 if live else max(1, maxsize)
        self.items: collections.deque[Frame] = collections.deque()
        self.cond = cond
        self.closed = False
        self.dropped = 0
        self.captured = 0

    def put(self, frame: Frame, abort: threading.Event) -> None:
        with self.cond:
            self.captured += 1
            if self.live:
                if self.items:
                    self.items.popleft()
                    self.dropped += 1  # stale: a newer frame replaces it
                self.items.append(frame)
            else:
                while len(self.items) >= self.maxsize and not abort.is_set():
                    self.cond.wait(0.1)
                self.items.append(frame)
            self.cond.notify_all()

    def close(self) -> None:
        with self.cond:
            self.closed = True
            self.cond.notify_all()


def _put(q: queue.Queue[Any], item: Any, abort: threading.Event) -> bool:
    """Blocking put that gives up when the pipeline aborts (no thread stays stuck on a full queue)."""
    while not abort.is_set():
        try:
            q.put(item, timeout=0.1)
            return True
        except queue.Full:
            continue
    return False


def _get(q: queue.Queue[Any], abort: threading.Event) -> Any:
    while not abort.is_set():
        try:
            return q.get(timeout=0.1)
        except queue.Empty:
            continue
    return _END


_POOLS_LOCK = threading.Lock()
_pools_users = 0
_pools_restore: list[Any] = []  # what the first user saved; the last one restores it


@contextlib.contextmanager
def helper_pools_single_threaded() -> Any:
    """For the duration: numpy's BLAS and OpenCV run each call on the calling thread only.

    The settings are process-wide; overlapping users (pipelines in several threads) share one
    use count, so the first entry applies the limits and the last exit restores the saved ones.

    The pipeline already runs one thread per stage next to the model's own thread pool. BLAS
    (the Matrix-NMS and mask matmuls) and OpenCV (letterbox resize, overlay morphology) would
    each start a pool of their own on every call, and OpenBLAS workers spin-wait after each one:
    on 2 cores they slowed the ONNX Runtime model in the pipeline from 72 to 122 ms/frame
    (pipeline/bare 0.57 -> 0.76 with the pools limited, same run).
    """
    global _pools_users
    with _POOLS_LOCK:
        if _pools_users == 0:
            _pools_restore.append(cv2.getNumThreads())
            cv2.setNumThreads(1)
            try:
                _pools_restore.append(threadpoolctl.threadpool_limits(limits=1, user_api="blas"))
            except Exception:  # noqa: BLE001 - optional speed-up; an unknown BLAS build must not fail a run
                _pools_restore.append(None)
        _pools_users += 1
    try:
        yield
    finally:
        with _POOLS_LOCK:
            _pools_users -= 1
            if _pools_users == 0:
                cv_threads, limits = _pools_restore
                _pools_restore.clear()
                if limits is not None:
                    limits.restore_original_limits()
                cv2.setNumThreads(cv_threads)


class Pipeline:
    """Runs ``sources`` through ``predictor`` (a ``Predictor``) into ``sinks``.

    ``conf``: the outputs keep instances with score >= conf (filtered before their masks are
    pasted, unless a sink scores every instance: ``Sink.needs_all_instances``); ``vid_stride``:
    use every k-th source frame; ``max_frames``: stop each stream after that many frames (after
    striding); ``queue_size``:
    depth of file-source buffers and of the queues between stages for file sources (live
    sources use depth 1 everywhere, so a frame never waits behind older ones).
    """

    def __init__(self, predictor: Any, sources: Sequence[Source], sinks: Sequence[Sink] = (), *,
                 conf: float | None = None, vid_stride: int = 1, max_frames: int | None = None,
                 queue_size: int = 4, track: TrackerConfig | None = None) -> None:
        if not sources:
            raise BadInputError("no video source given")
        if vid_stride < 1:
            raise BadInputError(f"--vid-stride must be at least 1, got {vid_stride}")
        if max_frames is not None and max_frames < 1:
            raise BadInputError(f"--max-frames must be at least 1, got {max_frames}")
        self.predictor = predictor
        self.sources = list(sources)
        self.sinks = list(sinks)
        self.conf = conf
        # Filtering before post-processing pastes the masks saves the work for instances no output
        # shows; a sink that scores every instance (the demo's AP) gets them all instead.
        self._early_conf = None if any(s.needs_all_instances for s in self.sinks) else conf
        # Tracking: one tracker per stream, run in the sink stage (frames arrive there in order).
        # Its second pass needs instances down to its low threshold.
        self._trackers = [Tracker(track) for _ in self.sources] if track is not None else None
        if track is not None and self._early_conf is not None:
            self._early_conf = min(self._early_conf, track.low_thresh)
        self.vid_stride = vid_stride
        self.max_frames = max_frames
        any_live = any(s.live for s in self.sources)
        depth = 1 if any_live else max(1, queue_size // 2)
        self._cond = threading.Condition()
        self._buffers = [_StreamBuffer(s.live, queue_size, self._cond) for s in self.sources]
        # Inference slots: preprocessing takes a frame only once the inference stage has room for
        # it. Live: the slot frees when the model *finishes* a batch, so the next batch is the
        # newest frame at that moment and never ages behind a running inference (latency ~ one
        # inference + one frame interval, at the cost of the preprocessing time per batch).
        # Files: it frees when a batch *starts*, so the next one is ready (throughput first).
        self._live = any_live
        self._infer_slots = threading.Semaphore(depth)
        self._q_infer: queue.Queue[Any] = queue.Queue()
        self._q_post: queue.Queue[Any] = queue.Queue(depth)
        self._q_sink: queue.Queue[Any] = queue.Queue(depth)
        self._stop = threading.Event()  # captures stop; in-flight frames still finish
        self._abort = threading.Event()  # every stage stops now
        self._done = threading.Event()  # the sink stage has seen the end
        self._sink_lock = threading.Lock()
        self._errors: list[BaseException] = []
        self._capture_threads: list[threading.Thread] = []
        self.stats = {name: LatencyStats() for name in STAGES}
        if self._trackers is not None:
            self.stats["track"] = LatencyStats()
        self.processed = [0] * len(self.sources)
        self.batches = 0
        self.stop_reason: str | None = None
        self.user_abort = False
        self._signals = 0
        self._t_first: float | None = None
        self._t_last: float | None = None

    # -- control ---------------------------------------------------------------------------------
    def stop(self, reason: str = "stop requested") -> None:
        """Stop capturing; frames in flight are finished and the sinks finalised."""
        if not self._stop.is_set():
            self.stop_reason = reason
            self._stop.set()
            with self._cond:
                self._cond.notify_all()

    def abort(self, reason: str = "aborted") -> None:
        """Stop every stage now."""
        self.stop(reason)
        self._abort.set()
        with self._cond:
            self._cond.notify_all()

    def _fail(self, exc: BaseException) -> None:
        if not self._errors:
            self._errors.append(exc)
        self.abort(f"failed: {exc}")

    def _on_signal(self, signum: int, _frame: Any) -> None:
        self._signals += 1
        name = signal.Signals(signum).name
        if self._signals == 1:
            log.warning("%s: stopping after the frames in flight (again to quit at once)", name)
            self.stop(f"{name}")
        else:
            log.warning("%s again: quitting now", name)
            self.user_abort = True
            self.abort(f"{name} twice")

    # -- stages ----------------------------------------------------------------------------------
    def _capture(self, i: int) -> None:
        src, buf = self.sources[i], self._buffers[i]
        try:
            for frame in src.frames(self._stop, self.vid_stride, self.max_frames):
                frame.stream = i
                self.stats["capture"].add(frame.decode_s)
                buf.put(frame, self._abort)
                if self._abort.is_set():
                    break
        except SoloDeployError as exc:
            src.status = "failed"
            src.warn(f"{src.describe()}: {exc}")
        except Exception as exc:  # noqa: BLE001 - one broken stream ends itself, not the run
            src.status = "failed"
            src.warn(f"{src.describe()} failed: {type(exc).__name__}: {exc}")
        finally:
            buf.close()

    def _next_batch(self) -> list[Frame] | None:
        """One frame of every stream that has one; None at the end.

        Waits for at least one frame, and for a frame of every file-like stream still open:
        those always deliver (their captures block only when their own buffer is full), so
        several files batch together; live streams contribute their newest frame if any.
        """
        with self._cond:
            while not self._abort.is_set():
                file_pending = any(not b.live and not b.closed and not b.items for b in self._buffers)
                if not file_pending and any(b.items for b in self._buffers):
                    batch = [(b.items.pop() if b.live else b.items.popleft()) for b in self._buffers if b.items]
                    self._cond.notify_all()  # file captures may be waiting for room
                    return batch
                # After a stop, live streams end with their buffered frame: their capture thread
                # may sit in a blocking read (a stalled network stream) and is not waited for.
                stopping = self._stop.is_set()
                if all(b.closed or (stopping and b.live) for b in self._buffers):
                    return None
                self._cond.wait(0.1)
        return None

    def _preprocess(self) -> None:
        try:
            while True:
                while not self._infer_slots.acquire(timeout=0.1):
                    if self._abort.is_set():
                        return
                frames = self._next_batch()
                if frames is None:
                    break
                t0 = time.perf_counter()
                batch, letterboxes = self.predictor.preprocess([f.image for f in frames])
                self.stats["preprocess"].add(time.perf_counter() - t0)
                self._q_infer.put((frames, batch, letterboxes))
        except BaseException as exc:  # noqa: BLE001 - reported by run()
            self._fail(exc)
        finally:
            self._q_infer.put(_END)  # unbounded: never blocks

    def _infer(self) -> None:
        runner = self.predictor.runner
        try:
            while (item := _get(self._q_infer, self._abort)) is not _END:
                if not self._live:
                    self._infer_slots.release()
                frames, batch, letterboxes = item
                t0 = time.perf_counter()
                outputs = runner(batch)
                self.stats["inference"].add(time.perf_counter() - t0)
                if self._live:
                    self._infer_slots.release()
                self.batches += 1
                if not _put(self._q_post, (frames, outputs, letterboxes), self._abort):
                    return
        except BaseException as exc:  # noqa: BLE001
            self._fail(exc)
        finally:
            _put(self._q_post, _END, self._abort)

    def _postprocess(self) -> None:
        try:
            while (item := _get(self._q_post, self._abort)) is not _END:
                frames, (scores, kernels, feats), letterboxes = item
                t0 = time.perf_counter()
                # Vectorised over instances; torch tensors (GPU backends) stay on their device
                # until the final boolean masks.
                instances = self.predictor.finish(scores, kernels, feats, letterboxes, self._early_conf)
                self.stats["postprocess"].add(time.perf_counter() - t0)
                if not _put(self._q_sink, (frames, instances), self._abort):
                    return
        except BaseException as exc:  # noqa: BLE001
            self._fail(exc)
        finally:
            _put(self._q_sink, _END, self._abort)

    def _sink(self) -> None:
        try:
            while (item := _get(self._q_sink, self._abort)) is not _END:
                frames, instances = item
                for frame, inst in zip(frames, instances):
                    if self._trackers is not None:
                        t_track = time.perf_counter()
                        inst = self._trackers[frame.stream].update(inst, frame.index)
                        self.stats["track"].add(time.perf_counter() - t_track)
                    t0 = time.perf_counter()
                    result = FrameResult(frame, inst, source=self.sources[frame.stream].name, conf=self.conf,
                                         tracked=self._trackers is not None)
                    with self._sink_lock:
                        if self._abort.is_set():
                            return
                        for sink in self.sinks:
                            sink.write(result)
                    t1 = time.perf_counter()
                    self.stats["sinks"].add(t1 - t0)
                    self.stats["end_to_end"].add(t1 - frame.t_capture)
                    self.processed[frame.stream] += 1
                    if self._t_first is None:
                        self._t_first = frame.t_capture
                    self._t_last = t1
        except BaseException as exc:  # noqa: BLE001
            self._fail(exc)
        finally:
            self._done.set()

    # -- run -------------------------------------------------------------------------------------
    def warmup(self) -> None:
        """One blank frame through the model and post-processing: lazy initialisation (kernel
        selection, imports, caches) then stays out of the first frames' latency."""
        ih, iw = self.predictor.meta.preprocess.input_hw
        batch, lbs = self.predictor.preprocess([np.zeros((ih, iw, 3), np.uint8)])
        self.predictor.finish(*self.predictor.runner(batch), lbs)

    def run(self, handle_signals: bool = True, warmup: bool = False) -> dict[str, Any]:
        """Run to the end of every stream (or a stop); finalise the sinks; return the summary.

        Raises the first stage error (outputs discarded), or ``KeyboardInterrupt`` after a
        second Ctrl-C (outputs finalised when possible). ``warmup``: see :meth:`warmup`. While
        it runs, numpy's BLAS and OpenCV use one thread in the whole process (see
        :func:`helper_pools_single_threaded`).
        """
        with helper_pools_single_threaded():
            return self._run(handle_signals, warmup)

    def _run(self, handle_signals: bool, warmup: bool) -> dict[str, Any]:
        if warmup:
            try:
                self.warmup()
            except BaseException:
                self._finalise(discard=True)
                raise
        old_handlers: dict[int, Any] = {}
        if handle_signals and threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                old_handlers[sig] = signal.signal(sig, self._on_signal)
        t_start = time.perf_counter()
        threads = [threading.Thread(target=self._capture, args=(i,), name=f"solo-capture-{i}", daemon=True)
                   for i in range(len(self.sources))]
        self._capture_threads = list(threads)
        threads += [threading.Thread(target=fn, name=f"solo-{fn.__name__.strip('_')}", daemon=True)
                    for fn in (self._preprocess, self._infer, self._postprocess, self._sink)]
        try:
            for t in threads:
                t.start()
            while not self._done.wait(0.1):
                if self._abort.is_set():
                    break
        except KeyboardInterrupt:  # no handler installed (not the main thread's signal) or raced
            self.user_abort = True
            self.abort("interrupted")
        finally:
            for sig, handler in old_handlers.items():
                signal.signal(sig, handler)
            if self._abort.is_set():
                threads[-1].join(0.5)  # the sink stage finishes its current frame
            else:
                for t in threads:
                    t.join(1.0)
            # A lost remote service leaves what was processed sound: finalise it (as a lost stream).
            failed = bool(self._errors) and not all(isinstance(e, ServiceLost) for e in self._errors)
            self._finalise(discard=failed)
            # The stages see the abort after their current call. Wait for it: a thread still
            # inside ONNX Runtime or OpenCV when the interpreter exits makes their native thread
            # pools abort the process ("terminate called without an active exception", SIGABRT).
            # Not after a second Ctrl-C: that means "quit now" (the console entry then exits
            # without tearing the interpreter down).
            if not self.user_abort:
                for t in threads[len(self._capture_threads):]:
                    t.join(STAGE_EXIT_TIMEOUT_S)
        wall = time.perf_counter() - t_start
        summary = self.summary(wall)
        if self._errors:
            raise self._errors[0]
        if self.user_abort:
            raise KeyboardInterrupt
        return summary

    def _finalise(self, discard: bool) -> None:
        # The sink thread holds the lock while writing; if it does not let go quickly (stuck in a
        # write), outputs stay as hidden temporary files rather than risk a half-written one.
        got = self._sink_lock.acquire(timeout=1.0)
        try:
            for sink in self.sinks:
                try:
                    if not got:
                        log.warning("%s sink busy: not finalised", sink.name)
                    elif discard:
                        sink.discard()
                    else:
                        sink.close()
                except Exception as exc:  # noqa: BLE001 - finalise the others anyway
                    if self._errors:  # the run failed already: that error is the one to report
                        log.debug("closing the %s sink failed: %s", sink.name, exc)
                    else:
                        self._errors.append(exc)
        finally:
            if got:
                self._sink_lock.release()
            for src, t in itertools.zip_longest(self.sources, self._capture_threads):
                if t is not None:
                    t.join(0.2)
                    if t.is_alive():
                        # Still inside a blocking read (a stalled stream): releasing the capture
                        # under it could crash OpenCV; the daemon thread ends with the process.
                        log.debug("%s: capture thread still reading; not closing it", src.name)
                        continue
                try:
                    src.close()
                except Exception as exc:  # noqa: BLE001 - closing is best effort at the end
                    log.debug("closing %s failed: %s", src.name, exc)

    def summary(self, wall_s: float) -> dict[str, Any]:
        """Frames, drops, per-stage latency (ms), FPS and per-stream status."""
        frames = sum(self.processed)
        active = (self._t_last - self._t_first) if self._t_first is not None and self._t_last else wall_s
        streams = []
        for i, (src, buf) in enumerate(zip(self.sources, self._buffers)):
            streams.append({"stream": i, "source": src.name, "kind": src.kind, "live": src.live,
                            "captured": buf.captured, "processed": self.processed[i], "dropped": buf.dropped,
                            "status": src.status, "warnings": list(src.warnings)})
        out: dict[str, Any] = {
            "frames": frames,
            "captured": sum(b.captured for b in self._buffers),
            "dropped": sum(b.dropped for b in self._buffers),
            "batches": self.batches,
            "mean_batch": round(frames / self.batches, 3) if self.batches else 0.0,
            "wall_s": round(wall_s, 3),
            "fps": round(frames / active, 3) if active > 0 else 0.0,
            "latency_ms": {name: st.summary() for name, st in self.stats.items()},
            "streams": streams,
            "stopped": self.stop_reason,
            "backend": getattr(self.predictor.runner, "backend", None),
            "device": getattr(self.predictor.runner, "device", None),
        }
        if self._trackers is not None:
            # The tracker's cost per frame against the time per frame the run achieved.
            mean_ms = self.stats["track"].summary()["mean"]
            frame_ms = 1000.0 / out["fps"] if out["fps"] else 0.0
            out["tracking"] = {"match": self._trackers[0].config.match, "ms_per_frame": round(mean_ms, 3),
                               "share_of_frame_time": round(mean_ms / frame_ms, 4) if frame_ms else None,
                               "tracks": [t.started for t in self._trackers]}
        for sink in self.sinks:
            extra = sink.summary()
            if not extra:
                continue
            if "demo_eval" in extra:
                out.update(extra)
            else:
                out.setdefault("outputs", []).append(extra)
        return out


def format_summary(s: dict[str, Any]) -> str:
    """A short human-readable table of a run summary."""
    lines = [(f"frames {s['frames']}  dropped {s['dropped']}  fps {s['fps']:.1f}  wall {s['wall_s']:.1f} s  "
              f"[{s.get('backend')}/{s.get('device')}, mean batch {s['mean_batch']:.2f}]")]
    lines.append(f"  {'latency (ms)':<20s}{'mean':>9s}{'p50':>9s}{'p99':>9s}{'count':>8s}")
    for name, st in s["latency_ms"].items():
        per = " /batch" if name in ("preprocess", "inference", "postprocess") else ""
        lines.append(f"  {name + per:<20s}{st['mean']:9.2f}{st['p50']:9.2f}{st['p99']:9.2f}{st['count']:8d}")
    if len(s["streams"]) > 1 or any(st["status"] not in ("ended", "stopped") for st in s["streams"]):
        for st in s["streams"]:
            lines.append(f"  stream {st['stream']} {st['source']}: {st['processed']} frames, {st['dropped']} "
                         f"dropped, {st['status']}")
    for o in s.get("outputs", []):
        if "video" in o:
            codec = f", {o['codec']}" if o.get("codec") else ""
            lines.append(f"  wrote {o['video']} ({o['frames']} frames{codec})")
        elif "jsonl" in o:
            lines.append(f"  wrote {o['jsonl']} ({o['lines']} lines)")
    if s.get("tracking"):
        t = s["tracking"]
        part = t["share_of_frame_time"]
        share = f" = {100 * part:.1f}% of frame time" if part is not None else ""
        lines.append(f"  tracking ({t['match']} IoU): {sum(t['tracks'])} tracks, {t['ms_per_frame']:.2f} ms per "
                     f"frame{share}")
    if s.get("demo_eval"):
        d = s["demo_eval"]
        lines.append(f"  demo mask AP {d['AP']:.1f}  AP50 {d['AP50']:.1f}  ({d['frames']} frames vs ground truth)")
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------------
# The `run` command's engine
# ---------------------------------------------------------------------------------------------
__all__ = ["STAGES", "LatencyStats", "Pipeline", "format_summary"]
