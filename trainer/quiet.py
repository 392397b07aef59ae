"""A quiet terminal: TensorFlow's and onnxruntime's own chatter stays out unless ``--verbose``.

What the three commands printed before any of their own lines, on a machine without a GPU:

    WARNING: All log messages before absl::InitializeLog() is called are written to STDERR
    I0000 00:00:1795599560.736354   19629 cudart_stub.cc:31] Could not find cuda drivers on your machine, GPU will not be used.
    E0000 00:00:1795599574.200678   19629 cuda_platform.cc:52] failed call to cuInit: INTERNAL: CUDA error: ...

- TensorFlow's C++ log honours ``TF_CPP_MIN_LOG_LEVEL`` (0: all, 1: no INFO, 2: no WARNING, 3: no ERROR;
  FATAL always shows), read when it first logs: :func:`before_imports` sets it to 3 unless the user set it.
  That hides the cuInit line, the oneDNN notice and the CPU-feature notice.
- The cudart_stub lines and absl's banner are written while TensorFlow is imported, before absl's
  logging is initialised, and ignore that variable. So TensorFlow is imported in one place,
  :func:`import_tensorflow`, with file descriptor 2 sent to a temporary file; afterwards every line is
  written back except the log lines below ``TF_CPP_MIN_LOG_LEVEL`` and the banner. A FATAL line, a Python
  traceback, or anything not in TensorFlow's log format always passes. The commands call it before they
  import the modules that need TensorFlow; the bench's reference rows call it where they build.
- Python: the ``tensorflow`` logger (retracing notices) and absl's Python logging are set to ERROR;
  DeprecationWarning, FutureWarning and UserWarning raised inside keras, tensorflow, absl or onnxruntime
  (about their own internals) are ignored. Warnings raised from this project's code still show.
- onnxruntime: its default logger shows errors only (``set_default_logger_severity(3)``), which drops its
  warnings ("Memcpy nodes are added", "Some nodes were not assigned to the preferred execution providers");
  the errors bench/runtimes/cuda.py reads to say why CUDA is unavailable still come.

``--verbose`` (or ``TF_CPP_MIN_LOG_LEVEL`` set by the user: its level decides what TensorFlow shows)
leaves the libraries as they are. Our own progress and ``error:`` lines are never touched.

TF Lite and LiteRT print "INFO: Created TensorFlow Lite XNNPACK delegate for CPU." themselves, ignoring
``TF_CPP_MIN_LOG_LEVEL``: bench/runtimes/reference.py and bench/runtimes/peers.py build their interpreters inside
:func:`native_stderr_filtered`, which knows that line.

One mechanism redirects native output: :func:`_redirected` sends file descriptors to a temporary file for
a block. :func:`native_stderr_filtered` writes back what is not noise; :func:`captured_output` keeps what
was written as lines, for the bench to read why onnxruntime refused CUDA.

This module imports only the standard library (onnxruntime when installed, to set its logger): it runs
before TensorFlow is imported. Each command calls :func:`configure` at the top of its module, before its
other imports.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import sys
import tempfile
import warnings
from collections.abc import Iterator, Sequence

FLAG = "--verbose"
HELP = "show TensorFlow's and onnxruntime's own log lines and warnings (hidden by default)"
TF_LEVEL = "TF_CPP_MIN_LOG_LEVEL"
QUIET_ENV = {TF_LEVEL: "3", "GRPC_VERBOSITY": "ERROR"}  # set only where the user has not set them
QUIET_LIBRARIES = r"(keras|tensorflow|tf_keras|absl|onnxruntime|google\.protobuf)(\.|$)"
ORT_ERROR = 3  # onnxruntime severities: 0 verbose, 1 info, 2 warning, 3 error, 4 fatal

# TensorFlow's two log formats: absl's "I0000 00:00:1795599560.736354   19629 cudart_stub.cc:31] ..."
# and the older "2025-09-17 14:44:05.157831: I external/.../cudart_stub.cc:32] ...".
_ABSL_LINE = re.compile(r"^(?P<severity>[IWEF])\d{4} \d\d:\d\d:\d+\.\d+\s+\d+\s+\S+:\d+\] ")
_TSL_LINE = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d+: (?P<severity>[IWEF]) \S+:\d+\] ")
_BANNER = "WARNING: All log messages before absl::InitializeLog() is called are written to STDERR"
# TF Lite's own log ("INFO: Created TensorFlow Lite XNNPACK delegate for CPU."): its INFO lines only.
_TFLITE_INFO = re.compile(r"^(VERBOSE|INFO): ")
# The TF Lite converter's quantizer states its settings on a bare line of its own when it quantizes a model
# (LiteRT's full-integer int8 in bench/runtimes/peers.py): information, as its INFO lines are.
_TFLITE_QUANTIZER = re.compile(r"^fully_quantize: \d+, inference_type: \d+, input_inference_type: \w+, "
                               r"output_inference_type: \w+$")
# The second line of cpu_feature_guard's INFO message (the only multi-line one seen at import).
_CONTINUATION = re.compile(r"^To enable the following instructions: .* rebuild TensorFlow with the appropriate compiler flags\.$")
_SEVERITY = {"I": 0, "W": 1, "E": 2, "F": 3}
ANSI = re.compile(r"\x1b\[[0-9;]*m")

_state = {"verbose": None}


def verbose_requested(argv: Sequence[str] | None = None) -> bool:
    """Whether ``--verbose`` is among the options (``sys.argv[1:]`` by default; not after a ``--``)."""
    args = list(sys.argv[1:] if argv is None else argv)
    if "--" in args:
        args = args[: args.index("--")]
    return FLAG in args


def add_flag(parser):  # an argparse parser (argparse itself is not imported here for this)
    """Add ``--verbose`` to ``parser``; returns it."""
    parser.add_argument(FLAG, action="store_true", help=HELP)
    return parser


def min_level() -> int:
    """TensorFlow's ``TF_CPP_MIN_LOG_LEVEL`` as a number, 0 where unset or not a number."""
    try:
        return max(0, min(3, int(os.environ.get(TF_LEVEL, "0"))))
    except ValueError:
        return 0


