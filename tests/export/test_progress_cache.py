"""The one-time ONNX cache build says so in one stderr line with its expected duration; bars only on a terminal."""
from __future__ import annotations

import fcntl
import io
import logging
import os
import pty
import select
import struct
import sys
import termios

import pytest
from export_helpers import save_tiny

from solo_deploy import _progress
from solo_deploy.export import cache as cache_mod


class _Terminal(io.StringIO):
    """stderr as a terminal reports itself (the bars are off: TQDM_DISABLE)."""

    def isatty(self) -> bool:
        return True


@pytest.fixture
def pytest_log_handlers_only(monkeypatch):
    """Only pytest's capturing handlers on the root logger: a stream handler an earlier test of this
    worker configured (its stream closed since) would report a logging error on stderr."""
    monkeypatch.setattr(logging.root, "handlers", [h for h in logging.root.handlers
                                                   if type(h).__name__ == "LogCaptureHandler"])


def test_build_announces_itself_once_then_estimates_from_this_machine(tmp_path, cache_dir, monkeypatch, caplog,
                                                                       pytest_log_handlers_only):
    monkeypatch.setenv("TQDM_DISABLE", "1")
    # On a pipe the line goes to the log only: stderr keeps its one-line promise for errors.
    piped = save_tiny(tmp_path / "piped.safetensors", "solov2-light-r18", lively=False, seed=2)
    monkeypatch.setattr(sys, "stderr", io.StringIO())
    with caplog.at_level(logging.INFO, logger="solo_deploy.export"):
        cache_mod.cached_onnx(piped)
    assert sys.stderr.getvalue() == ""
    assert any(r.getMessage().startswith("building the ONNX cache for piped.safetensors") for r in caplog.records)
    (cache_dir / cache_mod.SPEED_FILE).unlink()  # the estimate below is the line's own, not this machine's

    first = save_tiny(tmp_path / "first.safetensors", "solov2-light-r18", lively=False)
    from safetensors.torch import load_file

    params = sum(t.numel() for t in load_file(first).values())
    monkeypatch.setattr(sys, "stderr", _Terminal())
    cache_mod.cached_onnx(first)
    err = sys.stderr.getvalue()
    expected = cache_mod._duration(cache_mod.BASE_S + cache_mod.S_PER_MPARAM * params / 1e6)
    assert err.splitlines() == [f"building the ONNX cache for first.safetensors (once per model; about {expected} for "
                                f"its {params / 1e6:.0f} M parameters) ..."]
    factor = cache_mod._machine_factor()
    assert factor is not None and factor > 0  # measured seconds / the line's seconds, kept for the next build

    monkeypatch.setattr(sys, "stderr", _Terminal())
    cache_mod.cached_onnx(first)  # reused: nothing to say
    assert sys.stderr.getvalue() == ""

    second = save_tiny(tmp_path / "second.safetensors", "solov2-light-r18", lively=False, seed=1)
    cache_mod.cached_onnx(second)
    (line,) = sys.stderr.getvalue().splitlines()
    assert line.startswith("building the ONNX cache for second.safetensors (once per model; about ")
    assert line.endswith(" on this machine) ...")


def test_durations_read_like_a_person_says_them():
    assert [cache_mod._duration(s) for s in (1, 7, 13.9, 44, 58, 100, 170)] == [
        "5 s", "5 s", "15 s", "45 s", "1 minute", "2 minutes", "3 minutes"]
    # The line stays within 25 % of the measured builds it was drawn through (see cache.py).
    for mparams, measured in ((13.0, 6.6), (31.3, 7.4), (65.6, 13.9)):
        assert abs(cache_mod.BASE_S + cache_mod.S_PER_MPARAM * mparams - measured) < 0.25 * measured


def test_bars_only_on_a_terminal(monkeypatch):
    monkeypatch.setattr(sys, "stderr", io.StringIO())
    bar = _progress.progress_bar(3, desc="eval x")
    bar.update(3)
    bar.close()
    with _progress.elapsed_bar(1.0, desc="ONNX cache", tick_s=0.01):
        pass
    assert sys.stderr.getvalue() == ""  # a pipe or file keeps stderr for errors

    main, side = pty.openpty()
    fcntl.ioctl(side, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 100, 0, 0))  # tqdm draws nothing at 0 columns
    term = os.fdopen(side, "w")
    monkeypatch.setattr(sys, "stderr", term)
    bar = _progress.progress_bar(3, desc="eval x")
    bar.update(3)
    bar.close()
    with _progress.elapsed_bar(1.0, desc="ONNX cache", tick_s=0.01):
        pass
    term.flush()
    text = ""
    while select.select([main], [], [], 1.0)[0]:
        text += os.read(main, 65536).decode(errors="replace")
    term.close()
    os.close(main)
    # tqdm redraws at most every 0.1 s, so these instant bars show their first frame; leave=False then clears them.
    assert "eval x:   0%|" in text and "0/3" in text and "img/s" in text
    assert "ONNX cache:   0%|" in text and "00:00" in text


def test_a_bad_model_is_one_error_line_without_the_announcement(tmp_path, cache_dir, capsys, pytest_log_handlers_only):
    from solo_deploy.errors import BadInputError

    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"\x10" + b"\0" * 40)
    with pytest.raises(BadInputError):
        cache_mod.cached_onnx(bad)
    assert capsys.readouterr().err == ""
