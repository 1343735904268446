"""Who may do what (CONTRACT §5): roles, a token's grant, and the scope rules. Pure: no I/O.

A refusal is an error with typed fields (`Forbidden(role=...)`, `Forbidden(store=...)`,
`Forbidden(source=...)`), mapped once at the HTTP edge to 403 `forbidden`. A grant of `None`
stands for the open service (no token exists and none is required): nothing is refused.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from enum import StrEnum

from ledger.domain.ids import ID_PATTERN
from ledger.domain.model import IMPORT_PRINCIPAL, KAFKA_PRINCIPAL, LEDGER_PRINCIPAL


class Role(StrEnum):
    """The roles, each including the ones before it. The values are stored names."""

    READER = "reader"
    PRODUCER = "producer"
    OPERATOR = "operator"
    ADMIN = "admin"


_RANK = {role: rank for rank, role in enumerate(Role)}

# Principals the ledger writes itself in the audit trail: no token may take these names.
RESERVED_NAMES = frozenset({KAFKA_PRINCIPAL, LEDGER_PRINCIPAL, IMPORT_PRINCIPAL})
# Nor the adapters' (`adapters/moysklad`, `adapters/wms`, ...: what they record by themselves),
# whatever the name pattern allows.
ADAPTER_PRINCIPAL_PREFIX = "adapters/"


def is_reserved(name: str) -> bool:
    """Is this a principal the ledger or its adapters write themselves in the history?"""
    lowered = name.lower()
    return lowered in RESERVED_NAMES or lowered.startswith(ADAPTER_PRINCIPAL_PREFIX)


NAME_PATTERN = ID_PATTERN  # like a store id: it appears in the history
SOURCE_PREFIX_CHARS_MAX = 256  # an event's source is at most this long (ledger/intake)
SCOPE_ITEMS_MAX = 1000  # stores or source prefixes on one token
DURATION_PATTERN = re.compile(r"([1-9][0-9]{0,8})([smhd])")
_UNIT_S = {"s": 1, "m": 60, "h": 3600, "d": 86400}
DURATION_S_MAX = 36_600 * 86_400  # about 100 years: a token's lifetime, at most


@dataclass(frozen=True, slots=True)
class Grant:
    """What one valid token may do. `stores` / `sources` None: every store / every source."""

    name: str
    role: Role
    stores: frozenset[str] | None = None
    sources: tuple[str, ...] | None = None
    expires_at_s: float | None = None  # Unix time; None: never
    rate_per_s: float | None = None  # None: no limit

    def includes(self, role: Role) -> bool:
        return _RANK[self.role] >= _RANK[role]

    def covers_store(self, store_id: str) -> bool:
        return self.stores is None or store_id in self.stores

    def covers_source(self, source: str) -> bool:
        return self.sources is None or source.startswith(self.sources)

    def expired(self, now_s: float) -> bool:
        return self.expires_at_s is not None and now_s >= self.expires_at_s


class Forbidden(Exception):
    """The token is valid but does not allow this: names the role, store or source it lacks."""

    def __init__(
        self, detail: str, *, role: Role | None = None, store: str | None = None, source: str | None = None
    ) -> None:
        super().__init__(detail)
        self.detail = detail
        self.role = role
        self.store = store
        self.source = source


def authorize_role(grant: Grant | None, needed: Role) -> None:
    if grant is not None and not grant.includes(needed):
        raise Forbidden(
            f"this needs the {needed} role; the token {grant.name} is a {grant.role}", role=needed
        )


def authorize_store(grant: Grant | None, store_id: str) -> None:
    if grant is not None and not grant.covers_store(store_id):
        raise Forbidden(f"the token {grant.name} may not act on store {store_id}", store=store_id)


def authorize_event(grant: Grant | None, subject: object, source: object) -> None:
    """An event's store (its `subject`; a transfer's sending store) and its `source` prefix.
    Values that are not strings are left to the envelope's validation (they record nothing)."""
    if grant is None:
        return
    if isinstance(subject, str):
        authorize_store(grant, subject)
    if isinstance(source, str):
        authorize_source(grant, source)


