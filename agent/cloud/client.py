"""Client of a cloud model service speaking the Open Inference Protocol (KServe V2 REST):
`GET /v2/health/ready`, `POST /v2/models/{name}/infer`. Triton, KServe, Seldon MLServer and
OpenVINO Model Server all speak it. The only module that imports httpx."""

from __future__ import annotations

import datetime
import email.utils
import logging
import random
import threading
import time
from dataclasses import dataclass
from typing import Any

import httpx
import numpy as np
import numpy.typing as npt

from agent.cloud.breaker import CircuitBreaker
from agent.config import CloudConfig
from agent.errors import CloudError
from agent.privacy import DataKind, Privacy, allows

log = logging.getLogger(__name__)
# httpx logs every request at INFO; per-message logging belongs at DEBUG.
logging.getLogger("httpx").setLevel(logging.WARNING)

_RETRYABLE_STATUS = {429, 502, 503, 504}


@dataclass(frozen=True)
class CloudAnswer:
    outputs: npt.NDArray[np.float32]
    model: str
    model_version: str


def _retry_after(response: httpx.Response) -> float | None:
    """Retry-After in seconds: delta-seconds or an HTTP date (RFC 9110 10.2.3)."""
    value = response.headers.get("retry-after")
    if value is None:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=datetime.timezone.utc)
    return max(0.0, (when - datetime.datetime.now(datetime.timezone.utc)).total_seconds())


class CloudClient:
    def __init__(self, config: CloudConfig, token: str | None = None) -> None:
        if config.url is None:
            raise ValueError("cloud.url is not set")
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        self._http = httpx.Client(
            base_url=config.url,
            headers=headers,
            verify=config.verify_tls,
            limits=httpx.Limits(
                max_connections=config.max_concurrency,
                max_keepalive_connections=config.max_concurrency,
            ),
        )
        self._slots = threading.BoundedSemaphore(config.max_concurrency)
        self.breaker = CircuitBreaker(
            config.breaker.failure_threshold, config.breaker.reset_timeout_s
        )
        self.url = config.url
        self._retries = config.retries
        self._backoff_base = config.backoff_base_ms / 1000.0
        self._backoff_cap = config.backoff_cap_ms / 1000.0
        self._not_before = 0.0  # monotonic time a Retry-After asked us to wait for
        self.retries_done = 0
        self.throttled = 0
        self.failures = 0
        self.successes = 0
        self.privacy_refused = 0

    def close(self) -> None:
        self._http.close()

    def ready(self, timeout_s: float = 2.0) -> bool:
        try:
            return self._http.get("/v2/health/ready", timeout=timeout_s).status_code == 200
        except httpx.HTTPError:
            return False

    def infer(
        self,
        model: str,
        input_name: str,
        batch: npt.NDArray[Any],
        *,
        request_id: str,
        deadline: float,
        kind: DataKind = "features",
        privacy: Privacy | None = None,
    ) -> CloudAnswer:
        """Run `batch` on the cloud model before `deadline` (time.monotonic()).
        Retries (`cloud.retries`, full-jitter backoff) on connection errors and 429/5xx when
        the budget allows (inference is idempotent). A Retry-After makes every request wait
        (`cloud_throttled` until then). Raises CloudError.

        `kind` says what the batch carries and `privacy` is the policy of its source: data
        the policy does not allow is refused here, before anything is sent (agent/privacy.py).
        """
        if not allows(privacy, kind):
            self.privacy_refused += 1
            raise CloudError(
                "privacy", f"privacy policy {privacy!r} does not allow sending {kind} to the cloud"
            )
        uint8 = batch.dtype == np.uint8
        body = {
            "id": request_id,
            "inputs": [
                {
                    "name": input_name,
                    "shape": list(batch.shape),
                    "datatype": "UINT8" if uint8 else "FP32",
                    "data": (batch if uint8 else batch.astype(np.float32)).ravel().tolist(),
                }
            ],
        }
        attempt = 0
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise CloudError("cloud_timeout", "no time left for the cloud")
            if time.monotonic() < self._not_before:
                self.throttled += 1
                raise CloudError("cloud_throttled", "the cloud asked to wait (Retry-After)")
            if not self.breaker.allow():
                raise CloudError("breaker_open", "cloud circuit breaker is open")
            if not self._slots.acquire(timeout=remaining):
                self.breaker.release()
                raise CloudError("cloud_busy", "no free cloud connection before the deadline")
            retry_after: float | None = None
            try:
                answer = self._post(model, body, remaining)
            except CloudError as exc:
                self.breaker.failure()
                self.failures += 1
                retry_after = getattr(exc, "retry_after", None)
                error = exc
            else:
                self.breaker.success()
                self.successes += 1
                return answer
            finally:
                self._slots.release()
            if retry_after is not None:  # every request waits, not only this one
                self._not_before = max(self._not_before, time.monotonic() + retry_after)
            attempt += 1
            if attempt > self._retries or error.code not in ("cloud_unreachable", "cloud_status"):
                raise error
            if retry_after is not None:
                wait = retry_after
            else:  # full jitter: uniform(0, min(cap, base * 2^(attempt-1)))
                ceiling = min(self._backoff_cap, self._backoff_base * 2 ** (attempt - 1))
                wait = random.uniform(0, ceiling)
            if time.monotonic() + wait >= deadline - 0.005:
                raise error
            self.retries_done += 1
            time.sleep(wait)

    def _post(self, model: str, body: dict[str, Any], timeout_s: float) -> CloudAnswer:
        try:
            response = self._http.post(
                f"/v2/models/{model}/infer", json=body, timeout=httpx.Timeout(timeout_s)
            )
        except httpx.TimeoutException:
            raise CloudError("cloud_timeout", "cloud request timed out") from None
        except httpx.HTTPError as exc:
            raise CloudError("cloud_unreachable", f"cloud unreachable: {exc}") from None
        if response.status_code != 200:
            error = CloudError(
                "cloud_status" if response.status_code in _RETRYABLE_STATUS else "cloud_error",
                f"cloud answered HTTP {response.status_code}: {response.text[:200]}",
            )
            error.retry_after = _retry_after(response)  # type: ignore[attr-defined]
            raise error
        try:
            payload = response.json()
            output = payload["outputs"][0]
            data = np.asarray(output["data"], dtype=np.float32).reshape(output["shape"])
            return CloudAnswer(
                outputs=data,
                model=str(payload.get("model_name", model)),
                model_version=str(payload.get("model_version", "")),
            )
        except (ValueError, KeyError, IndexError, TypeError) as exc:
            raise CloudError(
                "cloud_error", f"cloud answer is not a V2 inference response: {exc}"
            ) from None
