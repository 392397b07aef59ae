"""Every runtime the bench measures, in one table that everything else reads: which cases exist
(``bench/measure/cases.py``), what ``--providers`` accepts and ``--no-reference`` leaves out, each row's
name and order in the summary, the figures and the recommendation.

As LoadGen's reference harness maps backends (``get_backend``), each entry builds its system under test
only when a case asks for it, and imports its runtime then: a runtime that is not installed is a skipped
row whose reason names the package, and the bench runs with onnxruntime, numpy and scikit-learn alone.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from bench.runtimes.base import SUT, Case, ProviderUnavailable
from bench.runtimes.ort import OrtSUT
from bench.runtimes.peers import TRAIN_EXTRA, LiteRTSUT, OpenVinoSUT, PeerUnavailable, litert_file, require
from bench.runtimes.reference import KerasSUT, TFLiteSUT
from bench.settings import SessionSettings
from exporter.contract import VARIANTS, is_imported, read_metadata_props
from trainer.artifacts import Artifacts
from trainer.catalog import is_yours

Build = Callable[[Case, Artifacts, SessionSettings], SUT]

# OpenVINO's INFERENCE_PRECISION_HINT names -> ours
PRECISIONS = {"f32": "fp32", "bf16": "bf16", "f16": "fp16"}


@dataclass(frozen=True)
class Runtime:
    """One runtime: ``key`` is its name in case ids and ``--providers``; ``names`` its row name per variant it
    runs, ``arithmetics`` what the row computes in (the yardstick its GFLOP/s is a share of; none for a GPU),
    where ``{precision}`` is the precision the runtime reported it picked."""

    key: str
    names: dict[str, str]
    build: Build
    arithmetics: dict[str, str]
    reference: bool = True  # not onnxruntime: what --no-reference leaves out
    from_keras: bool = False  # runs the trained .keras file, which must be the one the ONNX file came from
    threads: bool = True  # takes a thread count (--threads); Keras runs TensorFlow's process-wide pools

    @property
    def variants(self) -> tuple[str, ...]:
        return tuple(self.names)


def _onnxruntime(case: Case, artifacts: Artifacts, settings: SessionSettings) -> SUT:
    return OrtSUT(case.path, case.provider, settings)


def _tensorflow(sut: Callable[[Path, int], SUT]) -> Build:
    def build(case: Case, artifacts: Artifacts, settings: SessionSettings) -> SUT:
        keras_file = artifacts.model_file(case.model)
        if not keras_file.is_file():  # discover() checked its identity where it exists
            raise PeerUnavailable(f"{keras_file} is not here: the {case.provider} row runs the trained model "
                                  "(copy it beside the ONNX files, or pass --no-reference)")
        try:
            return sut(keras_file, settings.intra_op_threads)
        except ModuleNotFoundError as exc:
            if (exc.name or "").split(".")[0] not in ("tensorflow", "keras"):
                raise
            raise PeerUnavailable(f"{case.provider} needs TensorFlow, which is not installed here "
                                  f"(pip install {TRAIN_EXTRA})") from None
        except (TypeError, ValueError) as exc:
            if not is_yours(case.model):
                raise
            # A model of the user's built of custom layers: Keras needs their classes, which the bench does not load.
            reason = " ".join(str(exc).split())[:200]
            raise ProviderUnavailable(f"{keras_file}: Keras cannot load it here ({type(exc).__name__}: {reason}); custom "
                                      "layers must be importable, registered with keras.saving.register_keras_serializable") from None
    return build


def _keras_source(build: Build) -> Build:
    """A row that runs the trained ``.keras`` file or a conversion of it: an imported ONNX model has none, and says so."""
    def guarded(case: Case, artifacts: Artifacts, settings: SessionSettings) -> SUT:
        if is_imported(read_metadata_props(case.path)):
            raise ProviderUnavailable(f"{case.model} is an imported ONNX model: it has no Keras source (.keras file) for "
                                      f"{row_name(case.provider, case.variant)} to run", "no-keras-source")
        return build(case, artifacts, settings)
    return guarded


def _openvino(precision: str) -> Build:
    """``precision``: the INFERENCE_PRECISION_HINT asked for ("default": left to OpenVINO, which picks by CPU)."""
    def build(case: Case, artifacts: Artifacts, settings: SessionSettings) -> SUT:
        return OpenVinoSUT(case.path, case.variant, precision, threads=settings.intra_op_threads)
    return build


def _litert(case: Case, artifacts: Artifacts, settings: SessionSettings) -> SUT:
    require("ai_edge_litert.interpreter", "ai-edge-litert")  # before converting anything it could not run
    return LiteRTSUT(litert_file(artifacts, case), threads=settings.intra_op_threads or None)


SAME = {variant: variant for variant in VARIANTS}
# onnxruntime's CPU provider runs an fp16 file's kernels in float32 (it inserts Casts where it has no float16
# kernel, which on x86 is nearly everywhere): its arithmetic, and so its yardstick, is fp32's.
ORT_CPU = {**SAME, "fp16": "fp32"}
RUNTIMES: dict[str, Runtime] = {runtime.key: runtime for runtime in (
    Runtime("cpu", {v: f"onnxruntime CPU {v}" for v in VARIANTS}, _onnxruntime, ORT_CPU, reference=False),
    Runtime("cuda", {v: f"onnxruntime CUDA {v}" for v in VARIANTS}, _onnxruntime, {}, reference=False),
    Runtime("keras", {"fp32": "Keras"}, _keras_source(_tensorflow(KerasSUT)), SAME, from_keras=True, threads=False),
    Runtime("tflite", {"fp32": "TF Lite (XNNPACK)"}, _keras_source(_tensorflow(TFLiteSUT)), SAME, from_keras=True),
    Runtime("openvino", {"fp32": "OpenVINO default ({precision})", "int8": "OpenVINO int8"}, _openvino("default"),
            {"fp32": "{precision}", "int8": "int8"}),
    Runtime("openvino-f32", {"fp32": "OpenVINO f32", "int8": "OpenVINO int8 (f32 hint)"}, _openvino("f32"), SAME),
    Runtime("litert", {"fp32": "LiteRT fp32", "int8": "LiteRT int8"}, _keras_source(_litert), SAME),
)}
REFERENCES = tuple(key for key, runtime in RUNTIMES.items() if runtime.reference)
# Every (runtime, variant) row, in the order tables and figures show them.
ROWS = tuple((key, variant) for key, runtime in RUNTIMES.items() for variant in runtime.variants)


def make_sut(case: Case, artifacts: Artifacts, settings: SessionSettings = SessionSettings()) -> SUT:
    """The system under test for a case, at the case's thread count. Raises ProviderUnavailable, whose message is
    the skipped row's reason: a provider that did not load, a runtime that is not installed, or (on a device
    that got only the ONNX files) a reference row without its ``.keras`` file."""
    return RUNTIMES[case.provider].build(case, artifacts, dataclasses.replace(settings, intra_op_threads=case.threads))


def row_name(provider: str, variant: str, provider_options: dict | None = None) -> str:
    """A row's readable name: ``onnxruntime CPU int8``, ``OpenVINO default (bf16)``; the key itself when unknown."""
    names = RUNTIMES[provider].names if provider in RUNTIMES else {}
    if variant not in names:
        return f"{provider} {variant}"
    return names[variant].format(precision=(provider_options or {}).get("inference_precision") or "?")


def arithmetic(provider: str, variant: str, provider_options: dict | None = None) -> str | None:
    """What a row computes in (fp32, fp16, bf16, int8), for its yardstick; None for a GPU row or an unknown one."""
    computes = RUNTIMES[provider].arithmetics.get(variant) if provider in RUNTIMES else None
    if computes == "{precision}":
        return PRECISIONS.get((provider_options or {}).get("inference_precision"))
    return computes
