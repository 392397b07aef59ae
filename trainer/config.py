"""Training defaults and the configuration of one training run: the one place that knows them.

The defaults are the report's protocol (Adam, batch 128, 50 epochs, each optimizer at Keras' own
default learning rate: the report used ``Adam()`` and ``'sgd'`` as they come). The command line, the
sweep and the REPORT.md renderer all read them here, so a changed default changes every one of them.

Imports no TensorFlow: resolving a configuration (or reading the defaults for a report) must not
pay for loading it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Mapping

# Keras' own default learning rate per optimizer; also the optimizers the toolkit knows.
_KERAS_LR_BY_OPTIMIZER = MappingProxyType({"adam": 1e-3, "sgd": 1e-2})


@dataclass(frozen=True)
class TrainDefaults:
    """The report's protocol: what a run uses for every setting the user leaves out."""

    epochs: int = 50
    batch_size: int = 128
    optimizer: str = "adam"
    # Per optimizer, because the report changed optimizers without setting a learning rate.
    lr_by_optimizer: Mapping[str, float] = field(default_factory=lambda: _KERAS_LR_BY_OPTIMIZER)

    @property
    def optimizers(self) -> tuple[str, ...]:
        """The optimizer names a configuration may use."""
        return tuple(self.lr_by_optimizer)

    @property
    def lr(self) -> float:
        """The learning rate of the default optimizer (the report's 1e-3)."""
        return self.lr_for(self.optimizer)

    def lr_for(self, optimizer: str) -> float:
        """The learning rate an ``optimizer`` runs at when the user gives none."""
        try:
            return self.lr_by_optimizer[optimizer]
        except KeyError:
            raise ValueError(f"--optimizer {optimizer!r}: choose from {', '.join(self.optimizers)}") from None


DEFAULTS = TrainDefaults()


@dataclass(frozen=True)
class TrainConfig:
    """Everything that decides what one run trains.

    Its ``asdict`` is part of a checkpoint's identity (a checkpoint of another configuration is not
    resumed) and of an experiment row's key: adding, renaming or reordering fields invalidates both.
    """

    model: str
    epochs: int
    batch_size: int
    optimizer: str
    lr: float
    seed: int
    base_weights: str = "auto"
    limit: int | None = None  # images used (smoke runs); None: all of them


def resolve_config(
    model: str,
    *,
    epochs: int | None = None,
    batch_size: int | None = None,
    optimizer: str | None = None,
    lr: float | None = None,
    seed: int = 0,
    base_weights: str = "auto",
    limit: int | None = None,
) -> TrainConfig:
    """A complete configuration from the settings the user gave (``None``: the default).

    An optimizer without an explicit ``lr`` runs at its own default rate, not the default
    optimizer's: SGD at Adam's 1e-3 is not what the report measured.
    """
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
    )
