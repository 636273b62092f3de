"""The reference cloud service: the built-in tasks' cloud models over the Open Inference
Protocol (KServe V2 REST), as a real ASGI app served by uvicorn.

Model names are task names (`/v2/models/digits/infer`); the input is the task's canonical
tensor, batch first (`FP32 [N, 8, 8]` for digits); the output `probabilities` is [N, C].
"""

from __future__ import annotations

import logging
import queue
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import uvicorn
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from agent import __version__
from agent.errors import EdgeAgentError
from agent.registry import LoadedModel, ModelSpec, Registry
from agent.tasks import TASKS

log = logging.getLogger(__name__)

_MAX_BODY = 64 * 1024 * 1024


class ServedModel:
    """A pool of interpreters of one cloud model (interpreters are not thread-safe)."""

    def __init__(self, task: str, spec: ModelSpec, instances: int, num_threads: int) -> None:
        self.task = task
        self.spec = spec
        self.canonical_shape = TASKS[task].canonical_shape
        self._pool: queue.Queue[LoadedModel] = queue.Queue()
        for _ in range(instances):
            self._pool.put(spec.load(num_threads))

    def accepts(self, shape: list[int]) -> bool:
        """Whether an input of `shape` (batch first) fits this model."""
        return tuple(shape[1:]) == self.canonical_shape

    @contextmanager
    def _interpreter(self) -> Iterator[LoadedModel]:
        model = self._pool.get()
        try:
            yield model
        finally:
            self._pool.put(model)

    def infer(self, batch: np.ndarray[Any, Any]) -> np.ndarray[Any, np.dtype[np.float32]]:
        with self._interpreter() as model:
            return model.predict(batch)

    def metadata(self) -> dict[str, Any]:
        return {
            "name": self.task,
            "versions": [self.spec.version],
            "platform": "tflite",
            "inputs": [{"name": "input", "datatype": "FP32", "shape": [-1, *self.canonical_shape]}],
            "outputs": [
                {"name": "probabilities", "datatype": "FP32", "shape": [-1, len(self.spec.labels)]}
            ],
            "parameters": {"model": self.spec.name, "labels": list(self.spec.labels)},
        }


def load_models(
    models_dir: Path, instances: int = 2, num_threads: int = 1
) -> dict[str, ServedModel]:
    registry = Registry(models_dir)
    served: dict[str, ServedModel] = {}
    for task in registry.manifest.tasks:
        if task not in TASKS:
            continue
        spec = registry.task(task).cloud
        if spec is None:
            continue
        spec.verify()
        served[task] = ServedModel(task, spec, instances, num_threads)
    return served


def _error(status: int, message: str) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status)


def _decode_input(body: Any, model: ServedModel) -> np.ndarray[Any, Any]:
    if not isinstance(body, dict) or not isinstance(body.get("inputs"), list) or not body["inputs"]:
        raise ValueError("body must be an object with a non-empty `inputs` list")
    tensor = body["inputs"][0]
    if not isinstance(tensor, dict):
        raise ValueError("inputs[0] must be an object")
    if tensor.get("datatype") not in ("FP32", "FP64", "INT32", "INT64", "UINT8"):
        raise ValueError("inputs[0].datatype must be a numeric type")
    shape = tensor.get("shape")
    if not isinstance(shape, list) or not all(isinstance(d, int) and d > 0 for d in shape):
        raise ValueError("inputs[0].shape must be a list of positive integers")
    if not model.accepts(shape) or shape[0] > 1024:
        raise ValueError(
            f"inputs[0].shape must be [N<=1024, {', '.join(map(str, model.canonical_shape))}]"
        )
    data = np.asarray(tensor.get("data"), dtype=np.float32)
    if data.size != int(np.prod(shape)):
        raise ValueError("inputs[0].data does not match its shape")
    if not np.isfinite(data).all():
        raise ValueError("inputs[0].data has NaN or infinity")
    return data.reshape(shape)


def create_app(models: dict[str, ServedModel], record: Path | None = None) -> Starlette:
    """`record`: append every inference request body to this file (one JSON line each:
    path, size, body), to check what reached the cloud (privacy tests)."""
    started = time.time()

    async def server_meta(request: Request) -> Response:
        return JSONResponse({"name": "edge-agent-cloud", "version": __version__, "extensions": []})

    async def live(request: Request) -> Response:
        return JSONResponse({"live": True})

    async def ready(request: Request) -> Response:
        return JSONResponse({"ready": bool(models), "uptime_s": round(time.time() - started, 1)})

    def find(request: Request) -> ServedModel | None:
        return models.get(request.path_params["name"])

    async def model_meta(request: Request) -> Response:
        model = find(request)
        return JSONResponse(model.metadata()) if model else _error(404, "unknown model")

    async def model_ready(request: Request) -> Response:
        model = find(request)
        return (
            JSONResponse({"name": model.task, "ready": True})
            if model
            else _error(404, "unknown model")
        )

    async def infer(request: Request) -> Response:
        raw = await request.body()
        if record is not None:
            _record(record, request.url.path, raw)
        model = find(request)
        if model is None:
            return _error(404, f"unknown model {request.path_params['name']!r}")
        if len(raw) > _MAX_BODY:
            return _error(413, "request body too large")
        try:
            import orjson

            body = orjson.loads(raw)
            batch = _decode_input(body, model)
        except (ValueError, TypeError) as exc:
            return _error(400, str(exc))
        try:
            probs = await run_in_threadpool(model.infer, batch)
        except EdgeAgentError as exc:
            log.error("inference failed: %s", exc)
            return _error(500, "inference failed")
        answer: dict[str, Any] = {
            "model_name": model.task,
            "model_version": model.spec.version,
            "outputs": [
                {
                    "name": "probabilities",
                    "shape": list(probs.shape),
                    "datatype": "FP32",
                    "data": probs.ravel().tolist(),
                }
            ],
        }
        if isinstance(body, dict) and isinstance(body.get("id"), str):
            answer["id"] = body["id"]
        return JSONResponse(answer)

    routes = [
        Route("/v2", server_meta),
        Route("/v2/health/live", live),
        Route("/v2/health/ready", ready),
        Route("/v2/models/{name}", model_meta),
        Route("/v2/models/{name}/ready", model_ready),
        Route("/v2/models/{name}/infer", infer, methods=["POST"]),
        Route("/v2/models/{name}/versions/{version}/infer", infer, methods=["POST"]),
    ]
    return Starlette(routes=routes)


def _record(path: Path, url_path: str, raw: bytes) -> None:
    import orjson

    line = {"path": url_path, "size": len(raw), "body": raw.decode("utf-8", "replace")}
    with path.open("ab") as fh:
        fh.write(orjson.dumps(line) + b"\n")


def serve(
    models_dir: Path,
    host: str,
    port: int,
    instances: int = 2,
    log_level: str = "info",
    record: Path | None = None,
    vision_dirs: list[Path] | None = None,
) -> None:
    models = load_models(models_dir, instances=instances)
    if vision_dirs:
        from agent.vision.cloud_models import load_vision_models

        models.update(load_vision_models(vision_dirs, instances=instances))
    log.info(
        "cloud service: serving %s on http://%s:%d", ", ".join(models) or "nothing", host, port
    )
    uvicorn.run(
        create_app(models, record),
        host=host,
        port=port,
        log_level=log_level.lower(),
        access_log=False,
    )
