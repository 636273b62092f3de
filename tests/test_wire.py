from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from agent.config import LimitsConfig
from agent.errors import InputError
from agent.tasks import TASKS
from agent.wire import loads, parse_request, read_request_id


def test_nan_and_infinity_have_their_own_code() -> None:
    for text in (b'{"a": NaN}', b'{"a": Infinity}', b'{"a": -Infinity}'):
        with pytest.raises(InputError) as err:
            loads(text)
        assert err.value.code == "not_finite"


def test_deep_nesting_is_an_error_not_a_crash() -> None:
    with pytest.raises(InputError) as err:
        loads(b"[" * 100_000 + b"]" * 100_000)
    assert err.value.code == "invalid_json"


def test_request_validation() -> None:
    req = parse_request({"id": "a", "input": {}, "extra": 1}, 60_000)
    assert req.route == "auto" and req.deadline_ms is None
    for bad, code in (
        ({"input": {}}, "missing_id"),
        ({"id": 3, "input": {}}, "missing_id"),
        ({"id": "a"}, "invalid_request"),
        ({"id": "a", "input": {}, "route": "x"}, "invalid_request"),
        ({"id": "a", "input": {}, "deadline_ms": True}, "invalid_request"),
        ({"id": "a", "input": {}, "deadline_ms": 10**9}, "invalid_request"),
        ({"id": "a#", "input": {}}, "invalid_request"),
    ):
        with pytest.raises(InputError) as err:
            parse_request(bad, 60_000)
        assert err.value.code == code, bad


def test_request_id_is_read_only_when_safe() -> None:
    assert read_request_id({"id": "ok-1"}) == "ok-1"
    assert read_request_id({"id": "a/b"}) is None
    assert read_request_id({"id": 5}) is None
    assert read_request_id([1]) is None


json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=20),
    lambda children: (
        st.lists(children, max_size=10)
        | st.dictionaries(st.text(max_size=10), children, max_size=6)
    ),
    max_leaves=60,
)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=400))
def test_any_bytes_either_parse_or_raise_input_error(payload: bytes) -> None:
    try:
        loads(payload)
    except InputError as exc:
        assert exc.code in {"invalid_json", "not_finite"}


@settings(max_examples=300, deadline=None)
@given(json_values)
def test_any_json_request_is_accepted_or_rejected_with_a_code(value: object) -> None:
    obj = loads(json.dumps(value).encode())
    try:
        parse_request(obj, 60_000)
    except InputError as exc:
        assert exc.code in {"invalid_request", "missing_id"}


@settings(max_examples=300, deadline=None)
@given(st.dictionaries(st.sampled_from(["pixels", "image", "other"]), json_values, max_size=3))
def test_task_inputs_never_raise_anything_but_input_error(data: dict[str, object]) -> None:
    for task in TASKS.values():
        try:
            out = task.parse_input(data, LimitsConfig())
        except InputError as exc:
            assert exc.code
        else:
            assert out.shape == task.canonical_shape