def is_noise(line: str, level: int | None = None) -> bool:
    """Whether a line written while TensorFlow was imported is below ``TF_CPP_MIN_LOG_LEVEL`` (never a FATAL one)."""
    level = min_level() if level is None else level
    text = line.rstrip("\r\n")
    if text == _BANNER or _CONTINUATION.match(text) or _TFLITE_INFO.match(text) or _TFLITE_QUANTIZER.match(text):
        return level >= 1
    found = _ABSL_LINE.match(text) or _TSL_LINE.match(text)
    if found is None:
        return False
    severity = found.group("severity")
    return severity != "F" and _SEVERITY[severity] < level


@contextlib.contextmanager
def _redirected(fds: tuple[int, ...]) -> Iterator[list[str]]:
    """Run the block with ``fds`` (and ``sys.stdout``/``sys.stderr`` where they are among them) written to one
    temporary file, then restore them; the list is filled with what was written, in order, on exit.

    Native code (absl, TensorFlow, onnxruntime's logger) writes to the fds directly, so swapping
    ``sys.stderr`` alone cannot catch it; the Python streams are swapped too because they need not be
    fds 1/2 (pytest, notebooks). Redirection is process-wide: other threads' output lands here too. If a
    descriptor cannot be redirected (closed), the block runs as is.
    """
    lines: list[str] = []
    _flush()
    try:
        saved = {fd: os.dup(fd) for fd in fds}
    except OSError:
        yield lines
        return
    streams = {1: "stdout", 2: "stderr"}
    python = {fd: getattr(sys, streams[fd]) for fd in fds if fd in streams}
    with tempfile.TemporaryFile(mode="w+b") as sink:
        try:
            for fd in fds:
                os.dup2(sink.fileno(), fd)
            for fd in python:
                setattr(sys, streams[fd], open(fd, "w", encoding="utf-8", errors="replace", buffering=1, closefd=False))  # noqa: SIM115
            yield lines
        finally:
            _flush()
            for fd, stream in python.items():
                setattr(sys, streams[fd], stream)
            for fd, copy in saved.items():
                os.dup2(copy, fd)
                os.close(copy)
            sink.seek(0)
            lines.extend(ANSI.sub("", line) for line in sink.read().decode("utf-8", errors="replace").splitlines(keepends=True))


