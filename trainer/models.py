"""The model registry: the report's six models (named in trainer/catalog.py) with their Keras builders, and
the user's own from a model file (trainer/userfile.py). The bench, which runs without TensorFlow, asks
trainer/catalog.py instead.

Every model takes the trainer's canonical input, float32 ``(batch, 28, 28, 1)`` in [0, 1]. The transfer
models' 32x32x3 input is made inside the model (the report's ``np.pad(x, ((0,0),(2,2),(2,2),(1,1)))``), so
the ``.keras`` file, the ONNX graph and every benchmark see the same tensor without guessing.
"""

from __future__ import annotations

import contextlib
import contextvars
import hashlib
import os
import warnings
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

import keras
from keras import layers, regularizers

from trainer import catalog
from trainer.catalog import INPUT_SHAPE, ModelFileError, ModelInfo, UnknownModelError, list_models, model_info  # noqa: F401 - re-exported

TRANSFER_INPUT_SHAPE = (32, 32, 3)
# The report's padding of (N, 28, 28, 1) to (N, 32, 32, 3): 2 pixels each side, the grey channel in the middle.
REPORT_PADDING = ((0, 0), (2, 2), (2, 2), (1, 1))
Builder = Callable[..., "BuiltModel | keras.Model"]
Adapter = Callable[[], list[keras.layers.Layer]]  # the layers that turn the canonical input into the network's


@dataclass(frozen=True, kw_only=True)
class ModelSpec(ModelInfo):
    """One registered model: its catalogue entry (trainer/catalog.py) plus how to build it."""

    builder: Builder
    input_adapter: Adapter  # ``list`` (no layers) where the network takes the canonical input


@dataclass
class BuiltModel:
    model: keras.Model
    # What the frozen base's weights are ("n/a", "imagenet", ...), for reports.
    base_weights: str = "n/a"
    # For transfer models: the frozen part (canonical input -> features) and the trainable head.
    base: keras.Model | None = None
    head: keras.Model | None = None


_REGISTRY: dict[str, ModelSpec] = {}
# (path, sha256) of the model file running now: its registrations are the user's models, checked as such.
_LOADING: contextvars.ContextVar[tuple[str, str] | None] = contextvars.ContextVar("fmnist_model_file", default=None)


def register(name: str, *, input_adapter: Adapter | None = None,
             display_name: str | None = None) -> Callable[[Builder], Builder]:
    """Register ``@register("model1")`` above ``def build(spec, base_weights="none")``.

    The builder gets its ``ModelSpec`` and returns a ``BuiltModel`` or a bare ``keras.Model``. From a model
    file, ``name`` must not be one of the six (trainer/catalog.py's ``name_problem``) and ``display_name``
    (default: the name) is shown with "(yours)" after it.
    """
    def decorate(builder: Builder) -> Builder:
        source = _LOADING.get()
        if source is None:
            info = model_info(name)  # one of the six: its catalogue entry must exist
            if name in _REGISTRY:
                raise ValueError(f"model {name!r} is registered twice")
        else:
            path, sha256 = source
            problem = catalog.name_problem(name) if isinstance(name, str) else "is not text"
            if problem:
                raise ModelFileError(f"{path}: model name {str(name)[:80]!r} {problem}")
            if name in _REGISTRY:
                raise ModelFileError(f"{path}: model {name!r} is registered already "
                                     "(twice in this file, or by another model file)")
            shown = f"{str(display_name or name)[:80]} {catalog.YOURS}"
            info = ModelInfo(name, shown, source_file=path, source_sha256=sha256)
            catalog.add_yours(info)
        _REGISTRY[name] = ModelSpec(**asdict(info), builder=builder, input_adapter=input_adapter or list)
        return builder
    return decorate


@contextlib.contextmanager
def registering_from(path: str, sha256: str) -> Iterator[None]:
    """Run a model file's code inside this block: what it registers is the user's. If the block fails, the
    models it registered are unregistered again (nothing half-registered)."""
    token = _LOADING.set((path, sha256))
    try:
        yield
    except BaseException:
        for name in registered_from(path, sha256):
            unregister(name)
        raise
    finally:
        _LOADING.reset(token)


def registered_from(path: str, sha256: str) -> list[str]:
    return [name for name, spec in _REGISTRY.items() if (spec.source_file, spec.source_sha256) == (path, sha256)]


def unregister(name: str) -> None:
    """Forget a user's model (a model file that failed half-way); the six cannot be unregistered."""
    if catalog.is_yours(name):
        _REGISTRY.pop(name, None)
        catalog.remove_yours(name)


def get_spec(name: str) -> ModelSpec:
    if name not in _REGISTRY:
        model_info(name)  # an unknown name is named with the choices
    return _REGISTRY[name]


