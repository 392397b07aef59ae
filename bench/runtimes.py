"""Which system under test runs a case: the table from runtime name to SUT, as LoadGen's reference
harness maps backends (``get_backend``). It sits above bench/sut.py and bench/peers.py so neither
needs the other."""

from __future__ import annotations

from bench.cases import PEERS, Case
from bench.peers import make_peer
from bench.settings import SessionSettings
from bench.sut import SUT, KerasSUT, OrtSUT, TFLiteSUT
from trainer.artifacts import Artifacts

TENSORFLOW_RUNTIMES = {"keras": KerasSUT, "tflite": TFLiteSUT}


def make_sut(case: Case, artifacts: Artifacts, settings: SessionSettings = SessionSettings()) -> SUT:
    """The system under test for a case: an onnxruntime session on its provider, a TensorFlow reference
    built from the trained ``.keras`` file, or a peer runtime (bench/peers.py). Raises
    ProviderUnavailable (a peer that is not installed too), or ImportError where TensorFlow is missing."""
    if case.provider in PEERS:
        return make_peer(case, artifacts, settings)
    if case.provider in TENSORFLOW_RUNTIMES:
        return TENSORFLOW_RUNTIMES[case.provider](artifacts.model_file(case.model))
    return OrtSUT(case.path, case.provider, settings)
