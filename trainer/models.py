"""The model registry: the report's six models (named in trainer/catalog.py) with their Keras builders.

The trainer and exporter ask here: ``list_models()``, ``get_spec(name)``, ``create_model(name, ...)``;
the bench, which runs without TensorFlow, asks trainer/catalog.py for the same facts. A model is
registered once with its builder and its input adapter, in the manner of timm's registry.
Training defaults are not per model (the report trained all six alike): see trainer/config.py.

Every model built here takes the trainer's canonical input, float32 ``(batch, 28, 28, 1)`` in
[0, 1]. The transfer models' 32x32x3 input is made inside the model by their input adapter
(the report's ``np.pad(x, ((0,0),(2,2),(2,2),(1,1)))``), so the saved ``.keras`` file, the ONNX
graph and every benchmark see the same tensor without guessing.
"""

from __future__ import annotations

import hashlib
import os
import warnings
from collections.abc import Callable
from dataclasses import dataclass, fields
from pathlib import Path

import keras
from keras import layers, regularizers

from trainer.catalog import INPUT_SHAPE, ModelInfo, UnknownModelError, list_models, model_info  # noqa: F401 - re-exported

TRANSFER_INPUT_SHAPE = (32, 32, 3)
# The report's padding of (N, 28, 28, 1) to (N, 32, 32, 3): 2 pixels each side, and the
# grey channel in the middle of three.
REPORT_PADDING = ((0, 0), (2, 2), (2, 2), (1, 1))


@dataclass(frozen=True, kw_only=True)
class ModelSpec(ModelInfo):
    """One registered model: its catalogue entry (trainer/catalog.py) plus how to build it."""

    builder: Callable[..., "BuiltModel"]
    # Layers that turn the canonical (28, 28, 1) input into what the network was built for.
    input_adapter: Callable[[], list[keras.layers.Layer]]


_REGISTRY: dict[str, ModelSpec] = {}


def register(name: str, builder: Callable[..., "BuiltModel"], input_adapter: Callable[[], list[keras.layers.Layer]]) -> ModelSpec:
    if name in _REGISTRY:
        raise ValueError(f"model {name!r} is registered twice")
    info = model_info(name)
    spec = ModelSpec(**{f.name: getattr(info, f.name) for f in fields(ModelInfo)}, builder=builder, input_adapter=input_adapter)
    _REGISTRY[name] = spec
    return spec


def get_spec(name: str) -> ModelSpec:
    model_info(name)  # an unknown name is named with the choices
    return _REGISTRY[name]


def create_model(name: str, base_weights: str = "none") -> "BuiltModel":
    """Build a registered model (uncompiled) on the canonical 28x28x1 input."""
    spec = get_spec(name)
    return spec.builder(spec, base_weights=base_weights)


@dataclass
class BuiltModel:
    model: keras.Model
    # What the frozen base's weights are ("not a transfer model", "imagenet", ...), for reports.
    base_weights: str = "n/a"
    # For transfer models: the frozen part (canonical input -> features) and the trainable head.
    base: keras.Model | None = None
    head: keras.Model | None = None


# --------------------------------------------------------------------------- input adapters

@keras.saving.register_keras_serializable(package="fmnist_edge")
class ReportPadding(keras.layers.Layer):
    """Zero-pads (N, 28, 28, 1) to (N, 32, 32, 3) exactly as the report's ``np.pad``."""

    def call(self, inputs):
        return keras.ops.pad(inputs, REPORT_PADDING)

    def compute_output_shape(self, input_shape):
        return (input_shape[0], *TRANSFER_INPUT_SHAPE)


def no_adapter() -> list[keras.layers.Layer]:
    return []


def report_padding_adapter() -> list[keras.layers.Layer]:
    return [ReportPadding(name="report_padding")]


# --------------------------------------------------------------------------- the four CNNs

