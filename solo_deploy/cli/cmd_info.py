"""`solo-deploy info`: versions, working backends and devices, a model file's metadata."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import typer

from .app import LogLevelOpt, app, setup_logging

# Written against documented APIs but never run on a machine of ours (CI has no GPU, TensorRT or
# Triton server); listed so nobody mistakes them for tested paths.
NEVER_EXECUTED = {
    "tensorrt": "engine build (TensorRT 10 weak typing / 11 strongly typed) and TensorRTRunner",
    "onnxruntime-cuda": "CUDAExecutionProvider sessions (probed at start-up, used only when they work)",
    "torch-cuda": "PyTorch runner and post-processing on CUDA tensors (ran on an H200 outside CI on 2026-11-25: "
                  "gpu tests, eval, bench and run --device cuda)",
    "cupy": "post-processing on CuPy arrays, same array-API code as numpy/torch (gpu tests ran on an H200 outside "
            "CI on 2026-11-25)",
    "triton": "TritonRunner against a live Triton server (the model repository writer is tested)",
}


@app.command()
def info(
    model: Optional[Path] = typer.Argument(None, help="A model file to describe (optional)."),
    presets: bool = typer.Option(False, "--presets", help="List the model presets."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON."),
    log_level: str = LogLevelOpt,
) -> None:
    """Versions, which backends and devices really work here, and a model file's metadata."""
    setup_logging(log_level)
    from ..runtime.devices import describe

    out = {"environment": describe(), "never_executed_in_our_ci": NEVER_EXECUTED}
    if presets:
        from ..core.config import PRESETS

        out["presets"] = {k: v.to_dict() for k, v in PRESETS.items()}
    if model is not None:
        out["model"] = describe_model(model)
    if as_json:
        typer.echo(json.dumps(out, indent=2))
        return
    for section, body in out.items():
        typer.echo(f"[{section}]")
        _print_tree(body, 1)


def describe_model(path: Path) -> dict:
    """A model file's metadata (an engine's whole sidecar), its graph's input and output names, and
    for a PyTorch file its parameter count."""
    from .._paths import check_model_path
    from ..core.inspect import detect_backend, inspect_model
    from ..core.meta import INPUT_NAME, file_sha256, output_names

    kind = detect_backend(check_model_path(path))
    if kind == "torch":  # the weights are read anyway, for the parameter count: one read
        from ..model.modelfile import read_model

        state, meta = read_model(path)
        d = meta.to_dict()
        d["parameters"] = int(sum(v.numel() for v in state.values()))
        names = ((INPUT_NAME,), tuple(output_names(meta.model)))
    else:
        info = inspect_model(path)
        d = dict(info.details.get("sidecar") or info.meta.to_dict())
        names = (info.input_names, info.output_names)
    d["io"] = {"inputs": list(names[0]), "outputs": list(names[1])}
    d["file"] = {"path": str(path), "bytes": path.stat().st_size, "sha256": file_sha256(path, 16), "kind": kind}
    return d


def _print_tree(body, depth: int) -> None:
    pad = "  " * depth
    if isinstance(body, dict):
        for k, v in body.items():
            if isinstance(v, (dict, list)) and v and not (isinstance(v, list) and all(
                    isinstance(x, (int, float, str)) for x in v)):
                typer.echo(f"{pad}{k}:")
                _print_tree(v, depth + 1)
            else:
                typer.echo(f"{pad}{k}: {v}")
    elif isinstance(body, list):
        for v in body:
            typer.echo(f"{pad}- {v}")
