"""The TFLite backend: the only module that imports a TFLite runtime.

`ai-edge-litert` (the maintained successor, numpy 2 ready) is preferred; the frozen
`tflite-runtime` 2.14 package is used when it is the one installed. One `TFLiteModel`
per thread: interpreters are not thread-safe, and `invoke()` releases the GIL.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from agent.errors import ModelLoadError, ModelRuntimeError

log = logging.getLogger(__name__)

_lock = threading.Lock()
_backend: tuple[str, Any] | None = None


def _load_backend() -> tuple[str, Any]:
    global _backend
    with _lock:
        if _backend is None:
            try:
                from ai_edge_litert.interpreter import Interpreter

                _backend = ("ai-edge-litert", Interpreter)
            except ImportError:
                try:
                    from tflite_runtime.interpreter import Interpreter

                    _backend = ("tflite-runtime", Interpreter)
                except ImportError:
                    raise ModelLoadError(
                        "(runtime)",
                        "no TFLite runtime installed: pip install ai-edge-litert "
                        "(or tflite-runtime on numpy<2)",
                    ) from None
        return _backend


def runtime_name() -> str:
    """Name and version of the TFLite runtime in use."""
    name, _ = _load_backend()
    from importlib.metadata import PackageNotFoundError, version

    try:
        return f"{name} {version(name)}"
    except PackageNotFoundError:
        return name


@dataclass(frozen=True)
class TensorInfo:
    shape: tuple[int, ...]
    dtype: np.dtype[Any]
    scale: float
    zero_point: int

    @property
    def quantized(self) -> bool:
        return self.scale != 0.0 and self.dtype.kind in "iu"


class TFLiteModel:
    """A model with one input and one output, quantizing and dequantizing at the edges."""

    def __init__(self, path: Path, num_threads: int = 1) -> None:
        _, interpreter_cls = _load_backend()
        self.path = path
        if not path.is_file():
            raise ModelLoadError(str(path), "no such file")
        try:
            self._interp = interpreter_cls(model_path=str(path), num_threads=num_threads)
            self._interp.allocate_tensors()
        except (ValueError, RuntimeError) as exc:
            raise ModelLoadError(str(path), str(exc).strip().splitlines()[0]) from None
        inputs = self._interp.get_input_details()
        outputs = self._interp.get_output_details()
        if len(inputs) != 1 or len(outputs) != 1:
            raise ModelLoadError(str(path), "expected exactly one input and one output tensor")
        self._in_index = int(inputs[0]["index"])
        self._out_index = int(outputs[0]["index"])
        self.input = _info(inputs[0])
        self.output = _info(outputs[0])
        self._batch = int(self.input.shape[0]) if self.input.shape else 1

    def _resize(self, batch: int) -> None:
        if batch == self._batch:
            return
        shape = [batch, *self.input.shape[1:]]
        try:
            self._interp.resize_tensor_input(self._in_index, shape, strict=False)
            self._interp.allocate_tensors()
        except (ValueError, RuntimeError) as exc:
            raise ModelRuntimeError(f"{self.path}: cannot resize input to {shape}: {exc}") from None
        self._batch = batch

    def quantize(self, x: npt.NDArray[Any]) -> npt.NDArray[Any]:
        """Convert a float batch to the input tensor's dtype with its quantization."""
        info = self.input
        if x.dtype == info.dtype:
            return x
        if info.quantized:
            limits = np.iinfo(info.dtype)
            q = np.rint(x / info.scale + info.zero_point)
            return np.clip(q, limits.min, limits.max).astype(info.dtype)
        return x.astype(info.dtype, copy=False)

    def predict(self, x: npt.NDArray[Any]) -> npt.NDArray[np.float32]:
        """Run a batch (first axis) and return the dequantized float32 output."""
        self._resize(int(x.shape[0]))
        try:
            self._interp.set_tensor(self._in_index, self.quantize(x))
            self._interp.invoke()
            out = self._interp.get_tensor(self._out_index)
        except (ValueError, RuntimeError) as exc:
            raise ModelRuntimeError(f"{self.path}: {exc}") from None
        info = self.output
        if info.quantized:
            deq = (out.astype(np.float32) - np.float32(info.zero_point)) * np.float32(info.scale)
            return np.asarray(deq, dtype=np.float32)
        return np.array(out, dtype=np.float32)


def _info(detail: dict[str, Any]) -> TensorInfo:
    scale, zero_point = detail.get("quantization", (0.0, 0))
    return TensorInfo(
        shape=tuple(int(d) for d in detail["shape"]),
        dtype=np.dtype(detail["dtype"]),
        scale=float(scale),
        zero_point=int(zero_point),
    )
