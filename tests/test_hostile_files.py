"""Hostile and broken files: every loader answers with one ``BadInputError`` line (exit code 2 at
the CLI) or handles the file correctly; never a traceback, a crash or a hang.

Covers: a bounded, seeded fuzz of every file format we read (model files, checkpoints, ONNX,
engine sidecars, calibration caches, images), code-running pickles, ONNX external data that
points outside its folder, zero-byte files, awkward images, and atomic writes that fail midway.
"""
from __future__ import annotations

import contextlib
import errno
import json
import os
import random
import resource
import signal
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from solo_deploy.cli import main
from solo_deploy.errors import BadInputError, SoloDeployError

CLASS_NAMES = ("circle", "rectangle", "triangle", "ring")


# -- helpers ---------------------------------------------------------------------------------------
def run_cli(args, capsys, monkeypatch):
    monkeypatch.setattr(sys, "argv", ["solo-deploy", *map(str, args)])
    with pytest.raises(SystemExit) as exc:
        main()
    out = capsys.readouterr()
    return exc.value.code, out.out, out.err


def assert_one_line(err: str, *needles: str) -> str:
    lines = [ln for ln in err.strip().splitlines() if ln.strip()]
    assert len(lines) == 1, err
    assert "Traceback" not in err
    for n in needles:
        assert n in lines[0], lines[0]
    return lines[0]


def assert_clean_error(exc: BaseException, *needles: str) -> None:
    """A user-facing error: our type, a non-empty single line."""
    assert isinstance(exc, SoloDeployError), f"{type(exc).__name__}: {exc}"
    text = str(exc)
    assert text.strip() and "\n" not in text.strip(), repr(text)
    assert "Traceback" not in text
    for n in needles:
        assert n in text, text


def outcome(fn, *args, **kwargs):
    """Run a loader: ("ok", result) or ("error", BadInputError); anything else fails the test."""
    try:
        return "ok", fn(*args, **kwargs)
    except SoloDeployError as exc:
        assert_clean_error(exc)
        return "error", exc


@contextlib.contextmanager
def time_limit(seconds: int):
    """Fail (instead of hanging) when the block runs longer than ``seconds`` (main thread, POSIX)."""

    def on_alarm(signum, frame):
        raise TimeoutError(f"took longer than {seconds} s")

    old = signal.signal(signal.SIGALRM, on_alarm)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)


# -- the bounded fuzz ------------------------------------------------------------------------------
MUTATIONS = ("truncate", "flip", "zero_header", "append_junk")
SEEDS = range(12)  # 12 seeded mutations per format: 3 of each kind


def mutate(data: bytes, seed: int) -> bytes:
    rng = random.Random(seed * 7919 + len(data))
    kind = MUTATIONS[seed % len(MUTATIONS)]
    buf = bytearray(data)
    if kind == "truncate":
        return bytes(buf[: rng.randrange(1, len(buf))])
    if kind == "flip":
        # Half of the flips hit the first 256 bytes (headers, where parsers decide), half anywhere.
        for _ in range(rng.randint(1, 8)):
            i = rng.randrange(min(256, len(buf))) if rng.random() < 0.5 else rng.randrange(len(buf))
            buf[i] ^= 1 << rng.randrange(8)
        return bytes(buf)
    if kind == "zero_header":
        n = rng.choice((4, 8, 16, 64, 256))
        buf[:n] = bytes(min(n, len(buf)))
        return bytes(buf)
    junk = bytes(rng.randrange(256) for _ in range(rng.choice((1, 17, 1024))))
    return bytes(buf) + junk


def fuzz_ids(fmt: str) -> list:
    return [pytest.param(s, id=f"{fmt}-{MUTATIONS[s % len(MUTATIONS)]}-{s}") for s in SEEDS]


