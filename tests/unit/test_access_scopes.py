"""CONTRACT §5's rules, with no I/O: roles include each other, stores and source prefixes scope a
token, a transfer needs only its sending store, and what `ledger tokens create` accepts."""

from __future__ import annotations

import pytest

from ledger.access.limiter import RateLimited, RateLimiter
from ledger.access.scopes import (
    Forbidden,
    Grant,
    InvalidGrant,
    Role,
    authorize_event,
    authorize_role,
    authorize_store,
    check_name,
    check_sources,
    check_stores,
    parse_duration_s,
    visible_stores,
)
from ledger.access.tokens import TOKEN_PREFIX, bearer_token, new_token, token_digest

TILL = Grant("till-12", Role.PRODUCER, stores=frozenset({"store-12"}), sources=("pos/store-12",))
READER = Grant("analyst", Role.READER)


@pytest.mark.parametrize(
    ("role", "allowed"),
    [
        (Role.READER, {Role.READER}),
        (Role.PRODUCER, {Role.READER, Role.PRODUCER}),
        (Role.OPERATOR, {Role.READER, Role.PRODUCER, Role.OPERATOR}),
        (Role.ADMIN, set(Role)),
    ],
)
def test_each_role_includes_the_ones_before_it_and_no_other(role: Role, allowed: set[Role]) -> None:
    grant = Grant("t", role)
    for needed in Role:
        if needed in allowed:
            authorize_role(grant, needed)
        else:
            with pytest.raises(Forbidden) as refused:
                authorize_role(grant, needed)
            assert refused.value.role is needed and refused.value.store is None


def test_a_store_scoped_token_is_refused_another_store_naming_it() -> None:
    authorize_store(TILL, "store-12")
    with pytest.raises(Forbidden) as refused:
        authorize_store(TILL, "store-9")
    assert refused.value.store == "store-9"
    assert "store-9" in refused.value.detail


def test_a_token_without_stores_may_act_on_every_store() -> None:
    authorize_store(READER, "any-store")
    assert visible_stores(READER, ["b", "a"]) == ["b", "a"]


def test_an_event_needs_its_subject_in_scope_and_its_source_under_a_prefix() -> None:
    authorize_event(TILL, "store-12", "pos/store-12/till-3")
    with pytest.raises(Forbidden) as other_store:
        authorize_event(TILL, "store-9", "pos/store-12/till-3")
    assert other_store.value.store == "store-9"
    with pytest.raises(Forbidden) as other_source:
        authorize_event(TILL, "store-12", "wms/main")
    assert other_source.value.source == "wms/main" and other_source.value.store is None


def test_a_source_prefix_is_a_prefix_not_a_pattern() -> None:
    grant = Grant("t", Role.PRODUCER, sources=("pos/store-1",))
    authorize_event(grant, "s", "pos/store-1")
    authorize_event(grant, "s", "pos/store-10")  # a prefix is a plain prefix: end it with / to stop there
    with pytest.raises(Forbidden):
        authorize_event(grant, "s", "pos/store-")


def test_fields_that_are_not_strings_are_left_to_validation() -> None:
    authorize_event(TILL, None, 12)


def test_the_open_service_refuses_nothing() -> None:
    authorize_role(None, Role.ADMIN)
    authorize_store(None, "store-9")
    authorize_event(None, "store-9", "anything")
    assert visible_stores(None, ["a"]) == ["a"]


def test_a_reader_sees_only_its_stores_in_their_order() -> None:
    grant = Grant("t", Role.READER, stores=frozenset({"c", "a"}))
    assert visible_stores(grant, ["a", "b", "c"]) == ["a", "c"]


def test_an_expired_grant_says_so_at_its_expiry() -> None:
    grant = Grant("t", Role.READER, expires_at_s=100.0)
    assert not grant.expired(99.9)
    assert grant.expired(100.0)
    assert not Grant("t", Role.READER).expired(1e12)


@pytest.mark.parametrize(("text", "seconds"), [("6s", 6), ("30m", 1800), ("12h", 43200), ("90d", 7776000)])
def test_a_duration_is_a_whole_number_with_a_unit(text: str, seconds: int) -> None:
    assert parse_duration_s(text) == seconds


@pytest.mark.parametrize("text", ["", "6", "0s", "1.5h", "-1d", "6 s", "6S", "1w"])
def test_a_duration_without_a_known_unit_is_refused(text: str) -> None:
    with pytest.raises(InvalidGrant):
        parse_duration_s(text)


@pytest.mark.parametrize("name", ["kafka", "ledger", "import", "Kafka", "", "a/b", "x" * 65])
def test_a_token_may_not_take_the_ledgers_own_principals_nor_an_unsafe_name(name: str) -> None:
    with pytest.raises(InvalidGrant):
        check_name(name)


def test_scopes_given_as_nothing_mean_everything() -> None:
    assert check_stores([]) is None and check_sources([]) is None
    assert check_stores(["a", "a"]) == frozenset({"a"})
    assert check_sources(["p/", "p/"]) == ("p/",)
    with pytest.raises(InvalidGrant):
        check_stores(["no/slash"])


def test_a_token_is_random_recognisable_and_stored_only_as_its_hash() -> None:
    tokens = {new_token() for _ in range(100)}
    assert len(tokens) == 100
    token = tokens.pop()
    assert token.startswith(TOKEN_PREFIX) and len(token) == len(TOKEN_PREFIX) + 43
    digest = token_digest(token)
    assert len(digest) == 64 and token not in digest


def test_the_bearer_header_is_read_case_insensitively_and_anything_else_is_no_token() -> None:
    token = new_token()
    assert bearer_token(f"Bearer {token}".encode()) == token
    assert bearer_token(f"bearer {token}".encode()) == token
    assert bearer_token(None) is None
    assert bearer_token(f"Basic {token}".encode()) is None
    assert bearer_token(f"Bearer {token}x".encode()) is None
    assert bearer_token(b"Bearer " + b"x" * 51) is None


class _Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_a_token_over_its_rate_is_told_when_to_retry_and_another_token_is_not_held_back() -> None:
    clock = _Clock()
    limiter = RateLimiter(clock)
    noisy = Grant("noisy", Role.PRODUCER, rate_per_s=2.0)
    quiet = Grant("quiet", Role.PRODUCER, rate_per_s=2.0)
    limiter.admit(noisy)
    limiter.admit(noisy)  # a second's worth at once
    with pytest.raises(RateLimited) as limited:
        limiter.admit(noisy)
    assert limited.value.retry_after_s == 1
    limiter.admit(quiet)
    clock.now += 0.5  # one more request's worth
    limiter.admit(noisy)
    with pytest.raises(RateLimited):
        limiter.admit(noisy)


def test_a_slow_rate_says_how_many_seconds_to_wait() -> None:
    clock = _Clock()
    limiter = RateLimiter(clock)
    slow = Grant("slow", Role.READER, rate_per_s=0.1)
    limiter.admit(slow)
    with pytest.raises(RateLimited) as limited:
        limiter.admit(slow)
    assert limited.value.retry_after_s == 10


def test_a_token_without_a_rate_is_never_limited() -> None:
    limiter = RateLimiter(_Clock())
    for _ in range(10_000):
        limiter.admit(READER)
