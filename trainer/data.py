"""Fashion-MNIST loading, validation, class mapping and the report's split.

Imports no TensorFlow: bench and exporter use this on machines without it. Only the
last-resort Keras download imports Keras, lazily.

Sources, in the order they are looked up:
  1. ``--data PATH`` (a folder of IDX ``.gz`` files, the report's ``.npy`` dict, or ``.npz``)
  2. ``$FMNIST_DATA``
  3. Debian's ``dataset-fashion-mnist`` folder, ``/usr/share/datasets/fashion-mnist``
  4. Keras' cache (``~/.keras/datasets/fashion-mnist``), then Keras' download

Every loader treats its file as hostile: sizes a header declares are checked against the
file's real size and a ceiling (``$FMNIST_MAX_IMAGES``) before anything is allocated,
decompression streams exactly the declared bytes, the report's pickle is read with
stand-ins for the few globals numpy writes, and every failure is one DataError line that
starts with the file's path.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import math
import os
import pickle
import pickletools
import stat
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
        if not path.exists():
            raise DataError(f"--data {path}: no such file or folder")
        return path
    env = os.environ.get("FMNIST_DATA")
    if env:
        path = Path(env)
        if not path.exists():
            raise DataError(f"$FMNIST_DATA={path}: no such file or folder")
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
    """A short, one-line list of (untrusted) dict keys or archive member names: about MAX_TEXT characters."""
    text_keys, others = [], 0
    for key in keys:
        if isinstance(key, str):
            text_keys.append(key)
        else:
            others += 1
    shown, length = [], 0
    for key in sorted(text_keys)[:20]:
        item = repr(_clip(key, 40))
        if shown and length + len(item) > MAX_TEXT:
            break
        shown.append(item)
        length += len(item) + 2
    text = ", ".join(shown)
    if len(shown) < len(text_keys):
        text += f", ... ({len(text_keys):,} in all)"
    if others:
        text += f"{', ' if text else ''}{others:,} non-text keys"
    return f"[{text}]"


def _open_regular(path: Path):
    """Open a regular file for reading, refusing FIFOs, devices and folders before they can block.

    Returns (binary file, size in bytes).
    """
    try:
        st = os.stat(path)
    except OSError as exc:
        raise DataError(f"{path}: cannot read ({exc.strerror or type(exc).__name__})") from None
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
        if not path.exists():
            raise DataError(f"{path}: missing (a Fashion-MNIST IDX folder needs {IDX_TRAIN_IMAGES} and {IDX_TRAIN_LABELS})")
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
    f, size = _open_regular(path)
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
# The report's file is ``np.save`` of a dict, i.e. a pickle. ``np.load(allow_pickle=True)``
# would run whatever callable the file names, so we unpickle it ourselves:
#   1. a pre-scan (pickletools) refuses opcodes numpy never writes, lengths beyond the end of
#      the file and memo indices that would make the C unpickler allocate;
#   2. the unpickler's globals are stand-ins, not the real callables: each admits exactly the
#      arguments numpy writes (protocols 0-5, numpy 1.x and 2.x module names) and builds the
#      array itself from a buffer of exactly the declared size (no strides, no views);
#   3. the result must be a dict whose 'features' and 'target' are arrays or nested lists of
#      numbers, with nesting depth and element counts checked before np.asarray.

# What numpy's pickles name; the value says which stand-in answers.
_PICKLE_GLOBALS = {
    ("numpy.core.multiarray", "_reconstruct"): "reconstruct",
    ("numpy._core.multiarray", "_reconstruct"): "reconstruct",
    ("numpy.core.numeric", "_frombuffer"): "frombuffer",
    ("numpy._core.numeric", "_frombuffer"): "frombuffer",
    ("numpy", "ndarray"): "ndarray",
    ("numpy", "dtype"): "dtype",
    ("_codecs", "encode"): "encode",  # protocols 0-2 write bytes as _codecs.encode(str, 'latin1')
    ("__builtin__", "bytes"): "bytes",  # ... and empty bytes as bytes()
    ("builtins", "bytes"): "bytes",
}

# Every opcode a pickled dict of arrays (or of lists of numbers) uses; anything else
# (INST, OBJ, NEWOBJ, EXT*, PERSID, out-of-band buffers, sets) is refused before unpickling.
_PICKLE_OPCODES = frozenset({
    "INT", "BININT", "BININT1", "BININT2", "LONG", "LONG1", "LONG4",
    "STRING", "BINSTRING", "SHORT_BINSTRING", "BINBYTES", "SHORT_BINBYTES", "BINBYTES8", "BYTEARRAY8",
    "NONE", "NEWTRUE", "NEWFALSE", "UNICODE", "SHORT_BINUNICODE", "BINUNICODE", "BINUNICODE8",
    "FLOAT", "BINFLOAT", "EMPTY_LIST", "APPEND", "APPENDS", "LIST",
    "EMPTY_TUPLE", "TUPLE", "TUPLE1", "TUPLE2", "TUPLE3", "EMPTY_DICT", "DICT", "SETITEM", "SETITEMS",
    "POP", "DUP", "MARK", "POP_MARK", "GET", "BINGET", "LONG_BINGET", "PUT", "BINPUT", "LONG_BINPUT", "MEMOIZE",
    "GLOBAL", "STACK_GLOBAL", "REDUCE", "BUILD", "PROTO", "STOP", "FRAME",
})
_PUT_OPCODES = frozenset({"PUT", "BINPUT", "LONG_BINPUT"})

# dtypes numpy pickles as dtype(name, False, True); object only for the 0-d wrapper np.save makes.
_PICKLE_DTYPES = frozenset({"b1", "i1", "i2", "i4", "i8", "u1", "u2", "u4", "u8", "f2", "f4", "f8", "c8", "c16", "O8"})
_MAX_NDIM = 8
_MAX_LIST_DEPTH = 4


class _Refused(Exception):
    """Raised inside the unpickler's stand-ins; the loader turns it into a DataError."""


