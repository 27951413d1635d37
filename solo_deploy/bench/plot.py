"""A bar chart of a bench result: per-frame latency of every measured row, stacked by stage."""
from __future__ import annotations

import os
from typing import Any

from .._atomic import atomic_path

__all__ = ["plot_bench"]

# Colour-blind friendly (Okabe-Ito), one per stage in pipeline order.
_COLOURS = {"preprocess": "#E69F00", "host_to_device": "#56B4E9", "inference": "#0072B2",
            "device_to_host": "#009E73", "postprocess": "#D55E00"}


def _label(row: dict[str, Any], several_models: bool) -> str:
    name = f"{row['backend']} {row['device']} {row['precision']} b{row['batch']}"
    return f"{row['model']}\n{name}" if several_models else name


def plot_bench(result: dict[str, Any], path: str | os.PathLike[str], title: str | None = None) -> None:
    """Write a PNG (atomically): one horizontal bar per measured row, ms per frame by stage."""
    import matplotlib

    matplotlib.use("Agg")  # no display needed; must precede pyplot
    import matplotlib.pyplot as plt

    from .common import STAGES

    rows = [r for m in result["models"] for r in m["rows"] if r["status"] == "ok"]
    skipped = [r for m in result["models"] for r in m["rows"] if r["status"] != "ok"]
    several = len(result["models"]) > 1
    fig, ax = plt.subplots(figsize=(9, 1.2 + 0.55 * max(1, len(rows))), dpi=120)
    labels = [_label(r, several) for r in rows]
    left = [0.0] * len(rows)
    for stage in STAGES:
        # Means, so that the stacked segments add up to the mean per-frame total.
        widths = [r["stages"][stage]["mean_ms"] / r["batch"] for r in rows]
        ax.barh(range(len(rows)), widths, left=left, color=_COLOURS[stage], label=stage.replace("_", " "))
        left = [a + b for a, b in zip(left, widths)]
    for i, r in enumerate(rows):
        extra = f"  {left[i]:.1f} ms"
        if r.get("speedup_vs_torch") is not None and r["backend"] != "torch":
            extra += f"  ({r['speedup_vs_torch']:.2f}x torch)"
        ax.text(left[i], i, extra, va="center", fontsize=8)
    ax.set_yticks(range(len(rows)), labels, fontsize=8)
    ax.invert_yaxis()
    ax.set_xlabel("ms per frame (mean; batch latency / batch size)")
    if left:
        ax.set_xlim(0, max(left) * 1.35)
    mach = result.get("machine", {})
    ax.set_title(title or f"solo-deploy bench: {mach.get('cpu', '?')}, {mach.get('threads', '?')} threads", fontsize=9)
    if rows:
        ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False)
    else:
        ax.set_xticks([])
        ax.text(0.5, 0.5, "no measured rows", transform=ax.transAxes, ha="center")
    if skipped:
        n = len({(r["model"], r["backend"], r["device"], r["precision"]) for r in skipped})
        fig.text(0.01, 0.005, f"{n} backend/device combination(s) not measured (see the JSON for reasons)", fontsize=7)
    fig.tight_layout()
    with atomic_path(path, suffix=".png") as tmp:
        fig.savefig(tmp, format="png")
    plt.close(fig)
