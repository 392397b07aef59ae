"""bench.runtimes.cuda: CUDA is used only where it really runs, and every reason it does not is named.

Runs without a GPU. Tests that need the `cuda` extra (`make setup-cuda`) skip without it; those that
load CUDA libraries do it in a subprocess so this process stays clean (LD_LIBRARY_PATH is read once
per process, and a loaded library cannot be unloaded).
"""

from __future__ import annotations

import ctypes
import json
import os
import shutil
import subprocess
import sys
import tempfile
import textwrap
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper

from bench.runtimes.cuda import (
    CUDA_PREFIX,
    DeviceRun,
    Placement,
    _placement_from_events,
    captured_output,
    classify_cuda_failure,
    cuda_provider_options,
    node_placement,
    open_session,
    probe_model,
)

REPO = Path(__file__).resolve().parents[1]
TOOLKIT = ["libcudart.so.13", "libcublasLt.so.13", "libcublas.so.13", "libcurand.so.10"]
CUDNN = ["libcudnn.so.9"]


def _installed(distribution: str) -> bool:
    try:
        version(distribution)
    except PackageNotFoundError:
        return False
    return True


CUDA_EXTRA = "CUDAExecutionProvider" in ort.get_available_providers() and all(
    _installed(d) for d in ("nvidia-cuda-runtime", "nvidia-cublas", "nvidia-curand", "nvidia-cudnn-cu13")
)
needs_extra = pytest.mark.skipif(not CUDA_EXTRA, reason="the cuda extra is not installed (`make setup-cuda`)")


def _python(code: str, env: dict[str, str] | None = None) -> tuple[dict, subprocess.CompletedProcess[str]]:
    """Run ``code`` in a fresh interpreter; it prints one JSON object as its last stdout line."""
    done = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        capture_output=True, text=True, cwd=REPO, timeout=300, check=False, env={**os.environ, **(env or {})},
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1]), done


@pytest.fixture(scope="module")
def system_loader() -> dict:
    """Which CUDA pieces the system's own loader paths provide, without preload (a GPU machine has the driver)."""
    found, _ = _python("""
        import ctypes, json
        def loads(name):
            try:
                ctypes.CDLL(name)
                return True
            except OSError:
                return False
        print(json.dumps({name: loads(name) for name in ("libcuda.so.1", "libcublasLt.so.13")}))
    """)
    return found


def tiny_model(path: Path) -> Path:
    """x[batch,4] -> MatMul -> Add -> Softmax -> y[batch,3]: three nodes, every one with a CPU and a CUDA kernel."""
    w = helper.make_tensor("w", TensorProto.FLOAT, [4, 3], np.arange(12, dtype=np.float32) / 10)
    b = helper.make_tensor("b", TensorProto.FLOAT, [3], np.float32([0.1, -0.2, 0.3]))
    graph = helper.make_graph(
        [
            helper.make_node("MatMul", ["x", "w"], ["h"], name="matmul"),
            helper.make_node("Add", ["h", "b"], ["logits"], name="add"),
            helper.make_node("Softmax", ["logits"], ["y"], name="softmax", axis=-1),
        ],
        "tiny",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 3])],
        [w, b],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    onnx.save(model, path)
    return path


def unoptimised() -> ort.SessionOptions:
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL  # keep the three nodes as written
    return options


# --------------------------------------------------------------------------------------------------
# Reasons, from messages onnxruntime 1.31.1 really wrote here (recorded) or documents (synthetic)

