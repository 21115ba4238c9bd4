"""Webhook URLs that cannot be turned against our own network (SSRF).

A URL is refused when its scheme is not http(s), it carries credentials, or
any address its host resolves to is loopback, private, link-local, reserved,
multicast, unspecified or a cloud metadata address, unless
``allow_private`` (``BACKTRACK_WEBHOOK_ALLOW_PRIVATE``, local development and
tests) is set. In production (``environment == "production"``) only https is
accepted. The check runs at subscription time and again before every
delivery, since DNS answers can change.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from urllib.parse import urlsplit

METADATA = frozenset(
    {ipaddress.ip_address("169.254.169.254"), ipaddress.ip_address("fd00:ec2::254")}
)


class UnsafeUrl(ValueError):  # noqa: N818 - reads as a verdict at the raise site
    """The URL may not receive webhooks; the message says why."""


def check_shape(url: str, *, https_only: bool = False) -> str:
    """The URL's host if its form is acceptable; UnsafeUrl otherwise. Pure."""
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise UnsafeUrl(f"not a valid URL: {exc}") from None
    allowed = ("https",) if https_only else ("http", "https")
    if parts.scheme not in allowed:
        raise UnsafeUrl(f"the URL scheme must be {' or '.join(allowed)}")
    if parts.username is not None or parts.password is not None:
        raise UnsafeUrl("credentials in the URL are not allowed; verify signatures instead")
    if not parts.hostname:
        raise UnsafeUrl("the URL has no host")
    if port == 0:
        raise UnsafeUrl("port 0 is not a valid port")
    return parts.hostname


def check_address(address: str) -> None:
    """UnsafeUrl if ``address`` is not a public unicast address. Pure."""
    ip = ipaddress.ip_address(address.split("%", 1)[0])
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    if ip in METADATA:
        raise UnsafeUrl(f"{ip} is a cloud metadata address")
    bad = (
        ip.is_loopback
        or ip.is_private
        or ip.is_link_local
        or ip.is_reserved
        or ip.is_multicast
        or ip.is_unspecified
        or not ip.is_global
    )
    if bad:
        raise UnsafeUrl(f"the URL resolves to {ip}, a non-public address")


async def check_url(url: str, *, allow_private: bool, https_only: bool = False) -> None:
    """UnsafeUrl unless ``url`` may receive webhooks (resolves the host in a thread)."""
    host = check_shape(url, https_only=https_only)
    if allow_private:
        return
    try:
        infos = await asyncio.to_thread(socket.getaddrinfo, host, None, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError) as exc:
        raise UnsafeUrl(f"the host {host!r} does not resolve: {exc}") from None
    for info in infos:
        check_address(str(info[4][0]))


__all__ = ["UnsafeUrl", "check_address", "check_shape", "check_url"]