@contextlib.contextmanager
def captured_output() -> Iterator[list[str]]:
    """Capture everything written to stdout and stderr inside the block, native code and Python alike, as
    lines without their newline or terminal colour codes (onnxruntime's logger writes to fd 2, but its
    Python layer print()s its "EP Error ... Falling back" message to stdout: one file keeps the order)."""
    found: list[str] = []
    try:
        with _redirected((1, 2)) as lines:
            yield found
    finally:
        found.extend(line.rstrip("\r\n") for line in lines)


@contextlib.contextmanager
def native_stderr_filtered() -> Iterator[None]:
    """Run the block with file descriptor 2 in a temporary file, then write back what is not noise, in order
    (an exception included)."""
    lines: list[str] = []
    try:
        with _redirected((2,)) as lines:
            yield
    finally:
        level = min_level()
        kept = "".join(line for line in lines if not is_noise(line, level))
        if kept:
            with contextlib.suppress(OSError):
                os.write(2, kept.encode("utf-8", errors="replace"))


def _flush() -> None:
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            stream.flush()
    with contextlib.suppress(Exception):  # C stdio buffers of native code, before the fds move
        import ctypes  # noqa: PLC0415 - only where a buffer may be pending

        ctypes.CDLL(None).fflush(None)


def import_tensorflow():
    """TensorFlow, imported here the first time so its import-time native lines are filtered (unless verbose)."""
    if sys.modules.get("tensorflow") is not None:  # None there: made unimportable (a test), import raises
        return sys.modules["tensorflow"]
    if _state["verbose"]:
        import tensorflow  # noqa: PLC0415
    else:
        with native_stderr_filtered():
            import tensorflow  # noqa: PLC0415
    _quiet_python_logging()  # absl's Python logging exists now
    return tensorflow


def configure(verbose: bool = False) -> None:
    """A command's quiet setup, before it imports TensorFlow: the environment TensorFlow reads when it first
    logs, the Python loggers and warnings, and onnxruntime's logger.

    Quiet: ``TF_CPP_MIN_LOG_LEVEL=3`` and ``GRPC_VERBOSITY=ERROR`` unless the user set them. Verbose:
    ``TF_CPP_MIN_LOG_LEVEL=0`` unless set, nothing filtered.
    """
    _state["verbose"] = verbose
    if verbose:
        os.environ.setdefault(TF_LEVEL, "0")
        return
    for name, value in QUIET_ENV.items():
        os.environ.setdefault(name, value)
    for category in (DeprecationWarning, FutureWarning, UserWarning):
        warnings.filterwarnings("ignore", category=category, module=QUIET_LIBRARIES)
    _quiet_python_logging()
    with contextlib.suppress(ImportError):
        import onnxruntime  # noqa: PLC0415 - installed with every extra; its logger is process-wide

        onnxruntime.set_default_logger_severity(ORT_ERROR)


def _quiet_python_logging() -> None:
    if _state["verbose"]:
        return
    logging.getLogger("tensorflow").setLevel(logging.ERROR)  # retracing notices, deprecation logs
    absl_logging = sys.modules.get("absl.logging")  # its logger is absl's own class: only once absl made it
    if absl_logging is not None:
        with contextlib.suppress(Exception):
            absl_logging.set_verbosity(absl_logging.ERROR)
