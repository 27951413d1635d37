"""Atomic file writes: every file the project writes goes to a temporary name and is renamed.

A crash or a full disk therefore never leaves a file that looks complete but is not.
"""
from __future__ import annotations

import contextlib
import errno
import json
import logging
import os
import re
import shutil
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

from .errors import BadInputError, RuntimeFailure

log = logging.getLogger("solo_deploy")

# errno values that mean "the disk (or the user's quota, or the file size limit) is full".
DISK_FULL_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EFBIG})
# Below this many free bytes, a writer that failed without an errno (torch.save, OpenCV) is taken
# to have failed for lack of space.
NEARLY_FULL_BYTES = 1 << 20
# Temporary names carry the writer's process id, so that a later write can tell a temporary left
# by a killed process (safe to remove) from one that a running process is still writing.
_TMP_RE = re.compile(r"^\.(?P<name>.+)\.tmp-(?:(?P<pid>\d+)-)?[^.]*")
# Temporaries of releases before 0.2.1 have no pid: removed once they are this old.
_UNOWNED_STALE_S = 3600.0


class DiskFullError(RuntimeFailure, OSError):
    """The disk filled up while writing an output (exit code 1; the partial output is removed).

    Also an ``OSError`` with ``errno.ENOSPC``, so callers that handle OS errors still see it as one.
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        message = f"no space left on device writing {path}"
        super().__init__(message)
        self.errno, self.strerror, self.filename = errno.ENOSPC, message, str(path)

    def __str__(self) -> str:
        return self.strerror


def free_bytes(path: str | os.PathLike[str]) -> int:
    """Bytes available to this user on the file system holding ``path`` (a file or a folder)."""
    p = Path(path)
    while not p.exists() and p != p.parent:
        p = p.parent
    try:
        return int(shutil.disk_usage(p).free)
    except OSError:
        return 1 << 62  # unknown: do not claim the disk is full


def is_disk_full(exc: BaseException, path: str | os.PathLike[str]) -> bool:
    """Whether ``exc`` (raised while writing ``path``) comes from a full disk."""
    if isinstance(exc, OSError) and exc.errno in DISK_FULL_ERRNOS:
        return True
    if isinstance(exc, (DiskFullError, BadInputError, KeyboardInterrupt, SystemExit)):
        return False
    # Writers that hide the errno (torch.save's "file write failed", OpenCV's False) on a full disk.
    return free_bytes(Path(path).parent) < NEARLY_FULL_BYTES


def _pid_alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # EPERM: alive, someone else's
        return True
    return True


# folder -> {target name: its temporaries}, listed once per process: a folder that receives many
# files (predict's overlays) is not listed again for each of them.
_TEMPORARIES: dict[str, dict[str, list[Path]]] = {}
_TEMPORARIES_LOCK = threading.Lock()


def _temporaries_of(path: Path) -> list[Path]:
    """The hidden temporaries of ``path`` found when its folder was first listed by this process
    (each target's list is handed out once)."""
    folder = path.parent if str(path.parent) else Path(".")
    key = os.path.realpath(folder)
    with _TEMPORARIES_LOCK:
        if key not in _TEMPORARIES:
            found: dict[str, list[Path]] = {}
            try:
                for tmp in folder.glob(".*.tmp-*"):
                    m = _TMP_RE.match(tmp.name)
                    if m:
                        found.setdefault(m.group("name"), []).append(tmp)
            except OSError:
                pass
            _TEMPORARIES[key] = found
        return _TEMPORARIES[key].pop(path.name, [])


def remove_stale_temporaries(path: str | os.PathLike[str]) -> list[Path]:
    """Remove the hidden temporaries of ``path`` whose writer is gone (killed with SIGKILL, power
    loss); keep those of live writers. Returns what was removed."""
    path = Path(path)
    removed = []
    for tmp in _temporaries_of(path):
        if not tmp.is_file():
            continue
        m = _TMP_RE.match(tmp.name)
        pid = m.group("pid") if m else None
        try:
            stale = (not _pid_alive(int(pid))) if pid else time.time() - tmp.stat().st_mtime > _UNOWNED_STALE_S
            if stale:
                tmp.unlink()
                removed.append(tmp)
                log.info("removed %s, left by a writer that is gone", tmp)
        except OSError:
            continue
    return removed


def _check_parent(path: Path) -> None:
    parent = path.parent if str(path.parent) else Path(".")
    if parent.exists() and not parent.is_dir():
        raise BadInputError(f"cannot write {path}: {parent} is not a folder")
    try:
        parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise BadInputError(f"cannot write {path}: {exc.strerror or exc}") from None
    if not os.access(parent, os.W_OK):
        raise BadInputError(f"cannot write {path}: folder {parent} is not writable")


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike[str], suffix: str | None = None) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; rename it onto ``path`` only if the block succeeds.

    ``suffix`` defaults to the target's suffix so that writers that look at the extension
    (OpenCV, torch) still work.
    """
    path = Path(path)
    _check_parent(path)
    remove_stale_temporaries(path)
    # Hidden name, same folder (so the rename is atomic), same suffix (writers pick formats by it).
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.tmp-{os.getpid()}-",
                                   suffix=suffix if suffix is not None else path.suffix, dir=path.parent)
    except OSError as exc:
        if exc.errno in DISK_FULL_ERRNOS:
            raise DiskFullError(path) from None
        raise BadInputError(f"cannot write {path}: {exc.strerror or exc}") from None
    os.close(fd)
    tmp_path = Path(tmp)
    # mkstemp creates 0600 files; give the result the permissions a plain open() would (umask).
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp_path, 0o666 & ~umask)
    try:
        yield tmp_path
        with open(tmp_path, "rb+") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp_path, path)
    except BaseException as exc:
        with contextlib.suppress(OSError):
            tmp_path.unlink()
        if is_disk_full(exc, path):
            raise DiskFullError(path) from None
        raise


@contextlib.contextmanager
def atomic_open(path: str | os.PathLike[str], mode: str = "w", **kwargs: Any) -> Iterator[IO[Any]]:
    """Open a temporary file beside ``path`` for writing; rename it onto ``path`` on success."""
    with atomic_path(path) as tmp:
        with open(tmp, mode, **kwargs) as fh:
            yield fh


def write_bytes(path: str | os.PathLike[str], data: bytes) -> None:
    with atomic_open(path, "wb") as fh:
        fh.write(data)


def write_text(path: str | os.PathLike[str], text: str) -> None:
    with atomic_open(path, "w", encoding="utf-8") as fh:
        fh.write(text)


def write_json(path: str | os.PathLike[str], obj: Any, indent: int | None = 2) -> None:
    write_text(path, json.dumps(obj, indent=indent) + "\n")
