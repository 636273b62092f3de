"""Client of a cloud model service speaking the Open Inference Protocol (KServe V2 REST):
`GET /v2/health/ready`, `POST /v2/models/{name}/infer`. Triton, KServe, Seldon MLServer and
OpenVINO Model Server all speak it. The only module that imports httpx."""

from __future__ import annotations

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
    value = response.headers.get("retry-after")
    if value is None:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        return None


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
        Retries once on connection errors and 429/5xx when the budget allows (inference is
        idempotent), honouring Retry-After. Raises CloudError.

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
            attempt += 1
            if attempt > 1 or error.code not in ("cloud_unreachable", "cloud_status"):
                raise error
            wait = retry_after if retry_after is not None else random.uniform(0, 0.05)
            if time.monotonic() + wait >= deadline - 0.005:
                raise error
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
