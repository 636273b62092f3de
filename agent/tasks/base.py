"""What a built-in task is: input validation into a canonical array, plus its features."""

from __future__ import annotations

import itertools
import math
from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np
import numpy.typing as npt

from agent.config import Config, LimitsConfig, TaskConfig
from agent.errors import CloudError, InputError
from agent.privacy import DataKind, Privacy, allows

if TYPE_CHECKING:
    from agent.registry import Registry, TaskModels

FloatArray = npt.NDArray[np.float32]


def top_result(probs: FloatArray, labels: tuple[str, ...], k: int) -> dict[str, Any]:
    # Python floats and a stable sort: for a handful of classes far cheaper than numpy calls
    # (ties keep the class order, as a stable argsort of -probs would).
    scores = probs.tolist()
    order = sorted(range(len(scores)), key=scores.__getitem__, reverse=True)[:k]
    top = [{"label": labels[i], "score": round(scores[i], 6)} for i in order]
    return {"label": top[0]["label"], "score": top[0]["score"], "top": top}


@dataclass(frozen=True)
class CloudInput:
    """What a task sends to its cloud model, tagged with what it carries (agent/privacy.py)."""

    name: str
    batch: npt.NDArray[Any]
    kind: DataKind


class Task(ABC):
    """A built-in task. Subclasses validate a request's `input` object into one canonical
    float32 sample; models apply their own named feature transform to a batch of them."""

    name: ClassVar[str]
    description: ClassVar[str]
    canonical_shape: ClassVar[tuple[int, ...]]
    input_fields: ClassVar[Mapping[str, str]]  # field -> what it holds, for docs and error messages

    # Tasks whose input is an image fall under an image privacy policy (agent/privacy.py).
    image_input: ClassVar[bool] = False

    @abstractmethod
    def parse_input(self, data: Mapping[str, Any], limits: LimitsConfig) -> FloatArray:
        """Validate one request `input` object. Raises InputError with a wire code."""

    # Hooks with the behaviour of a classifier over the model manifest; tasks whose models or
    # outputs differ (the vision tasks) override them.

    def resolve_models(self, registry: Registry, config: Config, task: TaskConfig) -> TaskModels:
        """This task's models (by default from the manifest of `models.dir`)."""
        return registry.task(self.name)

    def bind(self, models: TaskModels, config: Config) -> Task:
        """The task as served with these models (e.g. sized to the model input)."""
        return self

    def prepare(self, data: Mapping[str, Any], limits: LimitsConfig) -> tuple[Any, Any]:
        """(canonical array, metadata for `result`) of one request `input` object."""
        return self.parse_input(data, limits), None

    def confidence(self, output: FloatArray) -> float:
        """The score compared with the routing threshold (`auto` asks the cloud below it)."""
        return float(output.max())

    def result(
        self, output: FloatArray, labels: tuple[str, ...], top_k: int, meta: Any
    ) -> dict[str, Any]:
        """The `result` object of an answer, from one sample's model output."""
        return top_result(output, labels, top_k)

    def cloud_input(
        self, canonical: Any, output: FloatArray | None, privacy: Privacy | None
    ) -> CloudInput | None:
        """What to send to the cloud model for one sample, or None when `privacy` forbids
        everything this task could send."""
        if not allows(privacy, "features"):
            return None
        return CloudInput("input", np.asarray(canonical)[np.newaxis], "features")

    def cloud_output(self, outputs: FloatArray, labels: tuple[str, ...]) -> FloatArray:
        """Validate the cloud's output for one sample into what `result` takes."""
        flat = outputs.reshape(-1)
        if flat.shape[0] != len(labels) or not np.isfinite(flat).all():
            raise CloudError(
                "cloud_error", f"cloud returned {flat.shape[0]} values for {len(labels)} labels"
            )
        return np.asarray(flat, dtype=np.float32)

    def request_input(self, canonical: FloatArray) -> dict[str, Any]:
        """The request `input` object that carries one canonical sample (the inverse of
        `parse_input`), used to replay test splits over MQTT, by the demo and the simulator."""
        raise NotImplementedError(f"task {self.name} cannot be replayed from canonical samples")

    def check_fields(self, data: Mapping[str, Any], *, one_of: Sequence[str]) -> str:
        """The one field of `one_of` present in `data`; unknown fields are an error."""
        unknown = sorted(set(data) - set(self.input_fields))
        if unknown:
            raise InputError(
                "invalid_input",
                f"input: unknown field(s) {unknown}; expected one of {list(one_of)}",
            )
        present = [f for f in one_of if f in data]
        if len(present) != 1:
            raise InputError("invalid_input", f"input: needs exactly one of {list(one_of)}")
        return present[0]


