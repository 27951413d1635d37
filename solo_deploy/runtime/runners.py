"""One runner interface over every inference backend (PyTorch, ONNX Runtime, TensorRT, Triton).

A runner takes the preprocessed uint8 RGB batch (N, H, W, 3) as numpy and returns the raw deploy
outputs ``(scores (N, cells, C), kernels (N, cells, E) or None, [mask maps])`` as arrays of its
device (numpy on the host; torch/CuPy arrays stay on the GPU for post-processing); see
:class:`Runner` for the life cycle and the stages. Heavy dependencies load when a runner starts.
"""
from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from .._lazy import lazy_import
from .._paths import check_model_path
from ..core.inspect import detect_backend, inspect_model, onnx_meta
from ..core.meta import INPUT_NAME, ModelMeta, split_outputs
from ..errors import BadInputError, one_line
from .devices import cuda_provider_works, device_index, parse_device

ort = lazy_import("onnxruntime")
torch = lazy_import("torch")
_deploy = lazy_import("solo_deploy.model.deploy")
_modelfile = lazy_import("solo_deploy.model.modelfile")
_tensorrt = lazy_import("solo_deploy.runtime.tensorrt")
_triton = lazy_import("solo_deploy.runtime.triton_client")

log = logging.getLogger("solo_deploy.runtime")
BACKENDS = ("auto", "torch", "onnxruntime", "tensorrt", "triton")
STAGES = ("to_device", "infer", "to_host")


class StageTimes:
    """Host-clock seconds of a runner's stages: the last call and running sums.

    Work a stage only enqueues on a GPU is counted in the stage that waits for it (``to_host``,
    or post-processing when outputs stay on the device); ``solo-deploy bench`` times GPU stages
    with CUDA events instead.
    """

    def __init__(self) -> None:
        self.calls = 0
        self.last = dict.fromkeys(STAGES, 0.0)
        self.total = dict.fromkeys(STAGES, 0.0)

    def record(self, **seconds: float) -> None:
        self.calls += 1
        for stage in STAGES:
            value = seconds.get(stage, 0.0)
            self.last[stage] = value
            self.total[stage] += value

    def as_dict(self) -> dict[str, Any]:
        """``{"calls": n, "last_ms": {stage: ms}, "mean_ms": {stage: ms}}``."""
        n = max(self.calls, 1)
        return {"calls": self.calls, "last_ms": {k: round(v * 1e3, 3) for k, v in self.last.items()},
                "mean_ms": {k: round(v * 1e3 / n, 3) for k, v in self.total.items()}}


def _check_batch(images: Any) -> None:
    if not isinstance(images, np.ndarray) or images.dtype != np.uint8 or images.ndim != 4 or images.shape[-1] != 3:
        raise BadInputError(f"runner input must be uint8 (N, H, W, 3), got "
                            f"{getattr(images, 'dtype', type(images).__name__)} {getattr(images, 'shape', '')}")


