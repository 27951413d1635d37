"""Native libraries' own stderr lines (libpng, libjpeg, OpenCV's logger) kept out of a user's terminal.

Image decoders in C print straight to file descriptor 2 ("libpng error: Read Error", "Corrupt
JPEG data: premature end of data segment") before OpenCV returns ``None``; our caller already
reports the problem as one line. While a decoder runs, fd 2 goes to a temporary file; afterwards
every line that is not decoder noise is written back, so nothing another thread printed in that
window is lost (it only arrives a little later).
"""
from __future__ import annotations

import contextlib
import os
import re
import tempfile
import threading
from collections.abc import Iterator

# Lines that decoders print on a corrupt or truncated file.
_NOISE = re.compile(rb"^(libpng (error|warning)|Corrupt JPEG data|Premature end of JPEG file|Not a JPEG file|"
                    rb"JPEG datastream|Invalid SOS parameters|Unsupported marker|Bogus |Huffman |"
                    rb"TIFF(Read|Fetch)|\[ ?(WARN|ERROR|INFO):|libtiff|libwebp|Wrong JPEG library)")
_LOCK = threading.Lock()


@contextlib.contextmanager
def quiet_native_stderr() -> Iterator[None]:
    """Drop decoder noise that native code writes to fd 2 inside the block (not in debug mode)."""
    if os.environ.get("SOLO_DEPLOY_LOG_LEVEL") == "debug":
        yield
        return
    with _LOCK:
        try:
            saved = os.dup(2)
            sink = tempfile.TemporaryFile()  # noqa: SIM115 - closed in the finally below, after fd 2 is back
        except OSError:  # no spare descriptors or no temp space: let the noise through
            yield
            return
        try:
            os.dup2(sink.fileno(), 2)
            yield
        finally:
            os.dup2(saved, 2)
            os.close(saved)
            sink.seek(0)
            kept = [ln for ln in sink.read().splitlines(keepends=True) if ln.strip() and not _NOISE.match(ln)]
            sink.close()
            if kept:
                with contextlib.suppress(OSError):
                    os.write(2, b"".join(kept))
