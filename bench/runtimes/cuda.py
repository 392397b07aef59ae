"""onnxruntime's execution providers, honestly: open a session on exactly the provider asked for, say
precisely why CUDA is not there when it is not, show where each node runs, and time device work only.

``fmnist-bench doctor`` (or ``python -m bench.runtimes.cuda``) says which CUDA pieces this machine has and
the one step that fixes what is missing. Imports no TensorFlow.
"""

from __future__ import annotations

import contextlib
import ctypes
import fnmatch
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType

import numpy as np
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper

from bench.runtimes.base import ProviderUnavailable
from bench.settings import CUDNN_ALGO_SEARCH
from trainer.quiet import ANSI, captured_output

PROVIDERS = {"cpu": "CPUExecutionProvider", "cuda": "CUDAExecutionProvider"}
CUDA_PREFIX = "CUDAExecutionProvider requested but the session runs on CPU only: "
MIN_DRIVER = "580"  # CUDA 13.0's minimum Linux driver (R580)
SETUP_HINT = "`make setup-cuda` installs it"
OPTIONAL_LIBRARIES = {"cufft"}  # only FFT ops need it


def _build_info() -> ModuleType | None:
    try:
        from onnxruntime.capi import build_and_package_info  # noqa: PLC0415 - absent in some builds
    except ImportError:
        return None
    return build_and_package_info


def _cuda_major() -> str:
    """The CUDA major version this onnxruntime was built for ("13" for onnxruntime-gpu 1.31)."""
    return str(getattr(_build_info(), "cuda_version", "") or "13").split(".")[0]


def cuda_libraries() -> dict[str, str]:
    """What the CUDA provider loads, by role -> soname (CUDA 13: cuFFT is .so.12, cuRAND .so.10)."""
    major = _cuda_major()
    return {
        "cudart": f"libcudart.so.{major}",
        "cublasLt": f"libcublasLt.so.{major}",
        "cublas": f"libcublas.so.{major}",
        "curand": "libcurand.so.10",
        "cufft": f"libcufft.so.{12 if int(major) >= 13 else 11}",
        "cudnn": "libcudnn.so.9",
        "driver": "libcuda.so.1",
    }


# --- Loading and capturing


_preload_lock = threading.Lock()
_preload_log: list[str] | None = None


def preload_cuda() -> None:
    """Load the pip-installed CUDA and cuDNN libraries (nvidia/cu13, nvidia/cudnn) into the process.

    The CUDA provider's dlopen finds them only this way: the wheels put them where no loader path
    points. Once per process; its "Failed to load ..." prints are kept off the terminal (doctor() lists which
    libraries are mapped and which are not found)."""
    global _preload_log  # noqa: PLW0603 - once per process by design
    with _preload_lock:
        if _preload_log is not None:
            return
        preload = getattr(ort, "preload_dlls", None)  # onnxruntime < 1.21 has none: the system paths must do
        with captured_output() as lines:
            try:
                if preload is not None:
                    preload(cuda=True, cudnn=True)
            except (OSError, RuntimeError) as exc:
                print(f"preload_dlls failed: {exc}")
        _preload_log = lines


def mapped_libraries(patterns: Iterable[str]) -> dict[str, str | None]:
    """Which shared libraries are mapped into this process: pattern -> path of the first match, or None.

    A pattern matches a file name exactly, as a prefix before a version dot (libcudart.so.13 matches
    libcudart.so.13.0.96) or as a glob (libcudnn*.so.9). Reads /proc/self/maps (Linux only; elsewhere None).
    """
    names: dict[str, str] = {}  # path -> file name, in mapping order
    with contextlib.suppress(OSError), open("/proc/self/maps", encoding="utf-8", errors="replace") as maps:
        for line in maps:
            if len(parts := line.split(maxsplit=5)) == 6 and parts[5].startswith("/"):
                names.setdefault(parts[5].strip(), os.path.basename(parts[5].strip()))
    return {pattern: next((path for path, name in names.items()
                           if fnmatch.fnmatch(name, pattern) or fnmatch.fnmatch(name, f"{pattern}.*")), None)
            for pattern in patterns}


