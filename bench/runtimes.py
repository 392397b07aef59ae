"""Which system under test runs a case: the table from runtime name to SUT, as LoadGen's reference
harness maps backends (``get_backend``). It sits above bench/sut.py and bench/peers.py so neither
needs the other."""

from __future__ import annotations

from bench.cases import PEERS, Case
from bench.peers import TRAIN_EXTRA, PeerUnavailable, make_peer
from bench.settings import SessionSettings
from bench.sut import SUT, KerasSUT, OrtSUT, TFLiteSUT
from trainer.artifacts import Artifacts

TENSORFLOW_RUNTIMES = {"keras": KerasSUT, "tflite": TFLiteSUT}


def make_sut(case: Case, artifacts: Artifacts, settings: SessionSettings = SessionSettings()) -> SUT:
    """The system under test for a case: an onnxruntime session on its provider, a TensorFlow reference
    built from the trained ``.keras`` file, or a peer runtime (bench/peers.py). Raises ProviderUnavailable,
    whose message is the skipped row's reason: a provider that did not load, a runtime that is not installed,
    or (on a device that got only the ONNX files) a reference row without its ``.keras`` file."""
    if case.provider in PEERS:
        return make_peer(case, artifacts, settings)
    if case.provider in TENSORFLOW_RUNTIMES:
        return _tensorflow_sut(case, artifacts)
    return OrtSUT(case.path, case.provider, settings)


def _tensorflow_sut(case: Case, artifacts: Artifacts) -> SUT:
    keras_file = artifacts.model_file(case.model)
    if not keras_file.is_file():  # discover() checked its identity where it exists
        raise PeerUnavailable(f"{keras_file} is not here: the {case.provider} row runs the trained model "
                              "(copy it beside the ONNX files, or pass --no-reference)")
    try:
        return TENSORFLOW_RUNTIMES[case.provider](keras_file)
    except ModuleNotFoundError as exc:
        if (exc.name or "").split(".")[0] not in ("tensorflow", "keras"):
            raise
        raise PeerUnavailable(f"{case.provider} needs TensorFlow, which is not installed here "
                              f"(pip install {TRAIN_EXTRA})") from None
