"""Who the client is, for per-client limits: the socket's peer, or behind a trusted proxy the
address that proxy saw.

`X-Forwarded-For` is honoured only when the peer is one of the configured proxies
(`MESSENGER_TRUSTED_PROXIES`, empty by default): anyone can send the header, so trusting it from
everyone would let a guesser pick a fresh bucket per request. The chain is read from the right
(each proxy appends the address it saw), skipping trusted proxies; the first other address is
the client. IPv6 clients are keyed by their /64, which one subscriber usually holds whole.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable

from starlette.requests import HTTPConnection

Network = ipaddress.IPv4Network | ipaddress.IPv6Network
Address = ipaddress.IPv4Address | ipaddress.IPv6Address


class ClientAddresses:
    def __init__(self, trusted_proxies: Iterable[str] = ()) -> None:
        self._trusted: tuple[Network, ...] = tuple(
            ipaddress.ip_network(p, strict=False) for p in trusted_proxies
        )

    def _is_trusted(self, address: Address) -> bool:
        return any(address in network for network in self._trusted)

    def of(self, connection: HTTPConnection) -> str:
        """The limit key of the request's client (an address, or `unknown`)."""
        peer = _parse(connection.client.host if connection.client else "")
        if peer is None:
            return "unknown"
        if self._trusted and self._is_trusted(peer):
            hops = ",".join(connection.headers.getlist("x-forwarded-for")).split(",")
            for hop in reversed([h.strip() for h in hops if h.strip()]):
                address = _parse(hop)
                if address is None:
                    break  # garbage from before the proxies: the last trusted hop is all we know
                peer = address
                if not self._is_trusted(address):
                    break
        return _key(peer)


def _parse(text: str) -> Address | None:
    try:
        return ipaddress.ip_address(text)
    except ValueError:
        return None


def _key(address: Address) -> str:
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped is not None:
            return str(address.ipv4_mapped)
        return str(ipaddress.ip_network(f"{address}/64", strict=False))
    return str(address)
