"""The console while its database is down: every page answers 503 with the API's problem (its
title and detail), as a page a person can read, never a 500; and every page works again once the
database is back. In a real browser, on PostgreSQL: the database is closed to new connections and
its open ones are ended, as a restart or a failover does to the service."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlsplit

from browser_support import plugged_in_adapters
from support import api
from support import events as ev
from support.ids import unique
from support.postgres import EmbeddedPostgres

WAIT_MS = 10_000  # the longest any page may take
RECOVERY_DEADLINE_S = 30.0
POLL_S = 0.2
DATABASE_TITLE = "The ledger's database is unavailable now"


@contextlib.contextmanager
def database_down(pg: EmbeddedPostgres, database_url: str) -> Iterator[None]:
    """No connection to the service's database while the block runs: new ones are refused and
    the open ones are ended (the server itself, shared by other tests, keeps running)."""
    name = urlsplit(database_url).path.lstrip("/")
    pg.server.psql(f"ALTER DATABASE {name} ALLOW_CONNECTIONS false;")
    pg.server.psql(f"SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '{name}';")
    try:
        yield
    finally:
        pg.server.psql(f"ALTER DATABASE {name} ALLOW_CONNECTIONS true;")


def test_every_console_page_answers_503_with_the_apis_problem_while_the_database_is_down(
    chromium: Any, postgres: EmbeddedPostgres, serve: Any, tmp_path: Any
) -> None:
    database_url = postgres.create_database("console_outage")
    server = serve(database_url, plugged_in_adapters(tmp_path / "plugins"))
    store, sku = unique("shop"), unique("TEA").upper()
    with server.client() as client:
        api.record(client, ev.receipt(store, (sku, 5)), ev.reservation(store, "R-1", (sku, 2)))
    pages = [
        "/ui",
        f"/ui?q={sku[:4]}",
        f"/ui/skus/{sku}",
        f"/ui/stores/{store}/skus/{sku}",
        f"/ui/stores/{store}/reservations",
        "/ui/adapters",
    ]
    context = chromium.new_context()
    context.set_default_timeout(WAIT_MS)
    tab = context.new_page()
    try:
        for path in pages:
            assert tab.goto(server.url + path).status == 200, path
        with database_down(postgres, database_url), server.client() as client:
            # The API's own answer to a read that needs the database (the history is never cached).
            problem = api.assert_problem(
                client.get(f"/v1/stores/{store}/history"), 503, "database-unavailable"
            )
            assert problem["title"] == DATABASE_TITLE
            for path in pages:
                answer = tab.goto(server.url + path)
                assert answer.status == 503, (path, answer.status, tab.content()[:500])
                assert answer.headers["content-type"].startswith("text/html"), path
                shown = tab.locator(".problem")
                assert shown.get_attribute("data-status") == "503", path
                assert shown.inner_text() == f"{problem['title']}: {problem['detail']}", path
                assert tab.locator("a[href='/ui']").count() >= 1, path  # a way on, once it is back
                # A program that reads the same page gets the API's problem+json (CONTRACT §5).
                assert api.assert_problem(client.get(path), 503, "database-unavailable") == {
                    **problem,
                    "instance": urlsplit(path).path,
                }, path
        for path in pages:  # the pool connects again on its own: within its deadline
            deadline = time.monotonic() + RECOVERY_DEADLINE_S
            while (status := tab.goto(server.url + path).status) != 200 and time.monotonic() < deadline:
                time.sleep(POLL_S)
            assert status == 200, path
    finally:
        context.close()
    assert "Traceback" not in server.log_path.read_text(errors="replace")
