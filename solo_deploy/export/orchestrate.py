"""`solo-deploy export` as one function: a model file to a checked ONNX, a TensorRT engine or a
Triton model repository. Returns what it wrote; says what it did through ``say``."""
from __future__ import annotations

import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path

from .._paths import check_model_path, check_outputs
from ..core.meta import MODEL_SUFFIXES
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
        return [("Triton model file", folder / "1" / f) for f in ("model.onnx", "model.plan")] + [
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

    def to_onnx(self, path: Path) -> Path:
        """The model exported to ``path`` (checked, simplified, parity-tested); says its summary."""
        from .onnx_export import export_onnx

        if self.suffix not in MODEL_SUFFIXES:
            raise BadInputError(f"export needs a .ckpt or .safetensors model, got {self.model.name}")
        r = self.req
        exported = export_onnx(self.model, path, imgsz=r.imgsz, batch=r.batch, dynamic=r.dynamic, opset=r.opset,
                               half=self.half, check_parity=r.parity, tolerance=r.tolerance)
        self.tell(exported.summary())
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
    if plan.precision == "int8":
        raise BadInputError("INT8 ONNX models come from calibration (Q/DQ nodes), not from export: "
                            "export FP32 first, then calibrate")
    if plan.suffix == ".onnx":
        raise BadInputError(f"{plan.model.name} is already an ONNX model: use --format engine or triton with it")
    plan.result.files.append(plan.to_onnx(plan.output))


def _export_engine(plan: _Plan) -> None:
    from ..runtime.devices import device_index
    from .tensorrt import build_engine, import_tensorrt

    req = plan.req
    device = req.device or "cuda:0"
    if not device.startswith("cuda"):
        raise BadInputError("TensorRT builds engines on a GPU: pass --device cuda (or cuda:N, or N)")
    import_tensorrt()  # fail fast, before a possibly long export
    with tempfile.TemporaryDirectory(prefix="solo-deploy-engine-") as tmp:
        if plan.suffix == ".onnx":
            onnx_path, precision = plan.model, plan.given_precision  # None: what the ONNX carries
        else:
            onnx_path, precision = plan.to_onnx(Path(tmp) / "model.onnx"), plan.precision
        built = build_engine(onnx_path, plan.output, precision=precision, max_batch=req.max_batch or 8,
                             workspace_gib=req.workspace, timing_cache=req.timing_cache,
                             calibration_cache=req.calibration_cache, device=device_index(device))
    plan.tell(built.summary())
    plan.result.files += [p for _, p in export_outputs("engine", plan.output, plan.model.stem)]


def _export_triton(plan: _Plan) -> None:
    from .triton import effective_max_batch, model_spec, write_triton_repo

    with tempfile.TemporaryDirectory(prefix="solo-deploy-triton-") as tmp:
        source = (plan.model if plan.suffix in (".onnx", ".engine", ".plan")
                  else plan.to_onnx(Path(tmp) / f"{plan.model.stem}.onnx"))
        spec = model_spec(source)
        mbs = effective_max_batch(spec, plan.req.max_batch)
        folder = write_triton_repo(source, plan.output, plan.name, max_batch_size=plan.req.max_batch, spec=spec)
    plan.result.files += [folder / "config.pbtxt", folder / "1" / spec.filename]
    plan.tell(f"wrote Triton model {plan.name!r} in {folder} ({spec.platform}, max_batch_size {mbs}"
              f"{', dynamic batching' if mbs > 0 else ''})")
    if mbs == 0:
        plan.tell("note: static batch; export with --dynamic to let Triton batch requests")


def export_model(req: ExportRequest, say: Callable[[str], None] = print) -> ExportResult:
    """Check the request against the files, then export; every problem is one ``BadInputError``.
    Returns the files written and the summary lines (also said through ``say`` as they come)."""
    plan = _check(req, say)
    {"onnx": _export_onnx, "engine": _export_engine, "triton": _export_triton}[plan.req.fmt](plan)
    return plan.result