def tiny_meta():
    from conftest import tiny_config

    from solo_deploy.model.modelfile import ModelMeta
    from solo_deploy.preprocess import PreprocessSpec

    return ModelMeta(model=tiny_config(), preprocess=PreprocessSpec(input_hw=(64, 64)), class_names=CLASS_NAMES,
                     preset="solov2-light-r18")


@pytest.fixture(scope="module")
def originals(tmp_path_factory):
    """Valid files of every format, made once per module."""
    import cv2
    import torch

    from solo_deploy.calibration.trt_cache import write_cache
    from solo_deploy.export.onnx_export import export_onnx
    from solo_deploy.model.modelfile import save_model_file
    from solo_deploy.model.network import SOLONet
    from solo_deploy.runtime.tensorrt import SIDECAR_FORMAT, SIDECAR_SCHEMA

    d = tmp_path_factory.mktemp("originals")
    meta = tiny_meta()
    torch.manual_seed(0)
    state = SOLONet(meta.model).state_dict()
    files = {"safetensors": save_model_file(d / "tiny.safetensors", state, meta)}
    ckpt = d / "tiny.ckpt"  # what Lightning writes, minus the optimizer: plain dicts and tensors only
    torch.save({"epoch": 1, "global_step": 10, "pytorch-lightning_version": "2.4.0",
                "state_dict": {f"net.{k}": v for k, v in state.items()},
                "hyper_parameters": {"meta": meta.to_dict(), "lr": 0.01}}, ckpt)
    files["ckpt"] = ckpt
    files["onnx"] = export_onnx(files["safetensors"], d / "tiny.onnx", check_parity=False, simplify=False).path
    engine = d / "tiny.engine"
    engine.write_bytes(b"\x00not a real engine" * 8)
    sidecar = {"format": SIDECAR_FORMAT, "schema_version": SIDECAR_SCHEMA,
               "solo_deploy": {**meta.to_dict(), "export": {"format": "engine"}},
               "engine": {"precision": "fp16", "profile": {"min": [1, 64, 64, 3], "opt": [1, 64, 64, 3],
                                                           "max": [4, 64, 64, 3]}},
               "tensorrt": {"version": "10.3.0"}, "gpu": {"name": "NVIDIA H100", "compute_capability": [9, 0]}}
    (d / "tiny.engine.json").write_text(json.dumps(sidecar, indent=2))
    files["sidecar"] = d / "tiny.engine.json"
    files["calib"] = write_cache(d / "calib.cache", {"input": 1 / 127, "backbone.conv1": 0.0123,
                                                     "mask_feat: p2": 3.5e-3}, "entropy", "10.3.0")
    rng = np.random.default_rng(0)
    img = rng.integers(0, 255, (48, 40, 3), dtype=np.uint8)
    cv2.imwrite(str(d / "img.png"), img)
    cv2.imwrite(str(d / "img.jpg"), img)
    files["png"], files["jpg"] = d / "img.png", d / "img.jpg"
    return files


def _load_model_file(path: Path):
    from solo_deploy.runtime.runners import make_runner

    return make_runner(path, backend="torch")


def _load_onnx(path: Path):
    from solo_deploy.runtime.runners import make_runner

    return make_runner(path, backend="onnxruntime")  # onnx parse + checker, then an ORT session


def _load_engine(engine: Path):
    from solo_deploy.runtime.tensorrt import TensorRTRunner, check_engine_sidecar, read_sidecar

    data = read_sidecar(engine)
    check_engine_sidecar(data, "10.3.0", {"name": "NVIDIA H100", "compute_capability": [9, 0]}, engine=str(engine))
    return TensorRTRunner(engine, device="cuda")  # stops at TensorRT's import here; sidecar first


def _load_calib(path: Path):
    from solo_deploy.calibration.trt_cache import read_cache

    return read_cache(path)


def _load_image(path: Path):
    from solo_deploy.runtime.predictor import read_image

    img = read_image(path)
    assert img.dtype == np.uint8 and img.ndim == 3 and img.shape[2] == 3
    return img


