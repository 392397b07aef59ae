from __future__ import annotations

import gzip
import pickle
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from sklearn.model_selection import train_test_split

from tiny import make_images, write_idx, write_idx_dir
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
        (np.full((5, 28, 28), 2.0), np.zeros(5), r"outside \[0, 1\]"),
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
    code = ("import sys, trainer.data, trainer.artifacts, trainer.environment; "
            "bad = [m for m in ('tensorflow', 'keras') if m in sys.modules]; "
            "sys.exit(f'imported {bad}' if bad else 0)")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
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
