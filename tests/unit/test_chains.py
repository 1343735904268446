"""Requests that follow another (writer/chains.py): which may share a batch, and what a
connection remembers of its requests' outcomes."""

from __future__ import annotations

from ledger.writer import chains


def test_a_follower_never_shares_a_batch_with_the_request_it_follows() -> None:
    # (connection, request id, the id it follows)
    assert chains.unchained_prefix([("a", 1, None), ("b", 1, None), ("a", 2, 1), ("a", 3, 2)]) == 2
    assert chains.unchained_prefix([("a", 1, None), ("b", 2, 1), ("a", 3, None)]) == 3  # b's 1 is not a's
    assert chains.unchained_prefix([("a", 5, 4), ("a", 6, None)]) == 2  # it follows one of an earlier batch


def test_a_connection_keeps_its_last_outcomes_and_forgets_older_ones() -> None:
    outcomes = chains.Outcomes()
    outcomes.note(1, recorded=True)
    outcomes.note(2, recorded=False)
    assert outcomes.recorded(1) and not outcomes.recorded(2) and not outcomes.recorded(3)
    for request_id in range(3, 3 + chains.CHAIN_OUTCOMES_MAX):
        outcomes.note(request_id, recorded=True)
    assert not outcomes.recorded(1), "forgotten: counts as not recorded"