class Runner:
    """One inference backend behind one interface.

    Building a runner reads and checks the model's metadata; :meth:`start` loads the model into the
    backend (a session, a network on a device, an engine) and :meth:`stop` releases it (``with
    runner:`` does both). A call runs three stages, each a method of its own and timed in
    :attr:`timings`: :meth:`to_device` (uint8 (N, H, W, 3) numpy batch -> the backend's input),
    :meth:`infer`, :meth:`to_host` (-> the outputs, in :attr:`output_names` order, where
    post-processing runs: numpy on the host; torch CUDA tensors stay on the GPU).
    ``runner(images)`` returns ``(scores (N, cells, C), kernels (N, cells, E), [mask_feat, ...])``
    (decoupled SOLO: ``(scores, None, [mask_x_0.., mask_y_0..])``, see ``core.meta.split_outputs``);
    :meth:`run` returns the outputs by name. A runner that is called before :meth:`start` starts itself.
    """

    backend = ""
    input_name = INPUT_NAME

    def __init__(self, meta: ModelMeta, device: str) -> None:
        self.meta = meta
        self.device = device
        self.output_names: list[str] = meta.output_names
        self.timings = StageTimes()
        self._started = False

    # -- life cycle --------------------------------------------------------------------------------
    @property
    def started(self) -> bool:
        return self._started

    def start(self) -> Runner:
        """Load the model into the backend (once); returns the runner."""
        if not self._started:
            self._start()
            self._started = True
        return self

    def stop(self) -> None:
        """Release what :meth:`start` loaded; :meth:`start` loads it again."""
        if self._started:
            self._started = False
            self._stop()

    def __enter__(self) -> Runner:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _start(self) -> None:
        raise NotImplementedError

    def _stop(self) -> None:
        pass

    # -- stages ------------------------------------------------------------------------------------
    def check_input(self, images: Any) -> None:
        """Refuse anything but a uint8 (N, H, W, 3) numpy batch (one ``BadInputError`` line)."""
        _check_batch(images)

    def to_device(self, batch: np.ndarray) -> Any:
        """The uint8 batch where the backend takes it (a runner not started yet starts first)."""
        return self.start()._to_device(batch)

    def infer(self, x: Any) -> Any:
        """The network on what :meth:`to_device` returned."""
        return self.start()._infer(x)

    def to_host(self, out: Any) -> list[Any]:
        """The outputs, in :attr:`output_names` order, where post-processing runs."""
        return self.start()._to_host(out)

    def _to_device(self, batch: np.ndarray) -> Any:
        raise NotImplementedError

    def _infer(self, x: Any) -> Any:
        raise NotImplementedError

    def _to_host(self, out: Any) -> list[Any]:
        raise NotImplementedError

    def outputs(self, images: np.ndarray) -> list[Any]:
        """The three stages on ``images``, timed; the outputs in :attr:`output_names` order."""
        self.check_input(images)
        self.start()
        t0 = time.perf_counter()
        x = self._to_device(images)
        t1 = time.perf_counter()
        out = self._infer(x)
        t2 = time.perf_counter()
        arrays = self._to_host(out)
        self.timings.record(to_device=t1 - t0, infer=t2 - t1, to_host=time.perf_counter() - t2)
        return arrays

    def run(self, images: np.ndarray) -> dict[str, Any]:
        """The outputs of ``images`` by name (``scores``, ``kernels``, ``mask_feat``...)."""
        arrays = self.outputs(images)  # starts the runner, which may learn the names from the backend
        return dict(zip(self.output_names, arrays))

    def __call__(self, images: np.ndarray) -> tuple[Any, Any, list[Any]]:
        return split_outputs(self.meta, self.outputs(images))


class TorchRunner(Runner):
    """PyTorch eager on CPU or CUDA, from a checkpoint or an inference model file."""

    backend = "torch"

    def __init__(self, path: str | Path, device: str = "cpu", threads: int | None = None) -> None:
        self.path = Path(path)
        # A .safetensors header is read alone; a .ckpt is one pickle, read once and kept for start().
        self._loaded = _modelfile.read_model(self.path) if self.path.suffix.lower() == ".ckpt" else None
        meta = self._loaded[1] if self._loaded else inspect_model(self.path).meta
        super().__init__(meta, parse_device(device))
        self.threads = threads
        self.model: Any = None

    def _start(self) -> None:
        if self.device.startswith("cuda"):
            count = torch.cuda.device_count() if torch.cuda.is_available() else 0
            if device_index(self.device) >= count:
                raise BadInputError(f"--device {self.device} asked for, but torch sees "
                                    f"{count or 'no'} CUDA device{'' if count == 1 else 's'} here")
        if self.threads:
            torch.set_num_threads(self.threads)
        net, self.meta = _modelfile.build_network(self.path, self._loaded)
        self._loaded = None  # the network holds the weights now
        self.model = _deploy.DeployWrapper(net, self.meta.preprocess).to(self.device).eval()
        self._torch = torch

    def _stop(self) -> None:
        self.model = None

    def _to_device(self, batch: np.ndarray) -> Any:
        return self._torch.from_numpy(np.ascontiguousarray(batch)).to(self.device, non_blocking=True)

    def _infer(self, x: Any) -> Any:
        with self._torch.inference_mode():
            return self.model(x)

    def _to_host(self, out: Any) -> list[Any]:
        # Post-processing takes the torch tensors where they are: no copy on a CPU, and on CUDA the
        # array-API post-processing runs on the GPU.
        return list(out)


