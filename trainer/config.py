"""Training defaults and the configuration of one training run: the one place that knows them.

The defaults are the report's protocol (Adam, batch 128, 50 epochs, each optimizer at Keras' own default
learning rate: the report used ``Adam()`` and ``'sgd'`` as they come); the command line, the sweep and the
REPORT.md renderer all read them here. Imports no TensorFlow: reading them must not pay for loading it.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from types import MappingProxyType
from typing import Mapping

from trainer.catalog import source_sha256

# Keras' own default learning rate per optimizer; also the optimizers the toolkit knows.
_KERAS_LR_BY_OPTIMIZER = MappingProxyType({"adam": 1e-3, "sgd": 1e-2})
# ``--precision``: the Keras dtype policy each name trains under. bf16 is Keras' mixed precision: float32
# variables, bfloat16 compute, the softmax output in float32.
PRECISION_POLICIES = MappingProxyType({"fp32": "float32", "bf16": "mixed_bfloat16"})


@dataclass(frozen=True)
class TrainDefaults:
    """The report's protocol: what a run uses for every setting the user leaves out."""

    epochs: int = 50
    batch_size: int = 128
    optimizer: str = "adam"
    precision: str = "fp32"  # the study's
    # Per optimizer, because the report changed optimizers without setting a learning rate.
    lr_by_optimizer: Mapping[str, float] = field(default_factory=lambda: _KERAS_LR_BY_OPTIMIZER)

    @property
    def optimizers(self) -> tuple[str, ...]:
        return tuple(self.lr_by_optimizer)

    @property
    def lr(self) -> float:
        """The default optimizer's (the report's 1e-3)."""
        return self.lr_for(self.optimizer)

    def lr_for(self, optimizer: str) -> float:
        """The learning rate ``optimizer`` runs at when the user gives none."""
        try:
            return self.lr_by_optimizer[optimizer]
        except KeyError:
            raise ValueError(f"--optimizer {optimizer!r}: choose from {', '.join(self.optimizers)}") from None

    @property
    def precisions(self) -> tuple[str, ...]:
        """The ``--precision`` names, the default first."""
        return (self.precision, *(p for p in PRECISION_POLICIES if p != self.precision))


DEFAULTS = TrainDefaults()


@dataclass(frozen=True)
class TrainConfig:
    """Everything that decides what one run trains. Its ``identity`` keys checkpoints and experiment rows: a
    field added, renamed or reordered invalidates both, unless ``identity`` leaves it out at its old implicit
    value (as it does ``precision``)."""

    model: str
    epochs: int
    batch_size: int
    optimizer: str
    lr: float
    seed: int
    base_weights: str = "auto"
    limit: int | None = None  # images used (smoke runs); None: all of them
    precision: str = "fp32"

    def __post_init__(self) -> None:
        if self.precision not in PRECISION_POLICIES:
            raise ValueError(f"--precision {self.precision!r}: choose from {', '.join(PRECISION_POLICIES)}")

    @property
    def dtype_policy(self) -> str:
        return PRECISION_POLICIES[self.precision]

    def identity(self) -> dict:
        """The configuration as checkpoints and experiment keys see it: every field, except ``precision`` when it
        is fp32, as every run before ``--precision`` was (so their rows and checkpoints still match)."""
        values = asdict(self)
        if self.precision == "fp32":
            del values["precision"]
        # A model of the user's (--model-file) is what its file says now: an edited file is another model,
        # whose checkpoint must not be resumed and whose experiment rows are not the old ones.
        if sha256 := source_sha256(self.model):
            values["model_file_sha256"] = sha256
        return values


def resolve_config(model: str, *, epochs: int | None = None, batch_size: int | None = None,
                   optimizer: str | None = None, lr: float | None = None, seed: int = 0, base_weights: str = "auto",
                   limit: int | None = None, precision: str | None = None) -> TrainConfig:
    """A complete configuration from the settings the user gave (``None``: the default). An optimizer without an
    ``lr`` runs at its own default rate: SGD at Adam's 1e-3 is not what the report measured."""
    optimizer = optimizer or DEFAULTS.optimizer
    optimizer_lr = DEFAULTS.lr_for(optimizer)  # also refuses an unknown optimizer here, not epochs later
    return TrainConfig(
        model=model,
        epochs=epochs if epochs is not None else DEFAULTS.epochs,
        batch_size=batch_size if batch_size is not None else DEFAULTS.batch_size,
        optimizer=optimizer,
        lr=lr if lr is not None else optimizer_lr,
        seed=seed,
        base_weights=base_weights,
        limit=limit,
        precision=precision or DEFAULTS.precision,
    )