def _fuzz(originals, tmp_path, fmt: str, seed: int, loader, name: str | None = None):
    src = originals[fmt]
    bad = tmp_path / (name or src.name)
    bad.write_bytes(mutate(src.read_bytes(), seed))
    if fmt == "sidecar":  # the sidecar travels beside its engine
        (tmp_path / "tiny.engine").write_bytes(b"\x00engine" * 8)
        return outcome(loader, tmp_path / "tiny.engine")
    return outcome(loader, bad)


@pytest.mark.parametrize("seed", fuzz_ids("safetensors"))
def test_fuzz_safetensors_model(seed, originals, tmp_path):
    _fuzz(originals, tmp_path, "safetensors", seed, _load_model_file)


@pytest.mark.parametrize("seed", fuzz_ids("ckpt"))
def test_fuzz_lightning_checkpoint(seed, originals, tmp_path):
    _fuzz(originals, tmp_path, "ckpt", seed, _load_model_file)


@pytest.mark.parametrize("seed", fuzz_ids("onnx"))
def test_fuzz_onnx(seed, originals, tmp_path):
    _fuzz(originals, tmp_path, "onnx", seed, _load_onnx)


def mutate_onnx_payload(data: bytes, seed: int) -> bytes:
    """Flip bits inside initializer payloads only (weights and int64 shape constants), so that the
    protobuf still parses and the checker passes: this reaches ONNX Runtime's session and kernels."""
    import onnx

    from solo_deploy.export.onnx_checks import iter_tensors

    rng = random.Random(seed)
    tensors = [t for t in iter_tensors(onnx.load_from_string(data)) if len(t.raw_data) >= 8]
    ints = [t.raw_data for t in tensors if t.data_type == onnx.TensorProto.INT64]  # shapes, axes, sizes
    floats = [t.raw_data for t in tensors if t.data_type != onnx.TensorProto.INT64]
    buf = bytearray(data)
    for _ in range(rng.randint(1, 6)):
        raw = rng.choice(ints if ints and seed % 2 else floats)
        start = data.find(raw)
        assert start >= 0
        i = start + rng.randrange(len(raw))
        buf[i] ^= 1 << rng.randrange(8)
    return bytes(buf)


@pytest.mark.parametrize("seed", [pytest.param(s, id=f"onnx_payload-flip-{s}") for s in SEEDS])
def test_fuzz_onnx_payload_reaches_onnxruntime(seed, originals, tmp_path, capfd, monkeypatch):
    bad = tmp_path / "tiny.onnx"
    bad.write_bytes(mutate_onnx_payload(originals["onnx"].read_bytes(), seed))
    kind, runner = outcome(_load_onnx, bad)
    if kind == "ok":  # a session was built: running it answers with outputs or one clean error
        outcome(runner, np.zeros((1, 64, 64, 3), np.uint8))
        return
    # ONNX Runtime refused the graph: at the CLI that is one line on the real stderr (fd 2), with
    # no native ONNX Runtime log before it.
    code, _, err = run_cli(["predict", bad, "--source", originals["png"], "-o", tmp_path / "out",
                            "--backend", "onnxruntime"], capfd, monkeypatch)
    assert code == 2
    assert_one_line(err, "error:", bad.name)
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("seed", fuzz_ids("sidecar"))
def test_fuzz_engine_sidecar(seed, originals, tmp_path):
    kind, _ = _fuzz(originals, tmp_path, "sidecar", seed, _load_engine)
    assert kind == "error"  # no TensorRT here: at best it stops at the import, with one line


@pytest.mark.parametrize("seed", fuzz_ids("calib"))
def test_fuzz_calibration_cache(seed, originals, tmp_path):
    _fuzz(originals, tmp_path, "calib", seed, _load_calib)


