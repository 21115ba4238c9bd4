"""Which addresses webhooks may reach, and the pinned request built for a checked one."""

from __future__ import annotations

import socket
from typing import Any

import httpx
import pytest

from services.channels import url_safety
from services.channels.egress import pinned
from services.channels.url_safety import METADATA, Target, UnsafeUrl, check_address, check_url

pytestmark = pytest.mark.anyio

REFUSED = {
    "2002:a9fe:a9fe::1": "metadata",  # 6to4 of 169.254.169.254
    "2002:7f00:1::1": "6to4",  # 6to4 of 127.0.0.1
    "2002:a00:1::1": "6to4",  # 6to4 of 10.0.0.1
    "2002:5db8:d822::1": "6to4",  # 6to4 of a public address: relays are not endpoints
    "2001:0:4136:e378:8000:63bf:3fff:fdd2": "Teredo",
    "2001:0:a9fe:a9fe::1": "metadata",  # Teredo whose server is the metadata address
    "64:ff9b::7f00:1": "non-public",  # NAT64 of 127.0.0.1
    "64:ff9b::a00:1": "non-public",  # NAT64 of 10.0.0.1
    "64:ff9b::c0a8:101": "non-public",  # NAT64 of 192.168.1.1
    "64:ff9b::a9fe:a9fe": "metadata",  # NAT64 of 169.254.169.254
    "64:ff9b:1::a00:1": "NAT64 local-use",
    "64:ff9b:1::5db8:d822": "NAT64 local-use",
    "::ffff:127.0.0.1": "non-public",
    "::ffff:10.1.2.3": "non-public",
    "::ffff:169.254.169.254": "metadata",
    "::ffff:100.100.100.200": "metadata",
    "::ffff:240.0.0.1": "non-public",  # reserved
    "::127.0.0.1": "IPv4-compatible",
    "::10.0.0.1": "IPv4-compatible",
    "::93.184.216.34": "IPv4-compatible",
    "127.0.0.1": "non-public",
    "10.0.0.8": "non-public",
    "172.16.3.4": "non-public",
    "192.168.1.1": "non-public",
    "100.64.0.1": "non-public",
    "0.0.0.0": "non-public",
    "224.0.0.1": "non-public",
    "240.0.0.1": "non-public",
    "::1": "non-public",
    "::": "non-public",
    "fe80::1": "non-public",
    "fc00::1": "non-public",
    "fec0::1": "non-public",  # site-local: Python counts it global
    **{str(address): "metadata" for address in METADATA},
}
PUBLIC = [
    "93.184.216.34",
    "1.1.1.1",
    "2606:2800:220:1:248:1893:25c8:1946",
    "2a00:1450:4001:82a::200e",
    "::ffff:93.184.216.34",  # IPv4-mapped: reaches the public IPv4 address
    "64:ff9b::5db8:d822",  # NAT64 of a public address (IPv6-only networks with DNS64)
]


@pytest.mark.parametrize(("address", "why"), sorted(REFUSED.items()))
def test_non_public_forms_are_refused_and_say_why(address: str, why: str) -> None:
    """Private, loopback, reserved and metadata addresses are refused in every IPv6 form."""
    with pytest.raises(UnsafeUrl, match=why):
        check_address(address)


@pytest.mark.parametrize("address", PUBLIC)
def test_public_addresses_pass(address: str) -> None:
    """Public unicast addresses, and IPv6 forms that reach one, are accepted."""
    check_address(address)


@pytest.mark.parametrize(
    "address",
    [
        *(str(a) for a in METADATA),
        "::ffff:169.254.169.254",
        "64:ff9b::a9fe:a9fe",
        "2002:a9fe:a9fe::1",
        "2002:a83f:8110::1",  # 6to4 of 168.63.129.16 (Azure WireServer)
    ],
)
def test_metadata_is_refused_even_where_private_addresses_are_allowed(address: str) -> None:
    """BACKTRACK_WEBHOOK_ALLOW_PRIVATE never opens a metadata address, in any form."""
    with pytest.raises(UnsafeUrl, match="metadata"):
        check_address(address, allow_private=True)


