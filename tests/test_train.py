from __future__ import annotations

import io
import json
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import keras
import numpy as np
import pandas as pd
import pytest

from tiny import crash_after, run_python, write_idx_dir
from trainer import data
from trainer.artifacts import Artifacts
from trainer.cli import main
from trainer.config import TrainConfig
from trainer.fit import fit, images
from trainer.models import create_model, load_trained
from trainer.reports import RunMetadata
from trainer.training import train_one

TINY = ["--epochs", "1", "--batch-size", "32", "--quiet"]


def _config(name: str = "model1", **overrides) -> TrainConfig:
    values = dict(model=name, epochs=3, batch_size=32, optimizer="adam", lr=1e-3, seed=0, base_weights="none")
    values.update(overrides)
    return TrainConfig(**values)


@pytest.mark.slow
def test_cli_writes_every_artifact_of_the_report(idx_dir: Path, artifacts_dir: Path):
    assert main(["model1", "--data", str(idx_dir), *TINY]) == 0
    art = Artifacts(artifacts_dir)
    meta = RunMetadata.read(art.metadata_file("model1"))
    assert meta.data["split"] == {"train": 320, "val": 40, "test": 40}
    assert meta.params["total"] == 240_901
    assert meta.base_weights == "n/a"
    assert set(meta.test["classification_report"]) >= {"Class 1", "Class 5", "accuracy", "macro avg"}
    assert np.array(meta.test["confusion_matrix"]).sum() == 40
    assert meta.test["evaluate_s"] > 0 and meta.test["predict_s"] > 0

    history = pd.read_csv(art.history_file("model1"))
    assert list(history["epoch"]) == [0]
    assert {"loss", "accuracy", "val_loss", "val_accuracy", "epoch_time_s"} <= set(history.columns)
    for png in (art.plot_file("model1"), art.plot_file("samples")):
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    table = pd.read_csv(art.reports_dir / "table1.csv")
    assert list(table["Model"]) == ["Model 1"] and table.loc[0, "Report Test Accuracy"] == 0.9017
    assert "| Model 1" in (art.reports_dir / "table1.md").read_text()

    # The saved model is the one that was evaluated.
    model = load_trained(art.model_file("model1"))
    splits = data.split_dataset(data.load_dataset(idx_dir))
    accuracy = float(np.mean(model.predict(images(splits.test), verbose=0).argmax(-1) == splits.test.y))
    assert accuracy == pytest.approx(meta.test["accuracy"])


@pytest.mark.slow
def test_cli_reads_the_reports_npy(report_npy: Path, artifacts_dir: Path):
    assert main(["model2", "--data", str(report_npy), *TINY]) == 0
    meta = json.loads((artifacts_dir / "models" / "model2.json").read_text())
    assert meta["data"]["source"] == str(report_npy) and meta["data"]["images"] == 300
    assert meta["schema_version"] == 1


class _State(keras.callbacks.Callback):
    """The trainable model's weights and optimizer variables when training begins and after each epoch."""

    def __init__(self):
        super().__init__()
        self.at_begin: list[np.ndarray] = []
        self.after_epoch: dict[int, list[np.ndarray]] = {}

    def _now(self) -> list[np.ndarray]:
        return [keras.ops.convert_to_numpy(v) for v in (*self.model.weights, *self.model.optimizer.variables)]

    def on_train_begin(self, logs=None):
        self.at_begin = self._now()

    def on_epoch_end(self, epoch, logs=None):
        self.after_epoch[epoch] = self._now()


@dataclass(frozen=True)
class Interrupted:
    """model1's 3-epoch run (``_config()``) killed after its second epoch, and the state its checkpoint saved."""

    root: Path
    dataset: data.Dataset
    splits: data.Splits
    saved: list[np.ndarray]  # weights and optimizer variables after epoch 2 (_State)

    def copy(self, folder: Path) -> Artifacts:
        """A copy of the interrupted artifacts folder, for a test to resume or discard."""
        shutil.copytree(self.root, folder)
        return Artifacts(folder)