@pytest.mark.parametrize("seed", fuzz_ids("png"))
def test_fuzz_png(seed, originals, tmp_path):
    _fuzz(originals, tmp_path, "png", seed, _load_image)


@pytest.mark.parametrize("seed", fuzz_ids("jpg"))
def test_fuzz_jpeg(seed, originals, tmp_path):
    _fuzz(originals, tmp_path, "jpg", seed, _load_image)


def test_fuzz_is_reproducible(originals):
    data = originals["calib"].read_bytes()
    assert [mutate(data, s) for s in SEEDS] == [mutate(data, s) for s in SEEDS]
    assert len({mutate(data, s) for s in SEEDS}) == len(SEEDS)  # 12 distinct inputs, none the original
    assert data not in {mutate(data, s) for s in SEEDS}


# -- a pickle that runs code -----------------------------------------------------------------------
class _OpensAFile:
    """Unpickling this calls open(path, "w"): proof of code execution if the marker appears."""

    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, "w"))


@pytest.mark.parametrize("where", ["in_meta", "as_state_dict", "top_level"])
def test_pickle_that_runs_code_is_refused(where, tmp_path, capsys, monkeypatch):
    import torch

    from solo_deploy.model.modelfile import read_model

    marker = tmp_path / "pwned"
    evil = _OpensAFile(str(marker))
    obj = {"in_meta": {"state_dict": {}, "hyper_parameters": {"meta": evil}},
           "as_state_dict": {"state_dict": evil, "hyper_parameters": {}},
           "top_level": evil}[where]
    path = tmp_path / "evil.ckpt"
    torch.save(obj, path)
    with pytest.raises(BadInputError) as exc:
        read_model(path)
    assert_clean_error(exc.value, "refusing to load")
    code, _, err = run_cli(["info", path], capsys, monkeypatch)
    assert code == 2
    assert_one_line(err, "refusing to load")
    assert not marker.exists()


# -- ONNX external data outside its folder --------------------------------------------------------
@pytest.mark.parametrize("location", ["absolute", "dotdot", "dotdot_windows", "symlink_out"])
def test_onnx_external_data_outside_folder_is_refused(location, originals, tmp_path, capsys, monkeypatch):
    import onnx

    from solo_deploy.export.onnx_checks import load_onnx_checked

    outside = tmp_path / "w.bin"
    folder = tmp_path / "model"
    folder.mkdir()
    model = onnx.load(str(originals["onnx"]))
    t = max(model.graph.initializer, key=lambda t: len(t.raw_data))
    outside.write_bytes(t.raw_data)
    loc = {"absolute": str(outside), "dotdot": "../w.bin", "dotdot_windows": "..\\w.bin",
           "symlink_out": "link.bin"}[location]
    if location == "symlink_out":
        (folder / "link.bin").symlink_to(outside)
    n = len(t.raw_data)
    t.ClearField("raw_data")
    t.data_location = onnx.TensorProto.EXTERNAL
    for k, v in (("location", loc), ("offset", "0"), ("length", str(n))):
        e = t.external_data.add()
        e.key, e.value = k, v
    path = folder / "model.onnx"
    path.write_bytes(model.SerializeToString())
    with pytest.raises(BadInputError) as exc:
        load_onnx_checked(path)
    assert_clean_error(exc.value, "refusing external data location")
    img = tmp_path / "img.png"
    img.write_bytes(originals["png"].read_bytes())
    code, _, err = run_cli(["predict", path, "--source", img, "-o", tmp_path / "out", "--backend", "onnxruntime"],
                           capsys, monkeypatch)
    assert code == 2
    assert_one_line(err, "refusing external data location")
    assert not (tmp_path / "out").exists()


# -- zero-byte files -------------------------------------------------------------------------------
@pytest.mark.parametrize("kind", ["safetensors", "ckpt", "onnx", "engine", "engine_sidecar", "image",
                                  "calibration_cache"])