def output_layer(spec: ModelSpec) -> layers.Dense:
    """The softmax over the classes, in float32 whatever the policy the model is built under.

    Under mixed precision (``fmnist-train --precision bf16``) Keras advises a float32 output: the
    softmax and the loss stay exact and the model returns float32 probabilities. For an fp32 model
    this is what the layer would have anyway (same config, same weights).
    """
    return layers.Dense(spec.num_classes, activation="softmax", dtype="float32")


def _cnn(spec: ModelSpec, body: list[keras.layers.Layer]) -> keras.Model:
    model = keras.Sequential([keras.Input(spec.input_shape, name="image"), *spec.input_adapter(), *body], name=spec.name)
    return model


def build_model1(spec: ModelSpec, base_weights: str = "none") -> BuiltModel:
    return BuiltModel(_cnn(spec, [
        layers.Conv2D(32, (3, 3), activation="relu", kernel_initializer="he_normal"),
        layers.MaxPooling2D((2, 2)),
        layers.Conv2D(64, (3, 3), activation="relu"),
        layers.MaxPooling2D((2, 2)),
        layers.Conv2D(128, (3, 3), activation="relu"),
        layers.Flatten(),
        layers.Dense(128, activation="relu"),
        output_layer(spec),
    ]))


def build_model2(spec: ModelSpec, base_weights: str = "none") -> BuiltModel:
    return BuiltModel(_cnn(spec, [
        layers.Conv2D(32, (3, 3), activation="relu", kernel_initializer="he_normal"),
        layers.BatchNormalization(axis=-1),
        layers.Dropout(0.25),
        layers.MaxPooling2D((2, 2)),
        layers.Conv2D(64, (3, 3), activation="relu"),
        layers.BatchNormalization(axis=-1),
        layers.MaxPooling2D((2, 2)),
        layers.Dropout(0.25),
        layers.Conv2D(128, (3, 3), activation="relu"),
        layers.BatchNormalization(axis=-1),
        layers.Dropout(0.4),
        layers.Flatten(),
        layers.Dense(128, activation="relu"),
        layers.BatchNormalization(),
        layers.Dropout(0.3),
        output_layer(spec),
    ]))


def build_model3(spec: ModelSpec, base_weights: str = "none") -> BuiltModel:
    return BuiltModel(_cnn(spec, [
        layers.Conv2D(32, (3, 3), activation="relu"),
        layers.BatchNormalization(),
        layers.Conv2D(32, (3, 3), activation="relu"),
        layers.BatchNormalization(),
        layers.MaxPooling2D((2, 2)),
        layers.Dropout(0.2),
        layers.Conv2D(64, (3, 3), activation="relu"),
        layers.BatchNormalization(),
        layers.Dropout(0.2),
        layers.Conv2D(128, (3, 3), activation="relu"),
        layers.BatchNormalization(),
        layers.MaxPooling2D((2, 2)),
        layers.Dropout(0.3),
        layers.Flatten(),
        layers.Dense(512, activation="relu"),
        layers.BatchNormalization(),
        layers.Dropout(0.4),
        layers.Dense(128, activation="relu"),
        layers.BatchNormalization(),
        layers.Dropout(0.4),
        output_layer(spec),
    ]))


def build_model4(spec: ModelSpec, base_weights: str = "none") -> BuiltModel:
    def conv(filters: int, **kwargs) -> layers.Conv2D:
        return layers.Conv2D(filters, (3, 3), padding="same", activation="relu",
                             kernel_regularizer=regularizers.l2(0.001), **kwargs)

    return BuiltModel(_cnn(spec, [
        conv(32, kernel_initializer="he_normal"),
        layers.BatchNormalization(),
        conv(32),
        layers.BatchNormalization(),
        layers.MaxPooling2D((2, 2)),
        layers.Dropout(0.25),
        conv(64),
        layers.BatchNormalization(),
        layers.Dropout(0.25),
        conv(128),
        layers.BatchNormalization(),
        layers.MaxPooling2D((2, 2)),
        layers.Dropout(0.4),
        layers.Flatten(),
        layers.Dense(512, activation="relu"),
        layers.BatchNormalization(),
        layers.Dropout(0.5),
        layers.Dense(128, activation="relu"),
        layers.BatchNormalization(),
        layers.Dropout(0.5),
        output_layer(spec),
    ]))


