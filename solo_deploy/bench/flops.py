"""What a model costs per image: FLOPs and the bytes it must move.

FLOPs come from ``torch.utils.flop_counter.FlopCounterMode`` run over the deployed module
(:class:`~solo_deploy.model.deploy.DeployWrapper`, i.e. exactly what the exported graphs
compute) at the benchmark's input size. The counter has formulas for convolutions and matrix
products only and counts a multiply-add as 2 FLOPs; element-wise work (normalisation,
activations, GroupNorm) is not counted. That is the work a GEMM ceiling bounds, which is what
the bench compares it with.

FLOPs do not depend on weight values, so the network is built on torch's ``meta`` device: no
weights are read, no arithmetic runs, and counting a ResNet-50 model at 800 px takes
milliseconds. ONNX files and TensorRT engines are counted through the model config stored in
their metadata.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # pragma: no cover
    import torch

    from ..core.config import ModelConfig
    from ..preprocess import PreprocessSpec

__all__ = ["ModelCost", "conv2d_flops", "count_flops", "model_cost", "onnx_weight_bytes"]

FLOPS_METHOD = ("torch.utils.flop_counter.FlopCounterMode over DeployWrapper on meta tensors, batch 1; "
                "multiply-add = 2 FLOPs; convolutions and matrix products only")


def conv2d_flops(batch: int, c_in: int, c_out: int, h_out: int, w_out: int, k_h: int, k_w: int,
                 groups: int = 1) -> int:
    """Hand formula of a 2-D convolution: 2 x (output elements) x (multiply-adds per output).

    Bias additions are not counted (neither does FlopCounterMode).
    """
    return 2 * batch * c_out * h_out * w_out * (c_in // groups) * k_h * k_w


def count_flops(module: torch.nn.Module, *inputs: Any) -> tuple[int, dict[str, int]]:
    """FLOPs of ``module(*inputs)`` and their split by operator (``convolution``, ``mm`` ...)."""
    flops, by_op, _ = _count(module, *inputs)
    return flops, by_op


def _count(module: torch.nn.Module, *inputs: Any) -> tuple[int, dict[str, int], Any]:
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    counter = FlopCounterMode(display=False)
    with counter, torch.no_grad():
        out = module(*inputs)
    by_op = {str(op).removeprefix("aten."): int(n) for op, n in counter.get_flop_counts().get("Global", {}).items()}
    return int(counter.get_total_flops()), by_op, out


@dataclass(frozen=True)
class ModelCost:
    """Per-image cost of one model at one input size (sizes in bytes)."""

    input_hw: tuple[int, int]
    flops_per_image: int
    flops_by_op: dict[str, int]
    params: int
    weight_bytes_fp32: int
    input_bytes_per_image: int  # uint8 NHWC letterboxed image
    output_bytes_per_image: int  # float32 scores + kernels + mask features
    activation_bytes_per_image: int  # float32 outputs of every leaf module, each counted once
    layers: int = 0  # leaf modules run (the activation count's scope)
    method: str = FLOPS_METHOD

    @property
    def io_bytes_per_image(self) -> int:
        return self.input_bytes_per_image + self.output_bytes_per_image

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["input_hw"] = list(self.input_hw)
        d["gflops_per_image"] = round(self.flops_per_image / 1e9, 6)
        d["io_bytes_per_image"] = self.io_bytes_per_image
        # FLOPs per byte of the unavoidable traffic (fp32 weights once + I/O of one image).
        d["arithmetic_intensity"] = round(
            self.flops_per_image / max(1, self.weight_bytes_fp32 + self.io_bytes_per_image), 3
        )
        return d


def _nbytes(t: torch.Tensor) -> int:
    return int(t.numel()) * int(t.element_size())


def model_cost(cfg: ModelConfig, spec: PreprocessSpec, input_hw: tuple[int, int] | None = None) -> ModelCost:
    """FLOPs, parameters and bytes of the deployed network for ``cfg`` at ``input_hw`` (H, W)."""
    import torch
    from torch import nn

    from ..model.deploy import DeployWrapper
    from ..model.network import SOLONet

    spec = spec.with_size(tuple(input_hw) if input_hw is not None else None)
    h, w = spec.input_hw
    with torch.device("meta"):
        net = SOLONet(cfg).eval()
    module = DeployWrapper(net, spec).eval().to("meta")  # buffers too: mixed devices would not run
    params = sum(int(p.numel()) for p in net.parameters())
    weight_bytes = sum(_nbytes(t) for t in net.state_dict().values() if t.is_floating_point())

    act_bytes = 0
    layers = 0

    def hook(_m: nn.Module, _inp: Any, out: Any) -> None:
        nonlocal act_bytes, layers
        layers += 1
        for t in out if isinstance(out, (tuple, list)) else (out,):
            if isinstance(t, torch.Tensor):
                act_bytes += _nbytes(t)

    handles = [m.register_forward_hook(hook) for m in module.modules() if not list(m.children())]
    x = torch.empty((1, h, w, 3), dtype=torch.uint8, device="meta")
    try:
        flops, by_op, outs = _count(module, x)
    finally:
        for hd in handles:
            hd.remove()
    return ModelCost(input_hw=(h, w), flops_per_image=flops, flops_by_op=by_op, params=params,
                     weight_bytes_fp32=weight_bytes, input_bytes_per_image=h * w * 3,
                     output_bytes_per_image=sum(_nbytes(o) for o in outs), activation_bytes_per_image=act_bytes,
                     layers=layers)


def onnx_weight_bytes(path: str | Path) -> int:
    """Bytes of an ONNX graph's initializers (int8 weights count 1 byte each), external data included."""
    import numpy as np
    import onnx
    from onnx import helper

    model = onnx.load(str(path), load_external_data=False)
    total = 0
    for init in model.graph.initializer:
        # From dims and type, not raw_data: external tensors have empty raw_data here.
        itemsize = np.dtype(helper.tensor_dtype_to_np_dtype(init.data_type)).itemsize
        total += int(np.prod(init.dims, dtype=np.int64)) * itemsize
    return total