def test_zero_byte_file(kind, originals, tmp_path):
    from solo_deploy.calibration.trt_cache import read_cache
    from solo_deploy.runtime.predictor import read_image
    from solo_deploy.runtime.runners import make_runner

    name = {"safetensors": "m.safetensors", "ckpt": "m.ckpt", "onnx": "m.onnx", "engine": "m.engine",
            "engine_sidecar": "m.engine.json", "image": "im.png", "calibration_cache": "calib.cache"}[kind]
    empty = tmp_path / name
    empty.write_bytes(b"")
    if kind == "engine":  # a valid sidecar beside an empty engine: the engine itself is refused
        (tmp_path / "m.engine.json").write_bytes(originals["sidecar"].read_bytes())
    if kind == "engine_sidecar":
        (tmp_path / "m.engine").write_bytes(b"\x00engine" * 8)
    with pytest.raises(BadInputError) as exc:
        if kind in ("safetensors", "ckpt", "onnx"):
            make_runner(empty, backend="torch" if kind != "onnx" else "onnxruntime")
        elif kind in ("engine", "engine_sidecar"):
            make_runner(tmp_path / "m.engine", backend="tensorrt", device="cuda")
        elif kind == "image":
            read_image(empty)
        else:
            read_cache(empty)
    assert_clean_error(exc.value)
    assert "empty" in str(exc.value) or "not a TensorRT calibration cache" in str(exc.value) \
        or "cannot read engine sidecar" in str(exc.value), str(exc.value)


@pytest.mark.parametrize("suffix", [".safetensors", ".ckpt", ".onnx"])
def test_zero_byte_model_at_the_cli(suffix, originals, tmp_path, capsys, monkeypatch):
    empty = tmp_path / f"m{suffix}"
    empty.write_bytes(b"")
    backend = "onnxruntime" if suffix == ".onnx" else "torch"
    code, _, err = run_cli(["predict", empty, "--source", originals["png"], "-o", tmp_path / "out",
                            "--backend", backend], capsys, monkeypatch)
    assert code == 2
    assert_one_line(err, "empty")


# -- awkward images --------------------------------------------------------------------------------
IMAGE_CASES = ["png_named_jpg", "text_named_png", "one_pixel", "png_16bit", "grayscale", "rgba", "huge_8000x8000"]


def make_image(kind: str, folder: Path) -> tuple[Path, tuple[int, int] | None]:
    """-> (path, expected (H, W)), or None when a clean error is the right answer."""
    import cv2

    rng = np.random.default_rng(1)
    if kind == "png_named_jpg":
        path = folder / "photo.jpg"
        _, buf = cv2.imencode(".png", rng.integers(0, 255, (37, 53, 3), dtype=np.uint8))
        path.write_bytes(buf.tobytes())
        return path, (37, 53)
    if kind == "text_named_png":
        path = folder / "notes.png"
        path.write_text("this is a text file, not an image\n" * 20)
        return path, None
    path = folder / f"{kind}.png"
    arr = {"one_pixel": lambda: np.full((1, 1, 3), 200, np.uint8),
           "png_16bit": lambda: rng.integers(0, 65535, (40, 30, 3), dtype=np.uint16),
           "grayscale": lambda: rng.integers(0, 255, (33, 47), dtype=np.uint8),
           "rgba": lambda: rng.integers(0, 255, (50, 20, 4), dtype=np.uint8),
           "huge_8000x8000": lambda: np.zeros((8000, 8000, 3), np.uint8)}[kind]()
    assert cv2.imwrite(str(path), arr)
    return path, arr.shape[:2]


@pytest.fixture(scope="module")
def torch_predictor(originals):
    from solo_deploy.app.models import load

    return load(originals["safetensors"], backend="torch")


def _peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


