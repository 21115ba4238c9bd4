"""Outbound webhook HTTP, pinned to the addresses checked at each attempt.

``send`` posts to an address of a checked ``Target`` (``url_safety.check_url``),
not to its host name: the request line names the IP literal, the ``Host``
header the original host and port, and for https the original name is the
TLS server name (SNI) the certificate is verified against (httpcore's
``sni_hostname`` request extension). Nothing resolves the name again between
the check and the connection. Addresses are tried in resolver order while a
connection cannot be opened (nothing was sent); redirects are never followed.

The client keeps one connection pool per endpoint name (``NamedPools``): the
pools of httpx key connections by scheme, address and port only, so without
this a TLS connection verified for one name could carry a request for another
name served at the same address. Proxy variables of the environment are
ignored: a proxy would resolve the name itself.
"""

from __future__ import annotations

import ssl

import httpx

from services.channels.url_safety import Target


class NamedPools(httpx.AsyncBaseTransport):
    """One ``httpx.AsyncHTTPTransport`` per (scheme, Host header), created on first use."""

    def __init__(self, verify: ssl.SSLContext | bool = True) -> None:
        self._verify = httpx.create_ssl_context(verify) if isinstance(verify, bool) else verify
        self._pools: dict[tuple[str, str], httpx.AsyncHTTPTransport] = {}

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        key = (request.url.scheme, request.headers.get("host", ""))
        pool = self._pools.get(key)
        if pool is None:
            pool = self._pools[key] = httpx.AsyncHTTPTransport(verify=self._verify)
        return await pool.handle_async_request(request)

    async def aclose(self) -> None:
        pools, self._pools = list(self._pools.values()), {}
        for pool in pools:
            await pool.aclose()


def webhook_client(timeout: float, verify: ssl.SSLContext | bool = True) -> httpx.AsyncClient:
    """The dispatcher's client: per-name pools, no redirects, no proxies from the environment."""
    return httpx.AsyncClient(
        timeout=timeout,
        transport=NamedPools(verify),
        follow_redirects=False,
        trust_env=False,
    )


def pinned(
    client: httpx.AsyncClient, target: Target, address: str, body: bytes, headers: dict[str, str]
) -> httpx.Request:
    """The POST of ``body`` to ``target`` at ``address``, as the endpoint expects to see it."""
    url = target.url
    extensions = {}
    if url.scheme == "https":
        extensions["sni_hostname"] = url.raw_host.decode("ascii")
    return client.build_request(
        "POST",
        url.copy_with(host=address),
        content=body,
        headers={**headers, "host": url.netloc.decode("ascii")},
        extensions=extensions,
    )


async def send(
    client: httpx.AsyncClient, target: Target, body: bytes, headers: dict[str, str]
) -> httpx.Response:
    """POST to the first checked address that accepts a connection; httpx errors propagate.

    The response is closed unread: a delivery needs only its status."""
    *others, last = target.addresses
    for address in others:
        try:
            return await _status(client, pinned(client, target, address, body, headers))
        except httpx.ConnectError:
            continue  # not connected, so nothing was sent: try the next checked address
    return await _status(client, pinned(client, target, last, body, headers))


async def _status(client: httpx.AsyncClient, request: httpx.Request) -> httpx.Response:
    """The response's status and headers; its body is never read (an endpoint that
    streams without end cannot fill the process's memory)."""
    reply = await client.send(request, follow_redirects=False, stream=True)
    await reply.aclose()
    return reply


__all__ = ["NamedPools", "pinned", "send", "webhook_client"]
