"""A live Triton Inference Server (#21): the repository `export --format triton --triton-backend
python` writes, served by the `tritonserver` that the nvidia-pytriton wheel carries (2.51, Python
backend, CPU), and `predict` / `run --backend triton` through it over HTTP and gRPC.

The server's Python stub embeds a CPython of its own version and needs that interpreter's shared
libpython. The fixture finds such an interpreter (pyenv's builds have none; Debian's python3.11
has one), builds the server's environment from it (numpy < 2: the stubs are built against numpy
1's ABI, and with numpy 2 every output came back empty; onnxruntime) and starts the server. It
skips, with the reason, where no such interpreter or no package index is at hand.
"""
from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from cli_helpers import assert_one_line_error, count_lines, run_cli, solo_deploy_exe

pytest.importorskip("tritonclient.grpc", reason="the live Triton tests need tritonclient[grpc,http] (dev extra)")
pytest.importorskip("tritonclient.http", reason="the live Triton tests need tritonclient[grpc,http] (dev extra)")

PYTRITON = "nvidia-pytriton==0.7.0"  # tritonserver 2.51 with the Python backend, no ONNX Runtime backend
SERVER_ENV_PACKAGES = ("numpy<2", "onnxruntime")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _pip(python: str, *args: str, timeout: float = 600) -> subprocess.CompletedProcess[str]:
    return subprocess.run([python, "-m", "pip", "--disable-pip-version-check", "-q", *args], capture_output=True,
                          text=True, timeout=timeout)


def _shared_python(versions: set[str]) -> tuple[str, str] | None:
    """(interpreter, X.Y) of a Python with a shared libpython whose version has a stub."""
    probe = ("import json, os, sys, sysconfig; v = sysconfig.get_config_var; "
             "lib = os.path.join(v('LIBDIR') or '', v('LDLIBRARY') or ''); "
             "print(json.dumps([bool(v('Py_ENABLE_SHARED')), lib.endswith('.so') and os.path.exists(lib), "
             "'%d.%d' % sys.version_info[:2]]))")
    names = [sys.executable] + [f"/usr/bin/python{v}" for v in sorted(versions)] + \
        [shutil.which(f"python{v}") or "" for v in sorted(versions)]
    for exe in dict.fromkeys(n for n in names if n and os.path.exists(n)):
        try:
            shared, has_lib, version = json.loads(subprocess.run([exe, "-c", probe], capture_output=True, text=True,
                                                                 timeout=30).stdout)
        except (ValueError, OSError, subprocess.SubprocessError):
            continue
        if shared and has_lib and version in versions:
            return exe, version
    return None


def _start(server: Path, repo: Path, env: dict[str, str], log: Path) -> tuple[subprocess.Popen, int, int]:
    http, grpc, metrics = _free_port(), _free_port(), _free_port()
    proc = subprocess.Popen([str(server / "bin" / "tritonserver"), "--model-repository", str(repo),
                             "--backend-directory", str(server / "backends"), "--http-port", str(http),
                             "--grpc-port", str(grpc), "--metrics-port", str(metrics), "--exit-timeout-secs", "3"],
                            stdout=log.open("w"), stderr=subprocess.STDOUT, env=env)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"tritonserver exited ({proc.returncode}):\n" + log.read_text()[-3000:])
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{http}/v2/health/ready", timeout=2) as r:
                if r.status == 200:
                    return proc, http, grpc
        except OSError:
            pass
        time.sleep(0.5)
    proc.kill()
    pytest.fail("tritonserver was not ready within 120 s:\n" + log.read_text()[-3000:])