# --- Why CUDA is not there


@dataclass(frozen=True)
class Failure:
    """The first missing piece: ``kind`` (see ProviderUnavailable) and a one-line ``detail``."""

    kind: str
    detail: str

    def message(self) -> str:
        return CUDA_PREFIX + self.detail


_CANNOT_OPEN = re.compile(r"(lib[\w+-]+\.so(?:\.\d+)*): cannot open shared object file")
_LOAD_ERROR = re.compile(r"Failed to load library \S+ with error: ([^\n]+)")
_CUDA_FAILURE = re.compile(r"CUDA (?:failure|error) (\d+): ([^;\n]+)")
_CUDNN_FAILURE = re.compile(r"CUDNN (?:failure|error) (\d+): ([^;\n]+)")
_CUDNN_MISSING = re.compile(
    r"(?:Could not load|Unable to load|Failed to load|cannot open)[^\n]*?(libcudnn\w*\.so\.\d+)"
    r"|(libcudnn\w*\.so\.\d+)[^\n]*?(?:cannot open|not found)"
)
_EP_ERROR = re.compile(r"EP Error:? (.+?)(?: when using \[| using \[|\n\s*\n|$)", re.S)
NOT_BUILT = Failure("not-built", "this onnxruntime has no CUDA provider; `make setup-cuda` installs onnxruntime-gpu")


def classify_cuda_failure(lines: Iterable[str]) -> Failure:
    """Name the first missing piece from what onnxruntime wrote while creating a CUDA session.

    Checked in the order the provider needs them: its shared libraries (toolkit, cuDNN, driver), then
    the device (error 100: none; 35: driver too old; anything else verbatim).
    """
    text = ANSI.sub("", "\n".join(lines))
    if "not in available provider names" in text:
        return NOT_BUILT
    if missing := _CANNOT_OPEN.search(text) or _CUDNN_MISSING.search(text):
        return _missing_library(next(name for name in missing.groups() if name))
    if cuda := _CUDA_FAILURE.search(text):
        code, what = int(cuda.group(1)), cuda.group(2).strip()
        if code == 100:
            visible = os.environ.get("CUDA_VISIBLE_DEVICES", "(unset)")
            return Failure("no-device", f"no CUDA device (CUDA error 100: {what}); CUDA_VISIBLE_DEVICES={visible}")
        if code == 35:  # cudaErrorInsufficientDriver
            needs = f"CUDA {_cuda_major()} needs driver >= {MIN_DRIVER}"
            return Failure("driver-too-old", f"NVIDIA driver too old (CUDA error 35: {what}); {needs}")
        return Failure("device-error", f"CUDA error {code}: {what}")
    if cudnn := _CUDNN_FAILURE.search(text):
        return Failure("device-error", f"cuDNN error {cudnn.group(1)}: {cudnn.group(2).strip()}")
    if load := _LOAD_ERROR.search(text):  # e.g. an undefined symbol: a version mix-up
        return Failure("toolkit", f"{load.group(1).strip()} (reinstall with `make setup-cuda`)")
    if ep := _EP_ERROR.search(text):
        return Failure("device-error", " ".join(ep.group(1).split())[:500])
    if created := re.search(r"Failed to create CUDAExecutionProvider[^\n]*", text):
        return Failure("unknown", created.group(0).strip())
    return Failure("unknown", "onnxruntime gave no reason (run `fmnist-bench doctor`)")


def _missing_library(name: str) -> Failure:
    if name.startswith("libcuda.so"):
        return Failure("driver", f"NVIDIA driver not found ({name}); CUDA {_cuda_major()} needs driver >= {MIN_DRIVER}")
    if name.startswith("libcudnn"):
        return Failure("cudnn", f"cuDNN 9 library {name} not found; {SETUP_HINT}")
    return Failure("toolkit", f"CUDA toolkit library {name} not found; {SETUP_HINT}")