RECORDED_NO_CUBLAS = [  # no [cuda,cudnn] extra: fd 2
    "2026-11-25 09:10:11.665182688 [E:onnxruntime:Default, provider_bridge_ort.cc:2458 operator()] /onnxruntime_src/onnxruntime/core/session/provider_bridge_ort.cc:2043 onnxruntime::Provider& onnxruntime::ProviderLibrary::Get() [ONNXRuntimeError] : 1 : FAIL : Failed to load library /work/main/.venv/lib/python3.11/site-packages/onnxruntime/capi/libonnxruntime_providers_cuda.so with error: libcublasLt.so.13: cannot open shared object file: No such file or directory",
    "2026-11-25 09:10:11.665238202 [W:onnxruntime:Default, onnxruntime_pybind_state.cc:1295 CreateExecutionProviderFactoryInstance] Failed to create CUDAExecutionProvider. Require cuDNN 9.* and CUDA 13.*. Please install all dependencies as mentioned in the GPU requirements page (https://onnxruntime.ai/docs/execution-providers/CUDA-ExecutionProvider.html#requirements), make sure they're in the PATH, and that your GPU is supported.",
]
RECORDED_NO_DRIVER = [RECORDED_NO_CUBLAS[0].replace("libcublasLt.so.13", "libcuda.so.1"), RECORDED_NO_CUBLAS[1]]
RECORDED_NO_DEVICE = [  # the stand-in driver below: stdout, from onnxruntime's Python fallback
    "*************** EP Error ***************",
    "EP Error /onnxruntime_src/onnxruntime/core/providers/cuda/cuda_call.cc:154 std::conditional_t<THRW, void, onnxruntime::common::Status> onnxruntime::CudaCall(ERRTYPE, const char*, const char*, SUCCTYPE, const char*, const char*, int) [with ERRTYPE = cudaError; bool THRW = true; SUCCTYPE = cudaError; std::conditional_t<THRW, void, common::Status> = void] CUDA failure 100: no CUDA-capable device is detected ; GPU=-1 ; hostname=vm ; file=/onnxruntime_src/onnxruntime/core/providers/cuda/cuda_execution_provider.cc ; line=355 ; expr=cudaSetDevice(info_.device_id); ",
    "",
    " when using ['CUDAExecutionProvider', 'CPUExecutionProvider']",
    "Falling back to ['CPUExecutionProvider'] and retrying.",
    "****************************************",
]


@pytest.mark.parametrize(
    ("lines", "kind", "named"),
    [
        (RECORDED_NO_CUBLAS, "toolkit", "CUDA toolkit library libcublasLt.so.13 not found; `make setup-cuda` installs it"),
        (RECORDED_NO_DRIVER, "driver", "NVIDIA driver not found (libcuda.so.1); CUDA 13 needs driver >= 580"),
        (RECORDED_NO_DEVICE, "no-device", "no CUDA device (CUDA error 100: no CUDA-capable device is detected)"),
        # synthetic: the same loader line for cuDNN, cuDNN's own wording, and device errors after the libraries loaded
        (["Failed to load library x.so with error: libcudnn.so.9: cannot open shared object file: No such file or directory"], "cudnn", "cuDNN 9 library libcudnn.so.9 not found"),
        (["Could not load library libcudnn_graph.so.9. Error: libcudnn_graph.so.9: cannot open shared object file"], "cudnn", "libcudnn_graph.so.9"),
        (["EP Error ... CUDA failure 35: CUDA driver version is insufficient for CUDA runtime version ; GPU=0"], "driver-too-old", "driver >= 580"),
        (["EP Error ... CUDA failure 209: no kernel image is available for execution on the device ; GPU=0 ; file=x"], "device-error", "CUDA error 209: no kernel image is available for execution on the device"),
        (["EP Error something new went wrong when using ['CUDAExecutionProvider', 'CPUExecutionProvider']"], "device-error", "something new went wrong"),
        ([], "unknown", "onnxruntime gave no reason"),
    ],
)
def test_the_first_missing_piece_is_named(lines: list[str], kind: str, named: str):
    failure = classify_cuda_failure(lines)
    assert (failure.kind, named in failure.detail) == (kind, True), failure
    assert failure.message().startswith(CUDA_PREFIX)
    assert "\n" not in failure.message()


def test_captured_output_takes_python_and_native_writes_on_both_streams(capfd: pytest.CaptureFixture[str]):
    libc = ctypes.CDLL(None)
    with captured_output() as lines:
        print("python stdout")
        print("python stderr", file=sys.stderr)
        os.write(1, b"fd 1\n")
        os.write(2, b"\x1b[1;31mfd 2 in colour\x1b[m\n")
        libc.printf(b"C stdio, buffered\n")  # flushed before fd 1 is given back
    assert lines == ["python stdout", "python stderr", "fd 1", "fd 2 in colour", "C stdio, buffered"]
    assert capfd.readouterr() == ("", ""), "nothing leaks to the real streams"


def test_algo_search_is_explicit_and_validated():
    assert cuda_provider_options()["cudnn_conv_algo_search"] == "HEURISTIC"
    assert cuda_provider_options("exhaustive")["cudnn_conv_algo_search"] == "EXHAUSTIVE"
    with pytest.raises(ValueError, match="EXHAUSTIVE, HEURISTIC, DEFAULT"):
        cuda_provider_options("fastest")


def test_cpu_sessions_and_unknown_providers(tmp_path: Path):
    session = open_session(tiny_model(tmp_path / "tiny.onnx"), ort.SessionOptions(), "cpu")
    assert session.get_providers() == ["CPUExecutionProvider"]
    with pytest.raises(ValueError, match="cpu, cuda"):
        open_session(tmp_path / "tiny.onnx", ort.SessionOptions(), "tensorrt")


