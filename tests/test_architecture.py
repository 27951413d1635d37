"""The allowed arrows between the parts of solo_deploy (docs/architecture.md), read from the source:
module-level imports and imports inside functions alike. And the runtime's promise to stay light:
creating a predictor from an ONNX file or the Triton client loads no torch, Lightning or onnx."""
from __future__ import annotations

import ast
import subprocess
import sys
from collections import defaultdict
from pathlib import Path

import pytest

PKG = Path(__file__).resolve().parents[1] / "solo_deploy"

# part -> parts it may never import (directly or inside a function)
FORBIDDEN = {
    "runtime": {"training", "export", "evaluation", "cli", "app", "calibration", "bench", "importing"},
    "model": {"training", "runtime", "cli", "app", "importing"},
    "data": {"model", "cli", "app", "importing"},
    "core": {"model", "data", "training", "runtime", "export", "evaluation", "calibration", "bench", "app", "cli",
             "importing"},
    # import is a stage of its own: checkpoints in, model files out; it never runs or exports models
    "importing": {"runtime", "export", "training", "calibration", "bench", "app", "cli"},
}
STAGES = {"core", "model", "data", "training", "export", "calibration", "runtime", "evaluation", "bench", "app",
          "importing"}


def _part(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "(package)"


def _imports() -> dict[tuple[str, str], list[str]]:
    """(importing part, imported part) -> ["module -> module", ...] over every solo_deploy module."""
    edges: dict[tuple[str, str], list[str]] = defaultdict(list)
    for path in PKG.rglob("*.py"):
        rel = path.relative_to(PKG.parent).with_suffix("")
        name = ".".join(rel.parts[:-1] if rel.name == "__init__" else rel.parts)
        package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            targets: list[str] = []
            if isinstance(node, ast.ImportFrom):
                if node.level:
                    base = package.split(".")[: len(package.split(".")) - node.level + 1]
                    target = ".".join(base + ([node.module] if node.module else []))
                    targets = [f"{target}.{a.name}" for a in node.names] if not node.module else [target]
                elif (node.module or "").startswith("solo_deploy"):
                    targets = [node.module]
            elif isinstance(node, ast.Import):
                targets = [a.name for a in node.names if a.name.startswith("solo_deploy")]
            elif (isinstance(node, ast.Call) and getattr(node.func, "id", None) == "lazy_import" and node.args
                  and isinstance(node.args[0], ast.Constant) and str(node.args[0].value).startswith("solo_deploy")):
                targets = [str(node.args[0].value)]  # declared laziness counts as an import
            for target in targets:
                a, b = _part(name), _part(target)
                if a != b:
                    edges[(a, b)].append(f"{name} -> {target}")
    return edges


def test_no_forbidden_arrow_between_parts():
    edges = _imports()
    bad = [f"{a} -> {b}: {where[0]}" for (a, b), where in edges.items()
           if b in FORBIDDEN.get(a, set()) or (b == "cli" and a in STAGES)]
    assert bad == []


def test_no_cycle_between_parts():
    graph: dict[str, set[str]] = defaultdict(set)
    for a, b in _imports():
        graph[a].add(b)
    cycles = []

    def visit(node: str, stack: list[str]) -> None:
        for nxt in sorted(graph[node]):
            if nxt in stack:
                cycles.append(" -> ".join(stack[stack.index(nxt):] + [nxt]))
            elif len(stack) < 12:
                visit(nxt, stack + [nxt])

    for start in sorted(graph):
        visit(start, [start])
    assert cycles == []


def test_the_checker_sees_lazy_imports(tmp_path):
    """The graph includes imports inside functions (how cycles used to hide) and declared ones."""
    edges = _imports()
    assert any("app.models -> solo_deploy.export.cache" in w for w in edges[("app", "export")])
    assert any("runtime.runners -> solo_deploy.model.deploy" in w for w in edges[("runtime", "model")])


# Imports of our own modules inside functions hide the arrows between modules; new code declares
# them at the top (plain, or lazy_import for heavy ones). The count may only go down.
MAX_FUNCTION_LEVEL_OWN_IMPORTS = 159


def test_function_level_imports_of_our_modules_only_decrease():
    count = 0
    for path in PKG.rglob("*.py"):
        for fn in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(fn, (ast.FunctionDef, ast.AsyncFunctionDef)):
                count += sum(1 for n in ast.walk(fn) if isinstance(n, ast.ImportFrom) and n.level and n is not fn)
    assert count <= MAX_FUNCTION_LEVEL_OWN_IMPORTS, f"{count} function-level imports of solo_deploy modules"


LIGHT = r"""
import sys
from pathlib import Path
import solo_deploy.runtime, solo_deploy.runtime.pipeline, solo_deploy.runtime.sinks
from solo_deploy.runtime.predictor import Predictor
from solo_deploy.runtime.runners import make_runner
pred = Predictor(make_runner(Path(sys.argv[1])))
import numpy as np
inst = pred.predict(np.zeros((48, 64, 3), np.uint8))
from solo_deploy.runtime.triton_client import TritonRunner
try:
    TritonRunner("m", url="localhost:1")
except Exception as exc:
    print("triton:", type(exc).__name__)
heavy = sorted(m for m in ("torch", "pytorch_lightning", "lightning", "onnx", "torchvision") if m in sys.modules)
print("heavy:", ",".join(heavy) or "none")
"""


def test_runtime_loads_no_torch_lightning_or_onnx(tmp_path):
    from conftest import tiny_config

    from solo_deploy.export.onnx_export import export_onnx
    from solo_deploy.model.modelfile import ModelMeta, save_model_file
    from solo_deploy.model.network import SOLONet
    from solo_deploy.preprocess import PreprocessSpec

    cfg = tiny_config()
    save_model_file(tmp_path / "m.safetensors", SOLONet(cfg).state_dict(), ModelMeta(
        model=cfg, preprocess=PreprocessSpec(input_hw=(64, 64)), class_names=("a", "b", "c", "d")))
    onnx_path = export_onnx(tmp_path / "m.safetensors", tmp_path / "m.onnx", check_parity=False).path
    proc = subprocess.run([sys.executable, "-c", LIGHT, str(onnx_path)], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert "heavy: none" in proc.stdout, proc.stdout + proc.stderr


@pytest.mark.parametrize("command", [["--help"], ["run", "--help"]])
def test_cli_help_imports_nothing_heavy(command):
    code = ("import sys; sys.argv = ['solo-deploy', *sys.argv[1:]]\n"
            "from solo_deploy.cli import main\n"
            "try:\n    main()\nexcept SystemExit:\n    pass\n"
            "print('heavy:', sorted(m for m in ('torch', 'onnx', 'onnxruntime', 'cv2', 'pytorch_lightning') "
            "if m in sys.modules))")
    proc = subprocess.run([sys.executable, "-c", code, *command], capture_output=True, text=True, timeout=120)
    assert "heavy: []" in proc.stdout, proc.stdout[-500:] + proc.stderr
