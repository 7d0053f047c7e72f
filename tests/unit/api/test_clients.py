"""Which address a per-client limit counts: the peer, or what a trusted proxy saw."""

from __future__ import annotations

import pytest
from starlette.requests import Request

from messenger.api.clients import ClientAddresses


def request(peer: str, *forwarded: str) -> Request:
    headers = [(b"x-forwarded-for", value.encode()) for value in forwarded]
    return Request({"type": "http", "client": (peer, 1234), "headers": headers, "method": "GET", "path": "/"})


def test_without_trusted_proxies_the_header_is_ignored() -> None:
    assert ClientAddresses().of(request("203.0.113.7", "198.51.100.1")) == "203.0.113.7"


def test_a_trusted_proxy_names_the_client() -> None:
    clients = ClientAddresses(["10.0.0.0/8"])
    assert clients.of(request("10.1.2.3", "198.51.100.1")) == "198.51.100.1"


def test_only_the_hops_added_by_trusted_proxies_count() -> None:
    # The client wrote a fake first entry; our two proxies appended what they saw.
    clients = ClientAddresses(["10.0.0.0/8"])
    forged = request("10.0.0.1", "1.2.3.4, 198.51.100.9", "10.0.0.2")
    assert clients.of(forged) == "198.51.100.9"


def test_an_untrusted_peer_cannot_choose_its_bucket() -> None:
    clients = ClientAddresses(["10.0.0.0/8"])
    assert clients.of(request("203.0.113.7", "198.51.100.1")) == "203.0.113.7"


@pytest.mark.parametrize("header", ["not-an-address", ""])
def test_garbage_behind_a_trusted_proxy_counts_as_the_proxy(header: str) -> None:
    assert ClientAddresses(["10.0.0.0/8"]).of(request("10.0.0.1", header)) == "10.0.0.1"


def test_ipv6_clients_share_a_bucket_per_64() -> None:
    clients = ClientAddresses()
    assert clients.of(request("2001:db8:1:2::1")) == clients.of(request("2001:db8:1:2:ffff::9")) == "2001:db8:1:2::/64"
    assert clients.of(request("::ffff:198.51.100.1")) == "198.51.100.1"
