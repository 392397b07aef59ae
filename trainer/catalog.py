"""The report's six models as facts: names, display names, shapes. No TensorFlow here: the bench runs without
the training stack, yet names models as the report does. trainer/models.py adds the Keras builders.

A model of the user's own (a ``--model-file`` builder, or an ONNX file given to ``fmnist-export --onnx``) is
any name that is not one of the six, shown with :data:`YOURS` after it everywhere. :func:`name_problem`
checks its name, so that it can never stand for one of the six, nor collide with a file or a lock.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from trainer.data import IMAGE_SHAPE, NUM_CLASSES

INPUT_SHAPE = (*IMAGE_SHAPE, 1)
YOURS = "(yours)"
# Words the commands or the artifacts folder use themselves: 'all' and 'sweep' on the command line, the
# locks and files of Table 1, the experiment store and the sample grid (trainer/artifacts.py).
RESERVED_NAMES = ("all", "sweep", "report", "table1", "experiments", "samples")
# A model name becomes file names (NAME.keras, NAME.onnx, NAME.int8.onnx): no dots, no separators.
NAME_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,63}")


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
    # A model of the user's: the model file that registered it and its sha256 (None for the six).
    source_file: str | None = None
    source_sha256: str | None = None


CATALOG: dict[str, ModelInfo] = {info.name: info for info in (
    ModelInfo("model1", "Model 1", conv_layers=3),
    ModelInfo("model2", "Model 2", conv_layers=3),
    ModelInfo("model3", "Model 3", conv_layers=4),
    ModelInfo("model4", "Model 4", conv_layers=4),
    ModelInfo("resnet50", "ResNet50", transfer=True),
    ModelInfo("vgg16", "VGG16", transfer=True),
)}
# The user's models registered in this process (trainer/models.py, while a model file loads).
_YOURS: dict[str, ModelInfo] = {}


class UnknownModelError(KeyError):
    def __str__(self) -> str:
        return self.args[0]


class ModelFileError(ValueError):
    """A model file (``--model-file``) cannot register its models; the message names the file and what is wrong."""


def study_models() -> list[str]:
    return list(CATALOG)


def list_models() -> list[str]:
    """The six, then the user's models registered in this process (``--model-file``)."""
    return [*CATALOG, *_YOURS]


def model_info(name: str) -> ModelInfo:
    try:
        return CATALOG.get(name) or _YOURS[name]
    except KeyError:
        raise UnknownModelError(f"unknown model {name!r}; choose from {', '.join(list_models())}, "
                                "or register your own with --model-file PATH.py") from None


def add_yours(info: ModelInfo) -> None:
    _YOURS[info.name] = info


def remove_yours(name: str) -> None:
    _YOURS.pop(name, None)


def source_sha256(name: str) -> str | None:
    info = _YOURS.get(name)
    return info.source_sha256 if info else None


def is_yours(name: str) -> bool:
    return name not in CATALOG


def label(name: str) -> str:
    """How tables name a model by its key: ``model4``, or ``mynet (yours)``."""
    return f"{name} {YOURS}" if is_yours(name) else name


def display_name(name: str) -> str:
    """The report's name of one of the six (``Model 4``); the user's own marked (``mynet (yours)``)."""
    return CATALOG[name].display_name if name in CATALOG else label(name)


def model_order(name: str) -> tuple[int, int, str]:
    """A sort key: the six in the report's order, then the user's by name."""
    return (0, list(CATALOG).index(name), "") if name in CATALOG else (1, 0, name)


def name_problem(name: str) -> str | None:
    """Why ``name`` cannot name a model of the user's (None when it can): it must be a file-name token and
    must not be, or differ only in case from, one of the six or a reserved word."""
    if not NAME_PATTERN.fullmatch(name):
        return ("is not a safe name: use 1 to 64 letters, digits, '_' or '-', starting with a letter or digit "
                "(it becomes file names)")
    if name.lower() in CATALOG:
        return f"is one of the study's models ({', '.join(CATALOG)}); choose another name"
    if name.lower() in RESERVED_NAMES:
        return f"is reserved ({', '.join(RESERVED_NAMES)}); choose another name"
    return None
