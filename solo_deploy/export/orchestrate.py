"""`solo-deploy export` as one function: a model file to a checked ONNX, a TensorRT engine or a
Triton model repository. Returns what it wrote; says what it did through ``say``."""
from __future__ import annotations

import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path

from .._paths import check_model_path, check_outputs
from ..core.inspect import inspect_model
from ..core.meta import MODEL_SUFFIXES, End2EndSpec
from ..errors import BadInputError

__all__ = ["FORMATS", "PRECISIONS", "ExportRequest", "ExportResult", "export_model", "export_outputs"]

FORMATS = ("onnx", "engine", "triton")
PRECISIONS = ("fp32", "fp16", "int8")


@dataclass(frozen=True)
class ExportRequest:
    """What to export, as the CLI's options say it (see ``solo-deploy export --help``)."""

    model: Path
    output: Path
    fmt: str = "onnx"
    imgsz: tuple[int, int] | None = None
    batch: int = 1
    dynamic: bool = False
    opset: int = 17
    half: bool = False
    precision: str | None = None  # None: fp32, or what a given ONNX carries
    workspace: float = 4.0  # GiB, TensorRT's workspace pool
    timing_cache: Path | None = None
    calibration_cache: Path | None = None
    max_batch: int | None = None
    name: str | None = None
    tolerance: float | None = None
    parity: bool = True
    device: str | None = None  # the GPU of an engine build (default cuda:0)
    end2end: bool = False  # append SOLOv2's post-processing: the graph outputs instances
    mask_format: str | None = None  # end-to-end masks: uint8 (default) or prob
    max_candidates: int | None = None  # end-to-end K0 (default END2END_CANDIDATES)
    version_compatible: bool = False  # engine: TensorRT's VERSION_COMPATIBLE flag (loads on later TensorRT)
    raw: bool = False  # Triton: raw network outputs instead of the end-to-end graph (SOLOv2's default)
    triton_backend: str | None = None  # Triton: onnxruntime, tensorrt or python (default: by the file)


@dataclass
class ExportResult:
    """The files written (the final outputs; temporaries are gone) and the summary lines said."""

    files: list[Path] = field(default_factory=list)
    lines: list[str] = field(default_factory=list)


def export_outputs(fmt: str, output: Path, name: str) -> list[tuple[str, Path]]:
    """What an export writes, as (what, path) pairs: the file (and an engine's JSON sidecar), or
    the Triton model folder's files."""
    if fmt == "engine":
        return [("--output", output), ("engine sidecar", output.with_name(output.name + ".json"))]
    if fmt == "triton":
        folder = output / name
        return [("Triton model file", folder / "1" / f) for f in ("model.onnx", "model.plan", "model.py")] + [
            ("Triton config", folder / "config.pbtxt")]
    return [("--output", output)]


@dataclass
class _Plan:
    """A checked request: what the export functions below need."""

    req: ExportRequest
    model: Path
    output: Path
    suffix: str
    precision: str
    given_precision: str | None
    half: bool
    name: str | None
    result: ExportResult
    say: Callable[[str], None]

    def tell(self, line: str) -> None:
        self.result.lines.append(line)
        self.say(line)

    def to_onnx(self, path: Path, temporary: bool = False) -> Path:
        """The model exported to ``path`` (checked, simplified, parity-tested); says its summary
        (``temporary``: a step of a larger export, named as such rather than by its path)."""
        from .onnx_export import export_onnx

        if self.suffix not in MODEL_SUFFIXES:
            raise BadInputError(f"export needs a .ckpt or .safetensors model, got {self.model.name}")
        r = self.req
        exported = export_onnx(self.model, path, imgsz=r.imgsz, batch=r.batch, dynamic=r.dynamic, opset=r.opset,
                               half=self.half, check_parity=r.parity, tolerance=r.tolerance)
        summary = exported.summary()
        self.tell(summary.replace(f"wrote {path}", "exported the network", 1) if temporary else summary)
        return exported.path


def _check(req: ExportRequest, say: Callable[[str], None]) -> _Plan:
    """Options against each other and against the files; every problem is one ``BadInputError``."""
    fmt = req.fmt.lower()
    if fmt not in FORMATS:
        raise BadInputError(f"unknown --format {fmt!r}: choose onnx, engine or triton")
    given_precision = req.precision.lower() if req.precision else None
    precision = given_precision or ("fp16" if req.half else "fp32")
    if precision not in PRECISIONS:
        raise BadInputError(f"unknown --precision {precision!r}: choose fp32, fp16 or int8")
    if req.half and precision != "fp16":
        raise BadInputError(f"--half and --precision {precision} contradict each other")
    if (req.max_batch is not None and req.max_batch < 1) or req.batch < 1:
        raise BadInputError("--batch and --max-batch must be at least 1")
    if req.version_compatible and fmt != "engine":
        raise BadInputError("--version-compatible applies to --format engine (TensorRT engines) only")
    if fmt != "triton" and (req.raw or req.triton_backend is not None):
        raise BadInputError("--raw and --triton-backend shape a Triton repository: add --format triton")
    if req.raw and req.end2end:
        raise BadInputError("--raw and --end2end contradict each other")
    if not req.end2end and (req.mask_format is not None or req.max_candidates is not None):
        raise BadInputError("--mask-format and --max-candidates shape an end-to-end graph: add --end2end")
    model, output = Path(req.model), Path(req.output)
    check_model_path(model)
    name = req.name
    if fmt == "triton":
        from .triton import model_name

        name = model_name(name, model)
        if model.resolve().is_relative_to((output / name).resolve()):
            raise BadInputError(f"model {model} is inside the Triton model folder {output / name}, which the export "
                                f"replaces: move it, or pick another --name or --output")
    check_outputs(export_outputs(fmt, output, name or model.stem), [("model", model)])
    return _Plan(req=replace(req, fmt=fmt), model=model, output=output, suffix=model.suffix.lower(),
                 precision=precision, given_precision=given_precision, half=req.half or precision == "fp16",
                 name=name, result=ExportResult(), say=say)


