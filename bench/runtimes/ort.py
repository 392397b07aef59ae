"""onnxruntime on one execution provider: the system under test every exported variant runs on."""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path

import numpy as np

from bench.measure.profile import onnxruntime_profile
from bench.runtimes.base import SUT, InterfaceError, ProviderUnavailable
from bench.runtimes.trivial import trivial_onnx
from bench.runtimes.cuda import DeviceRun, cuda_provider_options, node_placement, open_session
from bench.settings import SessionSettings
from exporter.contract import INPUT_NAME, OUTPUT_NAME, ContractError, check_interface, shown


class OrtSUT(SUT):
    """An onnxruntime session on exactly one provider (never a silent CPU fallback)."""

    def __init__(self, path: Path, provider: str = "cpu", settings: SessionSettings = SessionSettings()):
        self.path, self.provider, self.settings = Path(path), provider, settings
        self.provider_options = cuda_provider_options(settings.cudnn_conv_algo_search) if provider == "cuda" else None
        start = time.perf_counter()
        try:
            self.session = open_session(self.path, settings.options(), provider, self.provider_options)
        except ProviderUnavailable:
            raise
        except Exception as exc:  # onnxruntime raises its own Fail/InvalidGraph/NoSuchFile types
            raise InterfaceError(f"{shown(self.path)}: onnxruntime cannot load it ({str(exc).splitlines()[0][-300:]})") from None
        self.session_create_s = time.perf_counter() - start
        try:
            check_interface(self.session.get_inputs(), self.session.get_outputs(), self.path)
        except ContractError as exc:
            raise InterfaceError(str(exc)) from None
        self.providers_used = self.session.get_providers()
        self.model_bytes = self.path.stat().st_size
        self.name = f"onnxruntime {provider}"
        if provider == "cuda":
            # A "CUDA" session may run some nodes on the CPU (int8 QDQ: QLinearConv has no CUDA kernel):
            # the profile of one run says which, and the report labels the case with it.
            where = node_placement(self.path, settings.options(), provider, self.provider_options,
                                   np.zeros((1, *self.session.get_inputs()[0].shape[1:]), np.float32))
            self.placement = {**dataclasses.asdict(where), "label": where.label()}
            self.measures_device = True

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        return self.session.run([OUTPUT_NAME], {INPUT_NAME: batch})[0]

    def trivial(self) -> SUT:
        return OrtSUT(trivial_onnx(), self.provider, self.settings)

    def profile(self, batch: np.ndarray) -> list | None:
        return onnxruntime_profile(self.path, batch, self.settings) if self.provider == "cpu" else None

    def device_run(self, batch: np.ndarray) -> DeviceRun:
        """One call on ``batch`` already on the session's device, output left there (IOBinding)."""
        return DeviceRun(self.session, INPUT_NAME, OUTPUT_NAME, batch)
