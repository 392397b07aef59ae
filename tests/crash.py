"""A Keras callback that stands in for a kill: it interrupts training after an epoch and its checkpoint."""

from __future__ import annotations

import keras


class Crash(keras.callbacks.Callback):
    """Raises KeyboardInterrupt at the end of epoch ``after`` (0-based), after that epoch's checkpoint is written."""

    def __init__(self, after: int):
        super().__init__()
        self.after = after

    def on_epoch_end(self, epoch, logs=None):
        if epoch == self.after:
            raise KeyboardInterrupt