@pytest.fixture(scope="module")
def interrupted(tmp_path_factory: pytest.TempPathFactory) -> Interrupted:
    # Killed once for the module: each test that resumes or discards the checkpoint works on a copy of its own.
    folder = tmp_path_factory.mktemp("interrupted")
    dataset = data.load_dataset(write_idx_dir(folder / "idx"))
    splits = data.split_dataset(dataset)
    state = _State()
    with pytest.raises(KeyboardInterrupt):
        train_one(_config(), dataset, splits, Artifacts(folder / "art"), quiet=True, extra_callbacks=[state, crash_after(1)])
    return Interrupted(folder / "art", dataset, splits, state.after_epoch[1])


@pytest.mark.slow
def test_interrupted_training_resumes_where_it_stopped_from_the_exact_weights_and_optimizer_state(
        interrupted: Interrupted, tmp_path: Path):
    finals = []
    for copy in ("a", "b"):  # two resumes of the same checkpoint
        art = interrupted.copy(tmp_path / copy)
        # Only the newest epoch's checkpoint is kept, published under its epoch's name.
        assert [p.name for p in art.backup_dir("model1").iterdir()] == ["epoch-0002"]
        assert not art.model_file("model1").exists()

        log, resumed = io.StringIO(), _State()
        meta = train_one(_config(), interrupted.dataset, interrupted.splits, art, log=log, extra_callbacks=[resumed])
        assert meta.training["resumed_from_epoch"] == 2
        assert "resuming at epoch 3/3" in log.getvalue()
        assert log.getvalue().count("] epoch ") == 1  # only the third epoch ran again
        assert list(pd.read_csv(art.history_file("model1"))["epoch"]) == [0, 1, 2]
        assert not art.backup_dir("model1").exists()
        assert len(resumed.at_begin) == len(interrupted.saved) > len(resumed.model.weights)  # the optimizer's variables too
        for now, then in zip(resumed.at_begin, interrupted.saved, strict=True):
            np.testing.assert_array_equal(now, then)  # weights, Adam's moments and step count, exactly as saved
        finals.append(resumed.after_epoch[2])
    for a, b in zip(*finals, strict=True):
        np.testing.assert_array_equal(a, b)  # and training continues the same way each time


@pytest.mark.slow
def test_checkpoint_of_another_configuration_is_not_resumed(interrupted: Interrupted, tmp_path: Path):
    art = interrupted.copy(tmp_path / "art")
    log = io.StringIO()
    meta = train_one(_config(lr=5e-4), interrupted.dataset, interrupted.splits, art, quiet=True, log=log)
    assert "discarding checkpoint" in log.getvalue()
    assert meta.training["resumed_from_epoch"] == 0
    assert list(pd.read_csv(art.history_file("model1"))["epoch"]) == [0, 1, 2]


