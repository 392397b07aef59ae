"""Where bench results live, what they are called and how they are read back (as pytest-benchmark's
``storage/file.py``): ``bench-<UTC timestamp>.json`` and ``.md`` in a results folder, never overwriting one, with
MLPerf LoadGen's logs beside them in ``bench-<UTC timestamp>.loadgen/``; :func:`load` reads ours,
:func:`load_any` ours or a pytest-benchmark save; :func:`differences` tells the machines two results came from apart.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
from datetime import datetime, timezone
from pathlib import Path

from bench.results.record import SCHEMA_VERSION, BenchRecord, BenchRun, SchemaError, markdown
from trainer.artifacts import write_text_atomic

# The machine facts that make two results comparable; anything else (platform string, ...) is informative.
IDENTITY = ("host", "cpu", "cores", "gpu")
VERSIONS = ("python", "numpy", "onnxruntime", "onnxruntime-gpu", "tensorflow")
RECORD_KEYS = {"model", "variant", "provider", "operation", "batch_size", "median_s", "times_s"}
# pytest-benchmark's test names: test_latency[model4-int8-cpu-predict-b128]
_PYTEST_ID = re.compile(r"\[(?P<id>[^\]]+)\]")


def loadgen_folder(results: Path) -> Path:
    """Where MLPerf LoadGen's logs of a results file are: beside it, named like it."""
    return Path(results).with_suffix(".loadgen")


def loadgen_staging(report_dir: Path) -> Path:
    """A hidden folder in ``report_dir`` for LoadGen's logs while a run lasts (its results file has no name yet)."""
    report_dir.mkdir(parents=True, exist_ok=True)
    return Path(tempfile.mkdtemp(prefix=".loadgen-", dir=report_dir))


def save(run: BenchRun, report_dir: Path, loadgen_logs: Path | None = None) -> Path:
    """Write ``run`` as JSON and Markdown under a new name (two runs in the same second both keep theirs), and move
    ``loadgen_logs`` (LoadGen's logs of the run, when it wrote any) beside them."""
    report_dir.mkdir(parents=True, exist_ok=True)
    stamp = datetime.fromisoformat(run.created_at).astimezone(timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    for n in range(1000):
        path = report_dir / f"bench-{stamp}{f'-{n}' if n else ''}.json"
        try:
            os.close(os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644))  # claims the name
        except FileExistsError:
            continue
        try:
            write_text_atomic(path, run.to_json())
            write_text_atomic(path.with_suffix(".md"), markdown(run))
        except BaseException:
            path.unlink(missing_ok=True)
            raise
        if loadgen_logs is not None and Path(loadgen_logs).is_dir() and any(Path(loadgen_logs).iterdir()):
            shutil.move(str(loadgen_logs), loadgen_folder(path))
        return path
    raise SchemaError(f"{report_dir}: no free results name for {stamp}")


def find_results(report_dir: Path) -> list[Path]:
    """Our results files in a folder, oldest name first."""
    return sorted(report_dir.glob("bench-*.json"))


def load(path: Path) -> BenchRun:
    return BenchRun.from_dict(_read_json(path), str(path))


def load_any(path: Path) -> BenchRun:
    """Our report, or a pytest-benchmark JSON save of ``pytest bench`` (whose extra_info holds our record)."""
    payload = _read_json(path)
    if not (isinstance(payload, dict) and "benchmarks" in payload and "machine_info" in payload):
        return BenchRun.from_dict(payload, str(path))
    records, info = _pytest_records(payload, path), payload["machine_info"]
    cpu = info.get("cpu", {}) if isinstance(info, dict) else {}
    machine = {"cpu": cpu.get("brand_raw"), "cores": cpu.get("count"), "gpu": info.get("gpu"),
               "versions": {"python": info.get("python_version")}}  # enough for differences()
    return BenchRun(machine, {}, str(payload.get("datetime", "")), records, commit=payload.get("commit_info"))


def _pytest_records(payload: dict, path: Path) -> list[BenchRecord]:
    if not isinstance(payload["benchmarks"], list):
        raise SchemaError(f"{path}: 'benchmarks' is not a list")
    rows = []
    for i, bench in enumerate(payload["benchmarks"]):
        info = bench.get("extra_info") if isinstance(bench, dict) else None
        if not isinstance(info, dict) or not RECORD_KEYS <= set(info):
            raise SchemaError(f"{path}: benchmark {i} was not saved by this toolkit's pytest suite (no record in extra_info)")
        rows.append(info)
    # The same validation as our own reports: the records are ours, saved through pytest-benchmark.
    records = BenchRun.from_dict({"schema_version": SCHEMA_VERSION, "machine": {}, "settings": {}, "created_at": "",
                                  "records": rows}, str(path)).records
    for i, (bench, record) in enumerate(zip(payload["benchmarks"], records)):
        found = _PYTEST_ID.search(str(bench.get("name", "")))
        if found and found.group("id") != record.id:
            raise SchemaError(f"{path}: benchmark {i} is named {found.group('id')[:80]!r} but records {record.id}")
    return records


def differences(a: dict, b: dict) -> list[str]:
    """What differs between two machines (identity, then software versions both record), as short phrases."""
    found = [f"{key}: {a.get(key)!s} vs {b.get(key)!s}" for key in IDENTITY
             if a.get(key) is not None and b.get(key) is not None and a.get(key) != b.get(key)]
    va, vb = a.get("versions", {}) or {}, b.get("versions", {}) or {}
    found += [f"{name} {va[name]} vs {vb[name]}" for name in VERSIONS if name in va and name in vb and va[name] != vb[name]]
    return found


def _read_json(path: Path) -> object:
    try:
        return json.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise SchemaError(f"{path}: no such file") from None
    except IsADirectoryError:
        raise SchemaError(f"{path}: is a folder, not a report") from None
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as exc:
        raise SchemaError(f"{path}: not JSON ({type(exc).__name__}: {str(exc)[:100]})") from None
