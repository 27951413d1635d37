"""Accuracy guard: the exclusion schedule, the search, and a sensitivity ranking that finds a
layer int8 really breaks."""
from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from solo_deploy.calibration.guard import LayerSensitivity, exclusion_schedule, rank_sensitivity, run_guard


def test_exclusion_schedule() -> None:
    assert exclusion_schedule(56, 5) == [0, 4, 8, 16, 32]  # SOLO-sized: N/16, doubling
    assert exclusion_schedule(45, 5) == [0, 3, 6, 12, 24]
    assert exclusion_schedule(3, 5) == [0, 1, 2, 3]  # capped at N, no repeats
    assert exclusion_schedule(10, 2) == [0, 1]
    assert exclusion_schedule(0, 5) == [0]


def _ranking(n: int) -> list[LayerSensitivity]:
    return [LayerSensitivity(node=f"L{i}", error=1.0, gain=1.0 - i / n) for i in range(n)]


def test_run_guard_stops_at_first_group_within_budget() -> None:
    asked: list[tuple[str, ...]] = []
    ranked: list[int] = []

    def try_exclusion(excluded: tuple[str, ...]) -> float:
        asked.append(excluded)
        # Only L0 and L2 hurt (2 AP each); everything else is harmless.
        return 40.0 - 2.0 * len({"L0", "L2"} - set(excluded))

    def rank():
        ranked.append(1)
        return _ranking(16)

    g = run_guard(try_exclusion, rank, ap_fp32=40.0, max_ap_drop=1.0, schedule=exclusion_schedule(16, 5))
    assert g.met and g.excluded == ("L0", "L1", "L2", "L3") and g.ap == 40.0 and g.drop == 0.0
    assert [len(e) for e in asked] == [0, 1, 2, 4] and ranked == [1]
    assert [t["ap_drop"] for t in g.tries] == [4.0, 2.0, 2.0, 0.0]
    d = g.to_dict()
    assert d["met"] and d["excluded"] == ["L0", "L1", "L2", "L3"] and len(d["ranking_top"]) == 16


def test_run_guard_needs_no_ranking_when_int8_is_fine() -> None:
    def rank():
        raise AssertionError("ranking is only needed when the all-INT8 model misses the limit")

    g = run_guard(lambda excluded: 39.5, rank, ap_fp32=40.0, max_ap_drop=1.0, schedule=[0, 1, 2])
    assert g.met and g.excluded == () and len(g.tries) == 1


def test_run_guard_not_met_returns_best_try_and_honours_budget() -> None:
    aps = {0: 30.0, 1: 36.0, 2: 35.0}
    g = run_guard(lambda ex: aps[len(ex)], lambda: _ranking(4), ap_fp32=40.0, max_ap_drop=1.0, schedule=[0, 1, 2])
    assert not g.met and g.excluded == ("L0",) and g.ap == 36.0 and g.stopped == "schedule exhausted"
    g = run_guard(lambda ex: 30.0, lambda: _ranking(4), ap_fp32=40.0, max_ap_drop=1.0, schedule=[0, 1, 2],
                  budget_s=0.0)
    assert not g.met and len(g.tries) == 1 and g.stopped == "time budget"


def _outlier_net(path) -> None:
    """float (1, 4, 16, 16) -> conv1 -> relu -> conv2 -> relu -> conv3. conv1's channel 0 is dead
    (bias -1000, always 0 after ReLU) and conv2 gives that channel a weight of 50 in every
    filter: per-channel int8 scales become ~50/127, so conv2's real (small) weights round to 0."""
    rng = np.random.default_rng(1)
    w1 = rng.normal(0, 0.3, (8, 4, 3, 3)).astype(np.float32)
    b1 = np.zeros(8, np.float32)
    b1[0] = -1000.0
    w2 = rng.normal(0, 0.1, (8, 8, 3, 3)).astype(np.float32)
    w2[:, 0, 1, 1] = 50.0
    w3 = rng.normal(0, 0.3, (8, 8, 3, 3)).astype(np.float32)
    inits = [numpy_helper.from_array(a, n) for a, n in ((w1, "w1"), (b1, "b1"), (w2, "w2"), (w3, "w3"))]
    nodes = [helper.make_node("Conv", ["x", "w1", "b1"], ["c1"], name="conv1", pads=[1] * 4),
             helper.make_node("Relu", ["c1"], ["r1"], name="relu1"),
             helper.make_node("Conv", ["r1", "w2"], ["c2"], name="conv2", pads=[1] * 4),
             helper.make_node("Relu", ["c2"], ["r2"], name="relu2"),
             helper.make_node("Conv", ["r2", "w3"], ["y"], name="conv3", pads=[1] * 4)]
    graph = helper.make_graph(nodes, "outlier", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4, 16, 16])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 8, 16, 16])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, str(path))


def test_rank_sensitivity_finds_the_broken_layer(tmp_path) -> None:
    from onnxruntime.quantization import save_tensors_data

    from solo_deploy.calibration.quantize import collect_ranges, quantize_target

    fp32, int8 = tmp_path / "fp32.onnx", tmp_path / "int8.onnx"
    _outlier_net(fp32)
    x = np.random.default_rng(2).normal(0, 1, (16, 4, 16, 16)).astype(np.float32)
    save_tensors_data(collect_ranges(fp32, x, "minmax", threads=1), tmp_path / "ranges.json")
    quantize_target(fp32, tmp_path / "ranges.json", int8, "cpu", "minmax", reduce_range=True)
    ranking = rank_sensitivity(fp32, int8, x[:4], ["conv1", "conv2", "conv3"], threads=1)
    assert ranking[0].node == "conv2"
    by = {s.node: s for s in ranking}
    assert by["conv2"].error > 0.5 and by["conv2"].gain > 0.5  # its output is mostly lost
    assert by["conv1"].error < 0.05  # a normal layer: a few percent
    # conv3 inherits conv2's error but adds little of its own: the gain, not the error, ranks.
    assert by["conv3"].error > 0.5 and by["conv3"].gain < by["conv2"].gain