@pytest.fixture(scope="module")
def server(tmp_path_factory, lively_model_module):
    t0 = time.monotonic()
    root = tmp_path_factory.mktemp("triton_live")
    given = os.environ.get("SOLO_DEPLOY_TEST_PYTRITON_DIR")
    target = Path(given) if given else root / "pytriton"
    if not given:
        proc = _pip(sys.executable, "install", "--no-deps", "--target", str(target), PYTRITON)
        if proc.returncode != 0:
            pytest.skip(f"cannot install {PYTRITON} (the server binary): {proc.stderr.strip()[-300:]}")
    tritonserver = target / "pytriton" / "tritonserver"
    stubs = {p.name: p / "triton_python_backend_stub" for p in (tritonserver / "python_backend_stubs").iterdir()}
    found = _shared_python(set(stubs))
    if found is None:
        pytest.skip(f"no Python with a shared libpython for the server's Python stubs ({', '.join(sorted(stubs))}); "
                    f"on Debian: apt-get install python3.11")
    python, version = found
    envdir = root / "server-env"
    made = subprocess.run([python, "-m", "venv", str(envdir)], capture_output=True, text=True, timeout=300)
    if made.returncode != 0:
        pytest.skip(f"cannot make the server's environment with {python}: {made.stderr.strip()[-300:]}")
    proc = _pip(str(envdir / "bin" / "python"), "install", *SERVER_ENV_PACKAGES)
    if proc.returncode != 0:
        pytest.skip(f"cannot install {', '.join(SERVER_ENV_PACKAGES)} for the server: {proc.stderr.strip()[-300:]}")
    site = envdir / "lib" / f"python{version}" / "site-packages"
    shutil.copy2(stubs[version], tritonserver / "backends" / "python" / "triton_python_backend_stub")
    for exe in ("bin/tritonserver", "backends/python/triton_python_backend_stub"):
        (tritonserver / exe).chmod(0o755)
    repo = root / "repo"
    exported = run_cli("export", lively_model_module, "--format", "triton", "--triton-backend", "python", "-o", repo,
                       "--name", "lively", timeout=600)
    assert exported.returncode == 0, exported.stderr
    env = {**os.environ, "SOLO_DEPLOY_TRITON_PYTHONPATH": str(site), "SOLO_DEPLOY_TRITON_THREADS": "1"}
    t1 = time.monotonic()
    proc, http, grpc = _start(tritonserver, repo, env, root / "server.log")
    print(f"\nTriton live: setup {t1 - t0:.1f} s, server ready in {time.monotonic() - t1:.1f} s ({python}, "
          f"Python {version})")
    yield {"proc": proc, "http": f"http://127.0.0.1:{http}", "grpc": f"127.0.0.1:{grpc}", "repo": repo,
           "log": root / "server.log"}
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()


@pytest.fixture(scope="module")
def lively_model_module(tmp_path_factory):
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from export_helpers import save_tiny

    return save_tiny(tmp_path_factory.mktemp("lively") / "lively.safetensors", "solov2-light-r18")


def _annotations(folder: Path) -> list[dict]:
    return json.loads((folder / "predictions.json").read_text())["annotations"]


def test_predict_over_http_and_grpc_equals_local_inference(server, photos, tmp_path):
    results = {}
    for name, url in (("grpc", server["grpc"]), ("http", server["http"])):
        proc = run_cli("predict", "lively", "-s", photos, "--backend", "triton", "--triton-url", url, "--conf", "0",
                       "-o", tmp_path / name)
        assert proc.returncode == 0, proc.stderr
        assert f"[triton/triton:{url}]" in proc.stdout
        results[name] = _annotations(tmp_path / name)
    onnx_file = server["repo"] / "lively" / "1" / "model.onnx"  # what the server runs, run here
    local = run_cli("predict", onnx_file, "-s", photos, "--conf", "0", "-o", tmp_path / "l")
    assert local.returncode == 0, local.stderr
    results["local"] = _annotations(tmp_path / "l")
    assert len(results["local"]) > 10
    from pycocotools import mask as mask_utils

    want = results["local"]
    for name in ("grpc", "http"):
        got = results[name]
        # The server's ONNX Runtime runs one thread, the local one two: float sums differ in the last
        # bits, so a mask may flip a border pixel. Same instances, same order, same classes.
        assert [(a["image_id"], a["category_id"]) for a in got] == [(a["image_id"], a["category_id"]) for a in want]
        assert [a["score"] for a in got] == pytest.approx([a["score"] for a in want], abs=1e-4)
        ious = [float(mask_utils.iou([g["segmentation"]], [w["segmentation"]], [0])[0][0]) for g, w in zip(got, want)]
        exact = sum(g["segmentation"] == w["segmentation"] for g, w in zip(got, want))
        print(f"\nTriton {name} vs local ONNX Runtime: {len(got)} instances, {exact} masks identical, "
              f"min mask IoU {min(ious):.4f}")
        assert min(ious) > 0.95 and exact >= 0.9 * len(got)