def authorize_write_at(grant: Grant | None, store_id: str, source: str) -> None:
    """A write the ledger names itself (a REST reservation, recorded under `source`): the store,
    and the source like any event's, so that a token scoped to a till's sources cannot place or
    release reservations at its store unless one of its prefixes covers `source`."""
    authorize_store(grant, store_id)
    authorize_source(grant, source)


def authorize_source(grant: Grant | None, source: str) -> None:
    if grant is not None and not grant.covers_source(source):
        raise Forbidden(f"the token {grant.name} may not send events with source {source}", source=source)


def visible_stores(grant: Grant | None, store_ids: Iterable[str]) -> list[str]:
    """The stores among these that the grant may read, in their order."""
    if grant is None or grant.stores is None:
        return list(store_ids)
    return [store_id for store_id in store_ids if store_id in grant.stores]


# -- what `ledger tokens create` accepts ------------------------------------------------------------


class InvalidGrant(ValueError):
    """A token's name, role, scopes, expiry or rate that cannot be granted; the message says why."""


def check_name(name: str) -> str:
    if is_reserved(name):
        raise InvalidGrant(f"{name!r} is the ledger's own principal in the history; choose another name")
    if not NAME_PATTERN.fullmatch(name):
        raise InvalidGrant(
            f"a token's name is 1 to 64 ASCII letters, digits or -_.: characters, not {name!r}"
        )
    return name


def parse_role(text: str) -> Role:
    try:
        return Role(text)
    except ValueError:
        raise InvalidGrant(f"a role is one of {', '.join(Role)}, not {text!r}") from None


def check_stores(stores: Iterable[str]) -> frozenset[str] | None:
    """None when no store is given (every store)."""
    listed = list(stores)
    for store_id in listed:
        if not NAME_PATTERN.fullmatch(store_id):
            raise InvalidGrant(
                f"a store id is 1 to 64 ASCII letters, digits or -_.: characters: {store_id!r}"
            )
    if len(listed) > SCOPE_ITEMS_MAX:
        raise InvalidGrant(f"at most {SCOPE_ITEMS_MAX} stores on one token")
    return frozenset(listed) if listed else None


def check_sources(prefixes: Iterable[str]) -> tuple[str, ...] | None:
    """None when no prefix is given (every source)."""
    listed = list(dict.fromkeys(prefixes))
    for prefix in listed:
        if not prefix or len(prefix) > SOURCE_PREFIX_CHARS_MAX or not prefix.isprintable():
            raise InvalidGrant(f"a source prefix is 1 to {SOURCE_PREFIX_CHARS_MAX} printable characters")
    if len(listed) > SCOPE_ITEMS_MAX:
        raise InvalidGrant(f"at most {SCOPE_ITEMS_MAX} source prefixes on one token")
    return tuple(listed) if listed else None


def parse_duration_s(text: str) -> int:
    """`90d`, `12h`, `30m`, `6s`: a whole number with a unit, in seconds."""
    match = DURATION_PATTERN.fullmatch(text)
    if match is None:
        raise InvalidGrant(
            f"a duration is a whole number above 0 with a unit s, m, h or d (90d, 6s), not {text!r}"
        )
    seconds = int(match.group(1)) * _UNIT_S[match.group(2)]
    if seconds > DURATION_S_MAX:  # longer would end past what a date can hold (the year 9999)
        raise InvalidGrant(f"a duration is at most {DURATION_S_MAX // 86400} days, not {text!r}")
    return seconds


def check_rate(rate_per_s: float | None) -> float | None:
    if rate_per_s is not None and not 0 < rate_per_s <= 1_000_000:
        raise InvalidGrant(f"a rate is more than 0 and at most 1,000,000 requests a second, not {rate_per_s}")
    return rate_per_s
