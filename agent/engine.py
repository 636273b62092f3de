"""The request engine: validate, run the edge model, route to the cloud, answer exactly once.

Requests for small, non-image tasks are run on paho's network thread itself (`inline`):
`submit` collects what one socket read delivered and `flush`, called once that read is
parsed, runs it in micro-batches with the network thread's own interpreters. No thread
hand-off per request, and a saturated agent reads from the broker only as fast as it
answers (TCP backpressure). Everything else (image tasks, large payloads, device windows)
goes to worker threads, each with its own interpreters, which take micro-batches from a
bounded queue, validate, run the edge model and either answer or hand the job to the
cloud pool. A deadline timer guarantees that a job waiting for the cloud is answered
(degraded) by its deadline even if the cloud hangs; a per-job guard makes sure the late
cloud answer is then dropped, not sent twice.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from functools import partial
from typing import Any, Protocol

import numpy as np
import numpy.typing as npt

from agent.cloud.client import CloudClient
from agent.config import Config, TaskConfig
from agent.dedupe import Dedupe
from agent.errors import CloudError, InputError, ModelRuntimeError
from agent.mqtt.client import Message, valid_topic
from agent.mqtt.topics import Topics, safe_level
from agent.outbox import OutMessage
from agent.privacy import Privacy
from agent.registry import LoadedModel, ModelSpec
from agent.stats import Stats
from agent.tasks.base import CloudInput, Task, top_result
from agent.timers import DeadlineTimer, TimerHandle
from agent.wire import dumps, error_message, failure, loads, parse_request, read_request_id

log = logging.getLogger(__name__)

Probs = npt.NDArray[np.float32]


class Publisher(Protocol):
    def publish(
        self,
        topic: str,
        payload: bytes,
        *,
        qos: int = 1,
        retain: bool = False,
        correlation_data: bytes | None = None,
        on_delivered: Callable[[], None] | None = None,
    ) -> bool: ...

    def ack(self, message: Message) -> None: ...


@dataclass(frozen=True)
class TaskRuntime:
    """Everything shared about a served task (the interpreters are per worker)."""

    task: Task
    config: TaskConfig
    labels: tuple[str, ...]
    threshold: float
    edge: ModelSpec | None
    cloud_model: str | None  # name on the cloud service; None: no cloud for this task
    privacy: Privacy | None = None  # image tasks: what may reach the cloud (agent/privacy.py)

    @property
    def name(self) -> str:
        return self.task.name


@dataclass(eq=False)
class Job:
    task: str
    message: Message
    received: float
    deadline: float = 0.0
    rid: str | None = None
    route: str = "auto"
    canonical: npt.NDArray[Any] | None = None
    meta: Any = None  # from Task.prepare, for Task.result
    answered: bool = False
    lock: threading.Lock = field(default_factory=threading.Lock)
    # Internal jobs (device windows, submit_internal): the answer goes here, not to MQTT.
    on_answer: Callable[[dict[str, Any]], None] | None = None
    key: str | None = None  # de-duplication key (task/id) once admitted (agent/dedupe.py)
    answer: OutMessage | None = None  # what was published, remembered for replay
    spilled: bool = False  # sent to the cloud because the queue was full
    copies: list[Message] = field(default_factory=list)  # broker redeliveries of this message


__all__ = ["Engine", "TaskRuntime", "serves_inline", "top_result"]


class Engine:
    def __init__(
        self,
        config: Config,
        topics: Topics,
        publisher: Publisher,
        stats: Stats,
        tasks: dict[str, TaskRuntime],
        worker_models: list[dict[str, LoadedModel]],
        cloud: CloudClient | None,
        dedupe: Dedupe[Message] | None = None,
        inline_models: dict[str, LoadedModel] | None = None,
    ) -> None:
        self._config = config
        # Network-thread serving (`workers.inline`): its interpreters, and what one read
        # delivered. Only the network thread touches `_pending`.
        self._inline_models = inline_models
        self._inline_tasks = _inline_tasks(tasks, inline_models)
        self._pending: list[Job] = []
        self._inline_busy_since = 0.0
        self._dedupe = dedupe
        self._by_mid: dict[int, Job] = {}  # inbound QoS 1 messages being worked on
        self._by_mid_lock = threading.Lock()
        self._topics = topics
        self._pub = publisher
        self._stats = stats
        self._tasks = tasks
        self._worker_models = worker_models
        self._cloud = cloud
        self._qos = config.mqtt.qos
        self._queue: queue.Queue[Job] = queue.Queue(maxsize=config.workers.queue_size)
        self._inbound_limit = 2 * config.workers.queue_size
        self._max_batch = config.workers.max_batch
        self._max_wait = config.workers.max_wait_ms / 1000.0
        self._running = threading.Event()
        self._workers: list[threading.Thread] = []
        self._progress = [0.0 for _ in worker_models]
        self._busy_since = [0.0 for _ in worker_models]
        self._timer = DeadlineTimer()
        self._cloud_pool = ThreadPoolExecutor(
            max_workers=config.cloud.max_concurrency, thread_name_prefix="cloud"
        )
        self._cloud_lock = threading.Lock()
        self._cloud_pending = 0
        self._inflight_lock = threading.Lock()
        self._inflight = 0

    # ------------------------------------------------------------------ lifecycle

    def start(self) -> None:
        self._running.set()
        self._timer.start()
        for i, models in enumerate(self._worker_models):
            thread = threading.Thread(
                target=self._work, args=(i, models), name=f"worker-{i}", daemon=True
            )
            thread.start()
            self._workers.append(thread)

    def stop(self, drain_s: float) -> None:
        """Finish what is queued or in flight for up to `drain_s`, then stop the threads.
        Unfinished inbound messages stay unacknowledged, so the broker redelivers them."""
        end = time.monotonic() + drain_s
        while time.monotonic() < end and (self._queue.qsize() or self.inflight):
            time.sleep(0.01)
        self._running.clear()
        for thread in self._workers:
            thread.join(max(0.0, end - time.monotonic()) + 0.2)
        self._timer.stop()
        self._cloud_pool.shutdown(wait=False, cancel_futures=True)

    @property
    def queue_depth(self) -> int:
        return self._queue.qsize()

    @property
    def inflight(self) -> int:
        with self._inflight_lock:
            return self._inflight

    def _track(self, delta: int) -> None:
        with self._inflight_lock:
            self._inflight += delta

    def healthy(self, stall_s: float) -> tuple[bool, str]:
        """Workers alive and none stuck on one batch for longer than `stall_s`; nor the
        network thread on an inline batch."""
        now = time.monotonic()
        since = self._inline_busy_since
        if since and now - since > stall_s:
            return False, f"network thread stuck on a batch for {now - since:.0f}s"
        for i, thread in enumerate(self._workers):
            if not thread.is_alive():
                return False, f"worker {i} died"
            if self._busy_since[i] and now - self._busy_since[i] > stall_s:
                return False, f"worker {i} stuck for {now - self._busy_since[i]:.0f}s"
        return True, "ok"

    # ------------------------------------------------------------------ intake (network thread)

    def submit(self, message: Message) -> None:
        self._stats.inc("messages_in")
        task = self._topics.task_of_request(message.topic) or "?"
        job = Job(task=task, message=message, received=time.monotonic())
        if not self._running.is_set():
            return  # shutting down: not acknowledged, so the broker redelivers it later
        if message.qos > 0 and self._copy_of_inflight(job):
            return
        self._track(1)
        if message.qos > 0 and self._over_receive_maximum():
            self._shed(job)
            return
        if job.task in self._inline_tasks and len(message.payload) <= INLINE_MAX_BYTES:
            self._pending.append(job)
            if len(self._pending) >= self._max_batch:
                self.flush()
            return
        try:
            self._queue.put_nowait(job)
        except queue.Full:
            _read_rid(job)
            if not self._spill(job):
                self._reject(job, InputError("overloaded", "agent overloaded: request queue full"))

    def _over_receive_maximum(self) -> bool:
        """More unacknowledged requests than the broker may send: the agent asks for at most
        `workers.queue_size` (MQTT 5 Receive Maximum), but a broker may overshoot it
        (mosquitto 2.0.11 did, under a flood of large requests while it had no CPU left to
        take our answers: 9,000 requests held, half a gigabyte). Past twice that, requests
        are answered `overloaded` at once instead of piling up in memory."""
        with self._by_mid_lock:
            return len(self._by_mid) > self._inbound_limit

    def _shed(self, job: Job) -> None:
        """Answer `overloaded` and acknowledge the request at once (`_reject(at_once=True)`),
        so that nothing of it stays in memory."""
        _read_rid(job)
        job.message = replace(job.message, payload=b"")
        self._stats.inc("shed")
        self._reject(
            job,
            InputError(
                "overloaded", "agent overloaded: more requests held than its receive maximum"
            ),
            at_once=True,
        )

    def flush(self) -> None:
        """Run what `submit` collected for the network thread (called by it once a socket
        read is parsed), in micro-batches of up to `workers.max_batch`."""
        models = self._inline_models
        while self._pending:
            batch = self._pending[: self._max_batch]
            del self._pending[: self._max_batch]
            if models is None or not self._running.is_set():
                for job in batch:  # not acknowledged: the broker redelivers them
                    self._forget_mid(job)
                    self._track(-1)
                continue
            self._inline_busy_since = time.monotonic()
            try:
                self._process(batch, models)
            except Exception:  # never let one bad batch take the network thread down
                log.exception("unexpected error on the network thread")
                for job in batch:
                    self._fail(job, "internal_error", "internal error")
            finally:
                self._inline_busy_since = 0.0

    def submit_internal(
        self,
        task: str,
        canonical: npt.NDArray[Any],
        on_answer: Callable[[dict[str, Any]], None],
        *,
        rid: str,
    ) -> bool:
        """Queue one already-validated canonical sample of `task` (a device window) for the
        workers. `on_answer` gets the answer payload (`ok` true or false) exactly once, on a
        worker, cloud or timer thread. False, and no call, when the queue is full or the
        engine is stopping or does not serve `task`."""
        if not self._running.is_set() or task not in self._tasks:
            return False
        now = time.monotonic()
        job = Job(
            task=task,
            message=Message(f"internal/{task}", b"", 0, False, 0),
            received=now,
            deadline=now + self._config.limits.default_deadline_ms / 1000.0,
            rid=rid,
            canonical=canonical,
            on_answer=on_answer,
        )
        self._track(1)
        try:
            self._queue.put_nowait(job)
        except queue.Full:
            self._track(-1)
            return False
        return True

    def replace_tasks(
        self,
        tasks: dict[str, TaskRuntime],
        worker_models: list[dict[str, LoadedModel]],
        inline_models: dict[str, LoadedModel] | None = None,
    ) -> None:
        """Serve new tasks and interpreters from each worker's next batch on (a reload).
        Jobs already past validation finish with what they started with; none is dropped."""
        if len(worker_models) != len(self._worker_models):
            raise ValueError("the number of workers cannot change without a restart")
        self._tasks = tasks
        self._worker_models = worker_models
        self._inline_models = inline_models
        self._inline_tasks = _inline_tasks(tasks, inline_models)

    # ------------------------------------------------------------------ workers

    def _work(self, index: int, models: dict[str, LoadedModel]) -> None:
        while self._running.is_set():
            try:
                first = self._queue.get(timeout=0.2)
            except queue.Empty:
                self._progress[index] = time.monotonic()
                continue
            batch = self._batch(first)
            self._busy_since[index] = time.monotonic()
            try:
                self._process(batch, self._worker_models[index])
            except Exception:  # never let one bad batch kill a worker
                log.exception("unexpected error in worker %d", index)
                for job in batch:
                    self._fail(job, "internal_error", "internal error")
            finally:
                self._busy_since[index] = 0.0
                self._progress[index] = time.monotonic()

    def _batch(self, first: Job) -> list[Job]:
        """A micro-batch: what is queued now, up to `max_batch`. Only when the queue is deep
        (at least half a batch was waiting: the agent is saturated) wait up to `max_wait` to
        fill it; an idle or lightly loaded agent adds no latency."""
        batch = [first]
        get = self._queue.get_nowait
        limit = self._max_batch
        try:
            while len(batch) < limit:
                batch.append(get())
        except queue.Empty:
            pass
        if len(batch) * 2 < limit or len(batch) >= limit or self._max_wait <= 0:
            return batch
        end = time.monotonic() + self._max_wait
        while len(batch) < limit:
            left = end - time.monotonic()
            if left <= 0:
                break
            try:
                batch.append(self._queue.get(timeout=left))
            except queue.Empty:
                break
        return batch

    def _prepare(self, job: Job) -> None:
        if job.on_answer is not None:
            return  # internal: validated and given its deadline by the caller
        limits = self._config.limits
        size = len(job.message.payload)
        if size > limits.max_payload_bytes:
            raise InputError(
                "payload_too_large", f"payload is {size} bytes; limit {limits.max_payload_bytes}"
            )
        obj = loads(job.message.payload)
        job.rid = read_request_id(obj)
        runtime = self._tasks.get(job.task)
        if runtime is None:
            raise InputError("unknown_task", f"unknown task {job.task[:64]!r}")
        request = parse_request(obj, limits.max_deadline_ms)
        job.rid = request.id
        job.route = request.route
        deadline_ms = request.deadline_ms or limits.default_deadline_ms
        job.deadline = job.received + deadline_ms / 1000.0
        job.canonical, job.meta = runtime.task.prepare(request.input, limits)

    def _process(self, batch: list[Job], models: dict[str, LoadedModel]) -> None:
        ready: dict[str, list[Job]] = {}
        for job in batch:
            try:
                self._prepare(job)
            except InputError as exc:
                self._reject(job, exc)
                continue
            if job.on_answer is None and not self._admit(job):
                continue
            if time.monotonic() >= job.deadline:
                self._fail(job, "deadline_exceeded", "deadline passed before processing")
                continue
            ready.setdefault(job.task, []).append(job)
        for task, jobs in ready.items():
            runtime = self._tasks[task]
            model = models.get(task)
            probs: Probs | None = None
            if model is not None:
                inputs = np.stack([j.canonical for j in jobs if j.canonical is not None])
                try:
                    probs = model.predict(inputs)
                except ModelRuntimeError as exc:
                    log.error("edge model failed: %s", exc)
            for i, job in enumerate(jobs):
                self._route(job, runtime, None if probs is None else probs[i])

    # ------------------------------------------------------------------ routing

    def _route(self, job: Job, rt: TaskRuntime, probs: Probs | None) -> None:
        if job.route == "edge":
            if probs is None:
                self._fail(job, "no_local_model", f"task {rt.name} has no local model")
            else:
                self._answer_edge(job, rt, probs, degraded=None)
            return
        wants_cloud = (
            job.route == "cloud" or probs is None or rt.task.confidence(probs) < rt.threshold
        )
        if not wants_cloud:
            self._answer_edge(job, rt, probs, degraded=None)  # type: ignore[arg-type]
        elif self._cloud is None or rt.cloud_model is None:
            self._fallback(job, rt, probs, "cloud_disabled")
        else:
            self._to_cloud(job, rt, probs)

    def _to_cloud(self, job: Job, rt: TaskRuntime, probs: Probs | None) -> None:
        cloud_input = rt.task.cloud_input(job.canonical, probs, rt.privacy)
        if cloud_input is None:
            self._fallback(job, rt, probs, "privacy")
            return
        # Keep a margin for publishing the fallback and the broker's transit, so the requester
        # has its answer by the deadline even on a loaded device.
        budget_end = job.deadline - min(0.1, 0.2 * (job.deadline - job.received))
        if budget_end - time.monotonic() < self._config.cloud.min_budget_ms / 1000.0:
            self._fallback(job, rt, probs, "cloud_timeout")
            return
        with self._cloud_lock:
            if self._cloud_pending >= self._config.cloud.queue_size:
                busy = True
            else:
                busy = False
                self._cloud_pending += 1
        if busy:
            self._fallback(job, rt, probs, "cloud_busy")
            return
        self._track(1)
        handle = self._timer.schedule(
            budget_end, partial(self._fallback, job, rt, probs, "cloud_timeout")
        )
        try:
            self._cloud_pool.submit(
                self._ask_cloud, job, rt, probs, cloud_input, budget_end, handle
            )
        except RuntimeError:  # pool shut down
            handle.cancel()
            self._cloud_done()
            self._fallback(job, rt, probs, "cloud_unavailable")

    def _cloud_done(self) -> None:
        with self._cloud_lock:
            self._cloud_pending -= 1
        self._track(-1)

    def _ask_cloud(
        self,
        job: Job,
        rt: TaskRuntime,
        probs: Probs | None,
        cloud_input: CloudInput,
        budget_end: float,
        handle: TimerHandle,
    ) -> None:
        assert self._cloud is not None and rt.cloud_model is not None
        assert job.rid is not None
        try:
            answer = self._cloud.infer(
                rt.cloud_model,
                cloud_input.name,
                cloud_input.batch,
                request_id=job.rid,
                deadline=budget_end,
                kind=cloud_input.kind,
                privacy=rt.privacy,
            )
            outputs = rt.task.cloud_output(answer.outputs, rt.labels)
        except CloudError as exc:
            log.debug("cloud failed for %s: %s", job.rid, exc)
            handle.cancel()
            self._fallback(job, rt, probs, exc.code)
        except Exception:
            log.exception("cloud call failed")
            handle.cancel()
            self._fallback(job, rt, probs, "cloud_error")
        else:
            handle.cancel()
            self._send_result(
                job,
                rt,
                outputs,
                source="cloud",
                model=answer.model,
                version=answer.model_version,
                degraded=None,
            )
        finally:
            self._cloud_done()

    def _fallback(self, job: Job, rt: TaskRuntime, probs: Probs | None, reason: str) -> None:
        if probs is None and job.spilled:
            self._fail(job, "overloaded", f"agent overloaded and the cloud failed: {reason}")
        elif probs is None:
            self._fail(job, "cloud_unavailable", f"no local model and the cloud failed: {reason}")
        else:
            self._answer_edge(job, rt, probs, degraded=reason)

    # ------------------------------------------------------------------ answers

    def _answer_edge(self, job: Job, rt: TaskRuntime, probs: Probs, degraded: str | None) -> None:
        assert rt.edge is not None
        self._send_result(
            job,
            rt,
            probs,
            source="edge",
            model=rt.edge.name,
            version=rt.edge.version,
            degraded=degraded,
        )

    def _send_result(
        self,
        job: Job,
        rt: TaskRuntime,
        probs: Probs,
        *,
        source: str,
        model: str,
        version: str,
        degraded: str | None,
    ) -> None:
        latency_ms = (time.monotonic() - job.received) * 1000.0
        payload: dict[str, Any] = {
            "id": job.rid,
            "task": rt.name,
            "ok": True,
            "result": rt.task.result(probs, rt.labels, rt.config.top_k, job.meta),
            "source": source,
            "model": model,
            "model_version": version,
            "latency_ms": round(latency_ms, 3),
            "degraded": degraded is not None,
        }
        if degraded is not None:
            payload["degraded_reason"] = degraded
        if self._reply(job, payload):
            self._stats.answered(rt.name, source, degraded is not None, latency_ms)

    def _fail(self, job: Job, code: str, message: str) -> None:
        if job.rid is None:
            self._error(job, code, message)
            return
        if self._reply(job, failure(job.rid, job.task, code, message)):
            self._stats.failed(job.task, code)

    def _reject(self, job: Job, exc: InputError, at_once: bool = False) -> None:
        """An input that cannot be handled: error topic, plus `ok: false` if the id is known.
        `at_once`: both at QoS 0 and the request acknowledged now, not on delivery (for a
        broker too far behind to take our answers, see `_shed`)."""
        qos = 0 if at_once else None
        if job.rid is not None and safe_level(job.task):
            with job.lock:
                already = job.answered
            if not already:
                self._reply(job, failure(job.rid, job.task, exc.code, str(exc)), ack=False, qos=qos)
        self._error(job, exc.code, str(exc), at_once)

    def _error(self, job: Job, code: str, message: str, at_once: bool = False) -> None:
        log.debug("rejected message on %s: %s %s", job.message.topic, code, message)
        self._stats.error(code)
        self._stats.inc("messages_out")
        with job.lock:
            job.answered = True
        self._pub.publish(
            self._topics.error,
            error_message(job.message.topic, code, message),
            qos=0 if at_once else self._qos,
            on_delivered=None if at_once else partial(self._delivered, job),
        )
        if at_once:
            self._delivered(job)

    def _delivered(self, job: Job) -> None:
        # Acknowledged at once: the broker then forgets the request, so even a crash before
        # the id is remembered on disk (batched) cannot bring a copy back.
        self._ack_all([job.message, *self._forget_mid(job)])
        if job.key is not None and self._dedupe is not None:
            self._ack_all(self._dedupe.complete(job.key, job.answer))
        self._track(-1)

    def _copy_of_inflight(self, job: Job) -> bool:
        """After a reconnect the broker resends every unacknowledged message, with the DUP
        flag and its packet id. A resend of one still being worked on is acknowledged with
        its original instead of filling the queue a second time (network thread: no parsing,
        a dict lookup)."""
        message = job.message
        with self._by_mid_lock:
            original = self._by_mid.get(message.mid)
            if (
                message.dup
                and original is not None
                and original.message.topic == message.topic
                and original.message.payload == message.payload
            ):
                original.copies.append(message)
                attached = True
            else:
                self._by_mid[message.mid] = job
                attached = False
        if attached:
            self._stats.inc("copies_attached")
        return attached

    def _forget_mid(self, job: Job) -> list[Message]:
        """`job` is done: stop matching resends to it. Returns the resends to acknowledge."""
        with self._by_mid_lock:
            if self._by_mid.get(job.message.mid) is job:
                del self._by_mid[job.message.mid]
            copies, job.copies = job.copies, []
        return copies

    # ------------------------------------------------------------------ reliability

    def _admit(self, job: Job) -> bool:
        """De-duplicate by request id (agent/dedupe.py). False for a copy of a request
        already taken: it is acknowledged (now, or with its original) and not answered
        again, except that a re-sent request (no DUP flag) gets the stored answer replayed."""
        if self._dedupe is None or job.rid is None:
            return True
        key = f"{job.task}/{job.rid}"
        verdict = self._dedupe.begin(key, job.message)
        if verdict == "new":
            job.key = key
            return True
        self._track(-1)
        copies = self._forget_mid(job)  # resends of this very message (same packet id)
        if verdict == "inflight":  # all acknowledged once the original's answer is out
            self._stats.inc("duplicates_dropped")
            for copy in copies:
                if self._dedupe.begin(key, copy) == "answered":
                    self._pub.ack(copy)
            return False
        answer = None
        if self._config.dedupe.replay and not job.message.dup:
            answer = self._dedupe.answer_of(key)
        if answer is None:
            self._stats.inc("duplicates_dropped")
            self._ack_all([job.message, *copies])
            return False
        self._stats.inc("duplicates_replayed")
        self._pub.publish(
            answer.topic,
            answer.payload,
            qos=answer.qos,
            correlation_data=answer.correlation_data,
            on_delivered=partial(self._ack_all, [job.message, *copies]),
        )
        return False

    def _ack_all(self, messages: list[Message]) -> None:
        for message in messages:
            self._pub.ack(message)

    def _spill(self, job: Job) -> bool:
        """The queue is full and `workers.overload` is `cloud`: send the request to the
        cloud (validated on a cloud thread) if the cloud has room and its breaker is not
        open. False: it cannot, answer `overloaded`."""
        cloud = self._cloud
        if self._config.workers.overload != "cloud" or cloud is None:
            return False
        if cloud.breaker.state == "open":
            return False
        with self._cloud_lock:
            if self._cloud_pending >= self._config.cloud.queue_size:
                return False
            self._cloud_pending += 1  # a slot for the validation step
        job.spilled = True
        try:
            self._cloud_pool.submit(self._run_spilled, job)
        except RuntimeError:  # pool shut down
            with self._cloud_lock:
                self._cloud_pending -= 1
            return False
        self._stats.inc("spilled_to_cloud")
        return True

    def _run_spilled(self, job: Job) -> None:
        with self._cloud_lock:
            self._cloud_pending -= 1
        try:
            self._prepare(job)
        except InputError as exc:
            self._reject(job, exc)
            return
        if not self._admit(job):
            return
        rt = self._tasks[job.task]
        if rt.cloud_model is None:
            self._fail(job, "overloaded", "agent overloaded: request queue full")
        else:
            self._to_cloud(job, rt, None)

    def _reply(
        self, job: Job, payload: dict[str, Any], ack: bool = True, qos: int | None = None
    ) -> bool:
        with job.lock:
            if job.answered:
                self._stats.inc("duplicates_suppressed")
                return False
            job.answered = True
        if job.on_answer is not None:
            try:
                job.on_answer(payload)
            except Exception:
                log.exception("internal answer handler failed")
            finally:
                self._track(-1)
            return True
        message = job.message
        topic = self._topics.response(job.task)
        correlation = None
        if message.response_topic is not None:
            if _valid_publish_topic(message.response_topic):
                topic = message.response_topic
                correlation = message.correlation_data
            else:
                log.debug("ignoring invalid response topic %r", message.response_topic[:80])
        self._stats.inc("messages_out")
        body = dumps(payload)
        if job.key is not None:
            job.answer = OutMessage(topic, body, self._qos, False, correlation)
        published = self._pub.publish(
            topic,
            body,
            qos=self._qos if qos is None else qos,
            correlation_data=correlation,
            on_delivered=partial(self._delivered, job) if ack else None,
        )
        if not published and ack:
            # Refused (outbox full with `reject_new`): not acknowledged, so the broker keeps
            # the request and redelivers it; a copy must then be processed again.
            self._stats.inc("answers_refused")
            if job.key is not None and self._dedupe is not None:
                self._dedupe.abandon(job.key)
            self._forget_mid(job)
            self._track(-1)
        return True


def _read_rid(job: Job) -> None:
    """The request id of a job answered without parsing the rest (None if unreadable)."""
    try:
        job.rid = read_request_id(loads(job.message.payload))
    except InputError:
        job.rid = None


# Larger requests (an image given to `digits`) are decoded on a worker, not the network thread.
INLINE_MAX_BYTES = 32_768


def serves_inline(rt: TaskRuntime) -> bool:
    """A task the network thread can serve itself (`workers.inline`): small inputs, so
    not an image task; the edge model is checked by the caller."""
    return not rt.task.image_input


def _inline_tasks(
    tasks: dict[str, TaskRuntime], inline_models: dict[str, LoadedModel] | None
) -> frozenset[str]:
    """Tasks the network thread serves itself: an inline interpreter, small inputs."""
    if inline_models is None:
        return frozenset()
    return frozenset(
        name for name, rt in tasks.items() if name in inline_models and serves_inline(rt)
    )


def _valid_publish_topic(topic: str) -> bool:
    return len(topic) <= 256 and not topic.startswith("$") and valid_topic(topic)
