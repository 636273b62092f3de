"""Run TFLite models with ai-edge-litert (numpy only, no TensorFlow).

Shared by ``train.py`` (to measure what the agent will measure) and
``verify_runtime.py`` (to re-check it in the agent's runtime venv).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
from ai_edge_litert.interpreter import Interpreter, OpResolverType


def quantize(
    x: npt.NDArray[np.float32], scale: float, zero_point: int, dtype: type[np.integer[Any]]
) -> npt.NDArray[np.integer[Any]]:
    """q = clip(round_half_even(x / scale) + zero_point, qmin, qmax)."""
    info = np.iinfo(dtype)
    q = np.round(x.astype(np.float32) / np.float32(scale)) + zero_point
    out: npt.NDArray[np.integer[Any]] = np.clip(q, info.min, info.max).astype(dtype)
    return out


def dequantize(
    q: npt.NDArray[np.integer[Any]], scale: float, zero_point: int
) -> npt.NDArray[np.float32]:
    """x = (q - zero_point) * scale, computed in float32."""
    out: npt.NDArray[np.float32] = (q.astype(np.float32) - np.float32(zero_point)) * np.float32(
        scale
    )
    return out


class TFLiteModel:
    """One interpreter, invoked one sample at a time (as the agent does)."""

    def __init__(self, path: str | Path, num_threads: int = 1, delegates: bool = True) -> None:
        """``delegates=False`` disables the default XNNPACK delegate (used to
        list the graph's own operators); predictions use the defaults, as the
        agent does."""
        self.path = Path(path)
        resolver = (
            OpResolverType.AUTO if delegates else OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES
        )
        self.interpreter = Interpreter(
            model_path=str(self.path),
            num_threads=num_threads,
            experimental_op_resolver_type=resolver,
        )
        self.interpreter.allocate_tensors()
        (self.inp,) = self.interpreter.get_input_details()
        (self.out,) = self.interpreter.get_output_details()

    @property
    def input_quant(self) -> tuple[float, int]:
        scale, zp = self.inp["quantization"]
        return float(scale), int(zp)

    @property
    def output_quant(self) -> tuple[float, int]:
        scale, zp = self.out["quantization"]
        return float(scale), int(zp)

    def predict(self, feats: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
        """feats: [N, *input_shape] float32 -> [N, C] float32 probabilities."""
        in_dtype = self.inp["dtype"]
        out_dtype = self.out["dtype"]
        rows = []
        for sample in feats:
            x = sample[None].astype(np.float32)
            if in_dtype != np.float32:
                scale, zp = self.input_quant
                x = quantize(x, scale, zp, in_dtype)
            self.interpreter.set_tensor(self.inp["index"], x)
            self.interpreter.invoke()
            y = self.interpreter.get_tensor(self.out["index"])
            if out_dtype != np.float32:
                scale, zp = self.output_quant
                y = dequantize(y, scale, zp)
            rows.append(np.asarray(y, dtype=np.float32).reshape(-1))
        return np.stack(rows)

    def ops(self) -> list[str]:
        """Names of the operators in the graph (builtins only are expected)."""
        details = self.interpreter._get_ops_details()
        return sorted({d["op_name"] for d in details})
