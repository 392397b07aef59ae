"""Fashion-MNIST loading, validation, class mapping and the report's split (docs/data.md).

Imports no TensorFlow: bench and exporter use this on machines without it; only the last-resort Keras
download imports Keras, lazily. Sources, in look-up order: ``--data``, ``$FMNIST_DATA``, Debian's
``dataset-fashion-mnist`` folder, Keras' cache, Keras' download.

Every loader treats its file as hostile, and every failure is one DataError line that starts with the file's
path. IDX and ``.npz`` headers are checked against the file's real size and ``$FMNIST_MAX_IMAGES`` before
anything is allocated. The report's ``.npy`` is a pickle: a ``find_class`` allow-list admits only the globals
numpy writes for a dict of arrays (each wrapped to admit only numpy's arguments), and the unpickling runs in a
child process under memory and time limits, since what the C unpickler allocates from a pickle's lengths and
memo indices cannot be checked beforehand. The child writes the two arrays as plain ``.npy`` files, which the
parent reads like ``.npz`` members. Pixels are accepted as uint8 0..255 (scaled by 1/255) or float in [0, 1].
"""

from __future__ import annotations

import errno
import gzip
import hashlib
import io
import math
import multiprocessing
import os
import pickle
import signal
import stat
import tempfile
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

IMAGE_SHAPE = (28, 28)
NUM_CLASSES = 5
DEBIAN_DIR = Path("/usr/share/datasets/fashion-mnist")
KERAS_CACHE_DIR = Path.home() / ".keras" / "datasets" / "fashion-mnist"
FIX_COMMAND = "sudo apt-get install -y dataset-fashion-mnist"

