"""MoySklad's webhooks (issue #14, item 3): registered once, on the command line too, within the
registries' documented rules; delivered with MoySklad's retry pattern, and what they bring recorded."""

from __future__ import annotations

from typing import Any

import pytest
from conftest import FAST, event
from moysklad_setup import SECRET, STORE_UUID, VARIANT, client_for, moysklad_inbox, on_hand

from adapters.moysklad_orders import MoySkladOrdersTarget
from adapters.moysklad_webhooks import register_webhooks
from adapters.outbound import OutboundWorker
from ledger.cli import main
from ledger.domain.model import EventType

RECEIPT = EventType.RECEIPT


@pytest.fixture
def account(moysklad_account: Any) -> Any:
    return moysklad_account


# -- the fake's webhooks, end to end ------------------------------------------------------------------


def test_registered_webhooks_bring_demands_and_their_corrections_into_the_ledger(
    account, receiver, recorder, mappings, ledger, record
):
    fake, server = account
    client = client_for(server)
    record(event(RECEIPT, "shop-1", ("SKU-1", 10)))
    register_webhooks(client, f"{receiver.url}/moysklad/webhook/{SECRET}")
    inbox = moysklad_inbox(recorder, mappings, client, ledger)

    demand = fake.add_demand(STORE_UUID, [(VARIANT, 6)])
    fake.update_demand(demand, positions=[(VARIANT, 4)])
    outcomes = fake.deliver_webhooks()
    assert [len(o.attempts) for o in outcomes] == [1, 1] and all(o.delivered for o in outcomes)
    assert inbox.run_once() == (2, 0)
    assert on_hand(ledger, "shop-1", "SKU-1") == [6]

    fake.delete_demand(demand)
    fake.deliver_webhooks()
    assert inbox.run_once() == (1, 0)
    assert on_hand(ledger, "shop-1", "SKU-1") == [10]


CANCELLED = "5a5a0000-0000-0000-0000-00000000000c"


@pytest.mark.parametrize("person_does", ["cancels", "deletes"])
def test_a_customer_order_cancelled_or_deleted_in_moysklad_comes_by_webhook_and_releases_its_reservation(
    account, receiver, recorder, mappings, mapped, ledger, record, person_does
):
    fake, server = account
    client = client_for(server)
    mapped(("moysklad", "status", "released", CANCELLED))
    record(
        event(RECEIPT, "shop-1", ("SKU-1", 10)),
        event(EventType.RESERVATION, "shop-1", ("SKU-1", 4), reservation_id="res-3", order_id="B-3"),
    )
    OutboundWorker(recorder, MoySkladOrdersTarget(recorder, mappings, client), FAST).run_until_idle()
    register_webhooks(client, f"{receiver.url}/moysklad/webhook/{SECRET}")
    inbox = moysklad_inbox(recorder, mappings, client, ledger)

    (order_id,) = [o["id"] for o in fake.orders.values() if o["externalCode"] == "B-3"]
    if person_does == "cancels":  # a person, in the app
        fake.set_order_state(order_id, CANCELLED)
    else:
        fake.delete_order(order_id)
    (outcome,) = fake.deliver_webhooks()
    assert outcome.delivered and inbox.run_once() == (1, 0)

    assert ledger.levels("shop-1", ["SKU-1"])[0].level.reserved_units == 0
    assert ledger.reservation("shop-1", "res-3").reservation.status.value == "released"


def test_the_fake_sends_a_webhook_four_times_in_a_row_then_drops_it(account):
    fake, server = account
    client = client_for(server)
    register_webhooks(client, "http://127.0.0.1:9/nobody-listens")  # port 9: discard, refused here

    fake.add_demand(STORE_UUID, [(VARIANT, 1)])
    (outcome,) = fake.deliver_webhooks()

    assert len(outcome.attempts) == 4 and not outcome.delivered
    assert fake.outbox == []  # dropped for good


# -- registering the webhooks ------------------------------------------------------------------------


