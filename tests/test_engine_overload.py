"""A broker that ignores the agent's Receive Maximum must not fill the agent's memory.

The agent asks for at most `workers.queue_size` unacknowledged requests; mosquitto 2.0.11
sent 9,000 and more under a flood of large requests while it had no CPU left to take the
answers (their PUBACKs came late), and the agent held every one of them. Here the publisher
holds every delivery (a broker that does not acknowledge answers) while requests keep
coming: past twice the receive maximum each request is answered `overloaded` at once, on
its response and the error topic, and acknowledged, so nothing of it stays; the requests
held before that still complete, each acknowledged exactly once.
"""

from __future__ import annotations

from collections import Counter

import orjson

from agent.app import build_tasks, load_inline_models, load_worker_models
from agent.config import load_config
from agent.engine import Engine
from agent.mqtt.client import Message
from agent.mqtt.topics import Topics
from agent.registry import Registry
from agent.stats import Stats
from tests.faults.harness import DEPLOY_CONFIG, PIXELS
from tests.helpers import RecordingPublisher

QUEUE = 8


def test_requests_past_twice_the_receive_maximum_are_shed_not_held() -> None:
    config = load_config(
        DEPLOY_CONFIG,
        environ={
            "EDGE_AGENT_ID": "shed",
            "EDGE_AGENT_WORKERS__QUEUE_SIZE": str(QUEUE),
        },
    )
    config = config.model_copy(update={"cloud": config.cloud.model_copy(update={"url": None})})
    tasks = build_tasks(config, Registry(config.models.dir))
    broker = RecordingPublisher(hold=True)  # a broker that does not acknowledge answers
    stats = Stats()
    engine = Engine(
        config,
        Topics(config.base_topic, config.id),
        broker,
        stats,
        tasks,
        load_worker_models(config, tasks),
        None,
        inline_models=load_inline_models(config, tasks),
    )
    engine.start()
    try:
        n = 5 * QUEUE
        for i in range(n):  # what a flooding broker sends, never waiting for an ack
            body = orjson.dumps({"id": f"r{i}", "input": {"pixels": PIXELS[i % len(PIXELS)]}})
            engine.submit(Message("edge-agent/shed/request/digits", body, 1, False, mid=i + 1))
            engine.flush()  # what the network thread does after each read
        held = 2 * QUEUE  # held until their answers are delivered; the rest are shed
        answers = {
            orjson.loads(p)["id"]: (orjson.loads(p), qos)
            for t, p, qos in broker.published
            if t == "edge-agent/shed/response/digits"
        }
        assert len(answers) == n
        for i in range(n):
            answer, qos = answers[f"r{i}"]
            if i < held:
                assert answer["ok"] is True and qos == 1, answer
            else:
                assert answer["ok"] is False and answer["error"]["code"] == "overloaded"
                assert qos == 0
        errors = [p for t, p, _ in broker.published if t == "edge-agent/shed/error"]
        assert len(errors) == n - held and b"overloaded" in errors[0]
        # the shed ones are acknowledged at once; the held ones wait for their answer's PUBACK
        assert set(broker.acks) == set(range(held + 1, n + 1))
        broker.deliver_all()
        assert broker.acks == Counter(range(1, n + 1))
        assert stats.counts()[0]["shed"] == n - held
        assert engine.inflight == 0
    finally:
        engine.stop(1.0)
