"""Which `Host` a request may name (LEDGER_ALLOWED_HOSTS), and which listening addresses are loopback.

A Host check stops DNS rebinding: a web page whose name is made to point at 127.0.0.1 reaches a
service on loopback, but its requests still name the page's host. Pure: no I/O.
"""

from __future__ import annotations

import ipaddress

LOOPBACK_NAMES = frozenset({"localhost", "127.0.0.1", "[::1]"})
ANY_HOST = "*"
# RFC 9112 §3.2: an HTTP/1.0 request may name no Host; one of any later version names exactly one.
HOST_OPTIONAL_VERSIONS = frozenset({"1.0"})
TWO_HOSTS_DETAIL = "a request names one Host (RFC 9112); this one named more"
NO_HOST_DETAIL = "an HTTP/1.1 request names its Host (RFC 9112); this one named none"
NOT_ALLOWED_DETAIL = "this service is not reached by that name (LEDGER_ALLOWED_HOSTS)"
# Probes reach a service by its address (Kubernetes: the pod's IP), and these answer nothing of
# worth: every endpoint that checks the Host answers them whatever it names, or none, or two.
PROBE_PATHS = frozenset({"/healthz", "/readyz"})


def allowed_hosts(setting: str | None) -> frozenset[str] | None:
    """The names LEDGER_ALLOWED_HOSTS lists (lower case), None for `*`; unset: the loopback names."""
    if setting is None:
        return LOOPBACK_NAMES
    names = {name.strip().lower().rstrip(".") for name in setting.split(",") if name.strip()}
    if ANY_HOST in names:
        return None
    return frozenset(names)


def host_name(header: bytes | None) -> str | None:
    """The name in a Host header value, without its port: `[::1]:8000` -> `[::1]`."""
    if not header:
        return None
    text = header.decode("latin-1").strip().lower()
    if text.startswith("["):
        end = text.find("]")
        return text[: end + 1] if end > 0 else None
    return text.rsplit(":", 1)[0].rstrip(".") if text.count(":") <= 1 else None


def host_lines_refusal(host_lines: int, http_version: str) -> str | None:
    """Why a request is refused 400 for its number of Host lines, whatever names are allowed (`*`
    too): two, since a proxy in front may have routed it by the other one; none, past HTTP/1.0.
    None: the allowed names judge it (an HTTP/1.0 request without one among them)."""
    if host_lines > 1:
        return TWO_HOSTS_DETAIL
    if host_lines == 0 and http_version not in HOST_OPTIONAL_VERSIONS:
        return NO_HOST_DETAIL
    return None


def host_allowed(allowed: frozenset[str] | None, header: bytes | None) -> bool:
    if allowed is None:
        return True
    name = host_name(header)
    return name is not None and name in allowed


def is_loopback(address: str) -> bool:
    """Is a listening address loopback only? `localhost` and loopback IPs are; a name that may
    resolve elsewhere, `0.0.0.0` and `::` are not."""
    if address.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(address.strip("[]")).is_loopback
    except ValueError:
        return False
