"""Hostile data files (issue #14): each loader gives one DataError line, never a traceback,
never a large allocation, and never runs code from a pickle.

Anything that could allocate a lot if a check were missing runs in a child process under
RLIMIT_AS (``_load_bounded``), so a regression fails the test instead of the machine.
"""

from __future__ import annotations

import codecs
import copyreg
import gzip
import io
import os
import pickle
import resource
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest

from tiny import make_images, write_idx, write_idx_dir
from trainer import data
from trainer.data import DataError

REPO = Path(__file__).resolve().parents[1]
# Address-space ceiling for the child processes: Python with trainer.data imported
# takes about 0.1 GB of it; anything that tries gigabytes fails.
AS_LIMIT_MB = 1024
# Resident memory a refusal may cost (the import alone is about 35 MB).
RSS_LIMIT_MB = 200
_RECONSTRUCT = np.zeros(1).__reduce__()[0]  # numpy's _reconstruct, whatever module numpy keeps it in

_CHILD = r"""
import sys
from trainer.data import load_dataset, DataError
try:
    ds = load_dataset(sys.argv[1])
    print("LOADED", len(ds))
except DataError as exc:
    print("DATAERROR", str(exc).replace("\n", "<NEWLINE>"))
# Peak resident memory of this process since exec (ru_maxrss would include the forking parent's).
print("MAXRSS_KB", [l.split()[1] for l in open("/proc/self/status") if l.startswith("VmHWM:")][0])
"""


def _limit_address_space() -> None:
    resource.setrlimit(resource.RLIMIT_AS, (AS_LIMIT_MB << 20, AS_LIMIT_MB << 20))


def _child_env(**extra: str) -> dict[str, str]:
    env = {**os.environ, "OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1",
           # tests/ is on the path of the test run (pyproject.toml), not of a plain interpreter: the fuzzers import it
           "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO / "tests"), os.environ.get("PYTHONPATH")]))}
    env.update(extra)
    return env


def _run_bounded(args: list[str], timeout: int = 120, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, *args], cwd=REPO, env=_child_env(**env), preexec_fn=_limit_address_space,
        capture_output=True, text=True, timeout=timeout,
    )


def _load_bounded(path: Path, timeout: int = 120, **env: str) -> str:
    """Load in a child under RLIMIT_AS; return the DataError line (fails on anything else)."""
    result = _run_bounded(["-c", _CHILD, str(path)], timeout=timeout, **env)
    assert result.returncode == 0, f"child failed:\n{result.stderr[-3000:]}"
    lines = dict(line.split(" ", 1) for line in result.stdout.splitlines() if " " in line)
    assert "DATAERROR" in lines, f"expected a DataError, got: {result.stdout}"
    assert int(lines["MAXRSS_KB"]) < RSS_LIMIT_MB * 1024, f"used {int(lines['MAXRSS_KB']) // 1024} MB: {lines['DATAERROR']}"
    message = lines["DATAERROR"]
    _assert_one_clear_line(message, path)
    return message


def _assert_one_clear_line(message: str, path: Path | str) -> None:
    assert message.startswith(str(path)), message
    assert "\n" not in message and "<NEWLINE>" not in message, message
    assert len(message) < len(str(path)) + 400, f"{len(message)} characters: {message[:500]}"
    assert "out of memory" not in message, message


def _refused(path: Path, match: str) -> str:
    """In-process: a DataError matching ``match`` that is one line starting with the path."""
    with pytest.raises(DataError, match=match) as err:
        data.load_dataset(path)
    _assert_one_clear_line(str(err.value), path)
    return str(err.value)


def _idx_header(*dims: int) -> bytes:
    return bytes([0, 0, 0x08, len(dims)]) + b"".join(d.to_bytes(4, "big") for d in dims)


def _study_dict(n: int = 30, seed: int = 1) -> dict:
    target = np.random.default_rng(seed).integers(1, 6, size=n)
    return {"features": make_images((target - 1) * 2, seed).astype(np.float64) / 255.0, "target": target}


def _npy_with_pickle(path: Path, payload: bytes) -> Path:
    """A .npy as numpy writes an object array: the header, then the pickle."""
    with open(path, "wb") as f:
        np.lib.format.write_array_header_1_0(f, {"descr": "|O", "fortran_order": False, "shape": ()})
        f.write(payload)
    return path


# =========================================================================== IDX family

def test_idx_header_claiming_2_31_images_is_refused_before_reading(tmp_path: Path):
    folder = write_idx_dir(tmp_path / "idx", n=20)
    images = folder / data.IDX_TRAIN_IMAGES
    noise = np.random.default_rng(0).integers(0, 256, size=2 << 20, dtype=np.uint8).tobytes()
    images.write_bytes(gzip.compress(_idx_header(2**31, 28, 28) + noise, compresslevel=1))
    assert images.stat().st_size > 2_000_000
    message = _load_bounded(folder)
    assert "IDX header declares (2147483648, 28, 28)" in message and "ceiling is 200,000 images" in message


