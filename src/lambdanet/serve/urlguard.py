"""Fetch an image from a user-given URL without letting the server reach its own network (SSRF).

Usage::

    is_public_address("10.0.0.7")          # False: private
    fetcher = UrlFetcher(max_bytes=10_000_000, timeout_s=5.0)
    data = await fetcher.fetch("https://example.org/cat.jpg")   # URLError when refused

Rules: http(s) only; the host name is resolved here and every address it resolves to must be
public (not private, loopback, link-local, multicast, reserved, unspecified, shared/CGNAT, nor
an IPv4 address hidden in IPv6); the connection goes to the checked address (no second DNS
lookup an attacker could rebind); redirects are followed by hand, each hop checked the same
way; the body is streamed with a byte limit and the whole fetch has a deadline.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
import time
from collections.abc import Callable
from urllib.parse import urljoin, urlsplit

import httpx

from lambdanet.errors import PayloadTooLarge, URLError

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
AddressPolicy = Callable[[IPAddress, int], bool]

_NAT64 = ipaddress.ip_network("64:ff9b::/96")
_REDIRECTS = frozenset({301, 302, 303, 307, 308})


def is_public_address(ip: str | IPAddress) -> bool:
    """True only for a globally routable unicast address; never opens a connection."""
    try:
        addr = ipaddress.ip_address(ip) if isinstance(ip, str) else ip
    except ValueError:
        return False
    if isinstance(addr, ipaddress.IPv6Address):
        embedded = addr.ipv4_mapped or addr.sixtofour
        if embedded is None and addr.teredo is not None:
            embedded = addr.teredo[1]
        if embedded is None and addr in _NAT64:
            embedded = ipaddress.IPv4Address(int(addr) & 0xFFFFFFFF)
        if embedded is not None:
            return is_public_address(embedded)
    bad = (addr.is_private or addr.is_loopback or addr.is_link_local or addr.is_multicast
           or addr.is_reserved or addr.is_unspecified)
    return addr.is_global and not bad


def _default_policy(ip: IPAddress, port: int) -> bool:
    return is_public_address(ip)


class UrlFetcher:
    """Downloads one image from a public http(s) URL under size, time and redirect limits.

    ``policy(ip, port)`` decides whether an address may be contacted; the default is
    :func:`is_public_address`. Tests pass a policy that also admits one loopback port, to check
    that the *next* hop (a redirect) is still refused.
    """

    def __init__(self, max_bytes: int = 10_000_000, timeout_s: float = 5.0, max_redirects: int = 3,
                 policy: AddressPolicy | None = None) -> None:
        self.max_bytes = max_bytes
        self.timeout_s = timeout_s
        self.max_redirects = max_redirects
        self.policy = policy or _default_policy

    async def _resolve(self, host: str, port: int) -> IPAddress:
        """The first address of ``host``, after checking that every address it has is allowed."""
        try:
            literal = ipaddress.ip_address(host)
            addrs: list[IPAddress] = [literal]
        except ValueError:
            loop = asyncio.get_running_loop()
            try:
                infos = await asyncio.wait_for(
                    loop.getaddrinfo(host, port, type=socket.SOCK_STREAM), self.timeout_s)
            except (OSError, TimeoutError) as exc:
                raise URLError(f"cannot resolve host {host!r}: check the URL") from exc
            addrs = [ipaddress.ip_address(str(info[4][0]).split("%")[0]) for info in infos]
        if not addrs:
            raise URLError(f"host {host!r} has no address")
        for addr in addrs:
            if not self.policy(addr, port):
                raise URLError(f"refused: {host} resolves to {addr}, which is not a public address")
        return addrs[0]

    def _check_url(self, url: str) -> tuple[str, str, int]:
        parts = urlsplit(url)
        scheme = parts.scheme.lower()
        if scheme not in ("http", "https"):
            raise URLError(f"refused: only http:// and https:// URLs can be fetched (got {scheme or 'none'}://)")
        if not parts.hostname:
            raise URLError(f"refused: the URL {url!r} has no host")
        try:
            port = parts.port or (443 if scheme == "https" else 80)
        except ValueError as exc:
            raise URLError(f"refused: bad port in {url!r}") from exc
        return scheme, parts.hostname, port

    async def fetch(self, url: str) -> bytes:
        """The body of ``url`` (following at most ``max_redirects`` checked redirects)."""
        try:
            return await asyncio.wait_for(self._fetch(url), self.timeout_s)
        except TimeoutError:
            raise URLError(f"cannot fetch {url}: took longer than {self.timeout_s} s") from None

    async def _fetch(self, url: str) -> bytes:
        deadline = time.monotonic() + self.timeout_s
        async with httpx.AsyncClient(follow_redirects=False, trust_env=False,
                                     timeout=httpx.Timeout(self.timeout_s)) as client:
            for _hop in range(self.max_redirects + 1):
                scheme, host, port = self._check_url(url)
                ip = await self._resolve(host, port)
                parts = urlsplit(url)
                ip_host = f"[{ip}]" if ip.version == 6 else str(ip)
                target = parts._replace(netloc=f"{ip_host}:{port}").geturl()
                host_header = host if parts.port is None else f"{host}:{port}"
                extensions = {"sni_hostname": host} if scheme == "https" else {}
                request = client.build_request("GET", target, headers={"Host": host_header},
                                               extensions=extensions)
                try:
                    response = await client.send(request, stream=True)
                except httpx.HTTPError as exc:
                    raise URLError(f"cannot fetch {url}: {type(exc).__name__}") from exc
                try:
                    if response.status_code in _REDIRECTS:
                        location = response.headers.get("location")
                        if not location:
                            raise URLError(f"cannot fetch {url}: redirect without a Location")
                        url = urljoin(url, location)
                        continue
                    if response.status_code != 200:
                        raise URLError(f"cannot fetch {url}: HTTP {response.status_code}")
                    return await self._read_body(response, url, deadline)
                finally:
                    await response.aclose()
        raise URLError(f"cannot fetch the image: more than {self.max_redirects} redirects")

    async def _read_body(self, response: httpx.Response, url: str, deadline: float) -> bytes:
        declared = response.headers.get("content-length")
        if declared and declared.isdigit() and int(declared) > self.max_bytes:
            raise PayloadTooLarge(f"the image at {url} is {declared} bytes; the limit is {self.max_bytes}")
        chunks: list[bytes] = []
        size = 0
        try:
            async for chunk in response.aiter_bytes():
                size += len(chunk)
                if size > self.max_bytes:
                    raise PayloadTooLarge(f"the image at {url} is over the {self.max_bytes}-byte limit")
                if time.monotonic() > deadline:
                    raise URLError(f"cannot fetch {url}: took longer than {self.timeout_s} s")
                chunks.append(chunk)
        except httpx.HTTPError as exc:
            raise URLError(f"cannot fetch {url}: {type(exc).__name__}") from exc
        return b"".join(chunks)
