"""Deterministic random weights from key names, shapes and a seed (no torch RNG).

Used by the reference-parity fixtures: ``tools/reference/make_fixtures.py`` draws an
mmdetection state dict with :func:`seeded_state_dict`, and the CI test draws the same one from
the committed manifest (names and shapes in order, seed, offsets) without mmdetection.

The rule, applied key by key in manifest order with one ``np.random.default_rng(seed)``
(each tensor is drawn in float64 in C order, then cast to float32):

==========================  =================================================  ==============
key ends with               values                                             draws
==========================  =================================================  ==============
``num_batches_tracked``     0 (int64)                                          none
``running_mean``            N(0, 0.1)                                          one per value
``running_var``             U(0.5, 1.5)                                        one per value
``weight``, 2-D or more     N(0, sqrt(2 / fan_in)), fan_in = prod(shape[1:])   one per value
                            (He: convolutions keep the activation scale)
``weight``, 1-D             1 + N(0, 0.1) (norm scales)                        one per value
anything else               N(0, 0.1) (biases, norm shifts)                    one per value
==========================  =================================================  ==============

Then ``offsets[key]`` (a constant) is added to that key's values: a category-bias offset sets
how many grid cells score above the candidate threshold. Scales this gives for a normalised
image through ResNet-18 + FPN (64 channels) + a SOLO head: nothing vanishes or overflows; the
residual sums roughly double the second moment per block (rms ~3 at C2, ~20-40 at C5, ~40-100
on the FPN levels), the head's GroupNorms bring it back to 1, and logits, kernels and mask
features end within about +-7.
"""
from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import numpy as np
import torch

NORM_STD = 0.1  # spread of norm scales (around 1), norm shifts, biases and running means
RUNNING_VAR_RANGE = (0.5, 1.5)


def _draw(rng: np.random.Generator, name: str, shape: tuple[int, ...]) -> np.ndarray:
    leaf = name.rsplit(".", 1)[-1]
    if leaf == "running_mean":
        return rng.normal(0.0, NORM_STD, size=shape)
    if leaf == "running_var":
        return rng.uniform(*RUNNING_VAR_RANGE, size=shape)
    if leaf == "weight" and len(shape) >= 2:
        fan_in = math.prod(shape[1:])
        return rng.normal(0.0, math.sqrt(2.0 / max(fan_in, 1)), size=shape)
    if leaf == "weight" and len(shape) == 1:
        return 1.0 + rng.normal(0.0, NORM_STD, size=shape)
    return rng.normal(0.0, NORM_STD, size=shape)


def seeded_state_dict(
    manifest: Sequence[tuple[str, Sequence[int]]], seed: int, *, offsets: Mapping[str, float] | None = None
) -> dict[str, torch.Tensor]:
    """Weights for every ``(name, shape)`` of ``manifest``, in its order (see the module docstring).

    ``offsets``: constants added to whole tensors by key name (e.g. the category bias), applied
    after drawing so that they do not shift the random stream of later keys.
    """
    offsets = dict(offsets or {})
    names = [name for name, _ in manifest]
    unknown = sorted(set(offsets) - set(names))
    if unknown:
        raise KeyError(f"offsets name keys that are not in the manifest: {unknown}")
    rng = np.random.default_rng(seed)
    out: dict[str, torch.Tensor] = {}
    for name, shape in manifest:
        shape = tuple(int(d) for d in shape)
        if name.endswith("num_batches_tracked"):
            out[name] = torch.zeros(shape, dtype=torch.int64)
            continue
        values = _draw(rng, name, shape)
        if name in offsets:
            values = values + float(offsets[name])
        out[name] = torch.from_numpy(np.ascontiguousarray(values, dtype=np.float32))
    return out
