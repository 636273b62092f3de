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


BATCH_SIZES = (1, 2, 4, 8, 16, 32, 64, 128, 256)


class _Slot:
    """One interpreter allocated once for one batch size, with its input buffer."""

    def __init__(self, interp: Any, batch: int, in_index: int, dtype: np.dtype[Any]) -> None:
        self.interp = interp
        self.batch = batch
        self.buffer = np.zeros([batch, *interp.get_input_details()[0]["shape"][1:]], dtype)
        self.in_index = in_index


class TFLiteModel:
    """A model with one input and one output, quantizing and dequantizing at the edges.

    Batches run on interpreters allocated once per batch size of `BATCH_SIZES` (created on
    first use, the input padded up to the size): no `resize_tensor_input` +
    `allocate_tensors` per batch, which costs more than invoking a small model. The model
    file is memory-mapped, so the interpreters share its weights.
    """

    def __init__(self, path: Path, num_threads: int = 1, batchable: bool = True) -> None:
        """`batchable=False`: the model runs one sample per invoke even though its batch
        axis can be resized (MoveNet: its GATHER_ND indices assume a batch of 1)."""
        _, self._interpreter_cls = _load_backend()
        self.path = path
        self._num_threads = num_threads
        if not path.is_file():
            raise ModelLoadError(str(path), "no such file")
        try:
            interp = self._new_interpreter()
        except (ValueError, RuntimeError) as exc:
            raise ModelLoadError(str(path), str(exc).strip().splitlines()[0]) from None
        inputs = interp.get_input_details()
        outputs = interp.get_output_details()
        if len(inputs) != 1 or len(outputs) != 1:
            raise ModelLoadError(str(path), "expected exactly one input and one output tensor")
        self._in_index = int(inputs[0]["index"])
        self._out_index = int(outputs[0]["index"])
        self.input = _info(inputs[0])
        self.output = _info(outputs[0])
        native = int(self.input.shape[0]) if self.input.shape else 1
        self._slots: dict[int, _Slot] = {
            native: _Slot(interp, native, self._in_index, self.input.dtype)
        }
        # otherwise: chunks of the model's own batch size
        self._resizable = native == 1 and batchable

    def _new_interpreter(self) -> Any:
        interp = self._interpreter_cls(model_path=str(self.path), num_threads=self._num_threads)
        interp.allocate_tensors()
        return interp

    def _slot(self, n: int) -> _Slot:
        """The interpreter for a batch of `n` (n <= the largest batch size)."""
        size = next(b for b in BATCH_SIZES if b >= n) if self._resizable else min(self._slots)
        slot = self._slots.get(size)
        if slot is None:
            shape = [size, *self.input.shape[1:]]
            try:
                interp = self._new_interpreter()
                interp.resize_tensor_input(self._in_index, shape, strict=False)
                interp.allocate_tensors()
            except (ValueError, RuntimeError) as exc:
                log.warning(
                    "%s: cannot run batches of %d (%s); running batch 1", self.path, size, exc
                )
                self._resizable = False
                return self._slots[min(self._slots)]
            slot = self._slots[size] = _Slot(interp, size, self._in_index, self.input.dtype)
        return slot

    @property
    def batch_sizes(self) -> list[int]:
        """Batch sizes allocated so far."""
        return sorted(self._slots)

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
        n = int(x.shape[0])
        q = self.quantize(x)
        largest = BATCH_SIZES[-1] if self._resizable else min(self._slots)
        if n > largest:
            return np.concatenate([self.predict(x[i : i + largest]) for i in range(0, n, largest)])
        slot = self._slot(n)
        if slot.batch < n:  # the model cannot take this batch: one chunk at a time
            return np.concatenate(
                [self.predict(x[i : i + slot.batch]) for i in range(0, n, slot.batch)]
            )
        try:
            if slot.batch == n:
                slot.interp.set_tensor(self._in_index, q)
            else:
                slot.buffer[:n] = q  # padding rows keep old values; their outputs are dropped
                slot.interp.set_tensor(self._in_index, slot.buffer)
            slot.interp.invoke()
            out = slot.interp.get_tensor(self._out_index)[:n]
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
