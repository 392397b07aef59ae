from __future__ import annotations

import gzip
import pickle
from pathlib import Path

import numpy as np
import pytest
from sklearn.model_selection import train_test_split

from tiny import run_python, make_images, write_idx, write_idx_dir
from trainer import data
from trainer.data import DataError


def test_idx_folder_loads_as_floats_with_paired_classes(idx_dir: Path):
    ds = data.load_dataset(idx_dir)
    assert ds.x.shape == (400, 28, 28) and ds.x.dtype == np.float32
    assert 0.0 <= ds.x.min() and ds.x.max() == 1.0
    raw = np.frombuffer(gzip.open(idx_dir / "train-labels-idx1-ubyte.gz").read()[8:], dtype=np.uint8)
    np.testing.assert_array_equal(ds.y, raw // 2)
    assert ds.class_names[0] == "Class 1 (T-shirt/top + Trouser)"
    assert ds.class_names[4] == "Class 5 (Bag + Ankle boot)"


def test_class_map_is_configurable(idx_dir: Path):
    mapping = data.parse_class_map("4,3,2,1,0,0,1,2,3,4")
    ds = data.load_dataset(idx_dir, mapping)
    raw = np.frombuffer(gzip.open(idx_dir / "train-labels-idx1-ubyte.gz").read()[8:], dtype=np.uint8)
    np.testing.assert_array_equal(ds.y, np.array(mapping)[raw])
    assert ds.class_names[4] == "Class 5 (T-shirt/top + Ankle boot)"


@pytest.mark.parametrize("text", ["1,2,3", "0,0,1,1,2,2,3,3,4,9", "0,0,0,0,0,0,0,0,0,0", "a,b"])
def test_bad_class_map_is_refused(text: str):
    with pytest.raises(DataError, match="--class-map"):
        data.parse_class_map(text)


def test_report_npy_loads_with_targets_shifted_to_zero(report_npy: Path):
    ds = data.load_dataset(report_npy)
    stored = np.load(report_npy, allow_pickle=True).item()
    np.testing.assert_array_equal(ds.y, stored["target"] - 1)
    np.testing.assert_allclose(ds.x, stored["features"].astype(np.float32))
    assert ds.class_names == tuple(f"Class {i}" for i in range(1, 6))


class _RunsCode:
    """Pickles to a call of Path.touch: what a hostile data file would do with os.system."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def test_npy_that_would_run_code_is_refused_and_code_does_not_run(tmp_path: Path):
    marker = tmp_path / "pwned"
    evil = tmp_path / "evil.npy"
    payload = {"features": np.zeros((10, 28, 28)), "target": np.ones(10, dtype=int), "x": _RunsCode(marker)}
    np.save(evil, np.array(payload, dtype=object), allow_pickle=True)
    # The file really is hostile: numpy's own loader would run it.
    np.load(evil, allow_pickle=True)
    assert marker.exists()
    marker.unlink()

    with pytest.raises(DataError, match=r"evil\.npy: refusing to unpickle pathlib"):
        data.load_dataset(evil)
    assert not marker.exists()


def test_npz_loads_uint8_and_channel_axis(tmp_path: Path):
    y = np.arange(50) % 5
    path = tmp_path / "d.npz"
    np.savez(path, x=make_images(y * 2)[..., None], y=y)
    ds = data.load_dataset(path)
    assert ds.x.shape == (50, 28, 28) and ds.x.max() == 1.0
    np.testing.assert_array_equal(ds.y, y)


@pytest.mark.parametrize(
    ("x", "y", "message"),
    [
        (np.zeros((5, 28, 27)), np.zeros(5), r"shape \(5, 28, 27\), expected \(N, 28, 28\)"),
        (np.full((5, 28, 28), np.nan), np.zeros(5), "NaN or infinite"),
        (np.full((5, 28, 28), 2.0), np.zeros(5), r"pixels: found float64 in 2\.\.2; accepted: uint8 0\.\.255 or float in \[0, 1\]"),
        (np.zeros((5, 28, 28)), np.array([0, 1, 2, 3, 7]), r"y outside 0..4"),
        (np.zeros((5, 28, 28)), np.zeros(4), "5 images but 4 labels"),
        (np.zeros((5, 28, 28)), np.zeros((5, 2)), r"y has shape \(5, 2\)"),
    ],
)
def test_bad_npz_gives_one_clear_error_naming_the_file(tmp_path: Path, x, y, message):
    path = tmp_path / "bad.npz"
    np.savez(path, x=x, y=y)
    with pytest.raises(DataError, match=message) as err:
        data.load_dataset(path)
    assert str(path) in str(err.value)


def test_report_npy_with_targets_outside_1_to_5(tmp_path: Path):
    path = tmp_path / "d.npy"
    np.save(path, {"features": np.zeros((3, 28, 28)), "target": np.array([0, 1, 2])}, allow_pickle=True)
    with pytest.raises(DataError, match=r"target outside 1..5"):
        data.load_dataset(path)


def test_report_npy_without_the_dict_keys(tmp_path: Path):
    path = tmp_path / "d.npy"
    np.save(path, {"images": np.zeros((3, 28, 28))}, allow_pickle=True)
    with pytest.raises(DataError, match=r"lacks \['features', 'target'\]"):
        data.load_dataset(path)


def test_truncated_idx_is_refused(idx_dir: Path):
    images = idx_dir / "train-images-idx3-ubyte.gz"
    raw = gzip.open(images).read()
    with gzip.open(images, "wb") as f:
        f.write(raw[:-100])
    with pytest.raises(DataError, match="train-images-idx3-ubyte.gz: truncated or corrupt"):
        data.load_dataset(idx_dir)


def test_truncated_gzip_stream_is_refused(idx_dir: Path):
    labels = idx_dir / "train-labels-idx1-ubyte.gz"
    labels.write_bytes(labels.read_bytes()[:30])
    with pytest.raises(DataError, match="train-labels-idx1-ubyte.gz: not a readable gzip file"):
        data.load_dataset(idx_dir)


def test_idx_with_labels_outside_0_to_9(idx_dir: Path):
    write_idx(idx_dir / "train-labels-idx1-ubyte.gz", np.full(400, 12, dtype=np.uint8))
    with pytest.raises(DataError, match=r"labels outside 0..9"):
        data.load_dataset(idx_dir)


def test_idx_with_mismatched_counts(idx_dir: Path):
    write_idx(idx_dir / "train-labels-idx1-ubyte.gz", np.zeros(399, dtype=np.uint8))
    with pytest.raises(DataError, match="400 images but 399 labels"):
        data.load_dataset(idx_dir)


def test_corrupt_npy_is_refused(tmp_path: Path):
    path = tmp_path / "junk.npy"
    path.write_bytes(b"\x93NUMPY garbage")
    with pytest.raises(DataError, match="junk.npy: not a readable .npy file"):
        data.load_dataset(path)


def test_lookup_order_data_option_then_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    first = write_idx_dir(tmp_path / "first", n=120)
    second = write_idx_dir(tmp_path / "second", n=150)
    monkeypatch.setenv("FMNIST_DATA", str(second))
    assert len(data.load_dataset(first)) == 120
    assert len(data.load_dataset()) == 150
    monkeypatch.setenv("FMNIST_DATA", str(tmp_path / "nope"))
    with pytest.raises(DataError, match=r"\$FMNIST_DATA=.*nope: no such file"):
        data.load_dataset()


def test_no_source_anywhere_names_the_paths_tried_and_the_fix(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.delenv("FMNIST_DATA", raising=False)
    monkeypatch.setattr(data, "DEBIAN_DIR", tmp_path / "debian")
    monkeypatch.setattr(data, "KERAS_CACHE_DIR", tmp_path / "keras")
    import keras.datasets.fashion_mnist as keras_fmnist

    def offline():
        raise Exception("URL fetch failure: no network")

    monkeypatch.setattr(keras_fmnist, "load_data", offline)
    with pytest.raises(DataError) as err:
        data.load_dataset()
    message = str(err.value)
    assert str(tmp_path / "debian") in message and str(tmp_path / "keras") in message
    assert "Keras download (failed: URL fetch failure" in message
    assert "apt-get install -y dataset-fashion-mnist" in message


def test_split_matches_the_reports_code_and_sizes():
    n = 1000
    x = np.random.default_rng(0).random((n, 28, 28), dtype=np.float32)
    y = np.arange(n) % 5
    splits = data.split_dataset(data.Dataset(x, y, "t"))
    # The report's own two calls on arrays:
    x_train, x_test, _, y_test = train_test_split(x, y, test_size=0.2, random_state=0)
    x_test, x_val, _, _ = train_test_split(x_test, y_test, test_size=0.5, random_state=0)
    np.testing.assert_array_equal(splits.train.x, x_train)
    np.testing.assert_array_equal(splits.test.x, x_test)
    np.testing.assert_array_equal(splits.val.x, x_val)


def test_split_of_60000_is_48000_6000_6000():
    x = np.broadcast_to(np.zeros((1, 28, 28), np.float32), (60000, 28, 28))
    splits = data.split_dataset(data.Dataset(x, np.zeros(60000, np.int64), "t"))
    assert splits.sizes() == {"train": 48000, "val": 6000, "test": 6000}
    together = np.concatenate(list(splits.indices.values()))
    assert len(np.unique(together)) == 60000


def test_data_modules_import_without_tensorflow():
    result = run_python("import trainer.data, trainer.artifacts, trainer.environment")
    assert result.returncode == 0, result.stderr or result.stdout


def test_hash_is_independent_of_format(tmp_path: Path):
    y = np.arange(40) % 5
    images = make_images(y * 2)
    np.savez(tmp_path / "a.npz", x=images, y=y)
    np.save(tmp_path / "b.npy", {"features": images.astype(np.float32) / np.float32(255.0), "target": y + 1}, allow_pickle=True)
    assert data.load_dataset(tmp_path / "a.npz").sha256 == data.load_dataset(tmp_path / "b.npy").sha256


def test_unpickler_refuses_builtins_eval(tmp_path: Path):
    class Evil:
        def __reduce__(self):
            return (eval, ("1+1",))

    path = tmp_path / "e.npy"
    with open(path, "wb") as f:
        np.lib.format.write_array_header_1_0(f, {"descr": "|O", "fortran_order": False, "shape": ()})
        pickle.dump(Evil(), f, protocol=3)
    with pytest.raises(DataError, match="refusing to unpickle builtins.eval"):
        data.load_dataset(path)


@pytest.mark.parametrize("protocol", range(6))
def test_code_in_the_npy_is_refused_at_every_pickle_protocol(tmp_path: Path, protocol: int):
    marker = tmp_path / "pwned"
    evil = tmp_path / "evil.npy"
    payload = {"features": np.zeros((10, 28, 28)), "target": np.ones(10, dtype=int), "x": _RunsCode(marker)}
    with open(evil, "wb") as f:
        np.lib.format.write_array_header_1_0(f, {"descr": "|O", "fortran_order": False, "shape": ()})
        pickle.dump(np.array(payload, dtype=object), f, protocol=protocol)
    # Protocols 0-3 write Path.touch as getattr(PosixPath, 'touch'); 4 and 5 name it directly.
    with pytest.raises(DataError, match=r"evil\.npy: refusing to unpickle (pathlib|(__builtin__|builtins)\.getattr)"):
        data.load_dataset(evil)
    assert not marker.exists()


@pytest.mark.parametrize("protocol", range(6))
def test_report_npy_of_every_pickle_protocol_loads(tmp_path: Path, report_npy: Path, protocol: int):
    stored = np.load(report_npy, allow_pickle=True)
    path = tmp_path / f"p{protocol}.npy"
    with open(path, "wb") as f:
        np.lib.format.write_array_header_1_0(f, {"descr": "|O", "fortran_order": False, "shape": ()})
        pickle.dump(stored, f, protocol=protocol)
    assert data.load_dataset(path).sha256 == data.load_dataset(report_npy).sha256


def test_split_refuses_fewer_than_ten_images():
    dataset = data.Dataset(np.zeros((5, 28, 28), np.float32), np.zeros(5, np.int64), "five.npz")
    with pytest.raises(DataError, match=r"^five.npz: only 5 images; the 80/10/10 train/val/test split needs at least 10"):
        data.split_dataset(dataset)


def test_complex_pixels_are_refused(tmp_path: Path):
    path = tmp_path / "c.npz"
    np.savez(path, x=np.full((10, 28, 28), 0.5 + 0.5j), y=np.zeros(10, np.int64))
    with pytest.raises(DataError, match=r"c\.npz: images have dtype complex128, expected real numbers"):
        data.load_dataset(path)


# --------------------------------------------------------------------------- what was found, what is accepted

ACCEPTED = "accepted: uint8 0..255 or float in [0, 1]"


def _one_line_error(path: Path, match: str, data_arg: Path | None = None) -> str:
    with pytest.raises(DataError, match=match) as err:
        data.load_dataset(data_arg or path)
    message = str(err.value)
    assert message.startswith(str(path)) and "\n" not in message, message
    return message


def test_uint8_pixels_are_accepted_and_scaled_by_every_loader(tmp_path: Path):
    y = np.arange(40) % 5
    images = make_images(y * 2)
    np.savez(tmp_path / "a.npz", x=images, y=y)
    np.save(tmp_path / "b.npy", {"features": images, "target": y + 1}, allow_pickle=True)
    np.save(tmp_path / "c.npy", {"features": images.astype(np.float32) / np.float32(255.0), "target": y + 1}, allow_pickle=True)
    hashes = {data.load_dataset(tmp_path / name).sha256 for name in ("a.npz", "b.npy", "c.npy")}
    assert len(hashes) == 1
    ds = data.load_dataset(tmp_path / "b.npy")
    assert ds.x.dtype == np.float32 and ds.x.max() == 1.0


@pytest.mark.parametrize("fmt", ["npz", "npy"])
@pytest.mark.parametrize(
    ("pixels", "found"),
    [
        (np.linspace(-0.5, 254.0, 12 * 784).reshape(12, 28, 28), "float64 in -0.5..254"),
        (np.full((12, 28, 28), 255, np.int64), "int64 in 255..255"),
        (np.full((12, 28, 28), 1, np.uint16), "uint16 in 1..1"),
    ],
)
def test_pixel_messages_say_what_was_found_and_what_is_accepted(tmp_path: Path, fmt: str, pixels, found: str):
    path = tmp_path / f"p.{fmt}"
    labels = np.arange(12) % 5
    if fmt == "npz":
        np.savez(path, x=pixels, y=labels)
    else:
        np.save(path, {"features": pixels, "target": labels + 1}, allow_pickle=True)
    message = _one_line_error(path, "pixels: found")
    assert message == f"{path}: pixels: found {found}; {ACCEPTED}"


def test_bad_pixel_dtype_says_what_is_accepted(tmp_path: Path):
    path = tmp_path / "c.npz"
    np.savez(path, x=np.zeros((12, 28, 28), bool), y=np.zeros(12, np.int64))
    message = _one_line_error(path, "images have dtype bool, expected real numbers")
    assert message.endswith("(uint8 0..255 or float in [0, 1])")


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("d.npy", "np.save of a dict with 'features' (N, 28, 28) and 'target' 1..5"),
        ("d.npz", "np.savez with arrays 'x' (N, 28, 28) and 'y' 0..4"),
    ],
)
def test_empty_file_is_called_empty(tmp_path: Path, name: str, expected: str):
    path = tmp_path / name
    path.write_bytes(b"")
    message = _one_line_error(path, "empty file")
    assert message == f"{path}: empty file (0 bytes); expected {expected}"


def test_empty_idx_file_is_called_empty(idx_dir: Path):
    images = idx_dir / data.IDX_TRAIN_IMAGES
    images.write_bytes(b"")
    message = _one_line_error(images, "empty file", data_arg=idx_dir)
    assert message.startswith(f"{images}: empty file (0 bytes); expected a gzip'd IDX file")


def test_npy_header_without_a_pickle_says_so(tmp_path: Path):
    path = tmp_path / "h.npy"
    with open(path, "wb") as f:
        np.lib.format.write_array_header_1_0(f, {"descr": "|O", "fortran_order": False, "shape": ()})
    _one_line_error(path, "a .npy header with no pickle after it; expected np.save of a dict")


def test_zip_archive_named_npy_is_called_a_zip_archive(tmp_path: Path):
    y = np.arange(20) % 5
    np.savez(tmp_path / "d.npz", x=make_images(y), y=y)
    path = tmp_path / "d.npy"
    path.write_bytes((tmp_path / "d.npz").read_bytes())
    message = _one_line_error(path, "a zip archive, not a .npy")
    assert "rename it to .npz" in message and "codec" not in message
    path.rename(tmp_path / "renamed.npz")  # doing what it says works
    assert len(data.load_dataset(tmp_path / "renamed.npz")) == 20


def test_npy_named_npz_is_called_a_npy(tmp_path: Path, report_npy: Path):
    path = tmp_path / "d.npz"
    path.write_bytes(report_npy.read_bytes())
    message = _one_line_error(path, "a .npy file, not a zip archive")
    assert "rename it to .npy" in message


def test_symlink_loops_are_called_symlink_loops(tmp_path: Path, idx_dir: Path):
    loop = tmp_path / "loop.npy"
    loop.symlink_to(tmp_path / "loop2.npy")
    (tmp_path / "loop2.npy").symlink_to(loop)
    with pytest.raises(DataError, match=r"^--data .*loop\.npy: a symlink loop") as err:
        data.load_dataset(loop)
    assert "no such file" not in str(err.value)
    labels = idx_dir / data.IDX_TRAIN_LABELS
    labels.unlink()
    labels.symlink_to(labels)
    message = _one_line_error(labels, "a symlink loop", data_arg=idx_dir)
    assert "missing" not in message
    labels.unlink()
    labels.symlink_to(tmp_path / "nowhere")
    _one_line_error(labels, "a broken symlink", data_arg=idx_dir)


# --------------------------------------------------------------------------- every class in the training split

def test_a_class_without_training_images_is_refused_with_the_counts():
    y = np.array([0, 1, 2, 3] * 25)  # no class 4 (Class 5)
    dataset = data.Dataset(np.zeros((100, 28, 28), np.float32), y, "four.npz")
    splits = data.split_dataset(dataset)
    with pytest.raises(DataError) as err:
        splits.require_every_class()
    message = str(err.value)
    counts = np.bincount(splits.train.y, minlength=5)
    assert message.startswith("four.npz: no training images of Class 5;") and "\n" not in message
    assert "training images per class: " + ", ".join(f"{i + 1}: {n}" for i, n in enumerate(counts)) in message
    assert counts[4] == 0 and "5: 0" in message
    full = data.split_dataset(data.Dataset(np.zeros((100, 28, 28), np.float32), np.arange(100) % 5, "five.npz"))
    assert full.require_every_class() is full


def test_training_refuses_a_class_map_or_limit_that_leaves_a_class_out(tmp_path: Path):
    pytest.importorskip("keras")
    from trainer.artifacts import Artifacts
    from trainer.training import load_data

    folder = tmp_path / "idx"
    folder.mkdir()
    labels = np.r_[np.zeros(10), np.arange(190) % 8].astype(np.uint8)  # the first 10 T-shirts; no Bag (8) nor Ankle boot (9)
    write_idx(folder / data.IDX_TRAIN_IMAGES, make_images(labels))
    write_idx(folder / data.IDX_TRAIN_LABELS, labels)
    art = Artifacts(tmp_path / "art")
    with pytest.raises(DataError, match=r"idx: no training images of Class 5 \(Bag \+ Ankle boot\); .*, 5: 0 \(") as err:
        load_data(art, folder, quiet=True)
    assert str(err.value).startswith(str(folder)) and "--class-map" in str(err.value)
    _, splits = load_data(art, folder, class_map="0,1,2,3,4,4,4,4,4,4", quiet=True)  # every class has a label here
    assert set(np.unique(splits.train.y)) == {0, 1, 2, 3, 4}
    with pytest.raises(DataError, match=r"idx \(first 10\): no training images of Class 2 \(Trouser\), Class 3 .*; training images per class: 1: 8, 2: 0, "):
        load_data(art, folder, class_map="0,1,2,3,4,4,4,4,4,4", limit=10, quiet=True)
