"""`solo-deploy bench`: JSON completeness on the tiny model (CPU backends), skipped GPU rows,
FLOP counting against the hand formula, ceilings. No test asserts a timing value."""
from __future__ import annotations

import importlib.util
import json
import math
from pathlib import Path

import pytest

from solo_deploy.bench.common import STAGES
from solo_deploy.bench.report import ROW_FIELDS

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def tiny_file(tmp_path_factory):
    """The conftest tiny model (module-scoped: one ONNX export serves every test here)."""
    from conftest import tiny_config

    from solo_deploy.model.modelfile import ModelMeta, save_model_file
    from solo_deploy.model.network import SOLONet
    from solo_deploy.preprocess import PreprocessSpec

    cfg = tiny_config()
    path = tmp_path_factory.mktemp("bench") / "tiny.safetensors"
    save_model_file(path, SOLONet(cfg).state_dict(),
                    ModelMeta(model=cfg, preprocess=PreprocessSpec(input_hw=(64, 64)),
                              class_names=("circle", "rectangle", "triangle", "ring"), preset="solov2-light-r18"))
    return path


@pytest.fixture(scope="module")
def bench_run(tiny_file):
    """One CLI run: torch + onnxruntime on CPU, CUDA rows requested too; few frames, tiny ceilings."""
    from typer.testing import CliRunner

    import solo_deploy.cli.cmd_bench  # registers `bench`
    import solo_deploy.cli.commands  # noqa: F401 - the other commands: `bench` is a sub-command, as in the CLI
    from solo_deploy.cli.app import app

    out = tiny_file.parent
    args = ["bench", str(tiny_file), "--frames", "2", "--warmup", "1", "--threads", "1", "--gemm-n", "64",
            "--bandwidth-mb", "2", "--json", str(out / "bench.json"), "--plot", str(out / "bench.png")]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, (result.output, result.exception)
    return json.loads((out / "bench.json").read_text()), out, result.output


def _positive(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) and v > 0


def test_json_has_every_field_for_cpu_backends(bench_run):
    doc, _, output = bench_run
    assert doc["schema_version"] == 1 and doc["format"] == "solo-deploy-bench"
    assert doc["command"].startswith("solo-deploy bench ")
    for key in ("cpu", "logical_cores", "threads", "gpus", "cpu_flags"):
        assert key in doc["machine"]
    assert doc["machine"]["threads"] == 1
    assert doc["versions"]["torch"] and doc["versions"]["onnxruntime"]
    cpu = doc["ceilings"]["cpu"]
    assert _positive(cpu["gemm_gflops"]["fp32"]) and _positive(cpu["memory_gbps"])

    (model,) = doc["models"]
    assert model["format"] == "model" and model["input_hw"] == [64, 64]
    assert _positive(model["flops_per_image"])
    assert _positive(model["cost"]["weight_bytes_fp32"]) and _positive(model["cost"]["activation_bytes_per_image"])

    ok = {(r["backend"], r["device"]): r for r in model["rows"] if r["status"] == "ok"}
    assert set(ok) == {("torch", "cpu"), ("onnxruntime", "cpu")}
    for row in model["rows"]:
        assert set(ROW_FIELDS) <= set(row), set(ROW_FIELDS) - set(row)
    for (backend, _), row in ok.items():
        assert row["precision"] == "fp32" and row["batch"] == 1 and row["iterations"] == 2
        assert row["reason"] is None and row["timer"] == "host"
        assert set(row["stages"]) == set(STAGES)
        for stats in [*row["stages"].values(), row["total"]]:
            assert set(stats) == {"mean_ms", "p50_ms", "p99_ms"}
            assert all(isinstance(v, float) and v >= 0 for v in stats.values())
        for key in ("throughput_fps", "latency_ms_per_frame", "flops_per_batch", "achieved_gflops", "ceiling_gflops",
                    "fraction_of_ceiling", "bytes_per_batch", "roofline_ms", "speedup_vs_torch",
                    "speedup_vs_torch_end_to_end"):
            assert _positive(row[key]), (backend, key, row[key])
        assert row["ceiling"] == "cpu.gemm_fp32"
        assert isinstance(row["peak_mem_mb"], float) and isinstance(row["load_mem_mb"], float)
        assert row["mem_method"] == "rss_hwm_growth"
        assert 0 <= row["postprocess_share"] <= 1
        assert row["torch_baseline"] == ok[("torch", "cpu")]["id"]
    assert ok[("torch", "cpu")]["speedup_vs_torch"] == 1.0
    assert ok[("onnxruntime", "cpu")]["run_file"].endswith(".onnx")  # through the export cache
    assert "infer p50" in output