def number_array(
    value: Any,
    field: str,
    *,
    ndim: int,
    shape: Sequence[int | None] | None = None,
    low: float | None = None,
    high: float | None = None,
    max_items: int = 4_000_000,
) -> FloatArray:
    """Validate nested JSON lists of finite numbers (no bools, no strings) of a given shape."""
    dims: list[int] = []
    level: Any = value
    for _ in range(ndim):
        if not isinstance(level, list):
            raise InputError("invalid_input", f"{field}: expected a {ndim}-D array of numbers")
        dims.append(len(level))
        if not level:
            raise InputError("invalid_input", f"{field}: empty array")
        level = level[0]
    if shape is not None:
        for i, (got, want) in enumerate(zip(dims, shape, strict=True)):
            if want is not None and got != want:
                raise InputError(
                    "invalid_input", f"{field}: axis {i} has {got} items, expected {want}"
                )
    if math.prod(dims) > max_items:
        raise InputError("input_too_large", f"{field}: more than {max_items} values")
    if ndim == 2 and all(isinstance(row, list) and len(row) == dims[1] for row in value):
        flat = list(itertools.chain.from_iterable(value))
        if _INT_ONLY.issuperset(map(type, flat)):
            # Whole numbers only (a digit's 8x8 grid): no NaN or infinity possible, and
            # Python's min/max on a short list beat numpy's per-call overhead.
            lo, hi = min(flat), max(flat)
            if _outside(lo, hi, low, high) or max(-lo, hi) > _FLOAT32_MAX:
                raise _range_error(field, low, high)
            return np.array(flat, dtype=np.float32).reshape(dims)
    _check_leaves(value, field, ndim)
    try:
        arr = np.asarray(value, dtype=np.float64)
    except (ValueError, TypeError):
        raise InputError(
            "invalid_input", f"{field}: ragged array (rows of unequal length)"
        ) from None
    except OverflowError:  # an integer beyond float64
        raise _range_error(field, low, high) from None
    if arr.ndim != ndim:
        raise InputError("invalid_input", f"{field}: expected a {ndim}-D array of numbers")
    lo, hi = float(arr.min()), float(arr.max())  # NaN propagates into both
    if not (math.isfinite(lo) and math.isfinite(hi)):
        raise InputError("not_finite", f"{field}: contains NaN or infinity")
    if _outside(lo, hi, low, high):
        raise _range_error(field, low, high)
    return arr.astype(np.float32)


def _outside(lo: float, hi: float, low: float | None, high: float | None) -> bool:
    return (low is not None and lo < low) or (high is not None and hi > high)


def _range_error(field: str, low: float | None, high: float | None) -> InputError:
    return InputError("out_of_range", f"{field}: values must be within [{low}, {high}]")


_NUMBER_TYPES = frozenset((int, float))
_INT_ONLY = frozenset((int,))
_FLOAT32_MAX = float(np.finfo(np.float32).max)


def _check_leaves(value: list[Any], field: str, ndim: int) -> None:
    """Every leaf an int or float (bool, str, None, dict refused); every inner level a list.
    The type sets are built by C-level `map`, not a Python loop per value."""
    if ndim == 1:
        if _NUMBER_TYPES.issuperset(map(type, value)):
            return
        bad = next(v for v in value if type(v) not in _NUMBER_TYPES)
        raise InputError("invalid_input", f"{field}: expected numbers, found {type(bad).__name__}")
    if not all(isinstance(row, list) for row in value):
        raise InputError("invalid_input", f"{field}: expected a {ndim}-D array of numbers")
    if ndim == 2:
        if _NUMBER_TYPES.issuperset(map(type, itertools.chain.from_iterable(value))):
            return
        for row in value:
            _check_leaves(row, field, 1)  # raises, naming the offending type
        return
    for row in value:
        _check_leaves(row, field, ndim - 1)