def test_registering_twice_creates_nothing_the_second_time_and_enables_a_disabled_one(account):
    fake, server = account
    client = client_for(server)
    url = "https://ledger.example.com/moysklad/webhook/s"

    first = register_webhooks(client, url)
    (update_hook,) = [
        h for h in fake.webhooks.values() if (h["entityType"], h["action"]) == ("demand", "UPDATE")
    ]
    update_hook["enabled"] = False
    second = register_webhooks(client, url)

    assert len(first) == 6 and all(": subscribed (" in line for line in first)
    assert sorted((h["entityType"], h["action"], h["url"]) for h in fake.webhooks.values()) == [
        ("customerorder", "DELETE", url),
        ("customerorder", "UPDATE", url),
        *(("demand", action, url) for action in ("CREATE", "DELETE", "UPDATE")),
    ]
    assert [(h["stockType"], h["reportType"]) for h in fake.stock_webhooks.values()] == [("stock", "bystore")]
    assert [line.split(":")[1].split("(")[0].strip() for line in second] == [
        "subscribed already",
        "enabled again",
        "subscribed already",
        "subscribed already",
        "subscribed already",
        "subscribed already",
    ]
    assert fake.webhooks[update_hook["id"]]["enabled"] is True and len(fake.webhooks) == 5


def test_the_fake_keeps_the_documented_registry_rules(account):
    _, server = account
    client = client_for(server)

    def create(url: str) -> Any:
        return client.request(
            "POST", "entity/webhook", json_body={"url": url, "action": "CREATE", "entityType": "demand"}
        )

    assert create("https://a.example/1").status == 200
    assert create("https://a.example/1").status == 400  # entityType, action and url: unique
    assert [create(f"https://a.example/{n}").status for n in range(2, 7)] == [200] * 4 + [400]  # 5 urls
    assert create("https://a.example/" + "x" * 255).status == 400  # url: at most 255 characters


def test_register_webhooks_on_the_command_line(account, monkeypatch, database_url, capsys):
    fake, server = account
    monkeypatch.setenv("LEDGER_DATABASE_URL", database_url)
    monkeypatch.setenv("LEDGER_MOYSKLAD_BASE_URL", server.url + "/api/remap/1.2")
    monkeypatch.setenv("LEDGER_MOYSKLAD_TOKEN", fake.token)
    monkeypatch.setenv("LEDGER_MOYSKLAD_WEBHOOK_SECRET", SECRET)

    assert main(["adapters", "register-webhooks", "--url", "https://ledger.example.com"]) == 0
    assert main(["adapters", "register-webhooks", "--url", "https://ledger.example.com"]) == 0

    out = capsys.readouterr().out
    assert out.count(": subscribed (") == 6 and out.count("subscribed already") == 6
    assert SECRET not in out
    assert {h["url"] for h in fake.webhooks.values()} == {
        f"https://ledger.example.com/moysklad/webhook/{SECRET}"
    }


def test_register_webhooks_refuses_a_secret_that_cannot_be_a_path_segment(
    account, monkeypatch, database_url, capsys
):
    """MoySklad was subscribed to a URL no delivery could reach: the secret held a `/`."""
    fake, server = account
    monkeypatch.setenv("LEDGER_DATABASE_URL", database_url)
    monkeypatch.setenv("LEDGER_MOYSKLAD_BASE_URL", server.url + "/api/remap/1.2")
    monkeypatch.setenv("LEDGER_MOYSKLAD_TOKEN", fake.token)
    monkeypatch.setenv("LEDGER_MOYSKLAD_WEBHOOK_SECRET", "Zm9v/YmFy")

    assert main(["adapters", "register-webhooks", "--url", "https://ledger.example.com"]) == 2

    err = capsys.readouterr().err.strip()
    assert "LEDGER_MOYSKLAD_WEBHOOK_SECRET" in err and "Zm9v" not in err and "\n" not in err
    assert fake.webhooks == {}


def test_register_webhooks_without_a_secret_says_so_in_one_line(account, monkeypatch, database_url, capsys):
    fake, server = account
    monkeypatch.setenv("LEDGER_DATABASE_URL", database_url)
    monkeypatch.setenv("LEDGER_MOYSKLAD_BASE_URL", server.url + "/api/remap/1.2")
    monkeypatch.setenv("LEDGER_MOYSKLAD_TOKEN", fake.token)
    monkeypatch.delenv("LEDGER_MOYSKLAD_WEBHOOK_SECRET", raising=False)

    assert main(["adapters", "register-webhooks", "--url", "https://ledger.example.com"]) == 2

    err = capsys.readouterr().err.strip()
    assert "LEDGER_MOYSKLAD_WEBHOOK_SECRET" in err and "\n" not in err and "Traceback" not in err
    assert fake.webhooks == {}
