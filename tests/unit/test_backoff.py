"""The one backoff of the Kafka intake, the availability feed and the adapters (ledger/backoff.py)."""

from __future__ import annotations

import pytest

from ledger.backoff import BROKER_RETRY_FIRST_S, DOUBLINGS_MAX, Backoff


def test_the_waits_double_from_the_first_up_to_the_cap() -> None:
    backoff = Backoff(0.1, 1.0)

    waits = [backoff.next_s() for _ in range(7)]

    assert waits == [0.1, 0.2, 0.4, 0.8, 1.0, 1.0, 1.0]
    assert [Backoff(0.1, 1.0).delay_s(attempt) for attempt in range(1, 8)] == waits


def test_a_reset_starts_again_from_the_first_wait() -> None:
    backoff = Backoff(0.5, 30.0)
    for _ in range(4):
        backoff.next_s()

    backoff.reset()

    assert backoff.next_s() == 0.5
    assert backoff.next_s() == 1.0


def test_a_cap_below_the_first_wait_is_the_wait() -> None:
    """The Kafka tests set a 50 ms cap under the 100 ms first wait: every wait is 50 ms."""
    backoff = Backoff(BROKER_RETRY_FIRST_S, 0.05)

    assert [backoff.next_s() for _ in range(3)] == [0.05, 0.05, 0.05]


def test_the_kafka_intakes_waits_are_those_it_always_had() -> None:
    """100 ms doubling to LEDGER_KAFKA_RETRY_BACKOFF_MS_MAX (5000), no jitter."""
    backoff = Backoff(BROKER_RETRY_FIRST_S, 5000 / 1000)

    assert [backoff.next_s() for _ in range(8)] == [0.1, 0.2, 0.4, 0.8, 1.6, 3.2, 5.0, 5.0]


def test_jitter_stays_within_its_share_of_each_wait() -> None:
    backoff = Backoff(0.5, 30.0, jitter=0.2)

    for attempt in range(1, 12):
        base = min(30.0, 0.5 * 2 ** (attempt - 1))
        waits = [backoff.delay_s(attempt) for _ in range(200)]
        assert all(base * 0.8 <= wait <= base * 1.2 for wait in waits), (attempt, min(waits), max(waits))
        assert len(set(waits)) > 1, "no jitter at all"


def test_a_failure_that_lasts_never_overflows_the_wait() -> None:
    backoff = Backoff(0.1, 5.0)
    for _ in range(DOUBLINGS_MAX + 2000):
        wait = backoff.next_s()

    assert wait == 5.0
    assert backoff.delay_s(10**6) == 5.0


@pytest.mark.parametrize(("initial_s", "max_s", "jitter"), [(0, 1.0, 0.0), (0.1, 0, 0.0), (0.1, 1.0, 1.0)])
def test_a_backoff_that_could_not_wait_is_refused(initial_s: float, max_s: float, jitter: float) -> None:
    with pytest.raises(ValueError, match="positive waits"):
        Backoff(initial_s, max_s, jitter=jitter)