def _export_onnx(plan: _Plan) -> None:
    if plan.req.end2end:
        with tempfile.TemporaryDirectory(prefix="solo-deploy-e2e-") as tmp:
            plan.result.files.append(_end2end_onnx(plan, plan.output, Path(tmp)))
        return
    if plan.precision == "int8":
        raise BadInputError("INT8 ONNX models come from calibration (Q/DQ nodes), not from export: "
                            "export FP32 first, then calibrate")
    if plan.suffix == ".onnx":
        raise BadInputError(f"{plan.model.name} is already an ONNX model: use --format engine or triton with it, "
                            f"or --end2end to append the post-processing")
    plan.result.files.append(plan.to_onnx(plan.output))


def _end2end_onnx(plan: _Plan, output: Path, tmp: Path, temporary: bool = False) -> Path:
    """The end-to-end graph of ``plan.model`` at ``output``: a model file is exported first (FP32
    or, with --half, FP16); an .onnx must be a raw-output solo-deploy export of any precision
    (an INT8 one from ``calibrate`` included), left as it is. ``temporary``: ``output`` is a step
    of an engine build, named as such in what is said."""
    from .end2end import END2END_CANDIDATES, check_supported, export_end2end

    r = plan.req
    meta = inspect_model(plan.model).meta  # the header only: refuse before a long export
    check_supported(meta, End2EndSpec(mask_format=r.mask_format or "uint8",
                                      max_candidates=END2END_CANDIDATES if r.max_candidates is None
                                      else r.max_candidates))
    if plan.suffix == ".onnx":
        if plan.given_precision is not None or plan.half:
            raise BadInputError("--end2end on an .onnx keeps its precision: drop --precision/--half")
        raw = plan.model
    else:
        if plan.precision == "int8":
            target = "model.trt.int8.onnx --end2end --format engine" if plan.req.fmt == "engine" else \
                "model.cpu.int8.onnx --end2end"
            raise BadInputError(f"INT8 end-to-end models come from a calibrated ONNX: solo-deploy calibrate MODEL -o "
                                f"OUT, then solo-deploy export OUT/{target}")
        raw = plan.to_onnx(tmp / "raw.onnx", temporary=True)
    done = export_end2end(raw, output, mask_format=r.mask_format, max_candidates=r.max_candidates,
                          check_parity=r.parity)
    for line in done.lines:
        plan.tell(line.replace(f"wrote {output}", "built the end-to-end graph", 1) if temporary else line)
    return output


def _is_end2end_onnx(path: Path) -> bool:
    return path.suffix.lower() == ".onnx" and inspect_model(path).meta.end2end is not None


def _check_end2end_engine(plan: _Plan) -> None:
    """An end-to-end engine is built strongly typed from a graph that carries its precision, so
    that TensorRT keeps the post-processing in float32; one line for anything else."""
    import onnx

    from .tensorrt import onnx_precision

    if plan.req.calibration_cache is not None:
        raise BadInputError("--calibration-cache does not apply to an end-to-end graph (its post-processing stays "
                            "FP32): solo-deploy calibrate MODEL -o OUT, then solo-deploy export "
                            "OUT/model.trt.int8.onnx --end2end --format engine")
    if plan.suffix != ".onnx" or plan.given_precision is None:
        return
    carried = onnx_precision(onnx.load(str(plan.model), load_external_data=False))
    if plan.given_precision != carried:
        raise BadInputError(f"--precision {plan.given_precision} on an end-to-end build from an {carried.upper()} "
                            f"graph would run the post-processing in {plan.given_precision.upper()} too: build from "
                            f"a graph that carries it (solo-deploy export MODEL --half --end2end for fp16, "
                            f"calibrate's model.trt.int8.onnx for int8)")


