"""The report's six models as facts: names, display names, shapes. No TensorFlow here.

The bench and its report run on an edge device without the training stack (``pip install fmnist-edge``
without ``[train]``), yet they name models the way the report does. They ask here; ``trainer/models.py``
adds the Keras builders to these same records, and checks that every entry has one.
"""

from __future__ import annotations

from dataclasses import dataclass

from trainer.data import IMAGE_SHAPE, NUM_CLASSES

INPUT_SHAPE = (*IMAGE_SHAPE, 1)


@dataclass(frozen=True)
class ModelInfo:
    """What a registered model is, without building it."""

    name: str
    display_name: str
    conv_layers: int | None = None  # the report's "Layers" column
    transfer: bool = False  # frozen ImageNet base + trainable head
    # What the built model takes (float32 in [0, 1], without the batch axis) and how many classes it scores.
    input_shape: tuple[int, int, int] = INPUT_SHAPE
    num_classes: int = NUM_CLASSES


CATALOG: dict[str, ModelInfo] = {info.name: info for info in (
    ModelInfo("model1", "Model 1", conv_layers=3),
    ModelInfo("model2", "Model 2", conv_layers=3),
    ModelInfo("model3", "Model 3", conv_layers=4),
    ModelInfo("model4", "Model 4", conv_layers=4),
    ModelInfo("resnet50", "ResNet50", transfer=True),
    ModelInfo("vgg16", "VGG16", transfer=True),
)}


class UnknownModelError(KeyError):
    def __str__(self) -> str:
        return self.args[0]


def list_models() -> list[str]:
    return list(CATALOG)


def model_info(name: str) -> ModelInfo:
    try:
        return CATALOG[name]
    except KeyError:
        raise UnknownModelError(f"unknown model {name!r}; choose from {', '.join(list_models())}") from None
