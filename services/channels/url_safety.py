"""Webhook URLs and addresses that cannot be turned against our own network (SSRF).

A URL is refused when its scheme is not http(s) (only https outside
development and test), it carries credentials, or any address its host
resolves to is not a public unicast address: loopback, private, link-local,
shared (CGNAT), reserved, multicast, unspecified, a cloud metadata address,
or an IPv6 form that reaches one of those over IPv4 (below).
``allow_private`` (``BACKTRACK_WEBHOOK_ALLOW_PRIVATE``, development and tests
only: settings refuse it elsewhere) lifts every refusal but the metadata one.

``check_url`` resolves the host once and checks every address; the caller
connects to one of the addresses it returns (``services.channels.egress``),
never to the name, so a resolver that answers a public address to the check
and a private one to the connection (DNS rebinding) gains nothing. It runs
when a subscription is created and again before every delivery attempt.

IPv6 forms that carry an IPv4 address, judged by that address or refused:

- IPv4-mapped ``::ffff:a.b.c.d``: the IPv4 address is what is reached.
- NAT64 well-known prefix ``64:ff9b::/96`` (RFC 6052): the gateway reaches the
  embedded IPv4 address; allowed only when that address is public.
- NAT64 local-use ``64:ff9b:1::/48`` (RFC 8215), 6to4 ``2002::/16`` (RFC 3056),
  Teredo ``2001::/32`` (RFC 4380) and IPv4-compatible ``::a.b.c.d``
  (deprecated, RFC 4291): refused whatever they embed; they are reached
  through relays or gateways the network chooses, never a clinic endpoint.

Cloud metadata addresses (``METADATA``) are refused even with
``allow_private``, in every form above.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from dataclasses import dataclass

import httpx

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

#: Instance metadata and platform endpoints that hand out credentials or
#: configuration, with the clouds that serve them.
METADATA: dict[IPAddress, str] = {
    ipaddress.ip_address(address): cloud
    for address, cloud in {
        "169.254.169.254": (
            "instance metadata of AWS, GCP, Azure, OpenStack, Oracle, IBM, DigitalOcean, "
            "Hetzner, Linode and Huawei"
        ),
        "fd00:ec2::254": "AWS instance metadata over IPv6",
        "169.254.170.2": "AWS ECS task metadata and credentials",
        "169.254.170.23": "AWS EKS Pod Identity credentials",
        "fd00:ec2::23": "AWS EKS Pod Identity credentials over IPv6",
        "fd20:ce::254": "GCP metadata over IPv6",
        "168.63.129.16": "Azure WireServer (a public address)",
        "100.100.100.200": "Alibaba Cloud metadata",
        "192.0.0.192": "Oracle Cloud legacy metadata",
        "169.254.0.23": "Tencent Cloud metadata",
        "169.254.42.42": "Scaleway metadata",
        "fd00:42::42": "Scaleway metadata over IPv6",
    }.items()
}
NAT64 = ipaddress.IPv6Network("64:ff9b::/96")
#: IPv6 prefixes refused whatever address they embed, and what they are.
TUNNELS = {
    ipaddress.IPv6Network("64:ff9b:1::/48"): "a NAT64 local-use",
    ipaddress.IPv6Network("2002::/16"): "a 6to4",
    ipaddress.IPv6Network("2001::/32"): "a Teredo",
}
COMPATIBLE = ipaddress.IPv6Network("::/96")


class UnsafeUrl(ValueError):  # noqa: N818 - reads as a verdict at the raise site
    """The URL may not receive webhooks; the message says why."""


@dataclass(frozen=True, slots=True)
class Target:
    """A URL that passed the checks and the addresses checked for it, in resolver order."""

    url: httpx.URL
    addresses: tuple[str, ...]


def parse(url: str, *, https_only: bool = False) -> httpx.URL:
    """The URL as the HTTP client reads it, if its form is acceptable; UnsafeUrl otherwise. Pure."""
    try:
        parsed = httpx.URL(url)
    except httpx.InvalidURL as exc:
        raise UnsafeUrl(f"not a valid URL: {exc}") from None
    allowed = ("https",) if https_only else ("http", "https")
    if parsed.scheme not in allowed:
        raise UnsafeUrl(f"the URL scheme must be {' or '.join(allowed)}")
    if parsed.userinfo:
        raise UnsafeUrl("credentials in the URL are not allowed; verify signatures instead")
    if not parsed.raw_host:
        raise UnsafeUrl("the URL has no host")
    if parsed.port is not None and not 1 <= parsed.port <= 65535:
        raise UnsafeUrl(f"port {parsed.port} is not a valid port")
    return parsed


def check_shape(url: str, *, https_only: bool = False) -> str:
    """The URL's host if its form is acceptable; UnsafeUrl otherwise. Pure."""
    return parse(url, https_only=https_only).host