@pytest.mark.slow
def test_a_kill_after_the_last_epoch_keeps_the_trained_weights(idx_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    dataset = data.load_dataset(idx_dir)
    splits = data.split_dataset(dataset)
    art = Artifacts(tmp_path / "art")
    import trainer.training as train_mod

    def killed(*args, **kwargs):
        raise KeyboardInterrupt

    with monkeypatch.context() as patch:
        patch.setattr(train_mod, "evaluate", killed)  # dies after fit(), before anything is saved
        with pytest.raises(KeyboardInterrupt):
            train_one(_config(epochs=2), dataset, splits, art, quiet=True)
    log = io.StringIO()
    meta = train_one(_config(epochs=2), dataset, splits, art, log=log)
    assert meta.training["resumed_from_epoch"] == 2 and "] epoch " not in log.getvalue()  # no epoch trained again
    assert list(pd.read_csv(art.history_file("model1"))["epoch"]) == [0, 1]


@pytest.mark.slow
def test_head_on_cached_features_equals_training_through_the_frozen_base_and_the_cache_is_reused_and_keyed_by_data(
        idx_dir: Path, tmp_path: Path):
    # One test: the feature cache is checked on the features this one extracts anyway (a frozen base costs ~10 s).
    # ResNet50 here (its frozen BatchNorm in inference mode) and VGG16 in test_export.py: both transfer models train.
    dataset = data.load_dataset(idx_dir)
    splits = data.split_dataset(dataset)
    config = _config("resnet50", epochs=2)
    art = Artifacts(tmp_path / "art")

    keras.utils.set_random_seed(0)
    fast = create_model("resnet50")
    keras.utils.set_random_seed(0)
    slow = create_model("resnet50")
    outcome = fit(fast, dataset, splits, config, art, quiet=True)
    assert not outcome.features_cached

    # The report's way: fit the whole model on images, the frozen base recomputed every batch.
    fit(slow, dataset, splits, config, Artifacts(tmp_path / "slow"), quiet=True, feature_cache=False)

    x_test = images(splits.test)
    fast_p = fast.model.predict(x_test, verbose=0)
    slow_p = slow.model.predict(x_test, verbose=0)
    np.testing.assert_allclose(fast_p, slow_p, atol=1e-4)
    assert not np.allclose(fast_p, create_model("resnet50").model.predict(x_test, verbose=0), atol=1e-4)  # it did train

    # The same base on the same data again takes its features from the cache; other data computes its own.
    for expected_cached, ds in ((True, dataset), (False, dataset.limit(200))):
        keras.utils.set_random_seed(0)
        outcome = fit(create_model("resnet50"), ds, data.split_dataset(ds), config, art, quiet=True)
        assert outcome.features_cached is expected_cached
    assert len(list(art.features_dir().glob("resnet50-*.npy"))) == 2


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["model9"], "unknown model 'model9'; choose from model1"),
        (["model1", "--data", "/nonexistent/fm"], "--data /nonexistent/fm: no such file or folder"),
        (["model1", "--data", "{file}"], "unsupported data file"),
        (["model1", "--artifacts", "{file}/sub"], "plain.txt/sub: cannot be made: "),
    ],
)
def test_bad_input_is_one_line_and_exit_2(argv, message, tmp_path: Path, capsys: pytest.CaptureFixture):
    a_file = tmp_path / "plain.txt"
    a_file.write_text("x")
    argv = [a.replace("{file}", str(a_file)) for a in argv]
    assert main([*argv, "--quiet"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("fmnist-train: error: ") and message in err and "\n" not in err


@pytest.mark.slow
def test_console_script_rejects_bad_options_without_a_traceback():
    result = subprocess.run([sys.executable, "-m", "trainer.cli", "model1", "--epochs", "0"], capture_output=True, text=True)
    assert result.returncode == 2
    assert "--epochs: '0' must be positive" in result.stderr and "Traceback" not in result.stderr


def test_defaults_are_the_reports_protocol_and_each_optimizer_gets_its_own_lr():
    from trainer.config import DEFAULTS, resolve_config

    assert resolve_config("model4") == TrainConfig("model4", epochs=50, batch_size=128, optimizer="adam", lr=1e-3, seed=0)
    assert resolve_config("model4", optimizer="sgd").lr == 1e-2  # Keras' default for SGD, as the report used it
    assert resolve_config("model4", optimizer="sgd", lr=5e-4).lr == 5e-4
    assert DEFAULTS.lr == 1e-3 and DEFAULTS.optimizers == ("adam", "sgd")
    with pytest.raises(ValueError, match="--optimizer 'rmsprop': choose from adam, sgd"):
        resolve_config("model4", optimizer="rmsprop")


def test_configuration_and_experiment_store_load_without_tensorflow():
    result = run_python("import trainer.config, trainer.experiments")
    assert result.returncode == 0, result.stdout + result.stderr