def test_node_placement_on_cpu_counts_every_node_and_leaves_no_profile(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    path = tiny_model(tmp_path / "tiny.onnx")
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(scratch))
    options = unoptimised()
    placement = node_placement(path, options, "cpu", None, np.ones((2, 4), np.float32))
    assert placement == Placement({"CPUExecutionProvider": 3}, ["Add", "MatMul", "Softmax"], 0)
    assert placement.label("fp32") == "fp32: all 3 nodes on CPU"
    assert list(scratch.iterdir()) == [], "the profile is deleted"
    assert not list(Path.cwd().glob("placement*.json")) and not list(REPO.glob("onnxruntime_profile*.json"))
    assert options.enable_profiling is False, "the caller's options are left as they were"
    fused = node_placement(path, ort.SessionOptions(), "cpu", None, np.ones((1, 4), np.float32))
    assert set(fused.nodes_by_provider) == {"CPUExecutionProvider"} and 1 <= fused.total <= 3


def test_placement_labels_and_copies():
    def event(index: int, op: str, provider: str) -> dict:
        return {"cat": "Node", "name": f"n{index}_kernel_time", "args": {"node_index": str(index), "op_name": op, "provider": provider}}

    events = [event(0, "MemcpyFromHost", "CUDAExecutionProvider"), event(1, "Conv", "CUDAExecutionProvider"),
              event(2, "QLinearConv", "CPUExecutionProvider"), event(3, "QLinearConv", "CPUExecutionProvider"),
              event(4, "DequantizeLinear", "CPUExecutionProvider"), {"cat": "Session", "name": "model_run", "args": {}}]
    mixed = _placement_from_events(events)
    assert mixed == Placement({"CUDAExecutionProvider": 1, "CPUExecutionProvider": 3}, ["DequantizeLinear", "QLinearConv"], 1)
    assert mixed.label("int8") == "int8: 3 of 4 nodes on CPU: DequantizeLinear, QLinearConv"
    assert Placement({"CUDAExecutionProvider": 40}).label() == "all 40 nodes on CUDA"
    assert Placement({"CUDAExecutionProvider": 26, "CPUExecutionProvider": 14}, ["QLinearConv"]).label("int8") == "int8: 14 of 40 nodes on CPU: QLinearConv"


def test_device_timer_on_cpu_gives_what_run_gives(tmp_path: Path):
    session = open_session(tiny_model(tmp_path / "tiny.onnx"), ort.SessionOptions(), "cpu")
    x = np.random.default_rng(0).normal(size=(5, 4)).astype(np.float32)
    timer = DeviceRun(session, "x", "y", x)
    assert timer.device == "cpu"
    assert timer() is None
    timer()
    np.testing.assert_array_equal(timer.output(), session.run(["y"], {"x": x})[0])


def test_the_doctors_probe_model_is_a_valid_conv():
    model = onnx.load_from_string(probe_model())
    onnx.checker.check_model(model, full_check=True)
    assert [n.op_type for n in model.graph.node] == ["Conv"]
    session = open_session(probe_model(), ort.SessionOptions(), "cpu")
    np.testing.assert_array_equal(session.run(None, {"x": np.ones((1, 1, 4, 4), np.float32)})[0], np.full((1, 1, 4, 4), 2, np.float32))


# --------------------------------------------------------------------------------------------------
# With the cuda extra: what really loads, and what is then missing


@needs_extra
def test_preload_maps_the_cuda13_toolkit_and_cudnn_from_the_extra():
    mapped, _ = _python(f"""
        import json
        from bench.runtimes.cuda import mapped_libraries, preload_cuda
        before = mapped_libraries({TOOLKIT + CUDNN!r})
        preload_cuda()
        print(json.dumps({{"before": before, "after": mapped_libraries({TOOLKIT + CUDNN!r})}}))
    """)
    assert not any(mapped["before"].values()), "nothing CUDA is loaded before preload_cuda()"
    for name, path in mapped["after"].items():
        assert path is not None and "/nvidia/" in path, f"{name} not mapped from the pip wheels: {path}"