# --- Sessions


def cuda_provider_options(algo_search: str = "HEURISTIC") -> dict[str, str]:
    """CUDA provider options with cuDNN's convolution algorithm search explicit.

    onnxruntime's default is EXHAUSTIVE: the first run of every input shape benchmarks all algorithms,
    which a latency measurement must either warm up past or avoid; HEURISTIC picks one without running them.
    """
    choice = algo_search.upper()
    if choice not in CUDNN_ALGO_SEARCH:
        raise ValueError(f"cudnn_conv_algo_search must be one of {', '.join(CUDNN_ALGO_SEARCH)}, not {algo_search!r}")
    return {"device_id": "0", "cudnn_conv_algo_search": choice}


def open_session(path: str | os.PathLike[str] | bytes, options: ort.SessionOptions, provider: str,
                 provider_options: dict[str, str] | None = None) -> ort.InferenceSession:
    """An InferenceSession on ``provider`` ("cpu" or "cuda"; ``path`` may also be the model's bytes), or
    ProviderUnavailable: never a CPU session for a CUDA request. Nodes CUDA has no kernel for still run on CPU
    (see node_placement)."""
    if provider not in PROVIDERS:
        raise ValueError(f"provider must be one of {', '.join(PROVIDERS)}, not {provider!r}")
    model = path if isinstance(path, bytes) else os.fspath(path)
    if provider == "cpu":
        return ort.InferenceSession(model, sess_options=options, providers=[PROVIDERS["cpu"]])
    if PROVIDERS["cuda"] not in ort.get_available_providers():
        raise ProviderUnavailable(NOT_BUILT.message(), NOT_BUILT.kind)
    preload_cuda()
    with captured_output() as log:
        session = ort.InferenceSession(model, sess_options=options,
                                       providers=[(PROVIDERS["cuda"], dict(provider_options or {})), PROVIDERS["cpu"]])
    if PROVIDERS["cuda"] not in session.get_providers():
        failure = classify_cuda_failure(log)
        del session  # now, not with the traceback: a profiling session writes its file when destroyed
        raise ProviderUnavailable(failure.message(), failure.kind, log)
    # Without this, an EP failure at run time prints to stdout and silently re-runs on the CPU.
    session.disable_fallback()
    return session


# --- Where the nodes run


@dataclass(frozen=True)
class Placement:
    """Where onnxruntime ran each node of the optimised graph in one profiled run.

    ``nodes_by_provider``: full provider name -> nodes; ``cpu_op_types``: op types of the nodes left on
    the CPU (sorted, unique); ``copies``: Memcpy nodes onnxruntime inserted between providers (not counted
    as nodes).
    """

    nodes_by_provider: dict[str, int]
    cpu_op_types: list[str] = field(default_factory=list)
    copies: int = 0

    @property
    def total(self) -> int:
        return sum(self.nodes_by_provider.values())

    @property
    def cpu_nodes(self) -> int:
        return self.nodes_by_provider.get(PROVIDERS["cpu"], 0)

    def label(self, prefix: str = "") -> str:
        """"int8: 14 of 40 nodes on CPU: QLinearConv" or "all 40 nodes on CUDA"."""
        head = f"{prefix}: " if prefix else ""
        if len(self.nodes_by_provider) == 1:
            (only,) = self.nodes_by_provider
            return f"{head}all {self.total} nodes on {only.removesuffix('ExecutionProvider')}"
        if self.cpu_nodes:
            return f"{head}{self.cpu_nodes} of {self.total} nodes on CPU: {', '.join(self.cpu_op_types)}"
        return head + ", ".join(f"{n} of {self.total} nodes on {p.removesuffix('ExecutionProvider')}"
                                for p, n in sorted(self.nodes_by_provider.items()))