class _StandIn:
    """A callable a pickle may name; it refuses being the target of BUILD (no hidden state)."""

    __slots__ = ("_call", "_name")

    def __init__(self, name: str, call):
        object.__setattr__(self, "_name", name)
        object.__setattr__(self, "_call", call)

    def __call__(self, *args):
        return self._call(*args)

    def __setattr__(self, key, value):
        raise _Refused(f"pickle sets attributes on {self._name}")

    def __setstate__(self, state):
        raise _Refused(f"pickle sets state on {self._name}")

    def __reduce__(self):
        raise TypeError("not picklable")


class _NdarrayClass:
    """What ``numpy.ndarray`` unpickles to: an argument for _reconstruct, never called.

    Calling it would be ``np.ndarray(shape, dtype, buffer, offset, strides)``: zero strides
    over a few bytes make an array of any size. numpy's own pickles never call it.
    """

    __slots__ = ()

    def __call__(self, *args):
        raise _Refused("pickle calls numpy.ndarray directly (numpy's pickles never do)")

    def __setstate__(self, state):
        raise _Refused("pickle sets state on numpy.ndarray")


class _PendingDtype:
    """``numpy.dtype(name, False, True)`` then BUILD with its state, as numpy writes it."""

    __slots__ = ("name", "dtype")

    def __init__(self, name: str):
        self.name = name
        self.dtype: np.dtype | None = None

    def __setstate__(self, state):
        if self.dtype is not None:
            raise _Refused("pickle sets a dtype's state twice")
        base = np.dtype(self.name)
        if (
            not isinstance(state, tuple) or len(state) not in (8, 9) or state[0] not in (3, 4)
            or state[1] not in ("<", ">", "|", "=") or state[2:5] != (None, None, None)
            or state[5:7] != (-1, -1) or type(state[7]) is not int or state[7] != base.flags
            or (len(state) == 9 and state[8] not in (None, {}))
        ):
            raise _Refused(f"unexpected state for dtype {self.name}")
        order = state[1]
        self.dtype = base.newbyteorder(order) if order in "<>" and base.itemsize > 1 else base

    def resolved(self) -> np.dtype:
        if self.dtype is None:
            raise _Refused(f"dtype {self.name} without its state")
        return self.dtype


