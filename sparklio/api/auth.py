"""Authentication dependencies: who is calling, from `Authorization: Bearer <key or token>`
or the studio's session cookie (`sparklio.api.session`), and from which address (for the
login limits) over which scheme (for the cookie's Secure flag).

These hand endpoints the caller's `Principal`, checked by the app's one `AuthService`
(`AuthServiceDep`). Async on purpose (see `sparklio.api.deps`).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from typing import Annotated

from fastapi import Depends, Request
from starlette.datastructures import Headers

from sparklio.api.deps import AuthServiceDep, SettingsDep
from sparklio.api.session import check_csrf, credential_of
from sparklio.exceptions import ForbiddenError
from sparklio.services.auth import Principal


async def require_principal(request: Request, auth: AuthServiceDep) -> Principal:
    """The caller, from `Authorization: Bearer`, else from the studio's session cookie; or
    UnauthorizedError (401) / ForbiddenError (403, also for a cookie-authenticated change
    without its CSRF token). Also kept in `request.state.principal`, for logging and the
    call log."""
    authorization, from_cookie = credential_of(request)
    principal = await auth.authenticate(authorization)
    if from_cookie:
        check_csrf(request, auth)
    request.state.principal = principal
    return principal


async def require_admin(principal: Annotated[Principal, Depends(require_principal)]) -> Principal:
    """The caller when an admin; ForbiddenError (403) for a member."""
    if principal.role != "admin":
        raise ForbiddenError(f"This needs an admin; {principal.email} is a {principal.role}")
    return principal


IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


async def client_address(request: Request, settings: SettingsDep) -> str:
    """The caller's address: the TCP peer, unless the peer is a proxy listed in
    FORWARDED_ALLOW_IPS; then the client its X-Forwarded-For (else Forwarded) header names."""
    peer = request.client.host if request.client else ""
    return forwarded_client(peer, request.headers, settings.forwarded_allow_ips) or "unknown"


async def request_is_https(request: Request, settings: SettingsDep) -> bool:
    """Whether the browser reached us over https: SESSION_COOKIE_SECURE, the request's own
    scheme, or the X-Forwarded-Proto of a proxy listed in FORWARDED_ALLOW_IPS."""
    if settings.session_cookie_secure or request.url.scheme == "https":
        return True
    peer = request.client.host if request.client else ""
    trusted = _networks(settings.forwarded_allow_ips)
    if not trusted or not _is_trusted(_ip(peer), trusted):
        return False
    # the proxy nearest us wrote the last value
    protos = [p.strip().lower() for h in request.headers.getlist("x-forwarded-proto")
              for p in h.split(",")]  # fmt: skip
    return bool(protos) and protos[-1] == "https"


def forwarded_client(peer: str, headers: Headers, allowed: str) -> str:
    """The client behind `peer` when `peer` is one of the `allowed` proxies (a comma list of
    IPs, CIDRs or `*`), else `peer`.

    A proxy appends the address it saw to X-Forwarded-For, so the header is read from the
    right: the first hop that is not itself an allowed proxy is the client; whatever stands
    left of it was written by that client and is ignored. A hop that is not an IP address
    stops the walk at the last address that was believed.
    """
    trusted = _networks(allowed)
    if not trusted or not _is_trusted(_ip(peer), trusted):
        return peer
    hops = _x_forwarded_for(headers) or _forwarded_for(headers)
    client = peer
    for hop in reversed(hops):
        address = _ip(hop)
        if address is None:
            break
        client = str(address)
        if not _is_trusted(address, trusted):
            break
    return client


def _networks(allowed: str) -> tuple[IPNetwork, ...] | None:
    """The allowed proxies; None for none; every address for `*`. (Checked at start by
    Settings, so a bad entry here cannot happen.)"""
    entries = [part.strip() for part in allowed.split(",") if part.strip()]
    if not entries:
        return None
    if "*" in entries:
        return (ipaddress.ip_network("0.0.0.0/0"), ipaddress.ip_network("::/0"))
    return tuple(ipaddress.ip_network(entry, strict=False) for entry in entries)


def _is_trusted(address: IPAddress | None, trusted: Iterable[IPNetwork]) -> bool:
    return address is not None and any(address in network for network in trusted)


def _ip(text: str) -> IPAddress | None:
    """An address from a header hop: `1.2.3.4`, `1.2.3.4:5678`, `"[2001:db8::1]:4711"`."""
    text = text.strip().strip('"').strip()
    if text.startswith("["):
        text = text[1:].partition("]")[0]
    elif text.count(":") == 1:
        text = text.partition(":")[0]
    try:
        address = ipaddress.ip_address(text)
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


def _x_forwarded_for(headers: Headers) -> list[str]:
    return [hop for line in headers.getlist("x-forwarded-for") for hop in line.split(",")]


def _forwarded_for(headers: Headers) -> list[str]:
    """The `for=` of each element of RFC 7239 Forwarded headers, in order."""
    hops = []
    for line in headers.getlist("forwarded"):
        for element in line.split(","):
            for pair in element.split(";"):
                name, _, value = pair.partition("=")
                if name.strip().lower() == "for":
                    hops.append(value)
    return hops


PrincipalDep = Annotated[Principal, Depends(require_principal)]
AdminDep = Annotated[Principal, Depends(require_admin)]
ClientAddressDep = Annotated[str, Depends(client_address)]
HttpsDep = Annotated[bool, Depends(request_is_https)]

__all__ = [
    "AdminDep",
    "ClientAddressDep",
    "HttpsDep",
    "PrincipalDep",
    "client_address",
    "forwarded_client",
    "request_is_https",
    "require_admin",
    "require_principal",
]