@pytest.mark.parametrize("kind", IMAGE_CASES)
def test_image_through_predictor(kind, torch_predictor, tmp_path):
    path, hw = make_image(kind, tmp_path)
    t0 = time.perf_counter()
    with time_limit(60):
        if hw is None:
            with pytest.raises(BadInputError) as exc:
                torch_predictor.predict(path)
            assert_clean_error(exc.value, "cannot decode image", path.name)
            return
        inst = torch_predictor.predict(path)
    assert inst.image_hw == hw
    assert inst.masks.dtype == bool and inst.masks.shape[1:] == hw and inst.masks.shape[0] == len(inst)
    if kind == "huge_8000x8000":
        # 8000x8000x3 is 183 MiB decoded; the network sees 64x64. Bounded time and memory.
        assert time.perf_counter() - t0 < 30
        assert _peak_rss_mib() < 4096


@pytest.mark.parametrize("kind", IMAGE_CASES)
def test_image_through_predict_cli(kind, originals, tmp_path, capsys, monkeypatch):
    src = tmp_path / "src"
    src.mkdir()
    path, hw = make_image(kind, src)
    out = tmp_path / "out"
    with time_limit(90):
        code, _, err = run_cli(["predict", originals["safetensors"], "--source", path, "-o", out,
                                     "--backend", "torch"], capsys, monkeypatch)
    assert "Traceback" not in err
    if hw is None:
        assert code == 2
        # A single unreadable image: exactly one error line naming it (issue #12: one line).
        errors = [ln for ln in err.splitlines() if ln.startswith("error:")]
        assert len(errors) == 1 and "cannot decode image" in errors[0], err
        assert all(ln.startswith(("error:", "warning: skipped")) for ln in err.strip().splitlines()), err
        assert path.name in err
        return
    assert code == 0, err
    doc = json.loads((out / "predictions.json").read_text())
    assert doc["images"] == [{"id": 1, "file_name": path.name, "height": hw[0], "width": hw[1]}]
    import cv2

    overlay = cv2.imread(str(out / f"{path.stem}.jpg"))
    assert overlay is not None and overlay.shape[:2] == hw


# -- atomic outputs --------------------------------------------------------------------------------
WRITERS = ["write_json", "save_model_file", "export_onnx"]
FAULTS = ["replace_fails", "fsync_enospc", "writer_enospc_midway"]


def _write(writer: str, target: Path, originals) -> None:
    if writer == "write_json":
        from solo_deploy._atomic import write_json

        write_json(target, {"new": list(range(1000))})
    elif writer == "save_model_file":
        from solo_deploy.model.modelfile import read_model, save_model_file

        state, meta = read_model(originals["safetensors"])
        save_model_file(target, state, meta)
    else:
        from solo_deploy.export.onnx_export import export_onnx

        export_onnx(originals["safetensors"], target, check_parity=False, simplify=False)


