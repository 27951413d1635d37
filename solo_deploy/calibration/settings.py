"""Every option of :func:`~solo_deploy.calibration.quantize.calibrate`, in one frozen object.

``calibrate(model, data, out_dir, settings, **overrides)`` takes a :class:`CalibrationSettings`
(default: all defaults) and applies the keyword overrides with ``dataclasses.replace``; the CLI
builds one from its options. Invalid values raise :class:`~solo_deploy.errors.BadInputError` when
the object is made (``__post_init__`` -> :meth:`CalibrationSettings.validate`), so a settings
object that exists is a valid one.

Light on purpose, like the package: no onnx/onnxruntime/numpy import.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from ..errors import BadInputError
from . import METHODS

__all__ = ["CalibrationSettings"]


@dataclass(frozen=True)
class CalibrationSettings:
    """Options of one calibration run (``model``, ``data`` and ``out_dir`` are ``calibrate``'s own arguments)."""

    # -- calibration images (loaded by .data.load_calibration_images) ---------------------------
    # None: DEFAULT_IMAGES (128, .data): the size of the synthetic calib split; enough for stable
    # MinMax ranges. The CLI's --images default is the same 128.
    images: int | None = None
    # None: MIN_IMAGES (32, .data): below this, MinMax/percentile ranges are too noisy to trust
    # (override: force).
    min_images: int | None = None
    # Calibrate with fewer than min_images images and skip unreadable ones (--force); off: refuse.
    force: bool = False
    # Take every k-th video frame; None: spread the images over the whole video (--video-stride).
    video_stride: int | None = None
    # One of METHODS; MinMax default (METHODS[0], .__init__): entropy is known to hurt detection
    # heads, and its KL search is pure Python per tensor (minutes on a real model).
    method: str = "minmax"

    # -- accuracy guard (.guard) ----------------------------------------------------------------
    # Largest allowed mask-AP drop in points (--max-ap-drop); sensitive layers stay FP32 until it holds.
    max_ap_drop: float = 1.0
    # 'synthetic' or a COCO folder for the AP check (--eval-data).
    eval_data: str = "synthetic"
    # Split (synthetic) or sub-folder (COCO) for the AP check (--eval-split).
    eval_split: str = "val"
    # An annotation file and its image folder for the AP check instead (--ann, --images-dir).
    eval_ann: str | None = None
    eval_images_dir: str | None = None
    # Held-out images for the AP check (--eval-images); 0 disables the AP check and the guard.
    eval_images: int = 100
    # path -> AP, replaces the built-in evaluation (tests, custom metrics); None: make_evaluator
    # (mask AP of the ONNX model through ONNX Runtime on ``device`` on eval_data/eval_split).
    evaluate_fn: Callable[[Path], float] | None = None
    # AP evaluations of an INT8 model the guard may run, the all-quantized one included
    # (.guard.exclusion_schedule's default).
    max_tries: int = 5
    # Seconds the guard may spend re-quantizing and re-evaluating (.guard.run_guard's default;
    # --guard-budget).
    guard_budget_s: float = 1200.0
    # Where ONNX Runtime runs the AP check: cpu or cuda:N (--device); calibration itself runs on the CPU.
    device: str = "cpu"

    # -- the two Q/DQ models and the TensorRT cache ----------------------------------------------
    # CPU model: 7-bit weights (--reduce-range/--full-range). On x86 CPUs without VNNI the u8 x s8
    # kernels sum pairs of products in saturating int16; full 8-bit weights saturated there (fused
    # output error 3-4x that of the unfused graph), gone with 7 bits at no speed cost. See .quantize.
    reduce_range: bool = True
    # TensorRT version named in the cache header; "10.x": the installed TensorRT 10 when there is
    # one, else 10.0.0 (.trt_cache.write_cache).
    trt_version: str = "10.x"

    # -- CPU threads, timing, messages ------------------------------------------------------------
    # CPU threads for calibration, evaluation and timing (--threads); None: ONNX Runtime's default
    # for calibration and evaluation, all cores (os.cpu_count()) for the timing.
    threads: int | None = None
    # Interleaved runs per model in the FP32 vs INT8 timing (.quantize.cpu_latency's default);
    # 0 skips the timing.
    bench_runs: int = 20
    # One-line progress messages; None: INFO records of the solo_deploy.calibration logger.
    progress: Callable[[str], None] | None = None

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        """Raise BadInputError (one line, named by the CLI option) for an invalid value; -> None.

        Runs when the object is made, ``dataclasses.replace`` included; a bad ``trt_version`` fails
        here, not after the calibration.
        """
        from .trt_cache import header

        if self.method not in METHODS:
            raise BadInputError(f"unknown --method {self.method!r}: choose {', '.join(METHODS)}")
        if not (self.max_ap_drop >= 0):
            raise BadInputError(f"--max-ap-drop must be a non-negative number of AP points, got {self.max_ap_drop}")
        if self.eval_images < 0 or self.max_tries < 1 or self.bench_runs < 0:
            raise BadInputError("--eval-images and bench runs must be >= 0, max tries >= 1")
        header(self.method, self.trt_version)

    @property
    def evaluating(self) -> bool:
        """Whether the run measures AP (and so runs the accuracy guard)."""
        return self.evaluate_fn is not None or self.eval_images > 0
