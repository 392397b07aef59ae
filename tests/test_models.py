from __future__ import annotations

import numpy as np
import pytest

from trainer import models
from trainer.models import BaseWeightsError, create_model, get_spec, list_models


def test_registry_holds_the_reports_six_models():
    assert list_models() == ["model1", "model2", "model3", "model4", "resnet50", "vgg16"]
    with pytest.raises(KeyError, match="unknown model 'model9'; choose from model1"):
        get_spec("model9")


@pytest.mark.parametrize(
    ("name", "total", "non_trainable"),
    [("model1", 240_901, 0), ("model2", 242_309, 704), ("model3", 1_220_901, 1_792), ("model4", 3_383_589, 1_792)],
)
def test_cnn_parameter_counts_are_the_reports(name: str, total: int, non_trainable: int):
    model = create_model(name).model
    assert model.count_params() == total
    trainable = sum(int(np.prod(w.shape)) for w in model.trainable_weights)
    assert total - trainable == non_trainable
    assert tuple(model.inputs[0].shape) == (None, 28, 28, 1)
    assert tuple(model.outputs[0].shape) == (None, 5)
    spec = get_spec(name)
    assert tuple(model.inputs[0].shape) == (None, *spec.input_shape)
    assert tuple(model.outputs[0].shape) == (None, spec.num_classes)


def test_dropout_rates_are_the_reports_code():
    rates = {name: [layer.rate for layer in create_model(name).model.layers if layer.__class__.__name__ == "Dropout"]
             for name in ("model2", "model3", "model4")}
    assert rates == {"model2": [0.25, 0.25, 0.4, 0.3], "model3": [0.2, 0.2, 0.3, 0.4, 0.4], "model4": [0.25, 0.25, 0.4, 0.5, 0.5]}


@pytest.mark.parametrize(("name", "features", "head_params"), [("resnet50", 2048, 2048 * 5 + 5), ("vgg16", 512, 512 * 5 + 5)])
def test_transfer_models_freeze_the_base_and_take_the_canonical_input(name: str, features: int, head_params: int):
    built = create_model(name, base_weights="none")
    assert built.base_weights == "none (random init)"
    assert tuple(built.model.inputs[0].shape) == (None, 28, 28, 1)
    assert tuple(built.model.inputs[0].shape)[1:] == get_spec(name).input_shape
    assert tuple(built.model.outputs[0].shape)[1:] == (get_spec(name).num_classes,)
    assert tuple(built.base.outputs[0].shape)[1:] == (1, 1, features)
    trainable = sum(int(np.prod(w.shape)) for w in built.model.trainable_weights)
    assert trainable == head_params


def test_input_adapter_pads_exactly_as_the_report():
    x = np.random.default_rng(0).random((4, 28, 28, 1), dtype=np.float32)
    padded = np.asarray(models.ReportPadding()(x))
    assert padded.shape == (4, 32, 32, 3)
    np.testing.assert_array_equal(padded, np.pad(x, ((0, 0), (2, 2), (2, 2), (1, 1))))


def _offline(**kwargs):
    if kwargs.get("weights") == "imagenet":
        raise Exception("URL fetch failure on https://example.invalid: no network")
    return models.keras.applications.VGG16(**kwargs)


def test_imagenet_weights_unavailable_fails_clearly():
    with pytest.raises(BaseWeightsError, match="--base-weights imagenet: the ImageNet weights for VGG16 cannot be had"):
        models._load_base(_offline, "imagenet", "VGG16")


def test_auto_weights_fall_back_loudly_and_say_so():
    with pytest.warns(UserWarning, match="RANDOMLY INITIALISED"):
        _, used = models._load_base(_offline, "auto", "VGG16")
    assert used == "none (random init; imagenet unavailable)"


def test_missing_weights_file_is_refused(tmp_path):
    with pytest.raises(BaseWeightsError, match="expected auto, imagenet, none or an existing weights file"):
        models._load_base(_offline, str(tmp_path / "missing.h5"), "VGG16")
