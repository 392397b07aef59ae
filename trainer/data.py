"""Fashion-MNIST loading, validation, class mapping and the report's split.

Imports no TensorFlow: bench and exporter use this on machines without it. Only the
last-resort Keras download imports Keras, lazily.

Sources, in the order they are looked up:
  1. ``--data PATH`` (a folder of IDX ``.gz`` files, the report's ``.npy`` dict, or ``.npz``)
  2. ``$FMNIST_DATA``
  3. Debian's ``dataset-fashion-mnist`` folder, ``/usr/share/datasets/fashion-mnist``
  4. Keras' cache (``~/.keras/datasets/fashion-mnist``), then Keras' download
"""

from __future__ import annotations

import gzip
import hashlib
import io
import os
import pickle
import zlib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from sklearn.model_selection import train_test_split

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


# --------------------------------------------------------------------------- IDX

def load_idx_dir(folder: Path, class_map: tuple[int, ...] = DEFAULT_CLASS_MAP) -> Dataset:
    images_path, labels_path = folder / IDX_TRAIN_IMAGES, folder / IDX_TRAIN_LABELS
    for path in (images_path, labels_path):
        if not path.exists():
            raise DataError(f"{path}: missing (a Fashion-MNIST IDX folder needs {IDX_TRAIN_IMAGES} and {IDX_TRAIN_LABELS})")
    images = read_idx(images_path, ndim=3)
    labels = read_idx(labels_path, ndim=1)
    if images.shape[1:] != IMAGE_SHAPE:
        raise DataError(f"{images_path}: images are {images.shape[1]}x{images.shape[2]}, expected 28x28")
    if len(images) != len(labels):
        raise DataError(f"{folder}: {len(images)} images but {len(labels)} labels")
    return _from_ten_class(images, labels, str(folder), class_map, str(labels_path))