def _embedded(ip: IPAddress) -> list[ipaddress.IPv4Address]:
    """Every IPv4 address ``ip`` carries (mapped, NAT64, 6to4, Teredo, compatible)."""
    if not isinstance(ip, ipaddress.IPv6Address):
        return []
    found = [ip.ipv4_mapped, ip.sixtofour, *(ip.teredo or ())]
    if ip in NAT64 or ip in COMPATIBLE:
        found.append(ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF))
    return [inner for inner in found if inner is not None]


def _reached(ip: IPAddress) -> IPAddress:
    """The address packets to ``ip`` are delivered to: the IPv4 one for mapped and NAT64 forms."""
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            return ip.ipv4_mapped
        if ip in NAT64:
            return ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
    return ip


def _non_public(ip: IPAddress) -> bool:
    return (
        ip.is_loopback
        or ip.is_private
        or ip.is_link_local
        or ip.is_reserved
        or ip.is_multicast
        or ip.is_unspecified
        or (isinstance(ip, ipaddress.IPv6Address) and ip.is_site_local)  # fec0::/10
        or not ip.is_global
    )


def check_address(address: str, *, allow_private: bool = False) -> IPAddress:
    """The address if webhooks may go to it; UnsafeUrl otherwise. Pure.

    Metadata addresses are refused in every form, even with ``allow_private``;
    without it, tunnelling prefixes are refused and the address reached must
    be public.
    """
    try:
        ip = ipaddress.ip_address(address.split("%", 1)[0])
    except ValueError:
        raise UnsafeUrl(f"{address!r} is not an IP address") from None
    for candidate in (ip, *_embedded(ip)):
        if candidate in METADATA:
            raise UnsafeUrl(f"{ip} is a cloud metadata address ({METADATA[candidate]})")
    if allow_private:
        return ip
    for network, kind in TUNNELS.items():
        if ip in network:
            raise UnsafeUrl(f"{ip} is {kind} address, which is not allowed")
    if ip in COMPATIBLE and int(ip) > 1:
        raise UnsafeUrl(f"{ip} is an IPv4-compatible address, which is not allowed")
    reached = _reached(ip)
    if _non_public(reached):
        shown = ip if reached == ip else f"{ip} (reaching {reached})"
        raise UnsafeUrl(f"the URL resolves to {shown}, a non-public address")
    return ip


async def resolve(host: str) -> list[str]:
    """Every address ``host`` resolves to, in resolver order (an IP literal is itself).

    The one place webhooks look names up: delivery connects to what this
    returned, never to the name.
    """
    try:
        return [str(ipaddress.ip_address(host))]
    except ValueError:
        pass
    try:
        infos = await asyncio.to_thread(socket.getaddrinfo, host, None, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError) as exc:
        raise UnsafeUrl(f"the host {host!r} does not resolve: {exc}") from None
    return list(dict.fromkeys(str(info[4][0]) for info in infos))


async def check_url(url: str, *, allow_private: bool, https_only: bool = False) -> Target:
    """The checked target of ``url``: one lookup, every address checked; UnsafeUrl otherwise."""
    parsed = parse(url, https_only=https_only)
    addresses = await resolve(parsed.raw_host.decode("ascii"))
    if not addresses:
        raise UnsafeUrl(f"the host {parsed.host!r} has no address")
    for address in addresses:
        check_address(address, allow_private=allow_private)
    return Target(parsed, tuple(address.split("%", 1)[0] for address in addresses))


__all__ = [
    "METADATA",
    "Target",
    "UnsafeUrl",
    "check_address",
    "check_shape",
    "check_url",
    "parse",
    "resolve",
]