class _PendingArray:
    """An array being unpickled: ``_reconstruct`` makes it, BUILD (``__setstate__``) fills it.

    Numeric arrays are built by np.frombuffer from a buffer of exactly the declared size,
    so no stride trick or view of a small buffer can make a large array. Object arrays are
    admitted only as the 0-d wrapper np.save puts around a dict; its one element is kept.
    """

    __slots__ = ("_owner", "array", "value", "is_wrapper")

    def __init__(self, owner: "_ArraysOnlyUnpickler"):
        self._owner = owner
        self.array: np.ndarray | None = None
        self.value: object = None
        self.is_wrapper = False

    def __setstate__(self, state):
        if self.array is not None or self.is_wrapper:
            raise _Refused("pickle sets an array's state twice")
        if not isinstance(state, tuple) or len(state) not in (4, 5):
            raise _Refused("unexpected array state")
        if len(state) == 5:
            if type(state[0]) is not int or state[0] != 1:
                raise _Refused("unexpected array state version")
            state = state[1:]
        shape, dtype, fortran, raw = state
        shape = _valid_shape(shape)
        if not isinstance(dtype, _PendingDtype):
            raise _Refused("array state without a numpy dtype")
        dtype = dtype.resolved()
        if fortran not in (False, True, 0, 1):
            raise _Refused("unexpected array order flag")
        if dtype.hasobject:
            if shape != () or not isinstance(raw, list) or len(raw) != 1:
                raise _Refused(f"object array of shape {shape}: only a 0-d wrapper around the dict is accepted")
            self.value, self.is_wrapper = raw[0], True
            return
        if isinstance(raw, str):  # Python 2 pickles: the data as a latin-1 str
            self._owner.charge(len(raw))
            raw = raw.encode("latin1")
        self.array = self._owner.array_from_buffer(raw, dtype, shape, "F" if fortran else "C")


def _valid_shape(shape) -> tuple[int, ...]:
    if (
        not isinstance(shape, tuple) or len(shape) > _MAX_NDIM
        or any(type(d) is not int or d < 0 or d > 2**40 for d in shape)
    ):
        raise _Refused("array shape is not a short tuple of sizes")
    return shape


class _ArraysOnlyUnpickler(pickle.Unpickler):
    """Admits numpy arrays, dtypes and builtin containers; refuses every other global.

    Every global resolves to a stand-in that checks its arguments (see the section comment).
    """

    def __init__(self, file: io.BufferedIOBase, path: Path, data_bytes: int):
        super().__init__(file, encoding="latin1")
        self._path = path
        self._data_bytes = data_bytes
        # Bytes this pickle may make: what numpy writes stays within about twice the
        # file (a str, then the bytes encoded from it); aliasing tricks go far past it.
        self._budget = 3 * data_bytes + (1 << 20)
        self._used = 0
        self._max_values = max_images() * PIXELS
        self._stand_ins = {
            "reconstruct": _StandIn("numpy _reconstruct", self._reconstruct),
            "frombuffer": _StandIn("numpy _frombuffer", self._frombuffer),
            "dtype": _StandIn("numpy.dtype", self._dtype),
            "encode": _StandIn("_codecs.encode", self._encode),
            "bytes": _StandIn("bytes", self._bytes),
        }
        self._ndarray = _NdarrayClass()

    def find_class(self, module: str, name: str):
        kind = _PICKLE_GLOBALS.get((module, name))
        if kind is None:
            raise DataError(
                f"{self._path}: refusing to unpickle {_clip(module, 60)}.{_clip(name, 60)}; "
                "only a dict of numpy arrays ('features', 'target') is accepted"
            )
        return self._ndarray if kind == "ndarray" else self._stand_ins[kind]

    def persistent_load(self, pid):
        raise _Refused("persistent ids")

    def charge(self, nbytes: int) -> None:
        self._used += nbytes
        if self._used > self._budget:
            raise _Refused(
                f"the pickle expands to more than {self._budget:,} bytes from {self._data_bytes:,} "
                "(repeated references to the same data?)"
            )

    def array_from_buffer(self, raw, dtype: np.dtype, shape: tuple[int, ...], order: str, axis_order=None) -> np.ndarray:
        if not isinstance(raw, (bytes, bytearray)):
            raise _Refused("array data is not bytes")
        if dtype.hasobject or dtype.itemsize == 0:
            raise _Refused(f"array of dtype {dtype} from a buffer")
        count = math.prod(shape)
        nbytes = count * dtype.itemsize
        if count > self._max_values or nbytes > self._data_bytes:
            raise _Refused(
                f"array of shape {shape} ({nbytes:,} bytes) is larger than the file or the ceiling; "
                + _ceiling_hint(max_images())
            )
        if nbytes != len(raw):
            raise _Refused(f"array of shape {shape} and dtype {dtype} needs {nbytes:,} bytes, the pickle holds {len(raw):,}")
        self.charge(nbytes)
        flat = np.frombuffer(raw, dtype=dtype)
        if order == "K" and axis_order is not None:
            return flat.reshape(shape, order="C").transpose(axis_order)
        return flat.reshape(shape, order=order)

    # -- the stand-ins
    def _reconstruct(self, cls, shape, typecode):
        if cls is not self._ndarray or shape != (0,) or typecode not in (b"b", "b"):
            raise _Refused("numpy _reconstruct with arguments numpy never writes")
        return _PendingArray(self)

    def _frombuffer(self, buf, dtype, shape, order, axis_order=None):
        if not isinstance(dtype, _PendingDtype) or order not in ("C", "F", "K"):
            raise _Refused("numpy _frombuffer with arguments numpy never writes")
        shape = _valid_shape(shape)
        if axis_order is not None and (
            not isinstance(axis_order, tuple) or sorted(axis_order) != list(range(len(shape)))
            or any(type(a) is not int for a in axis_order)
        ):
            raise _Refused("numpy _frombuffer with an invalid axis order")
        done = _PendingArray(self)
        done.array = self.array_from_buffer(buf, dtype.resolved(), shape, order, axis_order)
        return done

    def _dtype(self, name, align=False, copy=True):
        if not isinstance(name, str) or name not in _PICKLE_DTYPES or align not in (False, 0) or copy not in (True, 1):
            raise _Refused(f"numpy.dtype({_clip(name, 40)}) is not a dtype this loader reads")
        return _PendingDtype(name)

    def _encode(self, text, encoding="utf-8"):
        if not isinstance(text, str) or encoding not in ("latin1", "latin-1"):
            raise _Refused("_codecs.encode other than of a str to latin1 (how protocols 0-2 write bytes)")
        self.charge(len(text))
        return text.encode("latin1")

    def _bytes(self, *args):
        if args:
            raise _Refused("bytes() with arguments")
        return b""