def node_placement(path: str | os.PathLike[str] | bytes, options: ort.SessionOptions, provider: str,
                   provider_options: dict[str, str] | None, sample: np.ndarray) -> Placement:
    """Run ``sample`` once under onnxruntime's profiler and count, per provider, the nodes it ran.

    The profile is the only public record of the partitioning after graph optimisation (a "CUDA"
    session of an int8 QDQ graph runs its QLinearConv nodes on the CPU). ``options`` is restored and the
    profile file deleted afterwards.
    """
    saved = (options.enable_profiling, options.profile_file_prefix)
    with tempfile.TemporaryDirectory(prefix="fmnist-placement-") as folder:
        options.enable_profiling = True
        options.profile_file_prefix = str(Path(folder) / "placement")
        try:
            session = open_session(path, options, provider, provider_options)
        finally:
            options.enable_profiling, options.profile_file_prefix = saved
        try:
            session.run(None, {session.get_inputs()[0].name: sample})
        finally:
            profile = session.end_profiling()
        events = json.loads(Path(profile).read_text(encoding="utf-8"))
    return _placement_from_events(events)


def _placement_from_events(events: list[dict]) -> Placement:
    nodes: dict[str, tuple[str, str]] = {}  # node -> (provider, op type): one kernel event per node counted
    for event in events:
        args = event.get("args") or {}
        if event.get("cat") == "Node" and "provider" in args and str(event.get("name", "")).endswith("_kernel_time"):
            nodes.setdefault(str(args.get("node_index", event["name"])), (args["provider"], args.get("op_name", "?")))
    kernels = [(provider, op) for provider, op in nodes.values() if op not in ("MemcpyFromHost", "MemcpyToHost")]
    cpu_ops = sorted({op for provider, op in kernels if provider == PROVIDERS["cpu"]})
    return Placement(dict(Counter(provider for provider, _ in kernels)), cpu_ops, len(nodes) - len(kernels))


# --- Device-only timing


class DeviceRun:
    """``run()`` executes the session once on data already on its device and waits for it to finish.

    session.run() copies the input to the GPU and the output back on every call, so its time is mostly
    PCIe for small models; this binds both to device memory once.
    """

    def __init__(self, session: ort.InferenceSession, input_name: str, output_name: str, x: np.ndarray):
        self.session = session
        self.device = "cuda" if PROVIDERS["cuda"] in session.get_providers() else "cpu"
        self._x = np.ascontiguousarray(x)  # an OrtValue on 'cpu' borrows this buffer: keep it alive
        self._input = ort.OrtValue.ortvalue_from_numpy(self._x, self.device, 0)
        self.binding = session.io_binding()
        self.binding.bind_ortvalue_input(input_name, self._input)
        self.binding.bind_output(output_name, self.device, 0)
        # One untimed run sizes the output; binding that buffer keeps later runs allocation-free.
        # (On CUDA it also pays cuDNN's algorithm search for this shape.)
        self.session.run_with_iobinding(self.binding)
        self._output = self.binding.get_outputs()[0]
        self.binding.bind_ortvalue_output(output_name, self._output)

    def __call__(self) -> None:
        self.session.run_with_iobinding(self.binding)
        self.binding.synchronize_outputs()

    def output(self) -> np.ndarray:
        """The last run's output copied to the host (outside any timed call)."""
        return self._output.numpy()



# --- Doctor


def probe_model() -> bytes:
    """A 1x1 Conv (float32, x[1,1,4,4] * 2 -> y): the doctor needs a model that touches cuDNN."""
    graph = helper.make_graph(
        [helper.make_node("Conv", ["x", "w"], ["y"], name="conv")], "probe",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 1, 4, 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 1, 4, 4])],
        initializer=[numpy_helper.from_array(np.full((1, 1, 1, 1), 2.0, np.float32), "w")])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)], ir_version=8).SerializeToString()