def test_idx_header_beyond_what_the_gzip_can_hold_is_refused(tmp_path: Path):
    folder = write_idx_dir(tmp_path / "idx", n=20)
    images = folder / data.IDX_TRAIN_IMAGES
    images.write_bytes(gzip.compress(_idx_header(150_000, 28, 28) + bytes(1000)))
    message = _load_bounded(folder)
    assert "gzip file can hold" in message


def test_idx_dimensions_that_overflow_int64_are_refused(tmp_path: Path):
    # 2**30 * 2**30 * 16 == 2**64: np.prod wraps it to 0, which matched an empty body.
    folder = write_idx_dir(tmp_path / "idx", n=20)
    (folder / data.IDX_TRAIN_IMAGES).write_bytes(gzip.compress(_idx_header(2**30, 2**30, 16)))
    message = _load_bounded(folder)
    assert "(1073741824, 1073741824, 16) (18,446,744,073,709,551,616 bytes), more than allowed" in message


def test_gzip_bomb_is_refused_after_the_declared_bytes(tmp_path: Path):
    """Valid data then 2 GiB of zeros in 2 MB of gzip: reading it whole does not fit the child."""
    folder = write_idx_dir(tmp_path / "idx", n=20)
    images = folder / data.IDX_TRAIN_IMAGES
    zeros = gzip.compress(bytes(64 << 20), compresslevel=9)
    with open(images, "ab") as f:
        for _ in range(32):
            f.write(zeros)
    message = _load_bounded(folder)
    assert "file has more data after them" in message


def test_idx_labels_bomb_is_refused(tmp_path: Path):
    folder = write_idx_dir(tmp_path / "idx", n=20)
    labels = folder / data.IDX_TRAIN_LABELS
    # 256 MiB of zeros after the labels, as 32 gzip members of 8 MiB each (one compressed, 32 times cheaper to make):
    # the reader sees one stream, as for the gzip bomb above.
    zeros = gzip.compress(bytes(8 << 20), compresslevel=9)
    labels.write_bytes(gzip.compress(_idx_header(20) + bytes(20)) + zeros * 32)
    message = _load_bounded(folder)
    assert message.startswith(str(labels)) and "more data after them" in message


def test_idx_trailing_data_is_refused(idx_dir: Path):
    labels = idx_dir / data.IDX_TRAIN_LABELS
    raw = gzip.open(labels).read()
    labels.write_bytes(gzip.compress(raw + b"\x00"))
    _refused(idx_dir, r"train-labels-idx1-ubyte.gz: truncated or corrupt: header says \(400,\).*more data after them")


def test_idx_fifo_is_refused_without_blocking(tmp_path: Path):
    folder = write_idx_dir(tmp_path / "idx", n=20)
    images = folder / data.IDX_TRAIN_IMAGES
    images.unlink()
    os.mkfifo(images)
    message = _load_bounded(folder, timeout=60)
    assert "not a regular file (a FIFO)" in message


@pytest.mark.parametrize("kind", ["folder", "device"])
def test_idx_folder_or_device_in_place_of_the_file_is_refused(tmp_path: Path, kind: str):
    folder = write_idx_dir(tmp_path / "idx", n=20)
    images = folder / data.IDX_TRAIN_IMAGES
    images.unlink()
    if kind == "folder":
        images.mkdir()
        expected = "a folder"
    else:
        images.symlink_to("/dev/zero")
        expected = "a character device"
    message = _refused(folder, "not a regular file")
    assert expected in message