def _ort_session(path: Path, device: str, threads: int | None = None, spin: bool = True) -> Any:
    """An ONNX Runtime session for ``path``; a file ORT cannot load is one ``BadInputError`` line."""
    opts = ort.SessionOptions()
    # Fatal only: ORT also logs a load failure natively (multi-line, coloured) on stderr; the
    # same message reaches the user once, as the BadInputError line below.
    opts.log_severity_level = 4
    if threads:
        opts.intra_op_num_threads = threads
        opts.inter_op_num_threads = 1
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    if not spin:
        # In the pipeline, post-processing and sinks share the cores with inference: spinning
        # worker threads burn the time they need (2 cores: pipeline/bare 0.43 -> 0.60).
        opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
    try:
        return ort.InferenceSession(str(path), sess_options=opts, providers=_ort_providers(device))
    except BadInputError:
        raise
    except Exception as exc:  # noqa: BLE001 - ORT raises its own exception types
        raise BadInputError(f"ONNX Runtime cannot load {path}: {one_line(exc)}") from None


def _ort_providers(device: str) -> list[Any]:
    if device.startswith("cuda"):
        if "CUDAExecutionProvider" in ort.get_available_providers() and cuda_provider_works():
            return [("CUDAExecutionProvider", {"device_id": device_index(device)}), "CPUExecutionProvider"]
        raise BadInputError(f"--device {device} asked for, but ONNX Runtime's CUDA provider does not work here")
    return ["CPUExecutionProvider"]


def _joined(parts: list[list[np.ndarray]], n: int) -> list[np.ndarray]:
    """Per-chunk outputs joined along the batch and cut to the ``n`` images asked for."""
    if len(parts) == 1:
        return [a[:n] for a in parts[0]]
    return [np.concatenate([p[j] for p in parts])[:n] for j in range(len(parts[0]))]


class OnnxRunner(Runner):
    """ONNX Runtime: CPU provider, or CUDA when it really works (checked, without noisy errors).

    The stages bind inputs and outputs (IOBinding), so that transfers and the graph run are timed
    apart; a plain call runs ``session.run`` (the same work in one call, ORT's fastest path on a
    CPU) and counts it as ``infer``.
    """

    backend = "onnxruntime"

    def __init__(self, path: str | Path, device: str = "cpu", threads: int | None = None, spin: bool = True) -> None:
        self.path = Path(path)
        info = inspect_model(self.path)
        # The graph must be what its metadata describes: a copied metadata block on another graph
        # would otherwise reach post-processing with the wrong arrays.
        want = info.meta.output_names
        if list(info.output_names) != want or len(info.input_names) != 1:
            raise BadInputError(f"{self.path}: graph inputs {list(info.input_names)} and outputs "
                                f"{list(info.output_names)} do not match its solo-deploy metadata (one input, "
                                f"outputs {want}): not a solo-deploy export of this model")
        super().__init__(info.meta, parse_device(device))
        self.input_name = info.input_names[0] if info.input_names else INPUT_NAME
        self.threads, self.spin = threads, spin
        self.session: Any = None
        self._fixed_batch: int | None = None

    def _start(self) -> None:
        self.session = _ort_session(self.path, self.device, self.threads, self.spin)
        self._ort = ort
        self.input_name = self.session.get_inputs()[0].name
        self.output_names = [o.name for o in self.session.get_outputs()]
        fixed = self.session.get_inputs()[0].shape[0]
        self._fixed_batch = fixed if isinstance(fixed, int) and fixed > 0 else None
        self._ort_device = "cuda" if self.device.startswith("cuda") else "cpu"
        self._device_id = device_index(self.device)

    def _stop(self) -> None:
        self.session = None

    @property
    def fixed_batch(self) -> int | None:
        """The graph's static batch (a larger batch runs in chunks of it), or None when dynamic."""
        return self._fixed_batch

    def _chunks(self, batch: np.ndarray) -> tuple[list[np.ndarray], int]:
        """A static-batch graph takes exactly its batch: chunks of it, the last one padded by
        repeating its last image (its outputs are dropped again); and the true count."""
        n, step = batch.shape[0], self._fixed_batch or batch.shape[0]
        chunks = [np.ascontiguousarray(batch[i:i + step]) for i in range(0, n, step)]
        if chunks[-1].shape[0] < step:
            pad = np.repeat(chunks[-1][-1:], step - chunks[-1].shape[0], axis=0)
            chunks[-1] = np.ascontiguousarray(np.concatenate([chunks[-1], pad]))
        return chunks, n

    def _to_device(self, batch: np.ndarray) -> Any:
        arrays, n = self._chunks(batch)
        values = [self._ort.OrtValue.ortvalue_from_numpy(a, self._ort_device, self._device_id) for a in arrays]
        return arrays, values, n  # the numpy arrays stay referenced: a CPU OrtValue may share their memory

    def _infer(self, x: Any) -> Any:
        _, values, n = x
        bindings = []
        for v in values:
            binding = self.session.io_binding()
            binding.bind_ortvalue_input(self.input_name, v)
            for name in self.output_names:
                binding.bind_output(name, self._ort_device, self._device_id)
            self.session.run_with_iobinding(binding)
            bindings.append(binding)
        return bindings, n

    def _to_host(self, out: Any) -> list[Any]:
        # copy_outputs_to_cpu: a device-to-host copy for CUDA outputs, numpy arrays on the CPU.
        bindings, n = out
        return _joined([b.copy_outputs_to_cpu() for b in bindings], n)

    def outputs(self, images: np.ndarray) -> list[Any]:
        self.check_input(images)
        self.start()
        t0 = time.perf_counter()
        if self._fixed_batch and images.shape[0] != self._fixed_batch:
            chunks, n = self._chunks(images)
            outs = _joined([self.session.run(self.output_names, {self.input_name: c}) for c in chunks], n)
        else:
            outs = self.session.run(self.output_names, {self.input_name: images})
        self.timings.record(infer=time.perf_counter() - t0)
        return list(outs)

    def staged_outputs(self, images: np.ndarray) -> list[Any]:
        """The outputs through the three timed stages (IOBinding), as ``solo-deploy bench`` runs them."""
        return Runner.outputs(self, images)