@needs_extra
def test_without_a_driver_cuda_raises_naming_the_driver_and_nothing_is_timed(tmp_path: Path, system_loader: dict):
    if system_loader["libcuda.so.1"]:
        pytest.skip("this machine has an NVIDIA driver (libcuda.so.1)")
    path = tiny_model(tmp_path / "tiny.onnx")
    result, done = _python(f"""
        import json, numpy as np, onnxruntime as ort
        from bench.runtimes.cuda import ProviderUnavailable, node_placement, open_session
        out = {{}}
        for name, call in [("open_session", lambda: open_session({str(path)!r}, ort.SessionOptions(), "cuda")),
                           ("node_placement", lambda: node_placement({str(path)!r}, ort.SessionOptions(), "cuda", None, np.ones((1, 4), np.float32)))]:
            try:
                call()
                out[name] = "returned a session"
            except ProviderUnavailable as exc:
                out[name] = [exc.kind, str(exc)]
        print(json.dumps(out))
    """)
    for name in ("open_session", "node_placement"):
        kind, message = result[name]
        assert kind == "driver", result
        assert message == CUDA_PREFIX + "NVIDIA driver not found (libcuda.so.1); CUDA 13 needs driver >= 580"
        assert not any(lib in message for lib in TOOLKIT + CUDNN), "the toolkit is installed: only the driver is missing"
    assert "libcuda.so.1" not in done.stderr, "onnxruntime's own log lines were captured, not printed"


@needs_extra
def test_without_preload_the_missing_toolkit_library_is_named(tmp_path: Path, system_loader: dict):
    if system_loader["libcublasLt.so.13"]:
        pytest.skip("the system's loader paths have CUDA 13 cuBLAS")
    path = tiny_model(tmp_path / "tiny.onnx")
    result, _ = _python(f"""
        import json, onnxruntime as ort
        import bench.runtimes.cuda as p
        p._preload_log = []  # as if preload_cuda() had run and found nothing: the state without the extra
        try:
            p.open_session({str(path)!r}, ort.SessionOptions(), "cuda")
            print(json.dumps(["returned a session", ""]))
        except p.ProviderUnavailable as exc:
            print(json.dumps([exc.kind, str(exc)]))
    """)
    assert result == ["toolkit", CUDA_PREFIX + "CUDA toolkit library libcublasLt.so.13 not found; `make setup-cuda` installs it"]


@needs_extra
def test_doctor_names_the_fix(system_loader: dict):
    done = subprocess.run([sys.executable, "-m", "bench.runtimes.cuda"], capture_output=True, text=True, cwd=REPO, timeout=300, check=False)
    assert "onnxruntime " + ort.__version__ in done.stdout
    for name in TOOLKIT + CUDNN:
        assert f"{name}" in done.stdout and "/nvidia/" in next(line for line in done.stdout.splitlines() if name in line)
    if not system_loader["libcuda.so.1"]:
        assert done.returncode == 1
        assert "NVIDIA driver not found (libcuda.so.1)" in done.stdout
        assert done.stdout.rstrip().splitlines()[-1] in (
            "no GPU on this machine: CUDA cases will be skipped", "fix: install the NVIDIA driver >= 580 (it provides libcuda.so.1)")


# A stand-in for the driver's libcuda.so.1 with no device behind it. libcudart 13 dlopens libcuda.so.1,
# asks cuDriverGetVersion, then fetches every other entry point through cuGetProcAddress_v2 and calls
# cuGetExportTable and cuInit; the CUDA provider links cuTensorMapEncodeTiled directly (RTLD_NOW: it
# must exist). Everything not named answers CUDA_ERROR_NO_DEVICE, as a machine without a GPU would.
STAND_IN_DRIVER = r"""
#include <stdint.h>
#include <string.h>
typedef int CUresult;
enum { CUDA_SUCCESS = 0, CUDA_ERROR_NO_DEVICE = 100 };
static CUresult no_device(void) { return CUDA_ERROR_NO_DEVICE; }
CUresult cuInit(unsigned int flags) { (void)flags; return CUDA_ERROR_NO_DEVICE; }
CUresult cuDriverGetVersion(int *version) { if (version) *version = 13000; return CUDA_SUCCESS; }
CUresult cuDeviceGetCount(int *count) { if (count) *count = 0; return CUDA_ERROR_NO_DEVICE; }
CUresult cuGetExportTable(const void **table, const void *id) { (void)table; (void)id; return CUDA_ERROR_NO_DEVICE; }
CUresult cuTensorMapEncodeTiled(void) { return CUDA_ERROR_NO_DEVICE; }
CUresult cuGetProcAddress_v2(const char *, void **, int, uint64_t, int *);
static void *lookup(const char *name) {
  if (!strcmp(name, "cuInit")) return (void *)cuInit;
  if (!strcmp(name, "cuDriverGetVersion")) return (void *)cuDriverGetVersion;
  if (!strcmp(name, "cuDeviceGetCount")) return (void *)cuDeviceGetCount;
  if (!strcmp(name, "cuGetExportTable")) return (void *)cuGetExportTable;
  if (!strcmp(name, "cuGetProcAddress")) return (void *)cuGetProcAddress_v2;
  return (void *)no_device;
}
CUresult cuGetProcAddress_v2(const char *name, void **fn, int version, uint64_t flags, int *status) {
  (void)version; (void)flags; *fn = lookup(name); if (status) *status = 0; return CUDA_SUCCESS;
}
CUresult cuGetProcAddress(const char *name, void **fn, int version, uint64_t flags) {
  (void)version; (void)flags; *fn = lookup(name); return CUDA_SUCCESS;
}
"""