@pytest.mark.parametrize("address", ["127.0.0.1", "10.0.0.1", "::1", "2002:7f00:1::1"])
def test_allow_private_lets_local_addresses_through(address: str) -> None:
    """Development and tests reach receivers on loopback and private networks."""
    check_address(address, allow_private=True)


def _answering(*addresses: str) -> Any:
    def getaddrinfo(host: Any, port: Any, *args: Any, **kwargs: Any) -> list[Any]:
        return [
            (socket.AF_INET6 if ":" in a else socket.AF_INET, socket.SOCK_STREAM, 6, "", (a, 0))
            for a in addresses
        ]

    return getaddrinfo


async def test_every_resolved_address_is_checked(monkeypatch: pytest.MonkeyPatch) -> None:
    """One private answer among public ones refuses the URL."""
    monkeypatch.setattr(socket, "getaddrinfo", _answering("93.184.216.34", "10.0.0.1"))
    with pytest.raises(UnsafeUrl, match=r"10\.0\.0\.1"):
        await check_url("https://hooks.example.com/x", allow_private=False)


async def test_check_url_returns_the_addresses_it_checked(monkeypatch: pytest.MonkeyPatch) -> None:
    """The target holds each checked address once, in resolver order, for the connection."""
    calls: list[str] = []
    answer = _answering("2606:2800:220:1::1", "93.184.216.34", "93.184.216.34")

    def counting(host: Any, port: Any, *args: Any, **kwargs: Any) -> list[Any]:
        calls.append(host)
        return answer(host, port)  # type: ignore[no-any-return]

    monkeypatch.setattr(socket, "getaddrinfo", counting)
    target = await check_url("https://hooks.example.com/x", allow_private=False)
    assert target.addresses == ("2606:2800:220:1::1", "93.184.216.34")
    assert calls == ["hooks.example.com"]


async def test_ip_literals_and_shorthand_are_judged_by_the_address() -> None:
    """An IP literal needs no lookup; shorthand such as 127.1 resolves to what it means."""
    target = await check_url("http://93.184.216.34:8080/x", allow_private=False)
    assert target.addresses == ("93.184.216.34",)
    for url in ("http://127.1/x", "http://0x7f.0.0.1/x", "http://[::ffff:7f00:1]/x"):
        with pytest.raises(UnsafeUrl, match="non-public"):
            await check_url(url, allow_private=False)


@pytest.mark.parametrize(
    "url",
    ["http://example.com:0/h", "http://example.com:99999/h", "https://a.com\\@127.0.0.1/"],
)
async def test_bad_ports_and_credentials_are_refused_before_any_lookup(url: str) -> None:
    """Ports outside 1-65535 and userinfo (however spelt) are refused by their form."""
    with pytest.raises(UnsafeUrl):
        url_safety.parse(url)


def test_the_pinned_request_names_the_address_and_keeps_the_name() -> None:
    """Request line: the checked IP (bracketed for IPv6); Host: the original host and port;
    SNI and certificate name: the original host."""
    client = httpx.AsyncClient()
    target = Target(httpx.URL("https://hooks.example.com:8443/bt?x=1"), ("2606:2800:220:1::1",))
    request = pinned(client, target, "2606:2800:220:1::1", b"{}", {"webhook-id": "m"})
    assert str(request.url) == "https://[2606:2800:220:1::1]:8443/bt?x=1"
    assert request.headers["host"] == "hooks.example.com:8443"
    assert request.extensions["sni_hostname"] == "hooks.example.com"
    plain = Target(httpx.URL("http://hooks.example.com/bt"), ("93.184.216.34",))
    request = pinned(client, plain, "93.184.216.34", b"{}", {})
    assert str(request.url) == "http://93.184.216.34/bt"
    assert request.headers["host"] == "hooks.example.com"
    assert "sni_hostname" not in request.extensions