def test_gpu_rows_are_skipped_with_a_reason(bench_run):
    import torch

    if torch.cuda.is_available():
        pytest.skip("a CUDA device is present: GPU rows are measured, not skipped")
    doc, _, output = bench_run
    gpu = [r for r in doc["models"][0]["rows"] if r["device"] == "cuda"]
    assert {(r["backend"], r["precision"]) for r in gpu} == {("torch", "fp32"), ("onnxruntime", "fp32"),
                                                              ("tensorrt", "fp16"), ("tensorrt", "int8")}
    for r in gpu:
        assert r["status"] == "skipped"
        assert isinstance(r["reason"], str) and "no CUDA device" in r["reason"]
        assert r["stages"] is None and r["throughput_fps"] is None
    assert doc["summary"]["skipped"] == len(gpu) and doc["summary"]["failed"] == 0
    assert "skipped:" in output


def test_plot_and_readme_table(bench_run, tmp_path):
    doc, out, _ = bench_run
    assert (out / "bench.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    spec = importlib.util.spec_from_file_location("readme_perf", REPO / "benchmarks" / "readme_perf.py")
    readme_perf = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(readme_perf)
    (tmp_path / "perf.json").write_text(json.dumps(doc))
    assert readme_perf.main(["--from-json", str(tmp_path / "perf.json"), "--out", str(tmp_path / "perf")]) == 0
    md = (tmp_path / "perf" / "perf.md").read_text()
    assert doc["machine"]["cpu"] in md and doc["command"] in md
    assert "ONNX Runtime FP32 vs PyTorch eager (cpu)" in md and "of the frame time" in md
    assert "no CUDA device" in md
    assert (tmp_path / "perf" / "perf.png").stat().st_size > 0


def test_bad_inputs_exit_2(tmp_path, tiny_file):
    from typer.testing import CliRunner

    import solo_deploy.cli.cmd_bench
    import solo_deploy.cli.commands  # noqa: F401
    from solo_deploy.cli.app import app
    from solo_deploy.errors import BadInputError

    for args in (["bench", str(tmp_path / "missing.safetensors")],
                 ["bench", str(tiny_file), "--backends", "torch,triton"],
                 ["bench", str(tiny_file), "--frames", "0"]):
        result = CliRunner().invoke(app, args)
        assert isinstance(result.exception, BadInputError), (args, result.output, result.exception)
        assert result.exception.exit_code == 2


def test_ratios_pair_rows_by_source_model():
    from solo_deploy.bench.report import _add_ratios

    def row(model, backend, precision, p50):
        stats = {"mean_ms": p50, "p50_ms": p50, "p99_ms": p50}
        return {"id": f"{model}|{backend}|{precision}", "model": model, "backend": backend, "device": "cpu",
                "precision": precision, "batch": 1, "status": "ok", "stages": {"inference": stats}, "total": stats,
                "speedup_vs_torch": None, "speedup_vs_fp32": None}

    rows = [row("m.safetensors", "torch", "fp32", 100.0), row("m.safetensors", "onnxruntime", "fp32", 50.0),
            row("m.int8.onnx", "onnxruntime", "int8", 25.0), row("other.onnx", "onnxruntime", "fp32", 10.0)]
    _add_ratios(rows, {"m.safetensors": "abc", "m.int8.onnx": "abc", "other.onnx": None})
    assert rows[0]["speedup_vs_torch"] == 1.0 and rows[1]["speedup_vs_torch"] == 2.0
    assert rows[2]["speedup_vs_torch"] == 4.0 and rows[2]["speedup_vs_fp32"] == 2.0
    assert rows[2]["fp32_baseline"] == rows[1]["id"]
    assert rows[3]["speedup_vs_torch"] is None  # no known source model: no baseline


def test_flops_of_a_toy_conv_match_the_hand_formula():
    import torch
    from torch import nn

    from solo_deploy.bench.flops import conv2d_flops, count_flops

    conv = nn.Conv2d(3, 8, kernel_size=3, stride=2, padding=1)
    flops, by_op = count_flops(conv, torch.zeros(2, 3, 10, 12))
    assert flops == conv2d_flops(2, 3, 8, 5, 6, 3, 3) == 2 * 2 * 8 * 5 * 6 * 3 * 3 * 3
    assert by_op == {"convolution": flops}

    grouped = nn.Sequential(
        nn.Conv2d(8, 16, 3, padding=1, groups=4), nn.ReLU(), nn.Flatten(), nn.Linear(16 * 7 * 7, 10)
    )
    flops, _ = count_flops(grouped, torch.zeros(1, 8, 7, 7))
    assert flops == conv2d_flops(1, 8, 16, 7, 7, 3, 3, groups=4) + 2 * 16 * 7 * 7 * 10


def test_model_cost_on_meta_matches_a_real_forward():
    import torch
    from conftest import tiny_config

    from solo_deploy.bench.flops import count_flops, model_cost
    from solo_deploy.model.deploy import DeployWrapper
    from solo_deploy.model.network import SOLONet
    from solo_deploy.preprocess import PreprocessSpec

    cfg, spec = tiny_config(), PreprocessSpec(input_hw=(64, 64))
    cost = model_cost(cfg, spec, (64, 96))
    net = SOLONet(cfg).eval()
    real, _ = count_flops(DeployWrapper(net, spec).eval(), torch.zeros((1, 64, 96, 3), dtype=torch.uint8))
    assert cost.flops_per_image == real > 0
    assert cost.input_bytes_per_image == 64 * 96 * 3 and cost.output_bytes_per_image > 0
    assert cost.params == sum(p.numel() for p in net.parameters())


def test_ceilings_are_positive_for_tiny_sizes():
    from solo_deploy.bench.ceiling import gemm_ceiling, measure_ceilings, memory_bandwidth

    assert _positive(gemm_ceiling("fp32", n=16, threads=1, repeats=1))
    assert _positive(gemm_ceiling("int8", n=16, threads=1, repeats=1))
    assert _positive(memory_bandwidth(1, threads=2, repeats=1))
    c = measure_ceilings("cpu", ("fp32", "int8"), threads=1, gemm_n=16, bandwidth_mb=1, repeats=1)
    assert _positive(c["gemm_gflops"]["fp32"]) and _positive(c["gemm_gflops"]["int8"]) and not c["errors"]
    with pytest.raises(ValueError):
        gemm_ceiling("fp64", n=4)


def test_best_ceilings_keeps_the_higher_measurement_and_the_reasons_for_gaps() -> None:
    from solo_deploy.bench.probes import _best_ceilings

    full = {"device": "cpu", "threads": 2, "gemm_n": 1024, "method": {"gemm": "x"}}
    slow = {"cpu": {**full, "gemm_gflops": {"fp32": 84.0, "int8": None}, "memory_gbps": 20.0,
                    "errors": {"int8": "no MatMulInteger kernel"}}}
    fast = {"cpu": {**full, "gemm_gflops": {"fp32": 180.0, "int8": 250.0}, "memory_gbps": 25.0, "errors": {}}}
    failed = {"cpu": {"device": "cpu", "gemm_gflops": {}, "memory_gbps": None, "errors": {"all": "boom"}}}
    best = _best_ceilings(slow, fast)["cpu"]
    assert best["gemm_gflops"] == {"fp32": 180.0, "int8": 250.0} and best["memory_gbps"] == 25.0
    assert best["errors"] == {} and len(best["measurements"]) == 2
    one = _best_ceilings(failed, slow)["cpu"]  # the first failed entirely: keep the second's keys
    assert one["threads"] == 2 and one["gemm_gflops"]["fp32"] == 84.0
    assert one["errors"] == {"int8": "no MatMulInteger kernel"}
    assert _best_ceilings(failed, failed)["cpu"]["errors"] == {"all": "boom"}