# The ten original Fashion-MNIST classes, in label order.
FASHION_CLASSES = (
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
    "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
)
# The report's data file has 5 classes and does not say how the 10 were merged, so
# the mapping is a parameter. Default: consecutive pairs (label // 2).
DEFAULT_CLASS_MAP: tuple[int, ...] = tuple(label // 2 for label in range(10))

# The report's protocol: 80/10/10, random_state 0, test is the first half of the 20%.
TEST_FRACTION = 0.2
SPLIT_SEED = 0

IDX_TRAIN_IMAGES = "train-images-idx3-ubyte.gz"
IDX_TRAIN_LABELS = "train-labels-idx1-ubyte.gz"

# Ceiling on the images any file may declare (Fashion-MNIST has 70,000 in all);
# $FMNIST_MAX_IMAGES overrides it. Sizes are checked against it before reading.
DEFAULT_MAX_IMAGES = 200_000
MAX_IMAGES_ENV = "FMNIST_MAX_IMAGES"
# The split is 80/10/10 and each part needs images: fewer than this is refused.
MIN_IMAGES = 10
PIXELS = IMAGE_SHAPE[0] * IMAGE_SHAPE[1]
# Untrusted text (dict keys, names from a file) is cut to this many characters in messages.
MAX_TEXT = 80
# Deflate cannot expand data more than about 1032:1; a header claiming more is lying.
_DEFLATE_MAX_RATIO = 1032
_CHUNK = 1 << 20
_MAX_NDIM = 8
# What each loader accepts, as its messages say it.
ACCEPTED_PIXELS = "uint8 0..255 or float in [0, 1]"
_EXPECTED_IDX = "a gzip'd IDX file of unsigned bytes, as the Fashion-MNIST release has them"
_EXPECTED_NPY = "np.save of a dict with 'features' (N, 28, 28) and 'target' 1..5"
_EXPECTED_NPZ = "np.savez with arrays 'x' (N, 28, 28) and 'y' 0..4"


class DataError(ValueError):
    """Bad or missing input data; the message names the file and the problem."""


@dataclass(frozen=True)
class Dataset:
    """Images as float32 in [0, 1], shape (N, 28, 28); labels int64 in 0..4."""

    x: np.ndarray
    y: np.ndarray
    source: str
    class_names: tuple[str, ...] = tuple(f"Class {i}" for i in range(1, NUM_CLASSES + 1))
    class_map: tuple[int, ...] | None = None

    def __len__(self) -> int:
        return len(self.y)

    @property
    def sha256(self) -> str:
        """Hash of the pixels and labels, the same whatever file format they came from."""
        digest = hashlib.sha256()
        digest.update(np.ascontiguousarray(self.x, dtype=np.float32).tobytes())
        digest.update(np.ascontiguousarray(self.y, dtype=np.int64).tobytes())
        return digest.hexdigest()

    def subset(self, indices: np.ndarray) -> "Dataset":
        return Dataset(self.x[indices], self.y[indices], self.source, self.class_names, self.class_map)

    def limit(self, n: int | None) -> "Dataset":
        """The first n images (a smoke-run subset), or all of them."""
        if n is None or n >= len(self):
            return self
        if n < 10:
            raise DataError(f"--limit {n}: need at least 10 images to make train/val/test splits")
        limited = self.subset(np.arange(n))
        return Dataset(limited.x, limited.y, f"{self.source} (first {n})", self.class_names, self.class_map)


@dataclass(frozen=True)
class Splits:
    train: Dataset
    val: Dataset
    test: Dataset
    indices: dict[str, np.ndarray] = field(repr=False, default_factory=dict)

    def sizes(self) -> dict[str, int]:
        return {"train": len(self.train), "val": len(self.val), "test": len(self.test)}

    def require_every_class(self) -> "Splits":
        """Refuse a training split without an image of some class (a --class-map or --limit that leaves one out).

        Such a model would train silently on four classes and still claim five. Returns self.
        """
        counts = np.bincount(np.asarray(self.train.y, dtype=np.int64), minlength=NUM_CLASSES)[:NUM_CLASSES]
        empty = [i for i in range(NUM_CLASSES) if counts[i] == 0]
        if empty:
            per_class = ", ".join(f"{i + 1}: {int(n):,}" for i, n in enumerate(counts))
            names = ", ".join(_clip(self.train.class_names[i], 60) for i in empty)
            raise DataError(
                f"{self.train.source}: no training images of {names}; training images per class: {per_class} "
                f"(each of the {NUM_CLASSES} classes needs at least one: check --class-map, or raise --limit)"
            )
        return self


# --------------------------------------------------------------------------- class map

def parse_class_map(text: str | None) -> tuple[int, ...]:
    """``--class-map``: ``pairs`` (default) or ten comma-separated target classes 0..4."""
    if text is None or text == "pairs":
        return DEFAULT_CLASS_MAP
    try:
        values = tuple(int(v) for v in text.split(","))
    except ValueError:
        raise DataError(f"--class-map {text!r}: expected 'pairs' or ten integers like 0,0,1,1,2,2,3,3,4,4") from None
    if len(values) != 10 or any(not 0 <= v < NUM_CLASSES for v in values):
        raise DataError(f"--class-map {text!r}: need exactly ten values, each in 0..{NUM_CLASSES - 1}")
    if set(values) != set(range(NUM_CLASSES)):
        raise DataError(f"--class-map {text!r}: every class 0..{NUM_CLASSES - 1} needs at least one source label")
    return values


def class_names_for(class_map: tuple[int, ...]) -> tuple[str, ...]:
    """'Class 1 (T-shirt/top + Trouser)': the report's names, with what each merges."""
    names = []
    for target in range(NUM_CLASSES):
        members = " + ".join(FASHION_CLASSES[src] for src, dst in enumerate(class_map) if dst == target)
        names.append(f"Class {target + 1} ({members})")
    return tuple(names)


# --------------------------------------------------------------------------- look-up

def resolve_source(data: str | os.PathLike | None = None) -> Path | None:
    """The first existing source in look-up order; None means 'try Keras'."""
    if data is not None:
        path = Path(data)
        problem = _path_problem(path)
        if problem:
            raise DataError(f"--data {path}: {problem}")
        return path
    env = os.environ.get("FMNIST_DATA")
    if env:
        path = Path(env)
        problem = _path_problem(path)
        if problem:
            raise DataError(f"$FMNIST_DATA={path}: {problem}")
        return path
    for folder in (DEBIAN_DIR, KERAS_CACHE_DIR):
        if (folder / IDX_TRAIN_IMAGES).exists():
            return folder
    return None


def load_dataset(data: str | os.PathLike | None = None, class_map: tuple[int, ...] = DEFAULT_CLASS_MAP) -> Dataset:
    """Load the 60,000 training images of Fashion-MNIST (the report's data set) from the first source found."""
    path = resolve_source(data)
    if path is None:
        return _load_keras_download(class_map)
    if path.is_dir():
        return load_idx_dir(path, class_map)
    suffix = path.suffix.lower()
    if suffix == ".npy":
        return load_report_npy(path)
    if suffix == ".npz":
        return load_npz(path)
    raise DataError(f"{path}: unsupported data file; expected a folder of IDX .gz files, a .npy dict or a .npz")


def _load_keras_download(class_map: tuple[int, ...]) -> Dataset:
    tried = [
        "--data (not given)", "$FMNIST_DATA (not set)",
        f"{DEBIAN_DIR} (missing)", f"{KERAS_CACHE_DIR} (missing)",
    ]
    try:
        from keras.datasets import fashion_mnist  # noqa: PLC0415 - only for machines with internet

        (x, y), _ = fashion_mnist.load_data()
    except Exception as exc:  # any network or import failure means: not available here
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise DataError(
            "no Fashion-MNIST data found; tried " + ", ".join(tried)
            + f", Keras download (failed: {reason}). Fix: {FIX_COMMAND}"
        ) from None
    return _from_ten_class(x, y, "keras.datasets.fashion_mnist", class_map, "Keras download")


# --------------------------------------------------------------------------- limits and messages

def max_images() -> int:
    """The most images a data file may declare: ``$FMNIST_MAX_IMAGES``, else DEFAULT_MAX_IMAGES.

    Every declared size is checked against this ceiling (and against the file's real
    size) before anything is allocated, so a hostile header cannot make us allocate it.
    """
    text = os.environ.get(MAX_IMAGES_ENV)
    if not text:
        return DEFAULT_MAX_IMAGES
    try:
        value = int(text.strip().replace("_", ""))
    except ValueError:
        value = 0
    if value <= 0:
        raise DataError(f"${MAX_IMAGES_ENV}={_clip(text)}: expected a positive whole number of images")
    return value


def _ceiling_hint(limit: int) -> str:
    return f"the ceiling is {limit:,} images (${MAX_IMAGES_ENV} raises it)"


def _clip(value: object, limit: int = MAX_TEXT) -> str:
    """User-controlled text for an error message: one line, at most ``limit`` characters."""
    try:
        text = value if isinstance(value, str) else repr(value)
    except Exception:  # a hostile object's repr, or an int too long to print
        text = f"<{type(value).__name__}>"
    text = text[: limit * 2].encode("unicode_escape").decode("ascii")
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _exc_text(exc: BaseException) -> str:
    """An exception's message for a DataError: one clipped line, even if str() itself fails."""
    try:
        text = str(exc)
    except Exception:  # e.g. a KeyError holding an int too long to print
        text = ""
    return _clip(text or type(exc).__name__)


def _describe_keys(keys) -> str:
    """A short, one-line list of (untrusted) dict keys or archive member names."""
    keys = list(keys)
    names = sorted(repr(_clip(key, 40)) for key in keys if isinstance(key, str))
    others = len(keys) - len(names)
    text = ", ".join(names[:3]) + (f", ... ({len(names):,} in all)" if len(names) > 3 else "")
    return f"[{text}{', ' if text and others else ''}{f'{others:,} non-text keys' if others else ''}]"


def _path_problem(path: Path) -> str | None:
    """Why a path cannot be read, in words (a symlink loop is not 'missing'); None if it can be stat'ed."""
    try:
        os.stat(path)
        return None
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            return "a symlink loop (following its links leads back to them)"
        if exc.errno == errno.ENOENT:
            return "a broken symlink (what it points to does not exist)" if os.path.islink(path) else "no such file or folder"
        return f"cannot read ({exc.strerror or type(exc).__name__})"


def _open_regular(path: Path, expected: str):
    """Open a non-empty regular file for reading, refusing FIFOs, devices and folders before they can block.

    ``expected`` says what the file should be, for the message about an empty one.
    Returns (binary file, size in bytes).
    """
    try:
        st = os.stat(path)
    except OSError:
        raise DataError(f"{path}: {_path_problem(path) or 'cannot read'}") from None
    if not stat.S_ISREG(st.st_mode):
        raise DataError(f"{path}: not a regular file ({_file_kind(st.st_mode)}); expected a data file")
    nonblock = getattr(os, "O_NONBLOCK", 0)
    try:
        # O_NONBLOCK: should the path be swapped for a FIFO after the stat, open still returns at once.
        fd = os.open(path, os.O_RDONLY | nonblock | getattr(os, "O_NOCTTY", 0) | getattr(os, "O_BINARY", 0))
    except OSError as exc:
        raise DataError(f"{path}: cannot read ({exc.strerror or type(exc).__name__})") from None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise DataError(f"{path}: not a regular file ({_file_kind(st.st_mode)}); expected a data file")
        if st.st_size == 0:
            raise DataError(f"{path}: empty file (0 bytes); expected {expected}")
        if nonblock:
            os.set_blocking(fd, True)
        return os.fdopen(fd, "rb"), st.st_size
    except BaseException:
        os.close(fd)
        raise


def _file_kind(mode: int) -> str:
    for test, name in ((stat.S_ISDIR, "a folder"), (stat.S_ISFIFO, "a FIFO"), (stat.S_ISCHR, "a character device"),
                       (stat.S_ISBLK, "a block device"), (stat.S_ISSOCK, "a socket")):
        if test(mode):
            return name
    return "not a plain file"


def _read_exactly(stream, n: int) -> bytes:
    """Up to n bytes, in bounded chunks: never asks a stream for more than it was told to hold."""
    chunks, got = [], 0
    while got < n:
        chunk = stream.read(min(n - got, _CHUNK))
        if not chunk:
            break
        chunks.append(chunk)
        got += len(chunk)
    return b"".join(chunks)


def _read_into(stream, buffer: np.ndarray) -> int:
    """Fill a preallocated uint8 buffer from a stream; returns how many bytes came."""
    view, got, n = memoryview(buffer).cast("B"), 0, buffer.nbytes
    while got < n:
        count = stream.readinto(view[got: min(n, got + _CHUNK)])
        if not count:
            break
        got += count
    return got


# --------------------------------------------------------------------------- IDX

def load_idx_dir(folder: Path, class_map: tuple[int, ...] = DEFAULT_CLASS_MAP) -> Dataset:
    images_path, labels_path = folder / IDX_TRAIN_IMAGES, folder / IDX_TRAIN_LABELS
    for path in (images_path, labels_path):
        problem = _path_problem(path)
        if problem:
            problem = "missing" if problem == "no such file or folder" else problem
            raise DataError(f"{path}: {problem} (a Fashion-MNIST IDX folder needs {IDX_TRAIN_IMAGES} and {IDX_TRAIN_LABELS})")
    images = read_idx(images_path, ndim=3)
    if images.shape[1:] != IMAGE_SHAPE:
        raise DataError(f"{images_path}: images are {images.shape[1]}x{images.shape[2]}, expected 28x28")
    labels = read_idx(labels_path, ndim=1)
    if len(images) != len(labels):
        raise DataError(f"{folder}: {len(images)} images but {len(labels)} labels")
    _check_count(len(images), images_path)
    return _from_ten_class(images, labels, str(folder), class_map, str(labels_path))


def read_idx(path: Path, ndim: int) -> np.ndarray:
    """Read one gzip'd IDX file of unsigned bytes (the format of the Fashion-MNIST release).

    Streams: the header first, then exactly the bytes it declares (checked against the
    image ceiling and what a gzip file of this size can hold), then refuses any more.
    """
    path = Path(path)
    limit = max_images()
    f, size = _open_regular(path, _EXPECTED_IDX)
    with f:
        try:
            with gzip.GzipFile(fileobj=f, mode="rb") as gz:
                head = _read_exactly(gz, 4)
                if len(head) < 4 or head[0] != 0 or head[1] != 0:
                    raise DataError(f"{path}: not an IDX file (bad magic number)")
                if head[2] != 0x08:
                    raise DataError(f"{path}: IDX element type 0x{head[2]:02x}, expected 0x08 (unsigned byte)")
                if head[3] != ndim:
                    raise DataError(f"{path}: IDX file has {head[3]} dimensions, expected {ndim}")
                raw_dims = _read_exactly(gz, 4 * ndim)
                if len(raw_dims) < 4 * ndim:
                    raise DataError(f"{path}: truncated IDX header")
                dims = tuple(int.from_bytes(raw_dims[4 * i: 4 * i + 4], "big") for i in range(ndim))
                expected = math.prod(dims)  # Python ints: cannot overflow
                if dims[0] > limit or expected > limit * PIXELS:
                    raise DataError(
                        f"{path}: IDX header declares {dims} ({expected:,} bytes), more than allowed; {_ceiling_hint(limit)}"
                    )
                if expected > size * _DEFLATE_MAX_RATIO + 4096:
                    raise DataError(
                        f"{path}: truncated or corrupt: header says {dims} ({expected:,} bytes), "
                        f"more than a {size:,}-byte gzip file can hold"
                    )
                buffer = np.empty(expected, dtype=np.uint8)
                got = _read_into(gz, buffer)
                if got < expected:
                    raise DataError(f"{path}: truncated or corrupt: header says {dims} ({expected} bytes), file has {got}")
                if gz.read(1):
                    raise DataError(
                        f"{path}: truncated or corrupt: header says {dims} ({expected} bytes), file has more data after them"
                    )
        except DataError:
            raise
        except MemoryError:
            raise DataError(f"{path}: ran out of memory reading it") from None
        except Exception as exc:  # gzip/zlib/EOF/OS errors: any failure to decompress
            raise DataError(f"{path}: not a readable gzip file ({_exc_text(exc)})") from None
    return buffer.reshape(dims)


def _from_ten_class(images: np.ndarray, labels: np.ndarray, source: str, class_map: tuple[int, ...], label_file: str) -> Dataset:
    labels = np.asarray(labels)
    if labels.dtype.kind not in "ui":
        raise DataError(f"{label_file}: labels have dtype {labels.dtype}, expected integers 0..9")
    if labels.size and (labels.min() < 0 or labels.max() > 9):
        raise DataError(f"{label_file}: labels outside 0..9 (found {labels.min()}..{labels.max()})")
    y = np.asarray(class_map, dtype=np.int64)[labels.astype(np.int64)]
    x = images.astype(np.float32) / np.float32(255.0)
    return Dataset(x, y, source, class_names_for(class_map), class_map)


# --------------------------------------------------------------------------- the report's .npy
#
# A restricted unpickler in a child process under limits (see the module docstring). Everything
# from _npy_child down runs in the child; the parent only reads back the .npy files it writes.

# The child's address space: what it has after start-up, plus a fixed allowance, plus this many
# bytes per byte of the file (the pickle, the arrays built from it, and nested lists of Python
# floats: those take about 5.5 times the bytes they are pickled in, arrays 2 to 4 times). A fork
# starts with its parent's mappings, so it may also reuse heap the parent had freed: the bound is
# the parent's size plus the allowance, never more than the machine had already given the command.
_CHILD_ALLOWANCE = 256 << 20
_CHILD_BYTES_PER_FILE_BYTE = 6
# CPU seconds: a fixed allowance plus one per this many bytes of file; the wall-clock limit is 3 times it.
_CHILD_SECONDS = 30
_CHILD_BYTES_PER_SECOND = 4 << 20
_ONLY = "only a dict of numpy arrays ('features', 'target') is accepted"
_MAX_LIST_DEPTH = 4


def load_report_npy(path: Path) -> Dataset:
    """The report's format: a .npy holding a dict with 'features' (N, 28, 28) in [0, 1] and 'target' 1..5."""
    path = Path(path)
    limit = max_images()
    f, size = _open_regular(path, _EXPECTED_NPY)
    try:
        with f, tempfile.TemporaryDirectory(prefix="fmnist-npy-") as out:
            start = _pickle_start(f, size, path, limit)
            _unpickle_in_child(f, start, size, path, out)
            arrays = {}
            for what, most in (("features", limit * PIXELS), ("target", limit)):
                with open(os.path.join(out, f"{what}.npy"), "rb") as result:
                    arrays[what] = _read_npy_array(result, os.fstat(result.fileno()).st_size, path, what, most, "its reader's output")
    except OSError as exc:  # no temporary folder, a full disk
        raise DataError(f"{path}: cannot read it ({type(exc).__name__}: {_exc_text(exc)})") from None
    x = _check_images(arrays["features"], path)
    target = _check_labels(arrays["target"], path, low=1, high=NUM_CLASSES, what="target")
    _check_lengths(x, target, path)
    return Dataset(x, target - 1, str(path))


def _pickle_start(f, size: int, path: Path, limit: int) -> int:
    """Where the pickle starts: after the .npy header of an object array, or at 0 (``ndarray.dump``)."""
    most = 6 * limit * PIXELS * 8 + (64 << 20)  # float64 pixels at protocol 0: up to 6 bytes a byte
    if size > most:
        raise DataError(f"{path}: file is {size:,} bytes, more than any data set under the ceiling; {_ceiling_hint(limit)}")
    magic = f.read(6)
    if magic[:4] in (b"PK\x03\x04", b"PK\x05\x06"):
        raise DataError(f"{path}: a zip archive, not a .npy (an .npz named .npy?); if it holds arrays 'x' and 'y', rename it to .npz")
    if magic != b"\x93NUMPY":
        return 0  # no .npy header: a bare pickle, as numpy's ndarray.dump writes
    f.seek(0)
    try:
        shape, _, dtype = _npy_header(f, path, "its header")
    except DataError:
        raise
    except Exception as exc:  # a corrupt header
        raise DataError(f"{path}: not a readable .npy file ({type(exc).__name__}: {_exc_text(exc)})") from None
    if dtype != np.dtype(object):
        raise DataError(f"{path}: holds a plain {_clip(str(dtype), 40)} array of shape {_clip(shape, 60)}; expected {_EXPECTED_NPY}")
    if f.tell() >= size:
        raise DataError(f"{path}: a .npy header with no pickle after it; expected {_EXPECTED_NPY}")
    return f.tell()


def _unpickle_in_child(f, start: int, size: int, path: Path, out: str) -> None:
    """Run _npy_child on the open file (no path to swap); it writes features.npy and target.npy to ``out``, or says why not.

    The child is a fork of this process: it runs only this module's code and numpy, so the threads a parent may
    have (TensorFlow's) do not matter, and it costs no Python start-up and numpy import (0.1 s a file, where the
    fuzz tests read hundreds).
    """
    seconds = _CHILD_SECONDS + size // _CHILD_BYTES_PER_SECOND
    memory = _CHILD_ALLOWANCE + _CHILD_BYTES_PER_FILE_BYTE * size
    child = multiprocessing.get_context("fork").Process(target=_npy_child, daemon=True,
                                                         args=(f.fileno(), start, size, memory, seconds, out))
    try:
        child.start()
    except OSError as exc:
        raise DataError(f"{path}: cannot start a process to read it ({exc.strerror or type(exc).__name__})") from None
    child.join(3 * seconds)
    if child.exitcode is None:
        child.kill()
        child.join()
        raise DataError(f"{path}: refusing the pickle: reading it took more than {3 * seconds} s, the limit for its size")
    said = _read_said(os.path.join(out, "said"))
    if child.exitcode == 0 and said == "OK":
        return
    if said.startswith("ERROR "):
        raise DataError(f"{path}: {said[6:][:4 * MAX_TEXT]}")
    if child.exitcode == -signal.SIGXCPU:
        raise DataError(f"{path}: refusing the pickle: reading it took more than {seconds} s of CPU, the limit for its size")
    if child.exitcode < 0:
        raise DataError(f"{path}: refusing the pickle: the process reading it died of signal {-child.exitcode}")
    last = (_read_said(os.path.join(out, "stderr"), last=True) or f"exit status {child.exitcode}")
    raise DataError(f"{path}: the process reading it failed ({_clip(last, 2 * MAX_TEXT)})")


def _read_said(path: str, last: bool = False) -> str:
    """The first (or last) line the child wrote to ``path``, read within a bound; '' when it wrote none."""
    try:
        with open(path, "rb") as f:
            lines = _read_exactly(f, 64 << 10).decode("ascii", "replace").strip().splitlines()
    except OSError:
        return ""
    return (lines[-1] if last else lines[0]) if lines else ""


class _Refused(Exception):
    """In the child: why the file is refused, without its path; the parent reports it."""


def _npy_child(fd: int, start: int, size: int, memory: int, seconds: int, out: str) -> None:
    """The child: limit itself, unpickle, check, write the two arrays without pickle, and OK or ERROR and why to
    ``out/said``.

    ``memory`` is the address space it may take beyond what it has after start-up, ``seconds`` its CPU time.
    """
    import resource  # noqa: PLC0415 - POSIX only, and only the child needs it

    stderr = os.open(os.path.join(out, "stderr"), os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    os.dup2(stderr, 2)  # what goes wrong past the checks below, for the parent's message; not the user's terminal
    os.close(stderr)

    try:
        with open("/proc/self/statm") as statm:
            in_use = int(statm.read().split()[0]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError):
        in_use = 512 << 20
    for kind, value in ((resource.RLIMIT_AS, in_use + memory), (resource.RLIMIT_CPU, seconds)):
        soft, hard = resource.getrlimit(kind)
        value = min(v for v in (value, soft, hard) if v != resource.RLIM_INFINITY)
        resource.setrlimit(kind, (value, hard))
        if kind == resource.RLIMIT_AS:
            memory = value - in_use  # less where the parent's own limit is lower
    try:
        with os.fdopen(fd, "rb") as f:
            f.seek(start)
            payload = f.read(size - start)
        try:
            obj = _NumpyOnlyUnpickler(io.BytesIO(payload), encoding="latin1").load()
        except (_Refused, MemoryError):
            raise
        except Exception as exc:  # truncated, unknown opcodes, arguments numpy rejects ...
            if isinstance(exc, ValueError) and "extension code" in str(exc):  # EXT1/2/4: none registered here
                raise _never("it uses a copyreg extension code") from None
            raise _Refused(f"not a readable .npy file (corrupt pickle: {type(exc).__name__}: {_exc_text(exc)})") from None
        del payload
        for what, array in _study_arrays(obj).items():
            np.save(os.path.join(out, f"{what}.npy"), array, allow_pickle=False)
        said = "OK"
    except _Refused as exc:
        said = f"ERROR {exc}"
    except MemoryError:
        said = (f"ERROR refusing the pickle: it needs more than {memory >> 20:,} MB of memory to read, the limit for a "
                f"{size:,}-byte file (it declares or repeats more data than the file holds)")
    except Exception as exc:  # writing the arrays; anything unforeseen
        said = f"ERROR not a readable .npy file ({type(exc).__name__}: {_exc_text(exc)})"
    with open(os.path.join(out, "said"), "wb") as f:
        f.write(said.replace("\n", " ").encode("ascii", "backslashreplace") + b"\n")


class _Global:
    """A global the pickle may name: it may be called (with the arguments ``ok`` admits), nothing else."""

    __slots__ = ("name", "call", "ok")

    def __init__(self, name: str, call, ok=None):
        self.name, self.call, self.ok = name, call, ok

    def __call__(self, *args):
        if self.call is None:
            raise _never(f"it calls {self.name} directly")
        if self.ok is not None and not self.ok(*args):
            raise _never(f"it calls {self.name} with other arguments")
        return self.call(*args)

    def __setstate__(self, state):  # BUILD on it
        raise _never(f"it sets state on {self.name}")


def _never(what: str) -> _Refused:
    return _Refused(f"refusing the pickle: {what} (numpy's pickles never do); {_ONLY}")


# dtypes numpy pickles as dtype(name, False, True); object only for the 0-d wrapper np.save makes.
_PICKLE_DTYPES = frozenset({"b1", "i1", "i2", "i4", "i8", "u1", "u2", "u4", "u8", "f2", "f4", "f8", "c8", "c16", "O8"})
# numpy.ndarray: only an argument of _reconstruct; called, it would be ndarray(shape, dtype, buffer, offset,
# strides), where zero strides over a few bytes make an array of any size.
_NDARRAY = _Global("numpy.ndarray", None)
_GLOBALS = {
    ("numpy", "ndarray"): _NDARRAY,
    # A copy, so that BUILD (dtype.__setstate__) changes this one only.
    ("numpy", "dtype"): _Global("numpy.dtype", lambda name, *_: np.dtype(name, False, True),
                                lambda name, align=False, copy=True: name in _PICKLE_DTYPES and align is False and copy is True),
    # Protocols 0-2 write bytes as _codecs.encode(str, 'latin1'), and b'' as bytes().
    ("_codecs", "encode"): _Global("_codecs.encode", lambda text, _: text.encode("latin1"),
                                   lambda text, encoding="utf-8": isinstance(text, str) and encoding in ("latin1", "latin-1")),
    ("builtins", "bytes"): _Global("bytes", bytes, lambda *args: not args),
    ("__builtin__", "bytes"): _Global("bytes", bytes, lambda *args: not args),
}
for _module in ("numpy.core", "numpy._core"):  # numpy 1.x and 2.x
    # _reconstruct(ndarray, (0,), b'b') makes an empty array that BUILD (ndarray.__setstate__) fills, checking sizes.
    _GLOBALS[(f"{_module}.multiarray", "_reconstruct")] = _Global(
        "numpy's _reconstruct", lambda *_: np.ndarray((0,), np.int8),
        lambda cls, shape, typecode: cls is _NDARRAY and shape == (0,) and typecode in (b"b", "b"))
    # numpy's own, found through its public pickling: views of exactly the bytes given.
    _GLOBALS[(f"{_module}.multiarray", "scalar")] = _Global("numpy's scalar", np.float64(0).__reduce__()[0])
    _GLOBALS[(f"{_module}.numeric", "_frombuffer")] = _Global("numpy's _frombuffer", np.zeros(1).__reduce_ex__(5)[0])


class _NumpyOnlyUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str):
        if (module, name) not in _GLOBALS:
            raise _Refused(f"refusing to unpickle {_clip(module, 60)}.{_clip(name, 60)}; {_ONLY}")
        return _GLOBALS[(module, name)]

    def persistent_load(self, pid):
        raise _never("it uses persistent ids")


def _study_arrays(obj: object) -> dict[str, np.ndarray]:
    """The unpickled object as the report's two arrays: a dict of exactly 'features' and 'target', numbers within the ceiling."""
    if isinstance(obj, np.ndarray) and obj.dtype == object and obj.shape == ():
        obj = obj.item()  # np.save's 0-d wrapper around the dict
    if not isinstance(obj, dict):
        raise _Refused(f"expected {_EXPECTED_NPY}, found {_type_name(obj)}")
    missing = [key for key in ("features", "target") if key not in obj]
    if missing:
        raise _Refused(f"dict lacks {missing} (has {_describe_keys(obj)})")
    if len(obj) > 2:
        others = [key for key in obj if key not in ("features", "target")]
        raise _Refused(f"refusing the dict's other keys {_describe_keys(others)}; {_ONLY}")
    limit = max_images()
    arrays = {}
    for what, most in (("features", limit * PIXELS), ("target", limit)):
        value = obj[what]
        if isinstance(value, (list, tuple)):
            value = _list_to_array(value, what, most)
        if not isinstance(value, np.ndarray):
            raise _Refused(f"{what} is {_type_name(value)}, expected an array")
        if value.dtype.hasobject:
            raise _Refused(f"{what} is an object array of shape {_clip(value.shape, 60)}; {_ONLY}")
        if value.dtype.kind not in "biufc" or value.dtype.fields is not None or value.dtype.subdtype is not None:
            raise _Refused(f"{what} has dtype {_clip(str(value.dtype), 40)}, expected numbers")
        if value.size > most:
            raise _Refused(f"{what} holds {value.size:,} values, more than allowed; {_ceiling_hint(limit)}")
        arrays[what] = value
    return arrays


def _type_name(obj: object) -> str:
    """What an unpickled object is, for a message (never its repr: it may be huge)."""
    if isinstance(obj, np.ndarray):
        return f"a {obj.dtype} array of shape {_clip(obj.shape, 60)}"
    return "a function" if isinstance(obj, _Global) else type(obj).__name__


def _list_to_array(value: list | tuple, what: str, most: int) -> np.ndarray:
    """Nested lists of numbers (or of arrays) as an array; depth, self-reference and counts checked before np.asarray."""
    sizes: dict[int, int | None] = {}  # id -> values in it; None while it is being counted

    def count(node, depth: int) -> int:
        if id(node) in sizes:  # the same list again: known, no new walk (or a list inside itself)
            if sizes[id(node)] is None:
                raise _Refused(f"{what} is a list that contains itself")
            return sizes[id(node)]
        if depth > _MAX_LIST_DEPTH:
            raise _Refused(f"{what} is lists nested more than {_MAX_LIST_DEPTH} deep")
        sizes[id(node)], total = None, 0
        for v in node:
            if isinstance(v, (list, tuple)):
                total += count(v, depth + 1)
            elif isinstance(v, np.ndarray) and not v.dtype.hasobject:
                total += v.size
            elif type(v) in (int, float) or isinstance(v, (np.integer, np.floating)):
                total += 1
            else:
                raise _Refused(f"{what} holds {_type_name(v)}; expected nested lists of numbers or arrays")
            if total > most:
                raise _Refused(f"{what} holds more than {most:,} values; {_ceiling_hint(max_images())}")
        sizes[id(node)] = total
        return total

    count(value, 1)
    try:
        array = np.asarray(value)
    except (ValueError, TypeError, OverflowError) as exc:
        raise _Refused(f"{what} is not a regular array of numbers ({_exc_text(exc)})") from None
    if array.dtype.hasobject:  # whole numbers beyond 64 bits
        raise _Refused("target must be whole numbers, found dtype object" if what == "target"
                       else f"images have dtype object, expected real numbers ({ACCEPTED_PIXELS})")
    return array


# --------------------------------------------------------------------------- .npz

def load_npz(path: Path) -> Dataset:
    """``x`` (N, 28, 28[, 1]) uint8 0..255 or float 0..1, ``y`` ints 0..4."""
    path = Path(path)
    limit = max_images()
    f, _ = _open_regular(path, _EXPECTED_NPZ)
    with f:
        if f.read(6) == b"\x93NUMPY":
            raise DataError(f"{path}: a .npy file, not a zip archive (a .npy named .npz?); rename it to .npy")
        f.seek(0)
        try:
            with zipfile.ZipFile(f) as archive:
                members = {name[:-4] if name.endswith(".npy") else name: name for name in archive.namelist()}
                missing = {"x", "y"} - set(members)
                if missing:
                    raise DataError(f"{path}: lacks arrays {sorted(missing)} (has {_describe_keys(members)})")
                arrays = {}
                for what, most in (("x", limit * PIXELS), ("y", limit)):
                    info = archive.getinfo(members[what])
                    with archive.open(info) as member:
                        arrays[what] = _read_npy_array(member, info.file_size, path, what, most, "the archive")
        except DataError:
            raise
        except MemoryError:
            raise DataError(f"{path}: ran out of memory reading it") from None
        except Exception as exc:  # zip, zlib, header and EOF errors
            raise DataError(f"{path}: not a readable .npz file ({type(exc).__name__}: {_exc_text(exc)})") from None
    x = arrays["x"]
    if x.ndim == 4 and x.shape[-1] == 1:
        x = x[..., 0]
    x = _check_images(x, path)
    y = _check_labels(arrays["y"], path, low=0, high=NUM_CLASSES - 1, what="y")
    _check_lengths(x, y, path)
    return Dataset(x, y, str(path))


def _read_npy_array(stream, size: int, path: Path, what: str, max_values: int, holder: str) -> np.ndarray:
    """One .npy array from a stream of ``size`` bytes, as np.load(allow_pickle=False) would read it.

    Its header is checked (dtype; shape x itemsize against the ceiling and against what the
    stream holds) before any data is read or allocated. ``holder`` names the stream in messages.
    """
    shape, fortran, dtype = _npy_header(stream, path, what)
    if dtype.hasobject:
        raise DataError(f"{path}: {what} has dtype object; refusing it (loading it would unpickle)")
    if dtype.kind not in "biufc" or dtype.itemsize == 0 or dtype.fields is not None or dtype.subdtype is not None:
        raise DataError(f"{path}: {what} has dtype {_clip(str(dtype), 40)}, expected numbers")
    if any(type(d) is not int or d < 0 for d in shape) or len(shape) > _MAX_NDIM:
        raise DataError(f"{path}: {what} has an invalid shape {_clip(shape, 60)}")
    count = math.prod(shape)
    nbytes = count * dtype.itemsize
    if count > max_values:
        raise DataError(
            f"{path}: {what} declares shape {_clip(shape, 60)} ({count:,} values), more than allowed; {_ceiling_hint(max_images())}"
        )
    held = size - stream.tell()
    if nbytes != held:
        raise DataError(f"{path}: {what} declares shape {_clip(shape, 60)} of {dtype} ({nbytes:,} bytes), {holder} holds {held:,}")
    data = _read_exactly(stream, nbytes)
    if len(data) != nbytes:
        raise DataError(f"{path}: {what} is truncated ({len(data):,} of {nbytes:,} bytes)")
    return np.frombuffer(data, dtype=dtype).reshape(shape, order="F" if fortran else "C")


def _npy_header(stream, path: Path, what: str) -> tuple[tuple, bool, np.dtype]:
    """A .npy header: (shape, Fortran order, dtype), parsed by numpy (which bounds the header's length)."""
    version = np.lib.format.read_magic(stream)
    if version not in ((1, 0), (2, 0)):
        raise DataError(f"{path}: not a readable .npy file ({what} has format version {version}; 1.0 and 2.0 are read)")
    read = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
    return read(stream)


# --------------------------------------------------------------------------- validation

def _check_images(x: np.ndarray, path: Path) -> np.ndarray:
    """Pixels as float32 in [0, 1]: uint8 0..255 is scaled by 1/255, float must be in [0, 1] already."""
    if x.dtype.kind not in "uif":
        raise DataError(f"{path}: images have dtype {x.dtype}, expected real numbers ({ACCEPTED_PIXELS})")
    if x.ndim != 3 or x.shape[1:] != IMAGE_SHAPE:
        raise DataError(f"{path}: images have shape {x.shape}, expected (N, 28, 28)")
    if x.dtype == np.uint8:
        return x.astype(np.float32) / np.float32(255.0)
    if x.dtype.kind in "ui":
        found = f"{int(x.min())}..{int(x.max())}" if x.size else "no values"
        raise DataError(f"{path}: pixels: found {x.dtype} in {found}; accepted: {ACCEPTED_PIXELS}")
    x32 = x.astype(np.float32, copy=False)
    finite = np.isfinite(x32)
    if not finite.all():
        raise DataError(
            f"{path}: pixels: found {x.dtype} with {int((~finite).sum()):,} NaN or infinite values; accepted: {ACCEPTED_PIXELS}"
        )
    if x32.size and (x32.min() < 0.0 or x32.max() > 1.0):
        raise DataError(f"{path}: pixels: found {x.dtype} in {x.min():g}..{x.max():g}; accepted: {ACCEPTED_PIXELS}")
    return x32


def _check_labels(y: np.ndarray, path: Path, low: int, high: int, what: str) -> np.ndarray:
    """Whole numbers in low..high; the range is checked in the labels' own dtype, before any cast."""
    if y.dtype.kind not in "uif":
        raise DataError(f"{path}: {what} must be whole numbers, found dtype {y.dtype}")
    if y.ndim != 1:
        raise DataError(f"{path}: {what} has shape {y.shape}, expected (N,)")
    if y.size == 0:
        return y.astype(np.int64)
    if y.dtype.kind == "f":
        if not np.isfinite(y).all() or not np.all(np.mod(y, 1) == 0):
            raise DataError(f"{path}: {what} must be whole numbers, found dtype {y.dtype} with fractions or NaN")
        lo, hi = float(y.min()), float(y.max())
        shown = f"{lo:g}..{hi:g}"
    else:
        lo, hi = int(y.min()), int(y.max())  # Python ints: a uint64 beyond int64 shows as itself
        shown = f"{lo}..{hi}"
    if lo < low or hi > high:
        raise DataError(f"{path}: {what} outside {low}..{high} (found {shown})")
    return y.astype(np.int64)


def _check_lengths(x: np.ndarray, y: np.ndarray, path: Path) -> None:
    if len(x) != len(y):
        raise DataError(f"{path}: {len(x)} images but {len(y)} labels")
    _check_count(len(x), path)


def _check_count(n: int, path: Path | str) -> None:
    if n == 0:
        raise DataError(f"{path}: no images (the 80/10/10 train/val/test split needs at least {MIN_IMAGES})")
    if n < MIN_IMAGES:
        raise DataError(f"{path}: only {n} images; the 80/10/10 train/val/test split needs at least {MIN_IMAGES}")


# --------------------------------------------------------------------------- split

def split_dataset(dataset: Dataset) -> Splits:
    """The report's split: 80% train; the other 20% halved, first half test, second validation.

    Splitting indices gives the same partition as the report's split of arrays, since
    train_test_split's permutation depends only on the length and random_state.
    """
    from sklearn.model_selection import train_test_split  # noqa: PLC0415 - slow to import; loaders do not need it

    _check_count(len(dataset), dataset.source)
    indices = np.arange(len(dataset))
    train_idx, rest_idx = train_test_split(indices, test_size=TEST_FRACTION, random_state=SPLIT_SEED)
    test_idx, val_idx = train_test_split(rest_idx, test_size=0.5, random_state=SPLIT_SEED)
    return Splits(
        train=dataset.subset(train_idx),
        val=dataset.subset(val_idx),
        test=dataset.subset(test_idx),
        indices={"train": train_idx, "val": val_idx, "test": test_idx},
    )


def source_location(source: str) -> str:
    """The file or folder a ``Dataset.source`` names, without the " (first N)" that ``Dataset.limit`` appends."""
    return source.split(" (first ")[0]


def reload_dataset(record: dict, limit: int | None, data: str | os.PathLike | None = None) -> Dataset:
    """The data set a model was trained on, from its metadata's ``data`` record, hash-checked.

    ``data`` overrides where to read it from (the files may have moved); the content must match.
    """
    class_map = tuple(record["class_map"]) if record.get("class_map") else DEFAULT_CLASS_MAP
    source = data
    recorded = source_location(record["source"])
    if source is None and Path(recorded).exists():
        source = recorded
    dataset = load_dataset(source, class_map).limit(limit)
    if dataset.sha256 != record["sha256"]:
        raise DataError(
            f"{dataset.source}: not the data the model was trained on "
            f"(sha256 {dataset.sha256[:12]}, trained on {record['sha256'][:12]} from {record['source']}); pass --data"
        )
    return dataset
