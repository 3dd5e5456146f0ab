"""The URL guard's address check and URL rules — pure functions, no connection is ever opened."""

from __future__ import annotations

import asyncio
import ipaddress

import pytest

from lambdanet.errors import URLError
from lambdanet.serve.urlguard import UrlFetcher, is_public_address


@pytest.mark.parametrize("address", [
    "127.0.0.1", "127.255.255.254", "::1",                      # loopback
    "10.0.0.1", "172.16.5.4", "172.31.255.255", "192.168.1.1",  # private (RFC 1918)
    "fc00::1", "fd12:3456::1",                                  # unique local
    "169.254.169.254", "169.254.0.1", "fe80::1",                # link-local (cloud metadata!)
    "224.0.0.1", "239.255.255.250", "ff02::1",                  # multicast
    "0.0.0.0", "::",                                            # unspecified
    "240.0.0.1", "255.255.255.255",                             # reserved / broadcast
    "100.64.0.1",                                               # shared address space (CGNAT)
    "192.0.2.1", "198.51.100.7", "203.0.113.9", "2001:db8::1",  # documentation
    "198.18.0.1",                                               # benchmarking
    "::ffff:127.0.0.1", "::ffff:10.1.2.3", "::ffff:169.254.169.254",  # IPv4-mapped
    "64:ff9b::a9fe:a9fe", "64:ff9b::7f00:1",                    # NAT64 of link-local / loopback
    "2002:7f00:1::1", "2002:a00:1::1",                          # 6to4 of loopback / private
    "not an address", "",
])
def test_non_public_addresses_are_refused(address: str) -> None:
    assert is_public_address(address) is False


@pytest.mark.parametrize("address", ["8.8.8.8", "1.1.1.1", "93.184.216.34", "2606:4700:4700::1111",
                                     "::ffff:8.8.8.8", "64:ff9b::808:808"])
def test_public_addresses_are_allowed(address: str) -> None:
    assert is_public_address(address) is True
    assert is_public_address(ipaddress.ip_address(address)) is True


@pytest.mark.parametrize("url, needle", [
    ("file:///etc/passwd", "only http:// and https://"),
    ("ftp://example.org/x.png", "only http:// and https://"),
    ("gopher://example.org:70/_x", "only http:// and https://"),
    ("javascript:alert(1)", "only http:// and https://"),
    ("//example.org/x.png", "only http:// and https://"),
    ("http:///x.png", "no host"),
    ("http://example.org:99999/", "bad port"),
])
def test_url_rules(url: str, needle: str) -> None:
    with pytest.raises(URLError, match=needle):
        asyncio.run(UrlFetcher().fetch(url))


def test_literal_private_hosts_are_refused_before_any_connection() -> None:
    contacted: list[tuple[str, int]] = []

    def policy(ip: ipaddress.IPv4Address | ipaddress.IPv6Address, port: int) -> bool:
        contacted.append((str(ip), port))
        return is_public_address(ip)

    fetcher = UrlFetcher(policy=policy)
    for url in ("http://10.0.0.8:8080/a.png", "http://[fe80::1]/x", "https://169.254.169.254/latest/"):
        with pytest.raises(URLError, match="not a public address"):
            asyncio.run(fetcher.fetch(url))
    assert contacted == [("10.0.0.8", 8080), ("fe80::1", 80), ("169.254.169.254", 443)]