def _nvidia_smi() -> str:
    if shutil.which("nvidia-smi") is None:
        return "nvidia-smi not found"
    try:
        done = subprocess.run(["nvidia-smi", "--query-gpu=name,driver_version,memory.total", "--format=csv,noheader"],
                              capture_output=True, text=True, timeout=20, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"nvidia-smi failed: {exc}"
    out = (done.stdout or done.stderr).strip().replace("\n", "; ")
    return out or f"nvidia-smi exited {done.returncode} with no output"


def _nvidia_pci_device() -> bool:
    """Whether the PCI bus shows an NVIDIA display/3D controller (a GPU that may only lack its driver)."""
    for device in Path("/sys/bus/pci/devices").glob("*"):
        with contextlib.suppress(OSError):
            if (device / "vendor").read_text().strip() == "0x10de" and (device / "class").read_text().startswith("0x03"):
                return True
    return False


def _probe_failure() -> Failure | None:
    """Why a Conv cannot run on CUDA here, None when it does."""
    try:
        session = open_session(probe_model(), ort.SessionOptions(), "cuda", cuda_provider_options())
    except ProviderUnavailable as exc:
        return Failure(exc.kind, str(exc).removeprefix(CUDA_PREFIX))
    error = ""
    with captured_output() as run_log:  # the first Conv loads cuDNN's sub-libraries: a last place to fail
        try:
            session.run(None, {"x": np.ones((1, 1, 4, 4), np.float32)})
        except Exception as exc:  # noqa: BLE001 - whatever the run raises is the answer here
            error = str(exc)
    return classify_cuda_failure([*run_log, error]) if error else None


def doctor() -> tuple[str, int]:
    """A report of this machine's CUDA readiness for onnxruntime and the exit code (0: CUDA usable)."""
    info = _build_info()
    build = "no build info" if info is None else (f"{getattr(info, 'package_name', 'onnxruntime')}, built for CUDA "
                                                  f"{getattr(info, 'cuda_version', '') or 'none'}")
    available = ort.get_available_providers()
    lines = [f"onnxruntime {ort.__version__} ({build}); providers: {', '.join(available)}"]
    if PROVIDERS["cuda"] not in available:
        return "\n".join([*lines, f"fix: {NOT_BUILT.detail}"]), 1

    preload_cuda()
    libraries = cuda_libraries()
    for name in libraries.values():  # what preload did not map: try the loader's own paths (and the driver)
        if mapped_libraries([name])[name] is None:
            with contextlib.suppress(OSError):
                ctypes.CDLL(name)
    mapped = mapped_libraries(libraries.values())
    lines.append("CUDA libraries (after onnxruntime.preload_dlls()):")
    for role, name in libraries.items():
        where = mapped[name] or ("not found" + (" (optional: FFT ops only)" if role in OPTIONAL_LIBRARIES else ""))
        lines.append(f"  {role:<9} {name:<18} {where}")
    lines.append(f"GPU: {_nvidia_smi()}")

    failure = _probe_failure()
    if failure is None:
        lines.append("CUDA: a probe Conv ran on CUDAExecutionProvider: CUDA cases will be timed")
        return "\n".join(lines), 0
    lines.append(f"CUDA: not usable: {failure.detail}")
    missing = [name for role, name in libraries.items()
               if role not in OPTIONAL_LIBRARIES and role != "driver" and mapped[name] is None]
    if missing or failure.kind in ("toolkit", "cudnn", "not-built"):
        lines.append("fix: `make setup-cuda` (installs onnxruntime-gpu[cuda,cudnn] and nvidia-cublas into .venv; "
                     f"missing: {', '.join(missing) or 'see above'})")
    elif failure.kind == "driver-too-old" or (failure.kind == "driver" and _nvidia_pci_device()):
        lines.append(f"fix: install the NVIDIA driver >= {MIN_DRIVER} (it provides libcuda.so.1)")
    elif failure.kind == "driver":
        lines.append("no GPU on this machine: CUDA cases will be skipped")
    elif failure.kind == "no-device":
        lines.append("no GPU on this machine (or none visible: check CUDA_VISIBLE_DEVICES): CUDA cases will be skipped")
    else:
        lines.append("fix: none known; the error above is onnxruntime's own")
    return "\n".join(lines), 1


def main() -> int:
    text, code = doctor()
    print(text)
    return code


if __name__ == "__main__":
    sys.exit(main())