@pytest.fixture(scope="module")
def stand_in_driver(tmp_path_factory: pytest.TempPathFactory) -> Path:
    compiler = shutil.which("gcc") or shutil.which("cc")
    if compiler is None:
        pytest.skip("no C compiler for the stand-in libcuda.so.1")
    folder = tmp_path_factory.mktemp("stand-in-driver")
    (folder / "cuda.c").write_text(STAND_IN_DRIVER)
    subprocess.run([compiler, "-shared", "-fPIC", "-O1", "-Wl,-soname,libcuda.so.1", "-o", str(folder / "libcuda.so.1"), str(folder / "cuda.c")], check=True)
    return folder


@needs_extra
def test_a_driver_without_a_device_is_named_and_the_stdout_fallback_is_captured(tmp_path: Path, stand_in_driver: Path):
    path = tiny_model(tmp_path / "tiny.onnx")
    env = {"LD_LIBRARY_PATH": os.pathsep.join(filter(None, [str(stand_in_driver), os.environ.get("LD_LIBRARY_PATH")]))}
    result, done = _python(f"""
        import json, onnxruntime as ort
        from bench.runtimes.cuda import ProviderUnavailable, doctor, mapped_libraries, open_session
        try:
            open_session({str(path)!r}, ort.SessionOptions(), "cuda")
            out = {{"session": "returned"}}
        except ProviderUnavailable as exc:
            out = {{"kind": exc.kind, "message": str(exc), "log": exc.log}}
        out["driver"] = mapped_libraries(["libcuda.so.1"])["libcuda.so.1"]
        out["doctor"] = doctor()
        print(json.dumps(out))
    """, env)
    assert result.get("kind") == "no-device", result
    assert result["driver"] == str(stand_in_driver / "libcuda.so.1"), "the stand-in, not a real driver, was loaded"
    assert result["message"].startswith(CUDA_PREFIX + "no CUDA device (CUDA error 100: no CUDA-capable device is detected)")
    assert any(line.startswith("Falling back to ['CPUExecutionProvider']") for line in result["log"]), result["log"]
    assert any("EP Error" in line for line in result["log"])
    printed = done.stdout.strip().splitlines()[:-1] + done.stderr.splitlines()
    assert not [line for line in printed if "EP Error" in line or "Falling back" in line], "the fallback text leaked"
    text, code = result["doctor"]
    assert code == 1 and "CUDA error 100" in text and text.endswith("CUDA cases will be skipped")


# --------------------------------------------------------------------------------------------------
# On a machine with a GPU (skipped here): the CUDA path itself


@needs_extra
def test_on_a_gpu_cuda_runs_every_node_and_the_device_timer_matches_run(tmp_path: Path, system_loader: dict):
    if not system_loader["libcuda.so.1"]:
        pytest.skip("no NVIDIA driver (libcuda.so.1) on this machine")
    path = tiny_model(tmp_path / "tiny.onnx")
    result, _ = _python(f"""
        import json, numpy as np, onnxruntime as ort
        from bench.runtimes.cuda import DeviceRun, ProviderUnavailable, cuda_provider_options, node_placement, open_session
        x = np.random.default_rng(0).normal(size=(5, 4)).astype(np.float32)
        try:
            session = open_session({str(path)!r}, ort.SessionOptions(), "cuda", cuda_provider_options())
        except ProviderUnavailable as exc:
            print(json.dumps({{"unavailable": str(exc)}}))
            raise SystemExit
        timer = DeviceRun(session, "x", "y", x)
        timer()
        placement = node_placement({str(path)!r}, ort.SessionOptions(), "cuda", cuda_provider_options(), x)
        print(json.dumps({{"device": timer.device, "diff": float(np.abs(timer.output() - session.run(["y"], {{"x": x}})[0]).max()),
                           "label": placement.label(), "cpu": placement.cpu_nodes}}))
    """)
    if "unavailable" in result:
        pytest.skip(result["unavailable"])
    assert result["device"] == "cuda" and result["diff"] < 1e-5, result
    assert result["cpu"] == 0 and result["label"].endswith("nodes on CUDA"), result