def test_two_streams_are_batched_on_the_server(server, tmp_path):
    import tritonclient.grpc as grpcclient

    client = grpcclient.InferenceServerClient(server["grpc"])
    before = client.get_inference_statistics("lively", as_json=True)["model_stats"][0]
    lines = tmp_path / "two.jsonl"
    proc = run_cli("run", "--backend", "triton", "--model", "lively", "--triton-url", server["grpc"], "--video", "demo",
                   "--video", "demo", "--max-frames", "6", "--save-json", lines, "--no-progress")
    assert proc.returncode == 0, proc.stderr
    assert count_lines(lines) == 12 and "mean batch 2.00" in proc.stdout
    after = client.get_inference_statistics("lively", as_json=True)["model_stats"][0]
    sizes = {int(b["batch_size"]): int(b["compute_infer"]["count"]) for b in after["batch_stats"]}
    earlier = {int(b["batch_size"]): int(b["compute_infer"]["count"]) for b in before.get("batch_stats", [])}
    assert sizes.get(2, 0) - earlier.get(2, 0) >= 6, sizes  # the two streams' frames went as batches of 2
    def delta(kind: str, key: str) -> int:
        return int(after["inference_stats"][kind][key]) - int(before["inference_stats"][kind].get(key, 0))

    requests = delta("success", "count")
    per = {k: delta(k, "ns") / 1e6 / max(requests, 1) for k in ("queue", "compute_infer", "success")}
    print(f"\nTriton two streams: batch sizes so far {sizes}; {requests} requests this run, per request "
          f"queue {per['queue']:.2f} ms, compute {per['compute_infer']:.1f} ms, total {per['success']:.1f} ms")


def test_nothing_listening_is_one_line_within_the_timeout(photos, tmp_path):
    t0 = time.monotonic()
    proc = run_cli("predict", "lively", "-s", photos, "--backend", "triton", "--triton-url",
                   f"127.0.0.1:{_free_port()}", "-o", tmp_path / "x")
    assert_one_line_error(proc, 2, "cannot reach Triton")
    assert time.monotonic() - t0 < 30


def test_a_server_that_goes_away_stops_the_run_in_one_line(server, tmp_path):
    """Last in this file: it stops the server. The run retries for --reconnect-timeout, then exits
    1 with one line, its JSON lines finalised."""
    lines = tmp_path / "lost.jsonl"
    run = subprocess.Popen([solo_deploy_exe(), "run", "--backend", "triton", "--model", "lively", "--triton-url",
                            server["grpc"], "--video", "demo", "--reconnect-timeout", "2", "--save-json", str(lines),
                            "--no-progress"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                           env={**os.environ, "OMP_NUM_THREADS": "1"})
    time.sleep(6)  # the run has loaded and sent frames
    assert run.poll() is None, run.communicate()
    server["proc"].kill()
    t_kill = time.monotonic()
    out, err = run.communicate(timeout=60)
    waited = time.monotonic() - t_kill
    assert run.returncode == 1, (out, err)
    errs = [ln for ln in err.splitlines() if ln.strip()]
    assert len(errs) == 1 and "has not answered for 2 s" in errs[0] and "outputs finalised" in errs[0], err
    assert 2 <= waited < 20, waited
    assert count_lines(lines) >= 1
