from __future__ import annotations

import io
import re
import json
from pathlib import Path

import pandas as pd
import pytest

from tiny import crash_after
from trainer import data
from bench.report.document import build, experiment_section
from bench.report.document import main as report_main
from trainer.artifacts import Artifacts
from trainer.cli import main
from trainer.config import TrainConfig
from trainer.sweep import SweepError, parse_grid, run_sweep

TINY = ["--limit", "200", "--batch-size", "32", "--quiet"]


def _rows(art: Path) -> pd.DataFrame:
    return pd.read_csv(art / "reports" / "experiments.csv")


@pytest.mark.slow
def test_sweep_writes_a_row_per_configuration_and_never_reruns_one(idx_dir: Path, artifacts_dir: Path, capsys):
    argv = ["sweep", "model1", "--grid", "optimizer=sgd,adam", "--epochs", "1", "--data", str(idx_dir), *TINY]
    assert main(argv) == 0
    rows = _rows(artifacts_dir)
    assert list(rows["optimizer"]) == ["sgd", "adam"]
    assert list(rows["lr"]) == [0.01, 0.001]  # each optimizer with Keras' default, as the report used them
    assert set(rows["measured_as"]) == {"own run"} and (rows["sweep"] == "optimizer=sgd,adam").all()
    first_created = list(rows["created_at"])
    capsys.readouterr()

    assert main(argv) == 0
    assert "skipped (--force reruns)" in capsys.readouterr().out
    assert list(_rows(artifacts_dir)["created_at"]) == first_created

    assert main([*argv, "--force"]) == 0
    assert len(_rows(artifacts_dir)) == 2
    assert "skipped" not in capsys.readouterr().out


@pytest.mark.slow
def test_a_row_shared_by_two_sweeps_is_run_once_and_shown_in_both_and_the_report_renders_every_table_and_notes_what_is_missing(
        idx_dir: Path, artifacts_dir: Path, tmp_path: Path, capsys):
    # One test: the report is built from the sweeps this one trains anyway (Model 4's trainings cost ~15 s each).
    common = ["--epochs", "1", "--data", str(idx_dir), *TINY]
    assert main(["model1", "model4", *common]) == 0
    out = tmp_path / "docs"
    # Before any sweep: every experiment table is missing, and that is a note, not a failure.
    report = build(Artifacts(artifacts_dir), out).read_text()
    assert "Make it with `fmnist-train sweep model4 --grid optimizer=sgd,adam`" in report  # not run: a note, not a failure

    assert main(["sweep", "model4", "--grid", "optimizer=sgd,adam", *common]) == 0
    capsys.readouterr()
    assert main(["sweep", "model4", "--grid", "lr=0.001,0.002", *common]) == 0
    assert capsys.readouterr().out.count("skipped (--force reruns)") == 1  # Adam at 0.001 ran in the first sweep
    rows = _rows(artifacts_dir)
    assert len(rows) == 3
    shared = rows[(rows["optimizer"] == "adam") & (rows["lr"] == 0.001)]
    assert list(shared["sweep"]) == ["optimizer=sgd,adam; lr=0.001,0.002"]
    tables = experiment_section(Artifacts(artifacts_dir))
    table4 = tables.split("### Table 4")[1].split("###")[0]
    assert table4.count("| adam ") == 2  # lr 0.001 (from Table 2's run) and lr 0.002

    # The report with Tables 2 and 4 run, 3 and 5 not yet.
    report = build(Artifacts(artifacts_dir), out).read_text()
    for heading in ("## Data", "## Table 1: the six models", "### Table 2: Model 4, optimizers", "### Table 3: Model 4, batch size",
                    "### Table 4: Model 4, learning rate", "### Table 5: Model 4, epochs", "## Accuracy and loss",
                    "## Best model", "## Latency"):
        assert heading in report
    assert "Make it with `fmnist-train sweep model4 --grid batch_size=16,32,64,128`" in report  # beside the tables run
    assert "No bench results yet" in report
    table4, reference = report.split("### Table 4")[1].split("###")[0].split("The report's own Table 4")
    assert "0.001" in table4 and "0.9285" not in table4  # 1-epoch rows: the report's 50-epoch numbers are not set beside them
    assert "0.9285" in reference and "0.8349" in reference  # but its own table stands below, for reference
    assert "At the study's settings: `fmnist-train sweep model4 --grid lr=0.01,0.02,0.001,0.002`" in table4
    assert "| Model 4" in report and "0.9285" in report.split("## Table 1")[1]
    assert (out / "plots" / "model4.png").exists() and "](plots/model4.png)" in report
    assert "581" in report.split("## Latency")[1]

    # Table 5's epoch sweep measures the same configuration again, as epoch 1 of a 2-epoch run: it stays in all three tables.
    assert main(["sweep", "model4", "--grid", "epochs=1,2", *common[2:]]) == 0
    shared = _rows(artifacts_dir).set_index("key").loc[shared.iloc[0]["key"]]
    assert shared["measured_as"] == "epoch 1 of a 2-epoch run"
    assert shared["sweep"] == "optimizer=sgd,adam; lr=0.001,0.002; epochs=1,2"


