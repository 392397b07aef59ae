"""A quiet terminal: TensorFlow's and onnxruntime's own chatter stays out unless ``--verbose``.

:func:`configure` (each command, first) sets ``TF_CPP_MIN_LOG_LEVEL=3`` unless the user set it, quiets the
libraries' Python loggers and warnings, and onnxruntime's logger. TensorFlow's import-time lines (cudart_stub,
absl's banner) ignore that variable, so :func:`import_tensorflow` imports it inside :func:`native_stderr_filtered`:
fd 2 goes to a temporary file (native code writes to it directly), then every line but those below the level
(:func:`is_noise`) is written back; a FATAL line, a traceback or anything not in TensorFlow's format always passes.
:func:`captured_output` keeps what was written instead, for the bench to read why onnxruntime refused CUDA.
``--verbose`` (or the user's ``TF_CPP_MIN_LOG_LEVEL``) leaves the libraries as they are. Standard library only
(onnxruntime when installed): it runs before TensorFlow is imported.
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
TF_LEVEL = "TF_CPP_MIN_LOG_LEVEL"  # 0: all, 1: no INFO, 2: no WARNING, 3: no ERROR (FATAL always shows)
QUIET_ENV = {TF_LEVEL: "3", "GRPC_VERBOSITY": "ERROR"}  # set only where the user has not set them
QUIET_LIBRARIES = r"(keras|tensorflow|tf_keras|absl|onnxruntime|google\.protobuf)(\.|$)"
ORT_ERROR = 3  # onnxruntime severities: 0 verbose, 1 info, 2 warning, 3 error, 4 fatal

# TensorFlow's two log formats: absl's "I0000 00:00:1795599560.736354   19629 cudart_stub.cc:31] ..."
# and the older "2025-09-17 14:44:05.157831: I external/.../cudart_stub.cc:32] ...".
_TF_LINE = re.compile(r"^(?:(?P<absl>[IWEF])\d{4} \d\d:\d\d:\d+\.\d+\s+\d+\s+"
                      r"|\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d+: (?P<tsl>[IWEF]) )\S+:\d+\] ")
_SEVERITY = {"I": 0, "W": 1, "E": 2, "F": 3}
# Lines that inform, shown at level 0 only: absl's banner, TF Lite's own INFO log, the TF Lite quantizer's
# settings (LiteRT's int8 in bench/runtimes/peers.py), and the second line of cpu_feature_guard's notice.
_INFO_LINE = re.compile(
    r"WARNING: All log messages before absl::InitializeLog\(\) is called are written to STDERR"
    r"|(VERBOSE|INFO): .*"
    r"|fully_quantize: \d+, inference_type: \d+, input_inference_type: \w+, output_inference_type: \w+"
    r"|To enable the following instructions: .* rebuild TensorFlow with the appropriate compiler flags\.")
ANSI = re.compile(r"\x1b\[[0-9;]*m")

_state = {"verbose": None}


def verbose_requested(argv: Sequence[str] | None = None) -> bool:
    """Whether ``--verbose`` is among the options (``sys.argv[1:]`` by default; not after a ``--``)."""
    args = list(sys.argv[1:] if argv is None else argv)
    return FLAG in args[: args.index("--") if "--" in args else len(args)]


def add_flag(parser):  # an argparse parser
    parser.add_argument(FLAG, action="store_true",
                        help="show TensorFlow's and onnxruntime's own log lines and warnings (hidden by default)")
    return parser


def min_level() -> int:
    """``TF_CPP_MIN_LOG_LEVEL`` as a number from 0 to 3, 0 where unset or not a number."""
    try:
        return max(0, min(3, int(os.environ.get(TF_LEVEL, "0"))))
    except ValueError:
        return 0


def is_noise(line: str, level: int | None = None) -> bool:
    """Whether a line of native output is below ``TF_CPP_MIN_LOG_LEVEL`` (never a FATAL one)."""
    level = min_level() if level is None else level
    text = line.rstrip("\r\n")
    if _INFO_LINE.fullmatch(text):
        return level >= 1
    found = _TF_LINE.match(text)
    severity = found and (found["absl"] or found["tsl"])
    return bool(severity) and severity != "F" and _SEVERITY[severity] < level


@contextlib.contextmanager
def _redirected(fds: tuple[int, ...], keepends: bool) -> Iterator[list[str]]:
    """Run the block with ``fds`` (and ``sys.stdout``/``sys.stderr`` among them) written to one temporary file;
    the list is filled with the lines written, in order, without colour codes, on exit.

    The Python streams are swapped too because they need not be fds 1/2 (pytest, notebooks). Redirection is
    process-wide: other threads' output lands here too. A descriptor that cannot be redirected (closed): the
    block runs as is.
    """
    lines: list[str] = []
    _flush()
    try:
        saved = {fd: os.dup(fd) for fd in fds}
    except OSError:
        yield lines
        return
    names = {fd: name for fd, name in ((1, "stdout"), (2, "stderr")) if fd in fds}
    python = {fd: getattr(sys, name) for fd, name in names.items()}
    with tempfile.TemporaryFile(mode="w+b") as sink:
        try:
            for fd in fds:
                os.dup2(sink.fileno(), fd)
            for fd, name in names.items():
                stream = open(fd, "w", encoding="utf-8", errors="replace", buffering=1, closefd=False)  # noqa: SIM115
                setattr(sys, name, stream)
            yield lines
        finally:
            _flush()
            for fd, stream in python.items():
                setattr(sys, names[fd], stream)
            for fd, copy in saved.items():
                os.dup2(copy, fd)
                os.close(copy)
            sink.seek(0)
            text = ANSI.sub("", sink.read().decode("utf-8", errors="replace"))
            lines.extend(text.splitlines(keepends=keepends))


def captured_output() -> contextlib.AbstractContextManager[list[str]]:
    """Everything written to stdout and stderr inside the block, native and Python, as lines without newlines or
    colour codes (onnxruntime logs to fd 2 but print()s its "Falling back" note to stdout: one file keeps the order)."""
    return _redirected((1, 2), keepends=False)


@contextlib.contextmanager
def native_stderr_filtered() -> Iterator[None]:
    """Run the block with fd 2 in a temporary file, then write back what is not noise, in order (on errors too)."""
    lines: list[str] = []
    try:
        with _redirected((2,), keepends=True) as lines:
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
    with contextlib.nullcontext() if _state["verbose"] else native_stderr_filtered():
        import tensorflow  # noqa: PLC0415
    _quiet_python_logging()  # absl's Python logging exists now
    return tensorflow


def configure(verbose: bool = False) -> None:
    """A command's quiet setup, before it imports TensorFlow. Verbose: ``TF_CPP_MIN_LOG_LEVEL=0`` unless set."""
    _state["verbose"] = verbose
    if verbose:
        os.environ.setdefault(TF_LEVEL, "0")
        return
    for name, value in QUIET_ENV.items():
        os.environ.setdefault(name, value)
    for category in (DeprecationWarning, FutureWarning, UserWarning):  # about the libraries' own internals
        warnings.filterwarnings("ignore", category=category, module=QUIET_LIBRARIES)
    _quiet_python_logging()
    with contextlib.suppress(ImportError):
        import onnxruntime  # noqa: PLC0415 - installed with every extra; its logger is process-wide

        onnxruntime.set_default_logger_severity(ORT_ERROR)  # errors only: bench/runtimes/cuda.py reads them


def _quiet_python_logging() -> None:
    if _state["verbose"]:
        return
    logging.getLogger("tensorflow").setLevel(logging.ERROR)  # retracing notices, deprecation logs
    absl_logging = sys.modules.get("absl.logging")  # its logger is absl's own class: only once absl made it
    if absl_logging is not None:
        with contextlib.suppress(Exception):
            absl_logging.set_verbosity(absl_logging.ERROR)