def test_ceiling_is_configurable_by_environment(idx_dir: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("FMNIST_MAX_IMAGES", "100")
    message = _refused(idx_dir, r"IDX header declares \(400, 28, 28\)")
    assert "the ceiling is 100 images ($FMNIST_MAX_IMAGES raises it)" in message
    monkeypatch.setenv("FMNIST_MAX_IMAGES", "400")
    assert len(data.load_dataset(idx_dir)) == 400
    monkeypatch.setenv("FMNIST_MAX_IMAGES", "lots\nof them")
    with pytest.raises(DataError, match=r"^\$FMNIST_MAX_IMAGES=lots\\nof them: expected a positive whole number"):
        data.load_dataset(idx_dir)


def test_idx_with_wrong_image_size_is_refused_before_labels(idx_dir: Path):
    write_idx(idx_dir / data.IDX_TRAIN_IMAGES, np.zeros((20, 28, 27), np.uint8))
    _refused(idx_dir, "images are 28x27, expected 28x28")


# =========================================================================== .npy family: legitimate files

@pytest.mark.slow
@pytest.mark.parametrize("protocol", range(6))
def test_npy_of_every_pickle_protocol_loads_with_the_same_hash(tmp_path: Path, protocol: int):
    study = _study_dict()
    np.save(tmp_path / "reference.npy", study, allow_pickle=True)  # protocol 3
    expected = data.load_dataset(tmp_path / "reference.npy").sha256
    variants = {
        "wrapped": np.array(study),  # what np.save writes, at another protocol
        "bare_dict": study,
        "lists": {"features": study["features"].tolist(), "target": study["target"].tolist()},
        "list_of_arrays": {"features": list(study["features"]), "target": study["target"]},
        "big_endian": {"features": study["features"].astype(">f8"), "target": study["target"].astype(">i4")},
        "fortran": {"features": np.asfortranarray(study["features"]), "target": study["target"]},
        "transposed": {"features": study["features"].transpose(2, 1, 0).copy().transpose(2, 1, 0), "target": study["target"]},
        "float32_uint8": {"features": study["features"].astype(np.float32), "target": study["target"].astype(np.uint8)},
    }
    for name, obj in variants.items():
        payload = pickle.dumps(obj, protocol=protocol)
        in_npy = _npy_with_pickle(tmp_path / f"{name}.npy", payload)
        bare = tmp_path / f"{name}_bare.npy"  # no .npy header: what ndarray.dump writes
        bare.write_bytes(payload)
        for path in (in_npy, bare):
            assert data.load_dataset(path).sha256 == expected, f"{path.name} at protocol {protocol}"


def test_ndarray_dump_loads(tmp_path: Path):
    study = _study_dict()
    np.array(study).dump(tmp_path / "dumped.npy")  # pickle protocol 2, no .npy header
    np.save(tmp_path / "saved.npy", study, allow_pickle=True)
    assert data.load_dataset(tmp_path / "dumped.npy").sha256 == data.load_dataset(tmp_path / "saved.npy").sha256


# =========================================================================== .npy family: code execution

def _marker_cmd(marker: Path) -> str:
    return f"touch {marker}"


class _Reduce:
    """Pickles to ``func(*args)``; with state, also BUILD."""

    def __init__(self, func, args, state=None):
        self.func, self.args, self.state = func, args, state

    def __reduce__(self):
        return (self.func, self.args) if self.state is None else (self.func, self.args, self.state)


def _dict_with(payload) -> dict:
    return {**_study_dict(12), "extra": payload}


def _pickled(obj, protocol: int = 3) -> bytes:
    return pickle.dumps(obj, protocol=protocol)


def _hostile_payloads(marker: Path) -> dict[str, tuple[bytes, bool]]:
    """name -> (pickle bytes, whether plain pickle.loads really runs it and makes the marker)."""
    cmd = _marker_cmd(marker).encode()
    code = f"open({str(marker)!r}, 'w').close()"
    short = len(cmd).to_bytes(1, "little")
    payloads = {
        "os_system": (_pickled(_dict_with(_Reduce(os.system, (_marker_cmd(marker),)))), True),
        "subprocess_call": (_pickled(_dict_with(_Reduce(subprocess.call, (["touch", str(marker)],)))), True),
        "eval": (_pickled(_Reduce(eval, (code,)), protocol=0), True),
        "exec_in_object_array": (_pickled(np.array([1, _Reduce(exec, (code,))], dtype=object)), True),
        "in_list_in_dict": (_pickled({"features": [_Reduce(eval, (code,))], "target": [1]}, protocol=5), True),
        "getattr_bound_method": (_pickled(_Reduce(Path(marker).touch, ()), protocol=2), True),
        "numpy_savetxt_writes_a_file": (_pickled(_Reduce(np.savetxt, (str(marker), np.zeros(1))), protocol=4), True),
        "numpy_memmap_creates_a_file": (_pickled(_Reduce(np.memmap, (str(marker), np.uint8, "w+", 0, (1,))), protocol=2), True),
        "numpy_fromfile_reads_a_file": (_pickled(_dict_with(_Reduce(np.fromfile, ("/etc/hostname",)))), False),
        "copyreg_reconstructor": (_pickled(_Reduce(copyreg._reconstructor, (Path, object, None)), protocol=1), False),
        "opcode_GLOBAL": (b"cos\nsystem\n(V" + cmd + b"\ntR.", True),
        "opcode_INST": (b"(V" + cmd + b"\nios\nsystem\n.", True),
        "opcode_OBJ": (b"(cos\nsystem\nV" + cmd + b"\no.", True),
        "opcode_STACK_GLOBAL": (b"\x80\x04\x8c\x02os\x8c\x06system\x93\x8c" + short + cmd + b"\x85R.", True),
        "opcode_NEWOBJ": (b"\x80\x02cpathlib\nPath\nV" + str(marker).encode() + b"\n\x85\x81.", False),
        "opcode_EXT2": (b"\x80\x02\x83\x0f\x0e\x8c" + short + cmd + b"\x85R.", True),
        "opcode_PERSID": (b"P" + cmd + b"\n.", False),
        "opcode_BINPERSID": (b"\x80\x02\x8c" + short + cmd + b"Q.", False),
        # The admitted globals, called with arguments numpy never writes:
        "codecs_encode_zlib": (_pickled(_dict_with(_Reduce(codecs.encode, (b"x" * 100, "zlib"))), protocol=2), False),
        "dtype_void": (_pickled(_dict_with(_Reduce(np.dtype, ("V1000000", False, True))), protocol=2), False),
        "dtype_with_fields_state": (_pickled(_dict_with(_Reduce(np.dtype, ("f8", False, True), (3, "<", None, ("a",), {"a": (np.dtype("f8"), 0)}, 8, 1, 16)))), False),
        "reconstruct_huge": (_pickled(_dict_with(_Reduce(_RECONSTRUCT, (np.ndarray, (2**40,), b"b")))), False),
        "build_on_codecs_encode": (b"\x80\x02c_codecs\nencode\n}(X\x08\x00\x00\x00__call__K\x01ub.", False),
    }
    return payloads


@pytest.mark.parametrize("name", list(_hostile_payloads(Path("/m"))))
def test_hostile_pickle_is_refused_and_runs_no_code(tmp_path: Path, name: str):
    marker = tmp_path / "pwned"
    payload, really_runs = _hostile_payloads(marker)[name]
    bare = tmp_path / "evil_bare.npy"
    bare.write_bytes(payload)
    for path in (_npy_with_pickle(tmp_path / "evil.npy", payload), bare):
        message = _refused(path, "refusing")
        assert not marker.exists(), f"{name} ran code: {message}"
    if really_runs:  # the file really is hostile: a plain unpickler runs it
        code = 0x0E0F
        copyreg.add_extension("os", "system", code)
        try:
            pickle.loads(payload)
        except Exception:
            pass
        finally:
            copyreg.remove_extension("os", "system", code)
        assert marker.exists(), f"{name}: the payload did not run under plain pickle; the test proves nothing"


def test_object_array_in_the_dict_is_refused(tmp_path: Path):
    path = tmp_path / "d.npy"
    np.save(path, {"features": np.zeros((12, 28, 28)), "target": np.array([1] * 12, dtype=object)}, allow_pickle=True)
    _refused(path, r"object array of shape \(12,\)")


def test_zero_stride_array_is_refused(tmp_path: Path):
    """numpy.ndarray called directly: 2,000,000 images out of 8 bytes."""
    huge = _Reduce(np.ndarray, ((2_000_000, 28, 28), np.dtype("f8"), b"\x00" * 8, 0, (0, 0, 0)))
    labels = _Reduce(np.ndarray, ((2_000_000,), np.dtype("i8"), b"\x01" + bytes(7), 0, (0,)))
    path = _npy_with_pickle(tmp_path / "strides.npy", _pickled({"features": huge, "target": labels}))
    assert path.stat().st_size < 1000
    message = _load_bounded(path)
    assert "calls numpy.ndarray directly" in message


def test_array_state_larger_than_its_data_is_refused(tmp_path: Path):
    state = (1, (2_000_000, 28, 28), np.dtype("f8"), False, b"\x00" * 8)
    evil = _Reduce(_RECONSTRUCT, (np.ndarray, (0,), b"b"), state)
    path = _npy_with_pickle(tmp_path / "big.npy", _pickled({"features": evil, "target": np.ones(3)}))
    message = _load_bounded(path)
    assert "corrupt pickle: ValueError: buffer size does not match array size" in message


def _self_referencing() -> list:
    outer: list = []
    for _ in range(40):
        outer.append(outer)
    return outer


def _exponential(depth: int = 4, width: int = 1000) -> list:
    node: list = [0.5] * width
    for _ in range(depth - 1):
        node = [node] * width
    return node


@pytest.mark.parametrize(
    ("name", "features", "expected"),
    [
        ("self_referencing", _self_referencing(), "a list that contains itself"),
        ("exponential_lists", _exponential(), "holds more than 156,800,000 values"),
        ("deep_lists", _exponential(depth=12, width=2), "nested more than 4 deep"),
    ],
)
def test_list_blowups_are_refused_before_np_asarray(tmp_path: Path, name: str, features: list, expected: str):
    path = _npy_with_pickle(tmp_path / f"{name}.npy", _pickled(np.array({"features": features, "target": [1] * 10})))
    assert path.stat().st_size < 20_000
    message = _load_bounded(path)
    assert expected in message


def test_aliased_encoded_bytes_are_refused_by_the_memory_limit(tmp_path: Path):
    """Protocol 2 writes bytes as _codecs.encode(str): one 1 MB str, referenced 2,000 times, would make 2 GB."""
    text = "\x00" * (1 << 20)
    many = [_Reduce(codecs.encode, (text, "latin1")) for _ in range(2000)]
    path = _npy_with_pickle(tmp_path / "alias.npy", _pickled({"features": many, "target": [1]}, protocol=2))
    assert path.stat().st_size < 3 << 20
    message = _load_bounded(path)
    assert "refusing the pickle: it needs more than" in message and "MB of memory to read" in message


@pytest.mark.parametrize(
    ("name", "payload", "expected"),
    [
        # The C unpickler allocates a memo of 2**31 entries, or 2**40 bytes, before reading: the child's memory limit stops it.
        ("memo_index", b"\x80\x02]r\xff\xff\xff\x7f.", "MB of memory to read, the limit for a 137-byte file"),
        ("bytes8_length", b"\x80\x04\x8e" + (2**40).to_bytes(8, "little") + b"xx.", "MB of memory to read, the limit for a 142-byte file"),
        ("bytearray8_length", b"\x80\x05\x96" + (2**34).to_bytes(8, "little") + b"xx.", "MB of memory to read, the limit for a 142-byte file"),
        ("frame_length", b"\x80\x04\x95" + (2**40).to_bytes(8, "little") + b"N.", "corrupt pickle: UnpicklingError: pickle data was truncated"),
        ("binunicode_length", b"\x80\x02X\xff\xff\xff\x7fabc.", "corrupt pickle"),
        ("no_stop", b"\x80\x02]", "corrupt pickle"),
        ("long_decimal", b"L" + b"9" * 100_000 + b"L\n.", "corrupt pickle"),
    ],
)
def test_pickle_lengths_and_indices_cannot_allocate_past_the_limit(tmp_path: Path, name: str, payload: bytes, expected: str):
    path = _npy_with_pickle(tmp_path / f"{name}.npy", payload)
    message = _load_bounded(path)
    assert expected in message


def test_memory_bombs_are_stopped_by_the_readers_own_limit(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """In this process, with no limit of the test's: the child that unpickles has its own, sized from the file."""
    monkeypatch.setattr(data, "_CHILD_ALLOWANCE", 64 << 20)
    text = "\x00" * (1 << 20)
    bombs = {
        "memo.npy": b"\x80\x02]r\xff\xff\xff\x7f.",  # a memo of 2**31 entries
        "bytes8.npy": b"\x80\x04\x8e" + (2**40).to_bytes(8, "little") + b"xx.",  # 1 TB of bytes, allocated before reading
        # one 1 MB str, encoded 10,000 times: 10 GB. (A fork may reuse the heap its parent freed before the limit
        # counts: 300 MB once fit in what the earlier tests of a worker had freed, and read as "holds bytes".)
        "alias.npy": _pickled({"features": [_Reduce(codecs.encode, (text, "latin1")) for _ in range(10_000)], "target": [1]}, protocol=2),
    }
    for name, payload in bombs.items():
        path = _npy_with_pickle(tmp_path / name, payload)
        message = _refused(path, r"refusing the pickle: it needs more than \d+ MB of memory to read")
        limit_mb = int(message.split("more than ")[1].split(" MB")[0])
        assert limit_mb < 64 + 6 * path.stat().st_size / 2**20 + 400, message  # start-up, allowance and 6 bytes a byte


def test_a_reader_past_its_time_limit_is_stopped(report_npy: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setattr(data, "_CHILD_SECONDS", 0)
    _refused(report_npy, r"refusing the pickle: reading it took more than 0 s, the limit for its size")


def test_dict_with_other_keys_is_refused(tmp_path: Path):
    path = tmp_path / "d.npy"
    np.save(path, {**_study_dict(12), "note": "hello", 3: np.zeros(2)}, allow_pickle=True)
    message = _refused(path, r"refusing the dict's other keys \['note', 1 non-text keys\]")
    assert "only a dict of numpy arrays ('features', 'target') is accepted" in message


def test_npy_larger_than_any_data_set_under_the_ceiling_is_refused_unread(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    path = _npy_with_pickle(tmp_path / "huge.npy", b"")
    os.truncate(path, 200 << 20)  # sparse: costs no disk
    monkeypatch.setenv("FMNIST_MAX_IMAGES", "10")
    _refused(path, "more than any data set under the ceiling; the ceiling is 10 images")


def test_npy_fifo_is_refused_without_blocking(tmp_path: Path):
    path = tmp_path / "fifo.npy"
    os.mkfifo(path)
    assert "not a regular file (a FIFO)" in _load_bounded(path, timeout=60)


def test_long_keys_are_truncated_in_messages(tmp_path: Path):
    path = tmp_path / "keys.npy"
    keys = {("k" * 10_000) + str(i): np.zeros(1) for i in range(3)}
    keys.update({f"key{i}\nline": i for i in range(5000)})
    np.save(path, keys, allow_pickle=True)
    message = _refused(path, r"dict lacks \['features', 'target'\]")
    assert "5,003 in all" in message and "key0\\\\nline" in message


def test_long_global_names_are_truncated_in_messages(tmp_path: Path):
    path = _npy_with_pickle(tmp_path / "g.npy", b"c" + b"m" * 100_000 + b"\n" + b"n" * 100_000 + b"\n)R.")
    _refused(path, "refusing to unpickle mmmm")


# =========================================================================== .npz family

def _npz_with_member(path: Path, name: str, header: dict, body: bytes, others: dict | None = None) -> Path:
    with zipfile.ZipFile(path, "w") as archive:
        buffer = io.BytesIO()
        np.lib.format.write_array_header_1_0(buffer, header)
        archive.writestr(name, buffer.getvalue() + body)
        for other, array in (others or {}).items():
            buffer = io.BytesIO()
            np.lib.format.write_array(buffer, array)
            archive.writestr(other, buffer.getvalue())
    return path


def test_npz_member_declaring_2_31_images_is_refused_before_loading(tmp_path: Path):
    path = _npz_with_member(
        tmp_path / "big.npz", "x.npy", {"descr": "|u1", "fortran_order": False, "shape": (2**31, 28, 28)},
        bytes(1000), {"y.npy": np.zeros(10, np.int64)},
    )
    message = _load_bounded(path)
    assert "x declares shape (2147483648, 28, 28)" in message and "ceiling" in message


def test_npz_member_whose_size_disagrees_with_its_header_is_refused(tmp_path: Path):
    path = _npz_with_member(
        tmp_path / "short.npz", "x.npy", {"descr": "<f8", "fortran_order": False, "shape": (1000, 28, 28)},
        bytes(64), {"y.npy": np.zeros(1000, np.int64)},
    )
    message = _load_bounded(path)
    assert "x declares shape (1000, 28, 28) of float64 (6,272,000 bytes), the archive holds 64" in message


def test_npz_object_member_is_refused_without_unpickling(tmp_path: Path):
    marker = tmp_path / "pwned"
    path = tmp_path / "obj.npz"
    np.savez(path, x=np.array([_Reduce(os.system, (_marker_cmd(marker),))], dtype=object), y=np.zeros(1))
    message = _refused(path, "x has dtype object; refusing it")
    assert not marker.exists(), message


def test_npz_fifo_is_refused(tmp_path: Path):
    path = tmp_path / "fifo.npz"
    os.mkfifo(path)
    assert "not a regular file (a FIFO)" in _load_bounded(path, timeout=60)


def test_npz_member_names_are_truncated(tmp_path: Path):
    path = tmp_path / "names.npz"
    with zipfile.ZipFile(path, "w") as archive:
        for i in range(300):
            archive.writestr(("n" * 5000) + str(i), b"")
    message = _refused(path, r"lacks arrays \['x', 'y'\]")
    assert "300 in all" in message


# =========================================================================== dtypes (complex, bool, object, str)

@pytest.mark.parametrize(
    ("x", "y", "message"),
    [
        (np.zeros((12, 28, 28), np.complex128) + 0.5j, np.zeros(12, np.int64), "images have dtype complex128, expected real numbers"),
        (np.zeros((12, 28, 28)), np.zeros(12, np.complex64) + 1j, "y must be whole numbers, found dtype complex64"),
        (np.zeros((12, 28, 28), bool), np.zeros(12, np.int64), "images have dtype bool, expected real numbers"),
        (np.zeros((12, 28, 28)), np.zeros(12, bool), "y must be whole numbers, found dtype bool"),
        (np.zeros((12, 28, 28)), np.array(["1"] * 12), "y has dtype <U1, expected numbers"),
        (np.zeros((12, 28, 28)), np.array([0.5] * 12), "y must be whole numbers, found dtype float64 with fractions"),
        (np.zeros((12, 28, 28)), np.full(12, np.nan), "y must be whole numbers"),
    ],
)
def test_npz_refuses_non_real_dtypes(tmp_path: Path, x, y, message):
    path = tmp_path / "t.npz"
    np.savez(path, x=x, y=y)
    _refused(path, message)


@pytest.mark.parametrize(
    ("features", "target", "message"),
    [
        (np.zeros((12, 28, 28), np.complex128) + 0.5j, np.ones(12, np.int64), "images have dtype complex128"),
        (np.zeros((12, 28, 28)), np.ones(12, np.complex128), "target must be whole numbers, found dtype complex128"),
        (np.zeros((12, 28, 28), bool), np.ones(12, np.int64), "images have dtype bool"),
        (np.zeros((12, 28, 28)), np.ones(12, bool), "target must be whole numbers, found dtype bool"),
        (np.zeros((12, 28, 28)), [1.0 + 1j] * 12, "refusing to unpickle builtins.complex"),
        (np.zeros((12, 28, 28)), ["1"] * 12, "target holds str; expected nested lists of numbers or arrays"),
        (np.zeros((12, 28, 28)), [2**70] * 12, "target must be whole numbers, found dtype object"),
    ],
)
def test_npy_refuses_non_real_dtypes(tmp_path: Path, features, target, message):
    path = tmp_path / "t.npy"
    np.save(path, {"features": features, "target": target}, allow_pickle=True)
    _refused(path, message)


# =========================================================================== sizes and label ranges

def _write_all_formats(folder: Path, n: int) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    labels = (np.arange(n) % 10).astype(np.uint8)
    write_idx(folder / data.IDX_TRAIN_IMAGES, make_images(labels).reshape(n, 28, 28))
    write_idx(folder / data.IDX_TRAIN_LABELS, labels)
    np.savez(folder / "d.npz", x=make_images(labels // 2).reshape(n, 28, 28), y=labels // 2)
    np.save(folder / "d.npy", {"features": np.zeros((n, 28, 28)), "target": labels // 2 + 1}, allow_pickle=True)
    return [folder, folder / "d.npz", folder / "d.npy"]


@pytest.mark.parametrize("n", [0, 1, 2, 5, 9])
def test_too_few_images_are_refused_with_the_minimum(tmp_path: Path, n: int):
    for path in _write_all_formats(tmp_path / "d", n):
        message = _refused(path, "needs at least 10" if n else "no images")
        assert "80/10/10" in message and "at least 10" in message
    dataset = data.Dataset(np.zeros((n, 28, 28), np.float32), np.zeros(n, np.int64), "tiny.npz")
    with pytest.raises(DataError, match=r"^tiny.npz: .*at least 10"):
        data.split_dataset(dataset)


def test_ten_images_load_and_split(tmp_path: Path):
    for path in _write_all_formats(tmp_path / "d", 10):
        splits = data.split_dataset(data.load_dataset(path))
        assert splits.sizes() == {"train": 8, "val": 1, "test": 1}


@pytest.mark.parametrize("fmt", ["npz", "npy"])
def test_labels_beyond_int64_are_shown_as_they_are(tmp_path: Path, fmt: str):
    y = np.full(12, 2**64 - 1, np.uint64)
    path = tmp_path / f"t.{fmt}"
    if fmt == "npz":
        np.savez(path, x=np.zeros((12, 28, 28)), y=y)
        what = "y outside 0..4"
    else:
        np.save(path, {"features": np.zeros((12, 28, 28)), "target": y}, allow_pickle=True)
        what = "target outside 1..5"
    _refused(path, f"{what} \\(found 18446744073709551615..18446744073709551615\\)")


def test_float_labels_out_of_range_are_shown_as_floats(tmp_path: Path):
    path = tmp_path / "t.npz"
    np.savez(path, x=np.zeros((12, 28, 28)), y=np.array([0.0] * 11 + [1e30]))
    _refused(path, r"y outside 0..4 \(found 0..1e\+30\)")


# =========================================================================== property tests (hypothesis)
#
# They run in one child under RLIMIT_AS: ``python -c "import test_hostile_data as t; t._fuzz_each(['idx_raw', ...])"``,
# each kind in turn (one interpreter start and import of this module, 2-3 s, for all of them, not one each); each
# test reads its own kind's verdict. A mutated file must give a Dataset or a DataError (one line, naming the file);
# any other exception, or running out of memory, fails.

_FUZZ_EXAMPLES = 200


def _fuzz_bases(folder: Path) -> dict[str, tuple[Path, bytes]]:
    """Valid small files of each format; the key is what a mutation is applied to."""
    idx = write_idx_dir(folder / "idx", n=12)
    npz = folder / "d.npz"
    study = _study_dict(12)
    np.savez(npz, x=make_images(study["target"] - 1), y=study["target"] - 1)
    bases = {
        "idx_raw": (idx / data.IDX_TRAIN_IMAGES, (idx / data.IDX_TRAIN_IMAGES).read_bytes()),
        "idx_inner": (idx / data.IDX_TRAIN_IMAGES, gzip.open(idx / data.IDX_TRAIN_IMAGES).read()),
        "npz": (npz, npz.read_bytes()),
        "npz_inner": (npz, zipfile.ZipFile(npz).read("x.npy")),  # the x.npy member, rezipped after mutation
    }
    for protocol in (0, 2, 3, 5):
        small = {"features": study["features"].astype(np.float32), "target": study["target"]}
        payload = pickle.dumps(np.array(small), protocol=protocol)
        path = _npy_with_pickle(folder / f"p{protocol}.npy", payload)
        bases[f"npy{protocol}"] = (path, path.read_bytes())
    return bases


def _fuzz(kind: str, examples: int = _FUZZ_EXAMPLES, derandomize: bool = True) -> None:
    import tempfile

    from hypothesis import HealthCheck, given, settings
    from hypothesis import strategies as st

    with tempfile.TemporaryDirectory() as tmp:
        path, base = _fuzz_bases(Path(tmp))[kind]
        y_member = zipfile.ZipFile(path).read("y.npy") if kind == "npz_inner" else b""
        # Headers and most opcodes sit in the first and last bytes: mutate there two times in three.
        edge = min(len(base), 64)
        edit = st.tuples(
            st.one_of(st.integers(0, edge - 1), st.integers(len(base) - edge, len(base) - 1), st.integers(0, len(base) - 1)),
            st.sampled_from(["set", "insert", "delete", "truncate"]),
            st.binary(min_size=1, max_size=8),
        )

        @settings(max_examples=examples, database=None, deadline=None, derandomize=derandomize,
                  suppress_health_check=list(HealthCheck))
        @given(st.lists(edit, min_size=1, max_size=4))
        def mutated_file_gives_dataset_or_data_error(edits):
            raw = bytearray(base)
            for pos, op, blob in edits:
                pos = min(pos, len(raw))
                if op == "set":
                    raw[pos: pos + len(blob)] = blob
                elif op == "insert":
                    raw[pos:pos] = blob
                elif op == "delete":
                    del raw[pos: pos + blob[0] % 16 + 1]
                else:
                    del raw[pos:]
            if kind == "idx_inner":
                path.write_bytes(gzip.compress(bytes(raw)))
            elif kind == "npz_inner":
                with zipfile.ZipFile(path, "w") as archive:
                    archive.writestr("x.npy", bytes(raw))
                    archive.writestr("y.npy", y_member)
            else:
                path.write_bytes(bytes(raw))
            target = path.parent if kind.startswith("idx") else path
            try:
                dataset = data.load_dataset(target)
            except DataError as exc:
                message = str(exc)
                assert message.startswith(str(target)), message
                assert "\n" not in message and len(message) < len(str(target)) + 400, message
                assert "out of memory" not in message, message
            else:
                assert len(dataset) >= data.MIN_IMAGES and dataset.x.shape[1:] == (28, 28)

        mutated_file_gives_dataset_or_data_error()
    print("FUZZ OK", kind)


def _fuzz_each(kinds: list[str]) -> None:
    """``_fuzz`` of each kind in turn; one that fails prints FUZZ FAILED, its traceback and FUZZ END, and the next
    kind still runs (a MemoryError under the child's limit included)."""
    import traceback

    for kind in kinds:
        try:
            _fuzz(kind)
        except Exception:  # noqa: BLE001 - the kind's verdict, read by its own test
            print(f"FUZZ FAILED {kind}\n{traceback.format_exc()}FUZZ END {kind}", flush=True)


_FUZZ_KINDS = ["idx_raw", "idx_inner", "npz", "npz_inner", "npy0", "npy2", "npy3", "npy5"]
_FUZZ_TEST = "test_mutated_files_give_a_dataset_or_a_data_error"


@pytest.fixture(scope="module")
def fuzzed(request: pytest.FixtureRequest) -> subprocess.CompletedProcess:
    """The bounded child that fuzzed every kind this session's tests ask for (all of them, unless -k chose some)."""
    pytest.importorskip("hypothesis")
    kinds = [item.callspec.params["kind"] for item in request.session.items
             if item.path == request.path and item.originalname == _FUZZ_TEST] or _FUZZ_KINDS
    return _run_bounded(["-c", f"import test_hostile_data as t; t._fuzz_each({kinds!r})"], timeout=300 * len(kinds))


@pytest.mark.slow
@pytest.mark.parametrize("kind", _FUZZ_KINDS)
def test_mutated_files_give_a_dataset_or_a_data_error(kind: str, fuzzed: subprocess.CompletedProcess):
    result = fuzzed
    failed = result.stdout.partition(f"FUZZ FAILED {kind}\n")[2].partition(f"FUZZ END {kind}")[0]
    assert result.returncode == 0 and f"FUZZ OK {kind}" in result.stdout, failed or result.stdout[-2000:] + result.stderr[-4000:]