def _export_engine(plan: _Plan) -> None:
    from ..runtime.devices import device_index
    from .tensorrt import build_engine, import_tensorrt

    req = plan.req
    device = req.device or "cuda:0"
    if not device.startswith("cuda"):
        raise BadInputError("TensorRT builds engines on a GPU: pass --device cuda (or cuda:N, or N)")
    if req.end2end or _is_end2end_onnx(plan.model):
        _check_end2end_engine(plan)
    import_tensorrt()  # fail fast, before a possibly long export
    with tempfile.TemporaryDirectory(prefix="solo-deploy-engine-") as tmp:
        if req.end2end:
            # Strongly typed from the graph's own precision (FP16 from --half, INT8 from Q/DQ).
            step = replace(plan, given_precision=None, half=plan.half and plan.suffix != ".onnx")
            onnx_path = _end2end_onnx(step, Path(tmp) / "model.e2e.onnx", Path(tmp), temporary=True)
            precision = None
        elif plan.suffix == ".onnx":
            onnx_path, precision = plan.model, plan.given_precision  # None: what the ONNX carries
        else:
            onnx_path, precision = plan.to_onnx(Path(tmp) / "model.onnx"), plan.precision
        built = build_engine(onnx_path, plan.output, precision=precision, max_batch=req.max_batch or 8,
                             workspace_gib=req.workspace, timing_cache=req.timing_cache,
                             calibration_cache=req.calibration_cache, device=device_index(device),
                             version_compatible=req.version_compatible)
    plan.tell(built.summary())
    plan.result.files += [p for _, p in export_outputs("engine", plan.output, plan.model.stem)]


def _triton_backend(plan: _Plan) -> str:
    from .triton import BACKENDS

    engine = plan.suffix in (".engine", ".plan")
    backend = (plan.req.triton_backend or ("tensorrt" if engine else "onnxruntime")).lower()
    if backend not in BACKENDS:
        raise BadInputError(f"unknown --triton-backend {backend!r}: choose {', '.join(BACKENDS)}")
    if engine and backend != "tensorrt":
        raise BadInputError(f"{plan.model.name} is a TensorRT engine: --triton-backend tensorrt")
    if backend == "tensorrt" and not engine:
        raise BadInputError("--triton-backend tensorrt serves a built engine: export --format engine first, then "
                            "--format triton with the .engine")
    return backend


def _export_triton(plan: _Plan) -> None:
    """The end-to-end graph (SOLOv2, unless --raw: the server returns instances) or the raw one,
    with a dynamic batch so that Triton batches requests, into a model repository."""
    from .triton import effective_max_batch, model_spec, write_triton_repo

    backend = _triton_backend(plan)
    req = plan.req
    is_model_file = plan.suffix in MODEL_SUFFIXES
    given_e2e = _is_end2end_onnx(plan.model)
    e2e = False
    if backend != "tensorrt" and not given_e2e:
        arch = inspect_model(plan.model).meta.model.arch
        e2e = not req.raw and arch == "solov2"
        if req.end2end and arch != "solov2":
            raise BadInputError(f"--end2end supports SOLOv2 models; this is a {arch} model")
        if not req.raw and not e2e:
            plan.tell(f"note: a {arch} model has no end-to-end graph; the repository serves raw outputs")
    if req.raw and given_e2e:
        raise BadInputError(f"{plan.model.name} is an end-to-end graph: --raw needs a raw model or ONNX")
    # A model file is exported with a dynamic batch: Triton's dynamic batcher needs one.
    step = replace(plan, req=replace(req, dynamic=True)) if is_model_file and not req.dynamic else plan
    with tempfile.TemporaryDirectory(prefix="solo-deploy-triton-") as tmp:
        if e2e:
            source = _end2end_onnx(step, Path(tmp) / f"{plan.model.stem}.e2e.onnx", Path(tmp), temporary=True)
        elif is_model_file:
            source = step.to_onnx(Path(tmp) / f"{plan.model.stem}.onnx")
        else:
            source = plan.model
        spec = model_spec(source)
        mbs = effective_max_batch(spec, req.max_batch)
        folder = write_triton_repo(source, plan.output, plan.name, max_batch_size=req.max_batch, spec=spec,
                                   backend="python" if backend == "python" else None)
    plan.result.files += [folder / "config.pbtxt", folder / "1" / spec.filename]
    if backend == "python":
        plan.result.files.append(folder / "1" / "model.py")
    kind = "end-to-end" if e2e or given_e2e else "raw outputs"
    served = "Python backend (ONNX Runtime)" if backend == "python" else spec.platform
    plan.tell(f"wrote Triton model {plan.name!r} in {folder} ({kind}, {served}, max_batch_size {mbs}"
              f"{', dynamic batching' if mbs > 0 else ''})")
    if mbs == 0:
        plan.tell("note: static batch; export with --dynamic to let Triton batch requests")


def export_model(req: ExportRequest, say: Callable[[str], None] = print) -> ExportResult:
    """Check the request against the files, then export; every problem is one ``BadInputError``.
    Returns the files written and the summary lines (also said through ``say`` as they come)."""
    plan = _check(req, say)
    {"onnx": _export_onnx, "engine": _export_engine, "triton": _export_triton}[plan.req.fmt](plan)
    return plan.result
