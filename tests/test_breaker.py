from agent.cloud.breaker import CircuitBreaker


def test_opens_after_threshold_and_probes_after_timeout() -> None:
    now = [0.0]
    b = CircuitBreaker(3, 10.0, clock=lambda: now[0])
    for _ in range(2):
        assert b.allow()
        b.failure()
    assert b.state == "closed"
    b.failure()
    assert b.state == "open" and not b.allow()
    now[0] = 10.0
    assert b.state == "half_open"
    assert b.allow() and not b.allow(), "one probe at a time"
    b.failure()
    assert b.state == "open"
    now[0] = 20.0
    assert b.allow()
    b.success()
    assert b.state == "closed" and b.allow()
    assert b.opened_count == 2


def test_success_resets_the_failure_count() -> None:
    b = CircuitBreaker(2, 1.0)
    b.failure()
    b.success()
    b.failure()
    assert b.state == "closed"