def _inject(fault: str, writer: str, target: Path, monkeypatch) -> None:
    enospc = OSError(errno.ENOSPC, "No space left on device")
    tmp_prefix = f".{target.name}.tmp-"
    if fault == "replace_fails":
        real_replace = os.replace

        def replace(src, dst, *a, **k):
            if Path(dst) == target:
                raise OSError(errno.EIO, "Input/output error")
            return real_replace(src, dst, *a, **k)

        monkeypatch.setattr(os, "replace", replace)
    elif fault == "fsync_enospc":
        def fsync(fd):
            raise enospc

        monkeypatch.setattr(os, "fsync", fsync)
    elif writer == "write_json":  # the text writer fills the disk halfway through
        import builtins

        import solo_deploy._atomic as atomic

        class HalfWriter:
            def __init__(self, fh):
                self.fh = fh

            def __enter__(self):
                return self

            def __exit__(self, *exc):
                self.fh.close()

            def write(self, text):
                self.fh.write(text[: len(text) // 2])
                self.fh.flush()
                raise enospc

        monkeypatch.setattr(atomic, "open", lambda *a, **k: HalfWriter(builtins.open(*a, **k)), raising=False)  # noqa: SIM115
    elif writer == "save_model_file":
        import safetensors.torch

        real_save = safetensors.torch.save_file

        def save_file(tensors, filename, metadata=None):
            real_save(tensors, filename, metadata=metadata)
            with open(filename, "r+b") as fh:
                fh.truncate(os.path.getsize(filename) // 2)
            raise enospc

        monkeypatch.setattr(safetensors.torch, "save_file", save_file)
    else:
        real_write_bytes = Path.write_bytes

        def write_bytes(self, data):
            if not self.name.startswith(tmp_prefix):
                return real_write_bytes(self, data)
            real_write_bytes(self, data[: len(data) // 2])
            raise enospc

        monkeypatch.setattr(Path, "write_bytes", write_bytes)


@pytest.mark.parametrize("existing", [False, True], ids=["new_target", "older_target_kept"])
@pytest.mark.parametrize("fault", FAULTS)
@pytest.mark.parametrize("writer", WRITERS)
def test_atomic_output_on_failed_write(writer, fault, existing, originals, tmp_path, monkeypatch):
    out = tmp_path / "out"
    out.mkdir()
    target = out / {"write_json": "report.json", "save_model_file": "model.safetensors",
                    "export_onnx": "model.onnx"}[writer]
    old = b"older complete version\n"
    if existing:
        target.write_bytes(old)
    with monkeypatch.context() as m:
        _inject(fault, writer, target, m)
        with pytest.raises(OSError) as exc:
            _write(writer, target, originals)
    assert exc.value.errno in (errno.EIO, errno.ENOSPC)
    left = sorted(p.name for p in out.iterdir())
    assert left == ([target.name] if existing else []), left  # no temp file, no half-written target
    if existing:
        assert target.read_bytes() == old


def test_atomic_writer_recovers_after_a_failure(originals, tmp_path, monkeypatch):
    """After a failed write the same target is written normally (nothing stale blocks it)."""
    target = tmp_path / "report.json"
    with monkeypatch.context() as m:
        _inject("replace_fails", "write_json", target, m)
        with pytest.raises(OSError):
            _write("write_json", target, originals)
    _write("write_json", target, originals)
    assert json.loads(target.read_text()) == {"new": list(range(1000))}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["report.json"]


# Distinct faults / bad inputs tried (one test id each):
#   fuzz, 12 seeded mutations (3 truncations, 3 bit-flip sets, 3 zeroed headers, 3 junk tails) x 7
#     formats (.safetensors, Lightning .ckpt, .onnx + ORT session, engine sidecar, calibration cache,
#     PNG, JPEG) ......................................................................  84
#   ONNX payload fuzz: 12 seeded bit flips inside weights / int64 shape constants that still
#     parse and pass onnx.checker, so they reach ONNX Runtime's session (+ CLI when refused) ..  12
#   code-running pickle in a .ckpt (in meta, as state_dict, top level) ..............   3
#   ONNX external data outside its folder (absolute, ../, ..\\, symlink out) .........   4
#   zero-byte files (.safetensors, .ckpt, .onnx, .engine, engine sidecar, image,
#     calibration cache) + zero-byte models at the CLI (3) ..........................  10
#   images (PNG named .jpg, text named .png, 1x1, 16-bit, grayscale, RGBA, 8000x8000)
#     through Predictor.predict and through `solo-deploy predict` (7 x 2) ...........  14
#   atomic writes failing (os.replace EIO, fsync ENOSPC, writer ENOSPC midway) x
#     (write_json, save_model_file, export_onnx) x (new target, older target kept) ..  18
#   total ............................................................................ 145
#   (+ 2 checks: the fuzz is reproducible; a target is writable again after a failure)
#   No native crash (segfault/abort) or hang in any case: protobuf/onnx parsing, ONNX Runtime
#   session creation and OpenCV decoding stay in-process.
