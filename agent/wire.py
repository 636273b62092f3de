"""Wire messages of the public MQTT API: typed, validated, one codec (orjson).

Strict in what we send, tolerant of request fields we don't know; every invalid input
becomes an InputError whose code goes on the error topic.
"""

from __future__ import annotations

import json
import time
from typing import Any, Literal

import orjson
from pydantic import BaseModel, ConfigDict, Field, StrictInt, StrictStr, ValidationError

from agent.errors import InputError

SCHEMA_VERSION = 1
Route = Literal["auto", "edge", "cloud"]
_ID_FORBIDDEN = set("\x00+#/")


class Request(BaseModel):
    """`edge-agent/<id>/request/<task>` payload."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    id: StrictStr = Field(min_length=1, max_length=128)
    input: dict[str, Any]
    route: Route = "auto"
    deadline_ms: StrictInt | None = Field(None, ge=1)


class TopEntry(BaseModel):
    label: str
    score: float


class Result(BaseModel):
    label: str
    score: float
    top: list[TopEntry]


def dumps(obj: Any) -> bytes:
    return orjson.dumps(obj)


class _NonFinite(ValueError):
    pass


def _reject_constant(name: str) -> Any:
    raise _NonFinite(name)


def loads(payload: bytes) -> Any:
    """Parse JSON. NaN/Infinity (not JSON, though many encoders emit them) get their own code."""
    try:
        return orjson.loads(payload)
    except orjson.JSONDecodeError:
        pass
    try:
        json.loads(payload, parse_constant=_reject_constant)
    except _NonFinite as exc:
        raise InputError(
            "not_finite", f"payload contains {exc}, which is not a finite number"
        ) from None
    except RecursionError:
        raise InputError("invalid_json", "payload is nested too deeply") from None
    except (ValueError, UnicodeDecodeError) as exc:
        raise InputError("invalid_json", f"payload is not JSON: {exc}") from None
    raise InputError("invalid_json", "payload is not JSON (nested too deeply or malformed)")


def read_request_id(obj: Any) -> str | None:
    """The request id if one can be read safely (for an `ok: false` reply to a bad request)."""
    if isinstance(obj, dict):
        rid = obj.get("id")
        if isinstance(rid, str) and 0 < len(rid) <= 128 and not (_ID_FORBIDDEN & set(rid)):
            return rid
    return None


def parse_request(obj: Any, max_deadline_ms: int) -> Request:
    if not isinstance(obj, dict):
        raise InputError("invalid_request", "request must be a JSON object")
    if "id" not in obj:
        raise InputError("missing_id", "request has no `id`")
    try:
        req = Request.model_validate(obj)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "request"
        code = "missing_id" if first["loc"][:1] == ("id",) else "invalid_request"
        raise InputError(code, f"{where}: {first['msg']}") from None
    if _ID_FORBIDDEN & set(req.id):
        raise InputError("invalid_request", "id: must not contain NUL, '+', '#' or '/'")
    if req.deadline_ms is not None and req.deadline_ms > max_deadline_ms:
        raise InputError("invalid_request", f"deadline_ms: at most {max_deadline_ms}")
    return req


def error_message(topic: str, code: str, message: str) -> bytes:
    return dumps(
        {"topic": topic[:256], "code": code, "message": message[:512], "ts": round(time.time(), 3)}
    )


def failure(rid: str, task: str, code: str, message: str) -> dict[str, Any]:
    return {"id": rid, "task": task, "ok": False, "error": {"code": code, "message": message[:512]}}