class _BoundedReader:
    """A read-only view of the next ``length`` bytes of a file: never reads (or allocates) past them."""

    def __init__(self, f, length: int):
        self._f, self._left, self._pos = f, length, 0

    def read(self, n: int = -1) -> bytes:
        n = self._left if n is None or n < 0 else min(n, self._left)
        return self._took(_read_exactly(self._f, n))

    def readline(self) -> bytes:
        return self._took(self._f.readline(self._left))

    def tell(self) -> int:
        return self._pos

    def _took(self, data: bytes) -> bytes:
        self._left -= len(data)
        self._pos += len(data)
        return data


def _prescan_pickle(f, length: int, path: Path) -> None:
    """Walk the opcodes without running any: refuse what numpy never writes and what would allocate.

    The C unpickler allocates from declared lengths and memo indices before reading; here
    each length is checked against the bytes that remain and each memo index against
    how many entries can exist.
    """
    reader = _BoundedReader(f, length)
    memo_next = 0
    try:
        for opcode, arg, pos in pickletools.genops(reader):
            name = opcode.name
            if name not in _PICKLE_OPCODES:
                raise DataError(
                    f"{path}: refusing pickle opcode {name} at byte {pos}; "
                    "only a dict of numpy arrays ('features', 'target') is accepted"
                )
            if name in _PUT_OPCODES:
                if arg > memo_next:
                    raise DataError(f"{path}: pickle memo index {arg} out of order (expected at most {memo_next})")
                memo_next = max(memo_next, arg + 1)
            elif name == "MEMOIZE":
                memo_next += 1
            elif name == "FRAME" and arg > length - pos:
                raise DataError(f"{path}: pickle frame of {arg:,} bytes runs past the end of the file")
            elif name == "PROTO" and arg > pickle.HIGHEST_PROTOCOL:
                raise DataError(f"{path}: pickle protocol {arg} is not supported")
    except DataError:
        raise
    except Exception as exc:  # genops: truncated argument, missing STOP, bad text ...
        raise DataError(f"{path}: not a readable .npy file (corrupt pickle: {_exc_text(exc)})") from None