def create_model(name: str, base_weights: str = "none") -> BuiltModel:
    """Build a registered model (uncompiled) on the canonical 28x28x1 input."""
    spec = get_spec(name)
    built = spec.builder(spec, base_weights=base_weights)
    return built if isinstance(built, BuiltModel) else BuiltModel(built)


def load_trained(path: Path) -> keras.Model:
    """Load a ``.keras`` file written by the trainer (its custom layers are registered below)."""
    return keras.saving.load_model(path, compile=False)


@keras.saving.register_keras_serializable(package="fmnist_edge")
class ReportPadding(keras.layers.Layer):
    """Zero-pads (N, 28, 28, 1) to (N, 32, 32, 3) exactly as the report's ``np.pad``."""

    def call(self, inputs):
        return keras.ops.pad(inputs, REPORT_PADDING)

    def compute_output_shape(self, input_shape):
        return (input_shape[0], *TRANSFER_INPUT_SHAPE)


def report_padding_adapter() -> list[keras.layers.Layer]:
    return [ReportPadding(name="report_padding")]


# --------------------------------------------------------------------------- the four CNNs

def output_layer(spec: ModelSpec) -> layers.Dense:
    """The softmax in float32 whatever the policy: under mixed precision (``--precision bf16``) Keras advises it,
    so the softmax and the loss stay exact; for fp32 it is the layer's config anyway."""
    return layers.Dense(spec.num_classes, activation="softmax", dtype="float32")


def _cnn(spec: ModelSpec, body: list[keras.layers.Layer]) -> BuiltModel:
    return BuiltModel(keras.Sequential([keras.Input(spec.input_shape, name="image"), *spec.input_adapter(), *body],
                                       name=spec.name))


@register("model1")
def build_model1(spec: ModelSpec, base_weights: str = "none") -> BuiltModel:
    return _cnn(spec, [
        layers.Conv2D(32, (3, 3), activation="relu", kernel_initializer="he_normal"),
        layers.MaxPooling2D((2, 2)),
        layers.Conv2D(64, (3, 3), activation="relu"),
        layers.MaxPooling2D((2, 2)),
        layers.Conv2D(128, (3, 3), activation="relu"),
        layers.Flatten(),
        layers.Dense(128, activation="relu"),
        output_layer(spec),
    ])


@register("model2")
def build_model2(spec: ModelSpec, base_weights: str = "none") -> BuiltModel:
    return _cnn(spec, [
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
    ])


def _deep_cnn(spec: ModelSpec, conv: Callable[..., layers.Conv2D], first: dict, rates: tuple[float, ...]) -> BuiltModel:
    """Models 3 and 4, one stack: ``conv(filters)`` makes its convolutions (the first with ``first`` too) and
    ``rates`` are its five dropout rates in order."""
    return _cnn(spec, [
        conv(32, **first),
        layers.BatchNormalization(),
        conv(32),
        layers.BatchNormalization(),
        layers.MaxPooling2D((2, 2)),
        layers.Dropout(rates[0]),
        conv(64),
        layers.BatchNormalization(),
        layers.Dropout(rates[1]),
        conv(128),
        layers.BatchNormalization(),
        layers.MaxPooling2D((2, 2)),
        layers.Dropout(rates[2]),
        layers.Flatten(),
        layers.Dense(512, activation="relu"),
        layers.BatchNormalization(),
        layers.Dropout(rates[3]),
        layers.Dense(128, activation="relu"),
        layers.BatchNormalization(),
        layers.Dropout(rates[4]),
        output_layer(spec),
    ])


@register("model3")
def build_model3(spec: ModelSpec, base_weights: str = "none") -> BuiltModel:
    def conv(filters: int, **kwargs) -> layers.Conv2D:
        return layers.Conv2D(filters, (3, 3), activation="relu", **kwargs)

    return _deep_cnn(spec, conv, {}, (0.2, 0.2, 0.3, 0.4, 0.4))


@register("model4")
def build_model4(spec: ModelSpec, base_weights: str = "none") -> BuiltModel:
    def conv(filters: int, **kwargs) -> layers.Conv2D:
        return layers.Conv2D(filters, (3, 3), padding="same", activation="relu",
                             kernel_regularizer=regularizers.l2(0.001), **kwargs)

    return _deep_cnn(spec, conv, {"kernel_initializer": "he_normal"}, (0.25, 0.25, 0.4, 0.5, 0.5))


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


register("resnet50", input_adapter=report_padding_adapter)(_transfer(keras.applications.ResNet50))
register("vgg16", input_adapter=report_padding_adapter)(_transfer(keras.applications.VGG16))
if set(_REGISTRY) != set(catalog.study_models()):  # a catalogue entry without a builder is a bug here, found at import
    raise ImportError(f"trainer/catalog.py and trainer/models.py disagree on {sorted(set(catalog.study_models()) ^ set(_REGISTRY))}")