def read_idx(path: Path, ndim: int) -> np.ndarray:
    """Read one gzip'd IDX file of unsigned bytes (the format of the Fashion-MNIST release)."""
    try:
        with gzip.open(path, "rb") as f:
            raw = f.read()
    except (OSError, EOFError, zlib.error) as exc:
        raise DataError(f"{path}: not a readable gzip file ({exc})") from None
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0:
        raise DataError(f"{path}: not an IDX file (bad magic number)")
    if raw[2] != 0x08:
        raise DataError(f"{path}: IDX element type 0x{raw[2]:02x}, expected 0x08 (unsigned byte)")
    if raw[3] != ndim:
        raise DataError(f"{path}: IDX file has {raw[3]} dimensions, expected {ndim}")
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise DataError(f"{path}: truncated IDX header")
    dims = tuple(int.from_bytes(raw[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim))
    expected = int(np.prod(dims))
    body = len(raw) - header
    if body != expected:
        raise DataError(f"{path}: truncated or corrupt: header says {dims} ({expected} bytes), file has {body}")
    return np.frombuffer(raw, dtype=np.uint8, offset=header).reshape(dims)


def _from_ten_class(images: np.ndarray, labels: np.ndarray, source: str, class_map: tuple[int, ...], label_file: str) -> Dataset:
    labels = np.asarray(labels)
    if labels.size and (labels.min() < 0 or labels.max() > 9):
        raise DataError(f"{label_file}: labels outside 0..9 (found {labels.min()}..{labels.max()})")
    y = np.asarray(class_map, dtype=np.int64)[labels.astype(np.int64)]
    x = images.astype(np.float32) / np.float32(255.0)
    return Dataset(x, y, source, class_names_for(class_map), class_map)


# --------------------------------------------------------------------------- the report's .npy

# Everything a pickled dict of numpy arrays needs, across numpy 1.x and 2.x module names.
_ALLOWED_GLOBALS = frozenset({
    ("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
    ("numpy.core.multiarray", "scalar"), ("numpy._core.multiarray", "scalar"),
    ("numpy.core.numeric", "_frombuffer"), ("numpy._core.numeric", "_frombuffer"),
    ("numpy", "ndarray"), ("numpy", "dtype"),
    ("numpy.dtypes", "Float32DType"), ("numpy.dtypes", "Float64DType"),
    ("numpy.dtypes", "Int64DType"), ("numpy.dtypes", "Int32DType"),
    ("numpy.dtypes", "UInt8DType"), ("numpy.dtypes", "ObjectDType"),
})


class _ArraysOnlyUnpickler(pickle.Unpickler):
    """Admits numpy arrays, dtypes and builtin containers; refuses every other global.

    ``np.load(allow_pickle=True)`` would run whatever callable the file names; the report's
    data file is a pickled dict, so we unpickle it ourselves with this allow-list.
    """

    def __init__(self, file: io.BufferedIOBase, path: Path):
        super().__init__(file)
        self._path = path

    def find_class(self, module: str, name: str):
        if (module, name) in _ALLOWED_GLOBALS:
            return super().find_class(module, name)
        raise DataError(
            f"{self._path}: refusing to unpickle {module}.{name}; "
            "only a dict of numpy arrays ('features', 'target') is accepted"
        )


def load_report_npy(path: Path) -> Dataset:
    """The report's format: a .npy holding a dict with 'features' (N, 28, 28) in [0, 1] and 'target' 1..5."""
    obj = _read_pickled_npy(path)
    if not isinstance(obj, dict):
        raise DataError(f"{path}: expected a dict with 'features' and 'target', found {type(obj).__name__}")
    missing = {"features", "target"} - set(obj)
    if missing:
        raise DataError(f"{path}: dict lacks {sorted(missing)} (has {sorted(map(str, obj))})")
    x = _check_images(np.asarray(obj["features"]), path)
    target = _check_labels(np.asarray(obj["target"]), path, low=1, high=NUM_CLASSES, what="target")
    _check_lengths(x, target, path)
    return Dataset(x, target - 1, str(path))


def _read_pickled_npy(path: Path) -> object:
    try:
        with open(path, "rb") as f:
            version = np.lib.format.read_magic(f)
            if version == (1, 0):
                shape, _, dtype = np.lib.format.read_array_header_1_0(f)
            else:
                shape, _, dtype = np.lib.format.read_array_header_2_0(f)
            if dtype != np.dtype(object):
                # A plain numeric array: no pickle involved, safe to load directly.
                raise DataError(f"{path}: holds a plain {dtype} array of shape {shape}; expected the report's dict")
            array = _ArraysOnlyUnpickler(f, path).load()
    except DataError:
        raise
    except (OSError, ValueError, EOFError, pickle.UnpicklingError, TypeError) as exc:
        raise DataError(f"{path}: not a readable .npy file ({type(exc).__name__}: {exc})") from None
    if isinstance(array, np.ndarray) and array.shape == ():
        return array.item()
    return array


# --------------------------------------------------------------------------- .npz

def load_npz(path: Path) -> Dataset:
    """``x`` (N, 28, 28[, 1]) uint8 0..255 or float 0..1, ``y`` ints 0..4."""
    try:
        with np.load(path, allow_pickle=False) as npz:
            missing = {"x", "y"} - set(npz.files)
            if missing:
                raise DataError(f"{path}: lacks arrays {sorted(missing)} (has {sorted(npz.files)})")
            x, y = npz["x"], npz["y"]
    except DataError:
        raise
    except (OSError, ValueError, EOFError, zlib.error) as exc:
        raise DataError(f"{path}: not a readable .npz file ({type(exc).__name__}: {exc})") from None
    if x.ndim == 4 and x.shape[-1] == 1:
        x = x[..., 0]
    if x.dtype == np.uint8:
        x = x.astype(np.float32) / np.float32(255.0)
    x = _check_images(x, path)
    y = _check_labels(y, path, low=0, high=NUM_CLASSES - 1, what="y")
    _check_lengths(x, y, path)
    return Dataset(x, y, str(path))


# --------------------------------------------------------------------------- validation

def _check_images(x: np.ndarray, path: Path) -> np.ndarray:
    if x.ndim != 3 or x.shape[1:] != IMAGE_SHAPE:
        raise DataError(f"{path}: images have shape {x.shape}, expected (N, 28, 28)")
    if not np.issubdtype(x.dtype, np.number):
        raise DataError(f"{path}: images have dtype {x.dtype}, expected numbers")
    x = x.astype(np.float32, copy=False)
    if not np.isfinite(x).all():
        raise DataError(f"{path}: {int((~np.isfinite(x)).sum())} pixels are NaN or infinite")
    if x.size and (x.min() < 0.0 or x.max() > 1.0):
        raise DataError(f"{path}: pixels outside [0, 1] (found {x.min():g}..{x.max():g})")
    return x


def _check_labels(y: np.ndarray, path: Path, low: int, high: int, what: str) -> np.ndarray:
    if y.ndim != 1:
        raise DataError(f"{path}: {what} has shape {y.shape}, expected (N,)")
    if not np.issubdtype(y.dtype, np.number) or (np.issubdtype(y.dtype, np.floating) and not np.all(np.mod(y, 1) == 0)):
        raise DataError(f"{path}: {what} must be whole numbers, found dtype {y.dtype}")
    y = y.astype(np.int64)
    if y.size and (y.min() < low or y.max() > high):
        raise DataError(f"{path}: {what} outside {low}..{high} (found {y.min()}..{y.max()})")
    return y


def _check_lengths(x: np.ndarray, y: np.ndarray, path: Path) -> None:
    if len(x) != len(y):
        raise DataError(f"{path}: {len(x)} images but {len(y)} labels")
    if len(x) == 0:
        raise DataError(f"{path}: no images")


# --------------------------------------------------------------------------- split

def split_dataset(dataset: Dataset) -> Splits:
    """The report's split: 80% train; the other 20% halved, first half test, second validation.

    Splitting indices gives the same partition as the report's split of arrays, since
    train_test_split's permutation depends only on the length and random_state.
    """
    indices = np.arange(len(dataset))
    train_idx, rest_idx = train_test_split(indices, test_size=TEST_FRACTION, random_state=SPLIT_SEED)
    test_idx, val_idx = train_test_split(rest_idx, test_size=0.5, random_state=SPLIT_SEED)
    return Splits(
        train=dataset.subset(train_idx),
        val=dataset.subset(val_idx),
        test=dataset.subset(test_idx),
        indices={"train": train_idx, "val": val_idx, "test": test_idx},
    )


def reload_dataset(record: dict, limit: int | None, data: str | os.PathLike | None = None) -> Dataset:
    """The data set a model was trained on, from its metadata's ``data`` record, hash-checked.

    ``data`` overrides where to read it from (the files may have moved); the content must match.
    """
    class_map = tuple(record["class_map"]) if record.get("class_map") else DEFAULT_CLASS_MAP
    source = data
    recorded = record["source"].split(" (first ")[0]  # Dataset.limit appends " (first N)"; the limit comes back separately
    if source is None and Path(recorded).exists():
        source = recorded
    dataset = load_dataset(source, class_map).limit(limit)
    if dataset.sha256 != record["sha256"]:
        raise DataError(
            f"{dataset.source}: not the data the model was trained on "
            f"(sha256 {dataset.sha256[:12]}, trained on {record['sha256'][:12]} from {record['source']}); pass --data"
        )
    return dataset