def load_report_npy(path: Path) -> Dataset:
    """The report's format: a .npy holding a dict with 'features' (N, 28, 28) in [0, 1] and 'target' 1..5."""
    path = Path(path)
    obj = _read_pickled_npy(path)
    if not isinstance(obj, dict):
        raise DataError(f"{path}: expected a dict with 'features' and 'target', found {_type_name(obj)}")
    missing = {"features", "target"} - {k for k in obj if isinstance(k, str) and k in ("features", "target")}
    if missing:
        raise DataError(f"{path}: dict lacks {sorted(missing)} (has {_describe_keys(obj)})")
    limit = max_images()
    features = _materialize(obj["features"], path, "features", limit * PIXELS)
    target = _materialize(obj["target"], path, "target", limit)
    x = _check_images(features, path)
    target = _check_labels(target, path, low=1, high=NUM_CLASSES, what="target")
    _check_lengths(x, target, path)
    return Dataset(x, target - 1, str(path))


def _type_name(obj: object) -> str:
    """What an unpickled object is, for a message (never its repr: it may be huge)."""
    if isinstance(obj, _PendingArray):
        if obj.is_wrapper:
            return "an object array"
        return f"a {obj.array.dtype} array of shape {obj.array.shape}" if obj.array is not None else "an unfinished array"
    if isinstance(obj, _PendingDtype):
        return "a dtype"
    if isinstance(obj, (_StandIn, _NdarrayClass)):
        return "a function"
    return type(obj).__name__


def _read_pickled_npy(path: Path) -> object:
    limit = max_images()
    f, size = _open_regular(path)
    with f:
        try:
            # float64 pixels, written at protocol 0 (up to 6 bytes a byte: zeros become \u0000).
            most = 6 * limit * PIXELS * 8 + (64 << 20)
            if size > most:
                raise DataError(f"{path}: file is {size:,} bytes, more than any data set under the ceiling; {_ceiling_hint(limit)}")
            if f.read(6) == b"\x93NUMPY":
                f.seek(0)
                version = np.lib.format.read_magic(f)
                if version == (1, 0):
                    shape, _, dtype = np.lib.format.read_array_header_1_0(f)
                elif version == (2, 0):
                    shape, _, dtype = np.lib.format.read_array_header_2_0(f)
                else:
                    raise DataError(f"{path}: not a readable .npy file (format version {version} is not supported)")
                if dtype != np.dtype(object):
                    # A plain numeric array: no pickle involved; not the report's format.
                    raise DataError(f"{path}: holds a plain {_clip(str(dtype), 40)} array of shape {_clip(shape, 60)}; expected the report's dict")
            else:
                f.seek(0)  # no .npy header: a bare pickle, as numpy's ndarray.dump writes
            start = f.tell()
            _prescan_pickle(f, size - start, path)
            f.seek(start)
            unpickler = _ArraysOnlyUnpickler(f, path, size - start)
            obj = unpickler.load()
        except DataError:
            raise
        except _Refused as exc:
            raise DataError(f"{path}: refusing the pickle: {exc}; only a dict of numpy arrays ('features', 'target') is accepted") from None
        except MemoryError:
            raise DataError(f"{path}: ran out of memory reading it") from None
        except Exception as exc:  # anything a corrupt pickle or header raises
            raise DataError(f"{path}: not a readable .npy file ({type(exc).__name__}: {_exc_text(exc)})") from None
    if isinstance(obj, _PendingArray) and obj.is_wrapper:
        return obj.value
    return obj


def _materialize(value: object, path: Path, what: str, max_values: int) -> np.ndarray:
    """An unpickled array, or nested lists of numbers checked (depth, counts, types) before np.asarray."""
    if isinstance(value, _PendingArray):
        if value.array is None:
            raise DataError(f"{path}: {what} is {_type_name(value)}, expected a numeric array")
        return value.array
    if not isinstance(value, (list, tuple)):
        raise DataError(f"{path}: {what} is {_type_name(value)}, expected an array")
    sizes: dict[int, int] = {}
    walking: set[int] = set()

    def count(node, depth: int) -> int:
        key = id(node)
        if key in sizes:  # the same list again (aliasing): its size is known, no new walk
            return sizes[key]
        if key in walking:
            raise DataError(f"{path}: {what} is a list that contains itself")
        if depth > _MAX_LIST_DEPTH:
            raise DataError(f"{path}: {what} is lists nested more than {_MAX_LIST_DEPTH} deep")
        walking.add(key)
        if not node:
            total = 0
        elif all(type(v) in (int, float) for v in node):
            total = len(node)
        elif all(isinstance(v, (list, tuple)) for v in node):
            total = 0
            for v in node:
                total += count(v, depth + 1)
                if total > max_values:
                    break
        elif all(isinstance(v, _PendingArray) and v.array is not None for v in node):
            total = sum(v.array.size for v in node)
        else:
            kinds = sorted({_type_name(v) for v in node[:1000]})[:4]
            raise DataError(f"{path}: {what} mixes {', '.join(kinds)}; expected nested lists of numbers or arrays")
        if total > max_values:
            raise DataError(f"{path}: {what} holds more than {max_values:,} values; {_ceiling_hint(max_images())}")
        walking.discard(key)
        sizes[key] = total
        return total

    count(value, 1)

    def plain(node):
        if node and isinstance(node[0], _PendingArray):
            return [v.array for v in node]
        if node and isinstance(node[0], (list, tuple)):
            return [plain(v) for v in node]
        return node

    try:
        return np.asarray(plain(value))
    except (ValueError, TypeError, OverflowError) as exc:
        raise DataError(f"{path}: {what} is not a regular array of numbers ({_exc_text(exc)})") from None