@pytest.mark.slow
def test_epoch_sweep_is_one_run_evaluated_at_each_epoch(idx_dir: Path, artifacts_dir: Path, capsys):
    assert main(["sweep", "model1", "--grid", "epochs=1,2", "--data", str(idx_dir), *TINY]) == 0
    rows = _rows(artifacts_dir).set_index("epochs")
    assert list(rows["measured_as"]) == ["epoch 1 of a 2-epoch run", "own run"]
    assert capsys.readouterr().out.count("[sweep] model1") == 1
    assert rows.loc[1, "run_dir"] == rows.loc[2, "run_dir"]
    history = pd.read_csv(Path(rows.loc[2, "run_dir"]) / "history" / "model1.csv")
    assert rows.loc[1, "val_accuracy"] == pytest.approx(history.loc[0, "val_accuracy"])
    assert rows.loc[1, "training_time_min"] < rows.loc[2, "training_time_min"]


@pytest.mark.slow
def test_a_killed_sweep_resumes(idx_dir: Path, tmp_path: Path):
    dataset = data.load_dataset(idx_dir).limit(200)
    splits = data.split_dataset(dataset)
    art = Artifacts(tmp_path / "art")
    base = TrainConfig(model="model1", epochs=3, batch_size=32, optimizer="adam", lr=1e-3, seed=0, base_weights="none")
    grid = parse_grid(["seed=0,1"])
    with pytest.raises(KeyboardInterrupt):
        run_sweep(grid, base, dataset, splits, art, quiet=True, extra_callbacks=[crash_after(1)])
    assert not (art.reports_dir / "experiments.csv").exists()

    log = io.StringIO()
    rows = run_sweep(grid, base, dataset, splits, art, log=log)
    assert [r["seed"] for r in rows] == [0, 1]
    assert "resuming at epoch 3/3" in log.getvalue()
    meta = json.loads((Path(rows[0]["run_dir"]) / "models" / "model1.json").read_text())
    assert meta["training"]["resumed_from_epoch"] == 2


@pytest.mark.parametrize("grid", [["depth=1,2"], ["lr=fast"], ["optimizer=rmsprop"], ["lr=0.1", "lr=0.2"], []])
def test_bad_grids_are_refused(grid: list[str]):
    with pytest.raises(SweepError):
        parse_grid(grid)


def test_report_numbers_stand_only_beside_comparable_rows():
    from bench.report.document import _comparable

    row = pd.Series({"optimizer": "sgd", "batch_size": 128, "lr": 0.01, "epochs": 50})
    assert _comparable(row, "optimizer")  # Table 2: SGD with its own default lr
    assert not _comparable(row, "batch_size")
    assert _comparable(pd.Series({"optimizer": "adam", "batch_size": 16, "lr": 0.001, "epochs": 50}), "batch_size")
    assert not _comparable(pd.Series({"optimizer": "adam", "batch_size": 128, "lr": 0.001, "epochs": 10}), "lr")
    assert _comparable(pd.Series({"optimizer": "adam", "batch_size": 128, "lr": 0.001, "epochs": 10}), "epochs")


def test_report_without_trained_models_says_what_to_run(tmp_path: Path, capsys):
    assert report_main(["--artifacts", str(tmp_path / "none")]) == 2
    assert "no trained models to report; run: fmnist-train all" in capsys.readouterr().err


def test_fmnist_train_report_says_where_the_report_went(capsys):
    assert main(["report", "--out", "anywhere"]) == 2
    err = capsys.readouterr().err
    assert err == "fmnist-train: error: 'report' moved: run 'fmnist-bench report' (it reads the bench results too)\n"


def test_latency_section_shows_the_newest_result_of_each_case(tmp_path: Path):
    from bench.results.record import BenchRecord, BenchRun
    from bench.report.document import latency_section

    art = Artifacts(tmp_path / "art")
    art.ensure(art.reports_dir)

    def record(model: str, median_s: float) -> BenchRecord:
        return BenchRecord(model, "fp32", "cpu", "predict", 128, ["CPUExecutionProvider"], 6000, 3, median_s, median_s, median_s)

    for name, created, records in (("bench-20260101T000000Z.json", "2026-01-01T00:00:00+00:00", [record("model1", 1.0), record("model4", 2.0)]),
                                   ("bench-20260102T000000Z.json", "2026-01-02T00:00:00+00:00", [record("model4", 3.0)])):
        (art.reports_dir / name).write_text(BenchRun({"cpu": "Test CPU", "cores": 2}, {}, created, records).to_json())
    section = latency_section(art, {})
    assert "bench-20260101T000000Z.json, bench-20260102T000000Z.json" in section
    predict_ms = {line.split("|")[1].strip(): line.split("|")[3].strip() for line in section.splitlines() if re.match(r"\| model\d", line)}
    assert predict_ms == {"model1": "1000.0", "model4": "3000.0"}


def test_experiments_csv_reads_back_as_written(tmp_path: Path):
    from trainer.experiments import EXPERIMENT_COLUMNS, read_experiments

    path = tmp_path / "experiments.csv"
    row = dict.fromkeys(EXPERIMENT_COLUMNS, "") | {"key": "0123456789012345", "base_weights": "n/a", "epochs": 5}
    pd.DataFrame([row]).to_csv(path, index=False)
    back = read_experiments(path).iloc[0]
    assert back["key"] == "0123456789012345"  # an all-digit key stays the key, not a number
    assert back["base_weights"] == "n/a" and pd.isna(back["limit"])
