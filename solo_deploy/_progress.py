"""Progress bars on stderr for the long commands (eval, predict, calibrate, the ONNX cache build).

A bar is drawn only when stderr is a terminal (tqdm's ``disable=None``): redirected to a file or a
pipe, stderr keeps the one-line promise (errors, nothing else) and a CI log gets no carriage returns.
``TQDM_DISABLE=1`` in the environment turns every bar off (tqdm reads ``TQDM_*`` variables itself).
"""
from __future__ import annotations

import contextlib
import os
import sys
import threading
import time
from collections.abc import Iterator

from tqdm import tqdm

__all__ = ["elapsed_bar", "progress_bar"]


def _disable() -> bool | None:
    """tqdm's ``disable``: True when ``TQDM_DISABLE`` is set (tqdm reads it only for arguments left
    out, and ours are given), else None: off unless stderr is a terminal."""
    return True if os.environ.get("TQDM_DISABLE", "").strip().lower() not in ("", "0", "false") else None


def progress_bar(total: int | None, desc: str, unit: str = "img", *, leave: bool = False) -> tqdm:
    """A tqdm bar on stderr that is shown only on a terminal; advance it with ``.update(n)``, end with ``.close()``.

    ``leave=False`` by default: the bar clears itself when done, so the command's own summary
    (printed next) is not pushed up by a finished bar.
    """
    return tqdm(total=total, desc=desc, unit=unit, file=sys.stderr, disable=_disable(), leave=leave, dynamic_ncols=True)


@contextlib.contextmanager
def elapsed_bar(expected_s: float, desc: str, *, tick_s: float = 0.5) -> Iterator[tqdm]:
    """A bar that fills with wall time towards ``expected_s`` for work that reports no steps of its own.

    It never reaches the end before the work does (it holds at 99 %), and jumps to full when the
    block finishes without an error. Shown only on a terminal, like :func:`progress_bar`.
    """
    total = max(1, round(expected_s))
    bar = tqdm(total=total, desc=desc, unit="s", file=sys.stderr, disable=_disable(), leave=False, dynamic_ncols=True,
               bar_format="{desc}: {percentage:3.0f}%|{bar}| {elapsed}")  # the estimate: the caller's own words
    stop = threading.Event()

    def tick() -> None:
        t0 = time.perf_counter()
        while not stop.wait(tick_s):
            bar.n = min(time.perf_counter() - t0, 0.99 * total)
            bar.refresh()

    thread = None
    if not bar.disable:
        thread = threading.Thread(target=tick, name="solo-deploy-elapsed-bar", daemon=True)
        thread.start()
    try:
        yield bar
        bar.n = total
        bar.refresh()
    finally:
        stop.set()
        if thread is not None:
            thread.join()
        bar.close()