# --------------------------------------------------------------------------- .npz

def load_npz(path: Path) -> Dataset:
    """``x`` (N, 28, 28[, 1]) uint8 0..255 or float 0..1, ``y`` ints 0..4."""
    path = Path(path)
    limit = max_images()
    f, _ = _open_regular(path)
    with f:
        try:
            with zipfile.ZipFile(f) as archive:
                members = {name[:-4] if name.endswith(".npy") else name: name for name in archive.namelist()}
                missing = {"x", "y"} - set(members)
                if missing:
                    raise DataError(f"{path}: lacks arrays {sorted(missing)} (has {_describe_keys(members)})")
                x = _read_npz_member(archive, members["x"], path, "x", limit * PIXELS)
                y = _read_npz_member(archive, members["y"], path, "y", limit)
        except DataError:
            raise
        except MemoryError:
            raise DataError(f"{path}: ran out of memory reading it") from None
        except Exception as exc:  # zip, zlib, header and EOF errors
            raise DataError(f"{path}: not a readable .npz file ({type(exc).__name__}: {_exc_text(exc)})") from None
    if x.ndim == 4 and x.shape[-1] == 1:
        x = x[..., 0]
    if x.dtype == np.uint8:
        x = x.astype(np.float32) / np.float32(255.0)
    x = _check_images(x, path)
    y = _check_labels(y, path, low=0, high=NUM_CLASSES - 1, what="y")
    _check_lengths(x, y, path)
    return Dataset(x, y, str(path))


def _read_npz_member(archive: zipfile.ZipFile, name: str, path: Path, what: str, max_values: int) -> np.ndarray:
    """One member: its .npy header checked (dtype, shape x itemsize vs the ceiling and the member's size) before reading."""
    info = archive.getinfo(name)
    with archive.open(info) as member:
        version = np.lib.format.read_magic(member)
        if version == (1, 0):
            shape, fortran, dtype = np.lib.format.read_array_header_1_0(member)
        elif version == (2, 0):
            shape, fortran, dtype = np.lib.format.read_array_header_2_0(member)
        else:
            raise DataError(f"{path}: not a readable .npz file ({what} has .npy format version {version}, not supported)")
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
        held = info.file_size - member.tell()
        if nbytes != held:
            raise DataError(f"{path}: {what} declares shape {_clip(shape, 60)} of {dtype} ({nbytes:,} bytes), the archive holds {held:,}")
        data = _read_exactly(member, nbytes)
        if len(data) != nbytes:
            raise DataError(f"{path}: {what} is truncated ({len(data):,} of {nbytes:,} bytes)")
    array = np.frombuffer(data, dtype=dtype)
    return array.reshape(shape, order="F" if fortran else "C")


# --------------------------------------------------------------------------- validation

def _check_images(x: np.ndarray, path: Path) -> np.ndarray:
    if x.dtype.kind not in "uif":
        raise DataError(f"{path}: images have dtype {x.dtype}, expected real numbers (uint8 0..255 or float 0..1)")
    if x.ndim != 3 or x.shape[1:] != IMAGE_SHAPE:
        raise DataError(f"{path}: images have shape {x.shape}, expected (N, 28, 28)")
    x = x.astype(np.float32, copy=False)
    if not np.isfinite(x).all():
        raise DataError(f"{path}: {int((~np.isfinite(x)).sum())} pixels are NaN or infinite")
    if x.size and (x.min() < 0.0 or x.max() > 1.0):
        raise DataError(f"{path}: pixels outside [0, 1] (found {x.min():g}..{x.max():g})")
    return x


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
