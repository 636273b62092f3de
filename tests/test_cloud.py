"""The Open Inference Protocol client against the real reference service and against
misbehaving HTTP servers on loopback."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx
import numpy as np
import pytest

from agent.cloud.client import CloudClient
from agent.config import CloudConfig
from agent.errors import CloudError
from agent.registry import load_testset
from tests.conftest import MODELS

X_TEST, Y_TEST = load_testset(MODELS / "digits" / "testset.npz")


def _client(url: str, **kw: object) -> CloudClient:
    return CloudClient(CloudConfig(url=url, **kw))  # type: ignore[arg-type]


def test_reference_service_speaks_v2(cloud_url: str) -> None:
    assert httpx.get(f"{cloud_url}/v2/health/ready").json()["ready"] is True
    meta = httpx.get(f"{cloud_url}/v2/models/digits").json()
    assert meta["inputs"][0]["shape"] == [-1, 8, 8]
    assert httpx.get(f"{cloud_url}/v2/models/nope").status_code == 404
    bad = httpx.post(f"{cloud_url}/v2/models/digits/infer", json={"inputs": [{"shape": [1, 3]}]})
    assert bad.status_code == 400 and "error" in bad.json()
    bad = httpx.post(f"{cloud_url}/v2/models/digits/infer", content=b"{nope")
    assert bad.status_code == 400


def test_client_infers_accurately(cloud_url: str) -> None:
    client = _client(cloud_url)
    assert client.ready()
    answer = client.infer(
        "digits", "input", X_TEST[:50], request_id="t", deadline=time.monotonic() + 5
    )
    assert answer.outputs.shape == (50, 10)
    assert answer.model == "digits" and answer.model_version
    assert float((answer.outputs.argmax(axis=1) == Y_TEST[:50]).mean()) >= 0.97


class _Scripted(BaseHTTPRequestHandler):
    script: list[tuple[int, dict[str, str], float]] = []
    hits: list[float] = []

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("content-length", 0)))
        type(self).hits.append(time.monotonic())
        status, headers, delay = self.script.pop(0) if self.script else (500, {}, 0.0)
        time.sleep(delay)
        self.send_response(status)
        for k, v in headers.items():
            self.send_header(k, v)
        body = (
            b'{"model_name":"m","outputs":[{"name":"p","shape":[1,2],'
            b'"datatype":"FP32","data":[0.25,0.75]}]}'
        )
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def scripted() -> Iterator[tuple[str, type[_Scripted]]]:
    handler = type("H", (_Scripted,), {"script": [], "hits": []})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    server.handle_error = lambda *args: None  # type: ignore[method-assign]  # client hung up
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}", handler
    server.shutdown()


def test_retry_after_is_honoured_once(scripted: tuple[str, type[_Scripted]]) -> None:
    url, handler = scripted
    handler.script[:] = [(503, {"Retry-After": "0.3"}, 0.0), (200, {}, 0.0)]
    answer = _client(url).infer(
        "m", "input", np.zeros((1, 2), np.float32), request_id="r", deadline=time.monotonic() + 3
    )
    assert answer.outputs.tolist() == [[0.25, 0.75]]
    assert len(handler.hits) == 2 and handler.hits[1] - handler.hits[0] >= 0.29


def test_no_retry_when_retry_after_exceeds_the_deadline(
    scripted: tuple[str, type[_Scripted]],
) -> None:
    url, handler = scripted
    handler.script[:] = [(429, {"Retry-After": "5"}, 0.0)]
    with pytest.raises(CloudError) as err:
        _client(url).infer(
            "m",
            "input",
            np.zeros((1, 2), np.float32),
            request_id="r",
            deadline=time.monotonic() + 1,
        )
    assert err.value.code == "cloud_status" and len(handler.hits) == 1


def test_breaker_opens_and_stops_calling(scripted: tuple[str, type[_Scripted]]) -> None:
    url, handler = scripted
    client = _client(url, breaker={"failure_threshold": 3, "reset_timeout_s": 60})
    for _ in range(3):
        with pytest.raises(CloudError):
            client.infer(
                "m",
                "input",
                np.zeros((1, 2), np.float32),
                request_id="r",
                deadline=time.monotonic() + 1,
            )
    calls = len(handler.hits)
    with pytest.raises(CloudError) as err:
        client.infer(
            "m",
            "input",
            np.zeros((1, 2), np.float32),
            request_id="r",
            deadline=time.monotonic() + 1,
        )
    assert err.value.code == "breaker_open" and len(handler.hits) == calls


def test_slow_server_times_out_at_the_deadline(scripted: tuple[str, type[_Scripted]]) -> None:
    url, handler = scripted
    handler.script[:] = [(200, {}, 2.0)]
    start = time.monotonic()
    with pytest.raises(CloudError) as err:
        _client(url).infer(
            "m",
            "input",
            np.zeros((1, 2), np.float32),
            request_id="r",
            deadline=time.monotonic() + 0.3,
        )
    assert err.value.code == "cloud_timeout"
    assert time.monotonic() - start < 1.0


def test_bearer_token_is_sent(scripted: tuple[str, type[_Scripted]], tmp_path: object) -> None:
    url, handler = scripted
    seen: list[str | None] = []
    original = handler.do_POST

    def capture(self: _Scripted) -> None:
        seen.append(self.headers.get("authorization"))
        original(self)

    handler.do_POST = capture  # type: ignore[method-assign]
    handler.script[:] = [(200, {}, 0.0)]
    CloudClient(CloudConfig(url=url), token="tkn").infer(  # type: ignore[call-arg]
        "m", "input", np.zeros((1, 2), np.float32), request_id="r", deadline=time.monotonic() + 2
    )
    assert seen == ["Bearer tkn"]
