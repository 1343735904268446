"""One worker pushes a target at a time (adapters/outbound.py, the lease). A cycle may outlast the
lease (a full push of 10,000 SKUs at Bitrix's 2 requests a second takes minutes): the worker renews
it before each request, so no other worker starts pushing meanwhile (two pushing one Bitrix store's
documents moved its amounts twice); and a worker whose lease another took stops, pushing and
saving nothing more."""

from __future__ import annotations

import threading
import time
from typing import Any

import pytest
from conftest import FAST, bitrix_target, event

from adapters import lease
from adapters.db import transaction
from adapters.outbound import OutboundWorker, read_position
from ledger.domain.model import EventType

LEASE_S = 0.5  # for the 60 s a long cycle outlives
PUSH_S = 0.3  # each request of the slow worker: three of them outlast the lease
SKUS = (("SKU-1", "101"), ("SKU-2", "102"), ("SKU-3", "103"))


@pytest.fixture
def shop(bitrix: Any, mapped: Any, record: Any, monkeypatch: pytest.MonkeyPatch) -> Any:
    monkeypatch.setattr(lease, "LEASE_S", LEASE_S)
    fake, _ = bitrix
    for _, product in SKUS:
        fake.add_product(product)
    mapped(("bitrix", "store", "shop-1", "1"), *[("bitrix", "sku", sku, pid, "product") for sku, pid in SKUS])
    record(event(EventType.RECEIPT, "shop-1", *[(sku, 5) for sku, _ in SKUS]))
    return bitrix


def worker(
    recorder: Any,
    mappings: Any,
    bitrix: Any,
    owner: str,
    pushed: list[str],
    *,
    push_s: float = PUSH_S,
    batch_items_max: int = 1,
) -> OutboundWorker:
    """A worker whose requests each carry `batch_items_max` products and take `push_s`."""
    target = bitrix_target(recorder, mappings, bitrix)
    target.batch_items_max = batch_items_max
    push = target.push

    def slow_push(batch: list[Any]) -> Any:
        time.sleep(push_s)
        pushed.extend(f"{owner}:{item.key}" for item in batch)
        return push(batch)

    target.push = slow_push  # type: ignore[method-assign]
    return OutboundWorker(recorder, target, FAST, owner=owner)


def test_a_cycle_longer_than_its_lease_keeps_it(shop, recorder, mappings) -> None:
    pushed: list[str] = []
    first = worker(recorder, mappings, shop, "instance-A", pushed)
    reports: list[Any] = []
    cycle = threading.Thread(target=lambda: reports.append(first.run_once()))
    cycle.start()
    time.sleep(LEASE_S + PUSH_S / 2)  # past the lease as first taken, the cycle still pushing

    other = worker(recorder, mappings, shop, "instance-B", pushed).run_once()
    cycle.join(10 * PUSH_S * len(SKUS))

    assert other.aborted == "another worker holds the lease"
    (report,) = reports
    assert report.aborted is None and report.pushed == len(SKUS)
    assert all(name.startswith("instance-A:") for name in pushed)
    assert read_position(recorder, "bitrix") == report.end


def test_one_push_longer_than_the_lease_keeps_it(shop, recorder, mappings) -> None:
    """One batch whose push alone outlasts the lease (a MoySklad batch of many orders under its
    rate limit): renewed before each batch only, the lease ran out during it."""
    pushed: list[str] = []
    first = worker(
        recorder, mappings, shop, "instance-A", pushed, push_s=4 * LEASE_S, batch_items_max=len(SKUS)
    )
    reports: list[Any] = []
    cycle = threading.Thread(target=lambda: reports.append(first.run_once()))
    cycle.start()
    time.sleep(2 * LEASE_S)  # past the lease as renewed before the push, which goes on

    other = worker(recorder, mappings, shop, "instance-B", pushed).run_once()
    cycle.join(10 * LEASE_S)

    assert other.aborted == "another worker holds the lease"
    (report,) = reports
    assert report.aborted is None and report.pushed == len(SKUS)
    assert len(pushed) == len(SKUS) and all(name.startswith("instance-A:") for name in pushed)
    assert read_position(recorder, "bitrix") == report.end


def test_a_worker_whose_lease_was_taken_pushes_and_saves_nothing_more(shop, recorder, mappings) -> None:
    pushed: list[str] = []
    slow = worker(recorder, mappings, shop, "instance-A", pushed)
    push = slow.target.push

    def taken_during_the_first(batch: list[Any]) -> Any:
        answer = push(batch)
        with transaction(recorder) as tx:  # its lease ran out meanwhile, and another took it
            tx.execute("UPDATE adapter_positions SET lease_owner = 'instance-B' WHERE adapter = 'bitrix'")
        return answer

    slow.target.push = taken_during_the_first  # type: ignore[method-assign]
    start = read_position(recorder, "bitrix")

    report = slow.run_once()

    assert report.aborted is not None and "instance-B" in report.aborted
    assert len(pushed) == 1  # nothing after the first request
    assert read_position(recorder, "bitrix") == start  # the new owner pushes from here


def test_a_lease_taken_during_a_push_ends_the_cycle_after_it(shop, recorder, mappings) -> None:
    """The keeper renewing the lease while a batch is pushed finds it taken (the database was away
    longer than the lease, and another worker took it): the push under way ends, nothing more is
    pushed, and nothing is saved."""
    pushed: list[str] = []
    slow = worker(recorder, mappings, shop, "instance-A", pushed, push_s=3 * LEASE_S)
    push = slow.target.push

    def taken_while_pushing(batch: list[Any]) -> Any:
        with transaction(recorder) as tx:
            tx.execute("UPDATE adapter_positions SET lease_owner = 'instance-B' WHERE adapter = 'bitrix'")
        return push(batch)  # the keeper renews during its PUSH_S: it finds instance-B's

    slow.target.push = taken_while_pushing  # type: ignore[method-assign]
    start = read_position(recorder, "bitrix")

    report = slow.run_once()

    assert report.aborted is not None and "instance-B" in report.aborted
    assert len(pushed) == 1  # the batch under way, then nothing
    assert read_position(recorder, "bitrix") == start