def make_runner(path: str | Path, backend: str = "auto", device: str = "cpu", threads: int | None = None,
                **kwargs: Any) -> Runner:
    """Build the runner for ``path`` as it is: ``auto`` runs each file with its own backend (PyTorch
    for ``.ckpt``/``.safetensors``, ONNX Runtime for ``.onnx``, TensorRT for ``.engine``). The
    runtime never exports: turning a PyTorch file into a cached ONNX is the application layer's
    decision (``solo_deploy.app.models``)."""
    if backend not in BACKENDS:
        raise BadInputError(f"unknown backend {backend!r}: choose one of {', '.join(BACKENDS)}")
    device = parse_device(device)
    if backend == "triton":
        return _triton.TritonRunner(str(path), url=kwargs.get("url", "localhost:8001"),
                                    retry_s=float(kwargs.get("retry_s", 30.0)))
    p = check_model_path(path)
    kind = detect_backend(p)
    if backend == "auto":
        backend = kind
    if backend == "torch":
        if kind != "torch":
            raise BadInputError(f"the torch backend needs a .ckpt or .safetensors model, got {p.name}")
        return TorchRunner(p, device=device, threads=threads).start()
    if backend == "onnxruntime":
        if kind != "onnxruntime":
            raise BadInputError(f"the onnxruntime backend needs an .onnx model, got {p.name} "
                                f"(export it first: solo-deploy export {p.name} -o model.onnx)")
        return OnnxRunner(p, device=device, threads=threads, spin=kwargs.get("spin", True)).start()
    if kind != "tensorrt":
        raise BadInputError(f"the tensorrt backend needs an .engine file, got {p.name}")
    return _tensorrt.TensorRTRunner(p, device=device).start()


def run_batched(runner: Runner, images: Sequence[np.ndarray]):
    """Stack letterboxed images (H, W, 3) and run them as one batch."""
    return runner(np.stack(list(images)))


__all__ = ["BACKENDS", "STAGES", "OnnxRunner", "Runner", "StageTimes", "TorchRunner", "detect_backend", "make_runner",
           "onnx_meta"]