# --------------------------------------------------------------------------- transfer models

class BaseWeightsError(RuntimeError):
    pass


def _load_base(application: Callable[..., keras.Model], base_weights: str, name: str) -> tuple[keras.Model, str]:
    """Build the ImageNet base per ``--base-weights auto|imagenet|none|PATH``; say what was used."""
    kwargs = dict(input_shape=TRANSFER_INPUT_SHAPE, include_top=False)
    if base_weights == "none":
        return application(weights=None, **kwargs), "none (random init)"
    if base_weights in ("imagenet", "auto"):
        try:
            return application(weights="imagenet", **kwargs), "imagenet"
        except Exception as exc:  # Keras raises a bare Exception on a failed download
            reason = str(exc).splitlines()[0][:300]
            if base_weights == "imagenet":
                raise BaseWeightsError(
                    f"--base-weights imagenet: the ImageNet weights for {name} cannot be had ({reason}); "
                    "put the .h5 file in ~/.keras/models/ or pass --base-weights PATH"
                ) from None
            warnings.warn(
                f"\n{'!' * 78}\n{name}: ImageNet weights unavailable ({reason}).\n"
                f"Training on a RANDOMLY INITIALISED frozen base; results are NOT the report's transfer learning.\n{'!' * 78}",
                stacklevel=2,
            )
            return application(weights=None, **kwargs), "none (random init; imagenet unavailable)"
    path = Path(base_weights)
    if not path.is_file():
        raise BaseWeightsError(f"--base-weights {base_weights}: expected auto, imagenet, none or an existing weights file")
    base = application(weights=None, **kwargs)
    try:
        base.load_weights(path)
    except Exception as exc:
        raise BaseWeightsError(f"--base-weights {path}: cannot load into {name} ({str(exc).splitlines()[0][:200]})") from None
    digest = hashlib.sha256(path.read_bytes()).hexdigest()[:12]
    return base, f"file {os.fspath(path)} (sha256 {digest})"


def _transfer(application: Callable[..., keras.Model]) -> Callable[..., BuiltModel]:
    def build(spec: ModelSpec, base_weights: str = "none") -> BuiltModel:
        network, used = _load_base(application, base_weights, spec.display_name)
        network.trainable = False
        image = keras.Input(spec.input_shape, name="image")
        x = image
        for adapter in spec.input_adapter():
            x = adapter(x)
        # training=False keeps BatchNormalization in inference mode, as a frozen base should be.
        features = network(x, training=False)
        base = keras.Model(image, features, name=f"{spec.name}_base")
        head = keras.Sequential([
            keras.Input(features.shape[1:], name="features"),
            layers.Flatten(),
            output_layer(spec),
        ], name=f"{spec.name}_head")
        model = keras.Model(image, head(base(image)), name=spec.name)
        return BuiltModel(model, used, base=base, head=head)

    return build


register("model1", build_model1, no_adapter)
register("model2", build_model2, no_adapter)
register("model3", build_model3, no_adapter)
register("model4", build_model4, no_adapter)
register("resnet50", _transfer(keras.applications.ResNet50), report_padding_adapter)
register("vgg16", _transfer(keras.applications.VGG16), report_padding_adapter)
if set(_REGISTRY) != set(list_models()):  # a catalogue entry without a builder is a bug here, found at import
    raise ImportError(f"trainer/catalog.py and trainer/models.py disagree on {sorted(set(list_models()) ^ set(_REGISTRY))}")


def load_trained(path: Path) -> keras.Model:
    """Load a ``.keras`` file written by the trainer (its custom layers are registered above)."""
    return keras.saving.load_model(path, compile=False)
